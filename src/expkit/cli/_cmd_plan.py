"""``exp plan``: what a run would do and why; runs nothing, writes nothing."""

from typing import TYPE_CHECKING, Any

import typer

from ._cmd_run import ForceOption, ParamOption, Targets
from ._common import (
    EnvOption,
    FileOption,
    JsonOption,
    QuietOption,
    ResultsOption,
    State,
    VerboseOption,
    open_env,
    print_json,
    print_table,
    settle,
)

if TYPE_CHECKING:
    from expkit import Plan

__all__ = ["plan", "plan_for", "show_plan"]


def plan(
    ctx: typer.Context,
    *,
    targets: Targets = None,
    force: ForceOption = None,
    param: ParamOption = None,
    as_json: JsonOption = False,
    file: FileOption = None,
    env: EnvOption = None,
    results: ResultsOption = None,
    verbose: VerboseOption = 0,
    quiet: QuietOption = False,
) -> None:
    """Show what `exp run` would run or skip, and why. Works without an environment."""
    from ._experiment import load_experiment
    from ._values import parse_params

    state = settle(ctx, file=file, env=env, results=results, verbose=verbose, quiet=quiet)
    load_experiment(state.file)
    params = parse_params(param or ())
    show_plan(state, list(targets or ()), list(force or ()), params, as_json=as_json)


def plan_for(
    state: State,
    targets: list[str],
    forced: list[str],
    params: dict[str, dict[str, Any]],
    *,
    new: bool = False,
) -> "Plan":
    """The plan against the environment, or against nothing on record."""
    from expkit._plan import make_plan
    from expkit._task import registry

    environment = None if new else open_env(state, required=False)
    return make_plan(targets, environment, registry, force=forced, params=params)


def show_plan(
    state: State,
    targets: list[str],
    forced: list[str],
    params: dict[str, dict[str, Any]],
    *,
    as_json: bool,
    new: bool = False,
) -> None:
    """Print the plan as a table, or as JSON."""
    found = plan_for(state, targets, forced, params, new=new)
    if as_json:
        print_json(
            [
                {
                    "name": e.name,
                    "step": e.step,
                    "action": e.action,
                    "reason": e.reason,
                    "status": e.status.value,
                    "params": dict(e.params),
                    "requires": list(e.requires),
                }
                for e in found
            ]
        )
        return
    rows = [(e.name, e.action, e.reason) for e in found]
    runs = len(found.to_run)
    title = f"{runs} to run, {len(found) - runs} to skip"
    print_table(("step", "action", "reason"), rows, styled=1, title=title)
