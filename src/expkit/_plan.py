"""The planner: which steps a run needs, which of them run, and why."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from ._errors import UnknownStepError
from ._fingerprint import params_fingerprint
from ._graph import NO_POINT, Node, build_graph, leaves, resolve_step
from ._instances import parse_selector, selects
from ._status import Status
from ._steps import Brief, StepRecords

if TYPE_CHECKING:
    from ._environment import Environment
    from ._records import StepRecord
    from ._task import Task

__all__ = ["Plan", "PlanEntry", "plan"]

RUN = "run"
SKIP = "skip"

Params = Mapping[str, Mapping[str, Any]]


class PlanEntry(NamedTuple):
    """What the planner decided for one step (or sweep instance), and why.

    A named tuple: a plan makes ten thousand of these, and they are cheap.
    """

    name: str
    #: ``"run"`` or ``"skip"``.
    action: str
    reason: str
    #: The status on record before the run.
    status: Status
    #: The step this entry is (an instance of).
    step: str
    params: Mapping[str, Any]
    requires: tuple[str, ...]
    priority: int = 0

    @property
    def runs(self) -> bool:
        """Whether the step runs."""
        return self.action == RUN


class Plan:
    """The entries of a plan in graph order; prints as a table."""

    def __init__(
        self, entries: list[PlanEntry], nodes: Mapping[str, Node], env: Environment | None
    ) -> None:
        self.entries = {entry.name: entry for entry in entries}
        self.env = env
        self._nodes = nodes

    def __iter__(self) -> Iterator[PlanEntry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, name: str) -> PlanEntry:
        return self.entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    @property
    def to_run(self) -> list[str]:
        """The names of the entries that run, in graph order."""
        return [entry.name for entry in self.entries.values() if entry.runs]

    def __str__(self) -> str:
        from ._tables import text_table

        rows = [(e.name, e.action, e.reason) for e in self.entries.values()]
        return text_table(("step", "action", "reason"), rows) if rows else "(nothing to plan)"

    def __repr__(self) -> str:
        return f"<Plan: {len(self.to_run)} to run, {len(self) - len(self.to_run)} to skip>"

    def _repr_html_(self) -> str:
        from ._html import plan_html  # only notebooks need it

        return plan_html(self)

    def graph(self, fmt: str = "dot") -> str:
        """The plan's graph as ``dot``, ``mermaid`` or ``ascii`` text, coloured by status."""
        from ._export import export

        return export(self, fmt)


def plan(
    *targets: Task[Any, Any] | str,
    env: Environment | str | os.PathLike[str] | None = None,
    force: Iterable[Task[Any, Any] | str] = (),
    params: Params | None = None,
) -> Plan:
    """What a run of ``targets`` would do and why; runs nothing, writes nothing.

    Without ``env``, ``./current`` is read when there is one; with no
    environment at all every step is "never run". No targets: every leaf step.
    """
    from ._task import registry

    environment = _open(env)
    return make_plan(targets, environment, registry, force=force, params=params)


def _open(env: Environment | str | os.PathLike[str] | None) -> Environment | None:
    from ._environment import Environment
    from ._paths import CURRENT_LINK

    if isinstance(env, Environment):
        return env
    if env is None:
        return Environment.load() if os.path.lexists(CURRENT_LINK) else None
    return Environment.load(env)


def make_plan(
    targets: Iterable[Task[Any, Any] | str],
    env: Environment | None,
    registry: Mapping[str, Task[Any, Any]],
    *,
    force: Iterable[Task[Any, Any] | str] = (),
    params: Params | None = None,
) -> Plan:
    """The plan of ``targets`` against ``env`` (``None``: nothing on record)."""
    forced = [f if isinstance(f, str) else f.name for f in force]
    for name in [*forced, *(params or {})]:
        resolve_step(name, registry)  # UnknownStepError for a name no step has
    chosen = list(targets) or leaves(registry)
    # Forced steps run even when no target needs them.
    chosen += [
        name for name in forced if name not in {t if isinstance(t, str) else t.name for t in chosen}
    ]
    # A plan builds many small objects that live on: the cyclic collector
    # would only scan them again and again.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _make_plan(chosen, env, registry, forced, params or {})
    finally:
        if collecting:
            gc.enable()


def _make_plan(
    chosen: list[Task[Any, Any] | str],
    env: Environment | None,
    registry: Mapping[str, Task[Any, Any]],
    forced: list[str],
    params: Params,
) -> Plan:
    nodes = build_graph(chosen, registry, env)
    _check_params_names(params, nodes)
    entries = _decide(nodes, env, forced, params)
    # A sweep whose grid reads data from a step that runs again waits for it:
    # its instances are read from the new data, in a later wave of the run.
    defer: set[str] = set()
    while stale := _stale_sweeps(nodes, entries) - defer:
        defer |= stale
        nodes = build_graph(chosen, registry, env, defer)
        entries = _decide(nodes, env, forced, params)
    return Plan(entries, nodes, env)


def _stale_sweeps(nodes: Mapping[str, Node], entries: list[PlanEntry]) -> set[str]:
    # Only sweep nodes (instances, or one deferred node) have their own point.
    sweeps = [
        node
        for node in nodes.values()
        if node.point is not NO_POINT and callable(node.step.options.grid)
    ]
    if not sweeps:
        return set()
    runs = {entry.name for entry in entries if entry.action == RUN}
    return {
        node.step.name
        for node in sweeps
        if not node.deferred and any(upstream in runs for upstream in node.requires)
    }


def _check_params_names(params: Params, nodes: Mapping[str, Node]) -> None:
    if not params:
        return
    steps = {node.step.name for node in nodes.values()}
    for name in params:
        step, selector = parse_selector(name)
        if step not in steps or (
            selector
            and not any(n.step.name == step and selects(selector, n.point) for n in nodes.values())
        ):
            raise UnknownStepError(name, [*steps, *nodes])


