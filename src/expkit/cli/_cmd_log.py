"""``exp log``: what a step printed and logged, kept in ``logs/<step>.log``."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from ._common import (
    EnvOption,
    FileOption,
    QuietOption,
    ResultsOption,
    VerboseOption,
    open_env,
    settle,
)
from ._complete import complete_step

__all__ = ["log"]


def log(
    ctx: typer.Context,
    *,
    step: Annotated[
        str,
        typer.Argument(
            metavar="STEP",
            help="A step, or a sweep instance ('bench[rate=10]'); a sweep shows all its instances.",
            autocompletion=complete_step,
        ),
    ],
    every: Annotated[
        bool,
        typer.Option("--all", help="Every run of the step, not only the last one."),
    ] = False,
    file: FileOption = None,
    env: EnvOption = None,
    results: ResultsOption = None,
    verbose: VerboseOption = 0,
    quiet: QuietOption = False,
) -> None:
    """Print a step's captured output: its stdout, stderr and logging records."""
    from expkit import UnknownStepError
    from expkit._capture import log_path
    from expkit._task import registry

    from ._cmd_reset import _matching
    from ._experiment import load_experiment

    state = settle(ctx, file=file, env=env, results=results, verbose=verbose, quiet=quiet)
    environment = open_env(state)
    assert environment is not None  # noqa: S101 - required=True
    records = environment.steps
    names = _matching(step, records)
    if not names:
        known = load_experiment(state.file, required=False) is not None and step in registry
        if not known and not log_path(environment.resultdir, step).is_file():
            raise UnknownStepError(step, [*records, *registry])
        names = [step]
    shown = 0
    for name in names:
        path = log_path(environment.resultdir, name)
        if not path.is_file():
            continue
        if len(names) > 1:
            print(f"==> {name} <==", flush=True)  # noqa: T201
        sys.stdout.write(_last_run(path) if not every else path.read_text(errors="replace"))
        shown += 1
    if not shown:
        typer.echo(
            f"exp: no output captured for {step!r}: it printed nothing, or never ran", err=True
        )


def _last_run(path: Path) -> str:
    """The log from the first attempt of the last run of the step (retries included)."""
    from expkit._capture import MARKER

    lines = path.read_text(errors="replace").splitlines(keepends=True)
    start = 0
    for i, line in enumerate(lines):
        if line.startswith(MARKER) and ", attempt 1, " in line:
            start = i
    return "".join(lines[start:])
