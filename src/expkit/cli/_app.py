"""The typer application behind ``exp``: the global options and the commands.

Each command lives in its own module (``_cmd_<name>.py``), which imports
only typer at module level: ``exp --help`` reads every command's options but
loads neither the planner, rich, YAML nor the experiment. A command is built
(its module imported, its options read by typer) only when it is asked for:
``exp run`` builds ``run`` alone, ``exp --help`` all of them.
"""

from collections.abc import Callable, Iterator, MutableMapping
from importlib import import_module
from typing import Any

import typer

from ._common import (
    EnvOption,
    ExpGroup,
    FileOption,
    QuietOption,
    ResultsOption,
    State,
    VerboseOption,
)

__all__ = ["app"]

#: The commands in the order of the help: name -> (module, function). See _Commands.
_COMMANDS = {
    "run": ("._cmd_run", "run"),
    "plan": ("._cmd_plan", "plan"),
    "status": ("._cmd_status", "status"),
    "graph": ("._cmd_graph", "graph"),
    "envs": ("._cmd_envs", "envs"),
    "use": ("._cmd_envs", "use"),
    "show": ("._cmd_show", "show"),
    "reset": ("._cmd_reset", "reset"),
    "log": ("._cmd_log", "log"),
    "version": ("._app", "version"),
}


class _Commands(MutableMapping[str, Any]):
    """The group's commands by name, each built by typer when first looked up.

    Building a command makes typer read its function's signature and
    annotations, for a dozen options each: doing it for every command at
    every start cost more than the command ``exp run`` runs when up to date.
    """

    def __init__(self, rich_markup_mode: Any) -> None:
        self._built: dict[str, Any] = {}
        self._rich_markup_mode = rich_markup_mode

    def __getitem__(self, name: str) -> Any:
        command = self._built.get(name)
        if command is None:
            module, function = _COMMANDS[name]  # KeyError: no such command
            callback: Callable[..., Any] = getattr(import_module(module, __package__), function)
            from typer.main import get_command_from_info
            from typer.models import CommandInfo

            command = self._built[name] = get_command_from_info(
                CommandInfo(name=name, callback=callback),
                pretty_exceptions_short=app.pretty_exceptions_short,
                rich_markup_mode=self._rich_markup_mode,
            )
        return command

    def __setitem__(self, name: str, command: Any) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        raise NotImplementedError

    def __iter__(self) -> Iterator[str]:
        return iter({**dict.fromkeys(_COMMANDS), **self._built})

    def __len__(self) -> int:
        return len(set(_COMMANDS) | set(self._built))

    def __contains__(self, name: object) -> bool:
        return name in _COMMANDS or name in self._built


class _Group(ExpGroup):
    """The ``exp`` group, its commands built on demand."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands = _Commands(self.rich_markup_mode)

    def list_commands(self, ctx: Any) -> list[str]:  # noqa: ARG002 - click's signature
        """The command names, in the order of the help, without building the commands."""
        return list(self.commands)


app = typer.Typer(
    name="exp",
    cls=_Group,
    no_args_is_help=True,
    add_completion=True,
    # click's plain help: typer's rich panels cost ~150 ms of imports
    # (rich.markdown, markdown_it, rich.traceback) on every `exp --help`.
    rich_markup_mode=None,
    # Errors are printed as one line by ExpGroup; a traceback only with -v.
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def main(
    ctx: typer.Context,
    *,
    file: FileOption = None,
    env: EnvOption = None,
    results: ResultsOption = None,
    verbose: VerboseOption = 0,
    quiet: QuietOption = False,
) -> None:
    """Run experiment steps that survive crashes: what is done is never run again.

    The steps are the @task functions of the experiment file: -f PATH (or a
    module name), else $EXP_FILE, else ./expfile.py. Global options may also
    follow the command. Exit status: 0 all done, 1 a step failed, 2 usage or
    configuration error, 130 interrupted.
    """
    ctx.obj = State(file=file, env=env, results=results, verbose=verbose, quiet=quiet)


def version() -> None:
    """Print expkit's version."""
    from expkit import __version__

    typer.echo(__version__)
