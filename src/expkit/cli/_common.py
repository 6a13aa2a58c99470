"""What every command shares: global options, errors and exit codes, output, environments.

Only typer and the standard library are imported here at module level:
``exp --help`` loads this module and must stay fast.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer
from typer.core import TyperGroup

from expkit._errors import ExpkitError

from ._coerce import install

if TYPE_CHECKING:
    from expkit import Environment, Status

__all__ = [
    "EnvOption",
    "ExpGroup",
    "FileOption",
    "JsonOption",
    "QuietOption",
    "ResultsOption",
    "State",
    "UsageError",
    "VerboseOption",
    "is_terminal",
    "open_env",
    "print_json",
    "print_table",
    "settle",
]

GLOBAL = "Global options"

FileOption = Annotated[
    str | None,
    typer.Option(
        "-f",
        "--file",
        envvar="EXP_FILE",
        metavar="PATH|MODULE",
        help="The experiment: a .py file, or a module importable from here. "
        "[default: $EXP_FILE, else expfile.py]",
        rich_help_panel=GLOBAL,
        show_default=False,
        show_envvar=False,
    ),
]
EnvOption = Annotated[
    Path | None,
    typer.Option(
        "--env",
        metavar="PATH",
        help="The environment: its directory, or a link to it. [default: ./current]",
        rich_help_panel=GLOBAL,
        show_default=False,
    ),
]
ResultsOption = Annotated[
    Path | None,
    typer.Option(
        "--results",
        metavar="DIR",
        help="Where new environments are made. [default: $EXP_RESULTS, else ./results]",
        rich_help_panel=GLOBAL,
        show_default=False,
    ),
]
VerboseOption = Annotated[
    int,
    typer.Option(
        "-v",
        "--verbose",
        count=True,
        help="Say more: tracebacks of errors, every step skipped, debug logging.",
        rich_help_panel=GLOBAL,
        show_default=False,
    ),
]
QuietOption = Annotated[
    bool,
    typer.Option(
        "-q",
        "--quiet",
        help="Say less: no progress lines; errors and the outcome only.",
        rich_help_panel=GLOBAL,
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON instead of a table.", show_default=False)
]


class UsageError(ExpkitError):
    """A command line the ``exp`` command cannot act on (exit status 2)."""


class State:
    """The global options, given before the command or after it."""

    # A plain class: a dataclass compiles code at import, and every `exp` command imports this.
    __slots__ = ("env", "file", "quiet", "results", "verbose")

    def __init__(
        self,
        file: str | None = None,
        env: Path | None = None,
        results: Path | None = None,
        verbose: int = 0,
        quiet: bool = False,
    ) -> None:
        self.file = file
        self.env = env
        self.results = results
        self.verbose = verbose
        self.quiet = quiet


#: The options of the command being run, for the error handler.
_current = State()


def settle(
    ctx: typer.Context,
    *,
    file: str | None,
    env: Path | None,
    results: Path | None,
    verbose: int,
    quiet: bool,
) -> State:
    """Merge a command's global options with those given before it, and apply them."""
    global _current  # noqa: PLW0603 - one command per process
    before = ctx.obj if isinstance(ctx.obj, State) else State()
    state = State(
        file=file if file is not None else before.file,
        env=env if env is not None else before.env,
        results=results if results is not None else before.results,
        verbose=verbose + before.verbose,
        quiet=quiet or before.quiet,
    )
    _current = state
    if state.results is not None:
        # default_root() reads it: new environments go there, `exp envs` lists it.
        os.environ["EXP_RESULTS"] = str(state.results)
    _configure_logging(state)
    return state


class _ToStderr(logging.Handler):
    """Writes records to whatever ``sys.stderr`` is now, so a step's records reach its log."""

    @property
    def stream(self) -> TextIO:
        """The stream written to (read by the step-log capture)."""
        return sys.stderr

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging's convention: report, never raise
            self.handleError(record)


def _configure_logging(state: State) -> None:
    level = logging.DEBUG if state.verbose else logging.WARNING if state.quiet else logging.INFO
    root = logging.getLogger()
    root.setLevel(level)
    # The steps' records are the point; a Dask cluster's start-up chatter is not.
    # Dask reads its logging levels from the environment when it is imported
    # (later, by the Dask executor), in this process and in its workers.
    if not state.verbose:
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    if not any(isinstance(h, _ToStderr) for h in root.handlers):
        handler = _ToStderr()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)


# -- errors ---------------------------------------------------------------------


