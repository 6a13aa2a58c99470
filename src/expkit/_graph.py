"""The step graph: targets, their prerequisites, cycles, and sweep instances."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from ._errors import CycleError, UnknownStepError
from ._instances import grid_points, instance_name, parse_selector, selects, step_done
from ._typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from ._steps import StepsMixin
    from ._task import Task

__all__ = ["NO_POINT", "Node", "build_graph", "check_acyclic", "leaves", "resolve_step"]


class Node(NamedTuple):
    """One thing to run: a plain step, or one instance of a sweep.

    A named tuple: a plan makes ten thousand of these, and they are cheap.
    """

    name: str
    step: Task[Any, Any]
    point: Mapping[str, Any]
    #: The instances this one waits for.
    requires: tuple[str, ...]
    #: A sweep whose grid callable cannot be evaluated yet (its data is missing).
    deferred: bool = False


#: The point of every plain step's node (a sweep's nodes each have their own).
NO_POINT: Mapping[str, Any] = {}


class _Deferred(Exception):  # noqa: N818 - a signal, not an error
    """This sweep's grid is read once its prerequisites are done."""


def resolve_step(name: str, registry: Mapping[str, Task[Any, Any]]) -> Task[Any, Any]:
    """The step called ``name`` (instance selectors allowed); :class:`UnknownStepError` if none."""
    step, _ = parse_selector(name)
    if step not in registry:
        raise UnknownStepError(name, registry)
    return registry[step]


def leaves(registry: Mapping[str, Task[Any, Any]]) -> list[Task[Any, Any]]:
    """The steps no other step requires, in declaration order."""
    required = {name for step in registry.values() for name in step.options.requires}
    return [step for name, step in registry.items() if name not in required]


def _requires(
    step: Task[Any, Any], registry: Mapping[str, Task[Any, Any]], *, lenient: bool
) -> list[Task[Any, Any]]:
    found = []
    for name in step.options.requires:
        if name in registry:
            found.append(registry[name])
        elif not lenient:
            raise UnknownStepError(name, registry)
    return found


def _closure(
    targets: Sequence[Task[Any, Any]],
    registry: Mapping[str, Task[Any, Any]],
    *,
    lenient: bool = False,
) -> list[Task[Any, Any]]:
    """The targets and all their prerequisites, each after what it requires.

    Iterative depth-first search, so a long chain of steps cannot overflow
    the stack. ``lenient`` skips names not declared yet (at decoration time).
    """
    order: list[Task[Any, Any]] = []
    done: set[str] = set()
    for target in targets:
        if target.name in done:
            continue
        stack = [(target, iter(target.options.requires))]
        on_path = {target.name}
        while stack:
            step, pending = stack[-1]
            for name in pending:
                if name in done:
                    continue
                if name in on_path:
                    names = [s.name for s, _ in stack]
                    raise CycleError([*names[names.index(name) :], name])
                found = registry.get(name)
                if found is None:
                    if lenient:
                        continue
                    raise UnknownStepError(name, registry)
                on_path.add(name)
                stack.append((found, iter(found.options.requires)))
                break
            else:
                stack.pop()
                on_path.discard(step.name)
                done.add(step.name)
                order.append(step)
    return order


def check_acyclic(step: Task[Any, Any], registry: Mapping[str, Task[Any, Any]]) -> None:
    """Raise :class:`CycleError` if ``step`` depends on itself through declared steps."""
    _closure([step], registry, lenient=True)


def _targets(
    targets: Iterable[Task[Any, Any] | str], registry: Mapping[str, Task[Any, Any]]
) -> tuple[list[Task[Any, Any]], dict[str, list[dict[str, str]] | None]]:
    """The target steps, and the instance selectors of each (``None``: all instances)."""
    wanted: dict[str, list[dict[str, str]] | None] = {}
    roots: list[Task[Any, Any]] = []
    for target in targets:
        if isinstance(target, str):
            step = resolve_step(target, registry)
            selector = parse_selector(target)[1]
        else:
            step, selector = target, {}
            if registry.get(step.name) is not step:
                raise UnknownStepError(step.name, registry)
        if step.name not in wanted:
            roots.append(step)
            wanted[step.name] = []
        chosen = wanted[step.name]
        if not selector:
            wanted[step.name] = None
        elif chosen is not None:
            chosen.append(selector)
    return roots, wanted


def _expand_requires(
    required: tuple[str, ...], members: Mapping[str, list[str]]
) -> tuple[str, ...]:
    """The nodes behind required steps: a sweep's instances, or the plain step itself."""
    if members and any(req in members for req in required):
        return tuple(name for req in required for name in members.get(req, (req,)))
    return required  # plain steps only: each is its own node


def build_graph(
    targets: Iterable[Task[Any, Any] | str],
    registry: Mapping[str, Task[Any, Any]],
    env: StepsMixin | None,
    defer: Collection[str] = (),
) -> dict[str, Node]:
    """The nodes needed for ``targets``, in an order that respects the graph.

    A target naming a sweep means all its instances; ``step[k=v]`` only
    those matching. Prerequisites are always included whole. Sweeps named
    in ``defer`` stay one deferred node: their grid is read later.
    """
    roots, wanted = _targets(targets, registry)
    nodes: dict[str, Node] = {}
    members: dict[str, list[str]] = {}  # sweep -> names of its nodes (a plain step is its node)
    steps = _closure(roots, registry)
    # A prerequisite of another step is needed whole, whatever a target selected.
    selected = any(wanted.values())
    needed_whole = {name for step in steps for name in step.options.requires} if selected else ()
    for step in steps:
        options = step.options
        # The closure checked every name: members has each sweep prerequisite.
        requires = _expand_requires(options.requires, members) if members else options.requires
        if options.grid is None:  # the common case, kept cheap for big graphs
            nodes[step.name] = Node(step.name, step, NO_POINT, requires, False)  # noqa: FBT003
            continue
        try:
            if step.name in defer:
                raise _Deferred  # noqa: TRY301 - one path for both reasons to defer
            points = grid_points(step, env)
        except _Deferred:
            nodes[step.name] = Node(step.name, step, {}, requires, deferred=True)
            members[step.name] = [step.name]
            continue
        except Exception:
            # A grid callable may need data that upstream steps make: expanded
            # once they are done. If they are, its error is a real one.
            upstream = _requires(step, registry, lenient=False)
            if (
                not callable(step.options.grid)
                or not upstream
                or (env is not None and all(step_done(env, req) for req in upstream))
            ):
                raise
            nodes[step.name] = Node(step.name, step, {}, requires, deferred=True)
            members[step.name] = [step.name]
            continue
        selectors = None if step.name in needed_whole else wanted.get(step.name)
        names = []
        for point in points:
            if selectors and not any(selects(s, point) for s in selectors):
                continue
            name = instance_name(step.name, point)
            nodes[name] = Node(name, step, point, requires)
            names.append(name)
        if selectors and not names:
            raise UnknownStepError(
                f"{step.name}[{','.join(f'{k}={v}' for s in selectors for k, v in s.items())}]",
                [instance_name(step.name, p) for p in points],
            )
        members[step.name] = names
    return nodes
