"""``exp reset``: mark steps PENDING, so that the next run runs them again."""

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._common import (
    EnvOption,
    FileOption,
    QuietOption,
    ResultsOption,
    VerboseOption,
    open_env,
    settle,
    shown_path,
)
from ._complete import complete_step

if TYPE_CHECKING:
    from expkit import Task

__all__ = ["reset"]


def reset(
    ctx: typer.Context,
    *,
    steps: Annotated[
        list[str],
        typer.Argument(
            metavar="STEP",
            help="Steps to reset; a sweep's name resets all its instances.",
            autocompletion=complete_step,
        ),
    ],
    downstream: Annotated[
        bool,
        typer.Option("--downstream", help="Also reset every step that depends on them."),
    ] = False,
    file: FileOption = None,
    env: EnvOption = None,
    results: ResultsOption = None,
    verbose: VerboseOption = 0,
    quiet: QuietOption = False,
) -> None:
    """Mark steps PENDING again: the next `exp run` runs them (their data is kept)."""
    from expkit import StepRunningError, UnknownStepError
    from expkit._process import is_alive
    from expkit._task import registry

    from ._experiment import load_experiment

    state = settle(ctx, file=file, env=env, results=results, verbose=verbose, quiet=quiet)
    environment = open_env(state)
    assert environment is not None  # noqa: S101 - required=True
    # --downstream needs the experiment: only it knows what depends on what.
    loaded = load_experiment(state.file, required=downstream) is not None
    records = environment.steps
    chosen: list[str] = []
    for name in steps:
        found = _matching(name, records)
        if not found and not (loaded and _base(name) in registry):
            raise UnknownStepError(name, [*records, *(registry if loaded else ())])
        chosen += found
    if downstream:
        below = _dependents({_base(name) for name in steps}, registry)
        chosen += [name for step in below for name in _matching(step, records)]
    chosen = list(dict.fromkeys(chosen))
    for name in chosen:
        record = records[name]
        owner = record.owner
        if record.status.value == "running" and owner is not None and is_alive(owner):
            raise StepRunningError(name, owner.host, owner.pid)
    if not chosen:
        print("nothing to reset: those steps never ran")  # noqa: T201
        return
    for name in chosen:
        environment.set_pending(name)
    environment.dump()
    if not state.quiet:
        where = shown_path(environment.resultdir)
        print(f"reset to pending in {where}: {', '.join(chosen)}")  # noqa: T201


def _base(name: str) -> str:
    from expkit._instances import parse_selector

    return parse_selector(name)[0]


def _matching(name: str, records: Collection[str]) -> list[str]:
    """The records ``name`` stands for: itself, or the instances it selects."""
    from expkit._instances import parse_selector

    if name in records:
        return [name]
    step, wanted = parse_selector(name)
    prefix = f"{step}["
    found = []
    for record in records:
        if record.startswith(prefix):
            _, point = parse_selector(record)
            if all(point.get(key) == value for key, value in wanted.items()):
                found.append(record)
    return found


def _dependents(steps: set[str], registry: "Mapping[str, Task[Any, Any]]") -> list[str]:
    """Every step that requires one of ``steps``, directly or not, in declaration order."""
    below: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, step in registry.items():
            if name in below:
                continue
            if any(r in steps or r in below for r in step.options.requires):
                below.add(name)
                changed = True
    return [name for name in registry if name in below]