class ExpGroup(TyperGroup):
    """The ``exp`` group: turns errors into one line and an exit status (DESIGN section 7)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """Parse the global options, converting plain values without pydantic."""
        install(self.get_params(ctx))
        return super().parse_args(ctx, args)

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        """The command to run, its plain options converted without pydantic."""
        name, command, rest = super().resolve_command(ctx, args)
        if command is not None:
            # Its context inherits the help option's names from this one.
            install(command.get_params(ctx))
        return name, command, rest

    def invoke(self, ctx: Any) -> Any:
        """Run the command; an error prints one line (a traceback with ``-v``) and exits."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            print(file=sys.stderr)  # noqa: T201 - end the line where ^C was echoed
            raise typer.Exit(130) from None
        except BrokenPipeError:
            # The reader went away (`exp status | head`): stop quietly, and keep
            # Python from failing again when it flushes stdout at exit.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(1) from None
        except Exception as error:
            # typer's and click's own exceptions (usage errors, exits) are theirs to show.
            if type(error).__module__.split(".")[0] in ("typer", "click"):
                raise
            raise typer.Exit(report_error(error)) from None


def report_error(error: BaseException) -> int:
    """Print ``error`` for a person and return the exit status it calls for."""
    if _current.verbose:
        import traceback

        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    if isinstance(error, ExpkitError):
        message, code = str(error), type(error).exit_code
    else:
        message, code = f"{type(error).__name__}: {error}", 2
    lines = message.strip().splitlines() or [type(error).__name__]
    line = lines[0]
    if not _current.verbose and (len(lines) > 1 or not isinstance(error, ExpkitError)):
        line += " (-v shows more)"
    typer.secho(f"exp: error: {line}", err=True, fg="red")
    return code


# -- output ---------------------------------------------------------------------


def is_terminal() -> bool:
    """Whether stdout is a terminal that takes colours and a live display."""
    stream = sys.stdout
    return (
        stream is not None
        and stream.isatty()
        and os.environ.get("TERM", "") != "dumb"
        and "NO_COLOR" not in os.environ
    )


#: Rich styles of the statuses.
STATUS_STYLES = {
    "pending": "dim",
    "waiting": "dim",
    "running": "cyan",
    "done": "green",
    "failed": "bold red",
    "skipped": "yellow",
    "cancelled": "magenta",
    "interrupted": "bold yellow",
    "run": "cyan",
    "skip": "dim",
}


def print_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    styled: int | None = None,
    title: str | None = None,
) -> None:
    """A table: drawn with rich on a terminal, plain columns otherwise.

    Column ``styled`` holds statuses or actions, coloured on a terminal.
    """
    if not is_terminal():
        from expkit._tables import text_table

        if title:
            print(title)  # noqa: T201 - the command's output
        print(text_table(header, rows))  # noqa: T201
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(*header, title=title, title_justify="left", box=None, header_style="bold")
    for row in rows:
        cells = [
            Text(cell, style=STATUS_STYLES.get(cell, "")) if i == styled else Text(cell)
            for i, cell in enumerate(row)
        ]
        table.add_row(*cells)
    Console().print(table)


def print_json(value: Any) -> None:
    """``value`` as indented JSON; what JSON cannot hold is written as its repr."""
    import json

    print(json.dumps(value, indent=2, default=repr, ensure_ascii=False))  # noqa: T201


def status_word(status: Status) -> str:
    """A status as shown in tables: ``done``, ``failed``..."""
    return str(status.value)


# -- environments ------------------------------------------------------------------


def env_exists(path: Path) -> bool:
    """Whether ``path`` (a directory, its ``env`` file, or a link to either) holds one."""
    return path.is_file() or (path / "env").is_file()


def open_env(state: State, *, required: bool = True) -> Environment | None:
    """The environment of ``--env``, else ``./current``; ``None`` if none and not ``required``."""
    from expkit import Environment, NoEnvironmentError
    from expkit._paths import CURRENT_LINK

    where = state.env if state.env is not None else Path(CURRENT_LINK)
    if not env_exists(where):
        if not required:
            return None
        hint = (
            "`exp run` makes one; `exp envs` lists those under the results directory, "
            "`exp use ENV` selects one"
        )
        if state.env is None:
            raise NoEnvironmentError(where.absolute(), f"no ./current link here; {hint}")
        raise NoEnvironmentError(state.env, hint)
    return Environment.load(where)


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it is under it, else absolute."""
    absolute = path.absolute()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)
