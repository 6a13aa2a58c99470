"""The typer application behind ``exp``: the global options and the commands.

Each command lives in its own module (``_cmd_<name>.py``), which imports
only typer at module level: ``exp --help`` reads every command's options but
loads neither the planner, rich, YAML nor the experiment.
"""

from __future__ import annotations

import typer

from ._cmd_envs import envs, use
from ._cmd_graph import graph
from ._cmd_log import log
from ._cmd_plan import plan
from ._cmd_reset import reset
from ._cmd_run import run
from ._cmd_show import show
from ._cmd_status import status
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

app = typer.Typer(
    name="exp",
    cls=ExpGroup,
    no_args_is_help=True,
    add_completion=True,
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


app.command("run")(run)
app.command("plan")(plan)
app.command("status")(status)
app.command("graph")(graph)
app.command("envs")(envs)
app.command("use")(use)
app.command("show")(show)
app.command("reset")(reset)
app.command("log")(log)


@app.command()
def version() -> None:
    """Print expkit's version."""
    from expkit import __version__

    typer.echo(__version__)
