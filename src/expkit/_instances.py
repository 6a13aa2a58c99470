"""Step instances: a sweep's step runs once per point of its grid, as ``step[k=v,...]``."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping

from ._status import Status
from ._typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._steps import StepsMixin
    from ._task import Task

__all__ = ["grid_points", "instance_name", "parse_selector", "selects", "step_done"]


def instance_name(step: str, point: Mapping[str, Any]) -> str:
    """``bench[rate=10,seed=0]``: keys sorted, values written with ``str()``."""
    if not point:
        return step
    inner = ",".join(f"{key}={point[key]}" for key in sorted(point))
    return f"{step}[{inner}]"


def parse_selector(target: str) -> tuple[str, dict[str, str]]:
    """``"bench[rate=10]"`` -> ``("bench", {"rate": "10"})``; a plain name selects everything."""
    if not target.endswith("]") or "[" not in target:
        return target, {}
    step, _, inner = target[:-1].partition("[")
    wanted: dict[str, str] = {}
    for part in filter(None, inner.split(",")):
        key, sep, value = part.partition("=")
        if not sep:
            msg = f"bad instance selector {target!r}: expected step[key=value,...]"
            raise ValueError(msg)
        wanted[key.strip()] = value.strip()
    return step, wanted


def selects(wanted: Mapping[str, str], point: Mapping[str, Any]) -> bool:
    """Whether a grid point matches a selector's ``key=value`` pairs (values compared as text)."""
    return all(key in point and str(point[key]) == value for key, value in wanted.items())


def grid_points(step: Task[Any, Any], env: StepsMixin | None) -> list[dict[str, Any]]:
    """The step's grid points in a stable order; ``[{}]`` for a step without a grid.

    A mapping grid is the product of its values, the first key varying
    slowest; a callable grid is called with the environment.
    """
    grid = step.options.grid
    if grid is None:
        return [{}]
    if callable(grid):
        points = [dict(point) for point in grid(env)]  # type: ignore[arg-type]
    else:
        keys = list(grid)
        values: list[Iterable[Any]] = [list(grid[key]) for key in keys]
        points = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]
    seen: dict[str, dict[str, Any]] = {}
    for point in points:
        name = instance_name(step.name, point)
        if name in seen:
            msg = f"step {step.name!r}: two grid points are both named {name!r}"
            raise ValueError(msg)
        seen[name] = point
    return points


def step_done(env: StepsMixin, step: Task[Any, Any]) -> bool:
    """Whether ``step`` is DONE: every instance of a sweep, the record of a plain step."""
    if step.options.grid is None:
        return env.is_done(step.name)
    if callable(step.options.grid):
        # Its points may depend on data: judge by the instances on record.
        prefix = f"{step.name}["
        found = [r for name, r in env.steps.items() if name.startswith(prefix)]
        return bool(found) and all(r.status is Status.DONE for r in found)
    return all(env.is_done(instance_name(step.name, point)) for point in grid_points(step, None))