def _decide(
    nodes: Mapping[str, Node], env: Environment | None, forced: list[str], params: Params
) -> list[PlanEntry]:
    records = env._records_snapshot() if env is not None else StepRecords()  # noqa: SLF001
    briefs = records.briefs(nodes)
    force_selectors = [parse_selector(name) for name in forced]
    # Step-wide params first, then those given for matching instances.
    by_selector = sorted(
        ((*parse_selector(key), values) for key, values in params.items()),
        key=lambda item: len(item[1]),
    )
    entries: dict[str, PlanEntry] = {}
    for name, node in nodes.items():
        step = node.step
        if by_selector or node.point or node.deferred or step.defaults_fingerprint is None:
            call_params = _call_params(name, node, by_selector)
        else:
            call_params = step.defaults  # shared, read-only: no copy per node
        brief = briefs.get(name)
        action, reason = _judge(node, brief, call_params, entries, briefs, force_selectors)
        if reason is _NOT_DONE:  # only these few records are decoded whole
            reason = _not_done(records[name])
        entries[name] = PlanEntry(  # positional: ten thousand of these must be cheap
            name,
            action,
            reason,
            _PENDING if brief is None else brief.status,
            step.name,
            call_params,
            node.requires,
            step.priority,
        )
    return list(entries.values())


def _call_params(
    name: str, node: Node, by_selector: list[tuple[str, dict[str, str], Mapping[str, Any]]]
) -> Mapping[str, Any]:
    """The params a node runs with: defaults, params given for it, its grid point."""
    if node.deferred:
        return {}
    step = node.step
    given: dict[str, Any] = {}
    for target, selector, values in by_selector:
        if target == step.name and selects(selector, node.point):
            given.update(values)
    if node.point:
        _check_no_clash(name, step.name, given, node.point)
        given.update(node.point)
    if not given and step.defaults_fingerprint is not None:
        return step.defaults
    return step.params_for(given)


def _check_no_clash(
    name: str, step: str, given: Mapping[str, Any], point: Mapping[str, Any]
) -> None:
    clash = sorted(key for key in given if key in point and given[key] != point[key])
    if clash:
        msg = (
            f"params for {name!r} set {clash[0]!r}, which its grid sets: "
            f"select instances with make('{step}[{clash[0]}=...]') instead"
        )
        raise TypeError(msg)


#: The reason is the record's own story, told by _not_done (only for the steps that need it).
_NOT_DONE = "not done"
# Module constants: ten thousand judgements each read them.
_PENDING, _DONE = Status.PENDING, Status.DONE
_NEVER_RAN = frozenset((Status.PENDING, Status.WAITING))


def _judge(  # noqa: PLR0917 - positional: called once per node of the plan
    node: Node,
    brief: Brief | None,
    call_params: Mapping[str, Any],
    decided: Mapping[str, PlanEntry],
    briefs: Mapping[str, Brief],
    forced: list[tuple[str, dict[str, str]]],
) -> tuple[str, str]:
    """The action and reason for one node; the rules apply in this order."""
    if node.deferred:
        return RUN, "a sweep whose instances are known once its prerequisites are done"
    if forced and any(step == node.step.name and selects(sel, node.point) for step, sel in forced):
        return RUN, "forced"
    if brief is None or brief.status in _NEVER_RAN:
        return RUN, "never run"
    if brief.status is not _DONE:
        return RUN, _NOT_DONE
    return _judge_done(node, brief, call_params, decided, briefs)


def _not_done(record: StepRecord) -> str:
    status, owner = record.status, record.owner
    if status is Status.FAILED:
        error = f" ({record.error.summary()})" if record.error is not None else ""
        return f"failed at {_when(record.ended)}{error}"
    if status is Status.INTERRUPTED:
        who = f" (pid {owner.pid} on host {owner.host} died)" if owner is not None else ""
        return f"interrupted{who}"
    if status is Status.RUNNING:
        who = f" in pid {owner.pid} on host {owner.host}" if owner is not None else ""
        return f"running{who}"
    if status is Status.SKIPPED:
        return "skipped before (a prerequisite had not finished)"
    return str(status.value).lower()  # cancelled


def _judge_done(  # noqa: PLR0911 - one return per re-run rule
    node: Node,
    brief: Brief,
    call_params: Mapping[str, Any],
    decided: Mapping[str, PlanEntry],
    briefs: Mapping[str, Brief],
) -> tuple[str, str]:
    started = brief.started
    for upstream in node.requires:
        if decided[upstream].action == RUN:
            return RUN, f"upstream {upstream!r} runs again"
        done = briefs.get(upstream)
        if done is not None and done.ended and started and done.ended > started:
            return RUN, f"upstream {upstream!r} finished after this step ran"
    stored = brief.fingerprint
    if not stored:
        return SKIP, "up to date (marked done without a fingerprint)"
    # Most steps run with their defaults: their fingerprint is computed once.
    step = node.step
    printed = step.defaults_fingerprint
    if printed is None or (call_params is not step.defaults and call_params != step.defaults):
        printed = params_fingerprint(call_params)
    if stored[16:] != printed:
        return RUN, "params changed"
    if stored[:16] != step.code_fingerprint:
        if step.options.rerun_on_change:
            return RUN, "code changed"
        return SKIP, "code changed (kept: rerun_on_change is off)"
    return SKIP, "up to date"


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "an unknown time"
    local = moment.astimezone()
    if local.date() == datetime.now(local.tzinfo).date():
        return local.strftime("%H:%M")
    return local.strftime("%Y-%m-%d %H:%M")
