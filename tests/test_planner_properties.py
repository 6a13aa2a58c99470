"""Property tests of the planner and ``make`` on random DAGs with random failures.

Each example declares a random acyclic graph of 2-12 steps in a random order
(so declaration order says nothing of the graph), on an environment of its
own. Some steps are sweeps over ``k``: with a grid mapping, or with a grid
callable that needs the data of the step's prerequisites (expanded by ``make``
in a later wave). The steps count their calls and fail on demand: a
:class:`World` says how many of each instance's first attempts raise.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from expkit import Environment, Plan, Status, make, plan, task
from expkit import _task as task_module

SETTINGS = settings(
    max_examples=35,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
#: (executor, jobs)
EXECUTORS = st.sampled_from([("sequential", None), ("threads", 1), ("threads", 3)])
DEFERRED = "a sweep whose instances are known once its prerequisites are done"


class StepFailedError(RuntimeError):
    """What a step raises when the world says it fails."""


@dataclasses.dataclass(frozen=True)
class Dag:
    """A random acyclic graph of steps; ``order`` is topological, ``declared`` is not."""

    order: tuple[str, ...]
    requires: Mapping[str, tuple[str, ...]]
    #: The values of ``k`` for each step that is a sweep.
    grids: Mapping[str, tuple[int, ...]]
    #: Sweeps whose grid is a callable needing their prerequisites' data.
    data_dependent: frozenset[str]
    declared: tuple[str, ...]

    def nodes_of(self, step: str) -> list[str]:
        """The names of the step's instances (the step's own name when it is no sweep)."""
        if step not in self.grids:
            return [step]
        return [f"{step}[k={k}]" for k in self.grids[step]]

    @property
    def nodes(self) -> list[str]:
        """Every instance, in topological order."""
        return [node for step in self.order for node in self.nodes_of(step)]

    @property
    def node_step(self) -> dict[str, str]:
        """Instance -> its step."""
        return {node: step for step in self.order for node in self.nodes_of(step)}

    def node_requires(self, node: str) -> set[str]:
        """The instances ``node`` waits for: every instance of every prerequisite."""
        return {up for req in self.requires[self.node_step[node]] for up in self.nodes_of(req)}

    def ancestors(self, node: str) -> set[str]:
        """Every instance ``node`` needs, transitively."""
        found: set[str] = set()
        todo = list(self.node_requires(node))
        while todo:
            up = todo.pop()
            if up not in found:
                found.add(up)
                todo.extend(self.node_requires(up))
        return found

    def downstream(self, nodes: Iterable[str]) -> set[str]:
        """``nodes`` and every instance that depends on one of them, transitively."""
        found = set(nodes)
        for node in self.nodes:  # topological: prerequisites are settled first
            if self.node_requires(node) & found:
                found.add(node)
        return found

    def entries(self, targets: list[str], done: set[str]) -> dict[str, set[str]]:
        """The entries a plan of ``targets`` holds when ``done`` are DONE, with what each requires.

        A target ``s[k=v]`` selects instances, unless another needed step
        requires ``s``; a data-dependent sweep whose prerequisites are not
        all DONE is one deferred entry named after the step.
        """
        wanted: dict[str, set[str] | None] = {}
        for target in targets:
            step, _, rest = target.partition("[")
            if not rest:
                wanted[step] = None
            elif (chosen := wanted.setdefault(step, set())) is not None:
                chosen.add(target)
        steps: set[str] = set()
        todo = list(
            wanted or [s for s in self.order if not any(s in r for r in self.requires.values())]
        )
        while todo:
            step = todo.pop()
            if step not in steps:
                steps.add(step)
                todo.extend(self.requires[step])
        whole = {req for step in steps for req in self.requires[step]}
        members: dict[str, list[str]] = {}
        found: dict[str, set[str]] = {}
        for step in self.order:
            if step not in steps:
                continue
            requires = {m for req in self.requires[step] for m in members[req]}
            ready = all(n in done for req in self.requires[step] for n in self.nodes_of(req))
            if step in self.data_dependent and not ready:
                members[step] = [step]
            else:
                chosen = None if step in whole else wanted.get(step)
                members[step] = [n for n in self.nodes_of(step) if chosen is None or n in chosen]
            for member in members[step]:
                found[member] = requires
        return found


@st.composite
def dags(draw: st.DrawFn, *, data_dependent: bool = True, max_steps: int = 12) -> Dag:
    """A random DAG; names are a random permutation, and so is the declaration order."""
    n = draw(st.integers(2, max_steps))
    names = [f"s{i}" for i in draw(st.permutations(range(n)))]
    requires: dict[str, tuple[str, ...]] = {}
    for i, name in enumerate(names):
        ups = draw(st.sets(st.integers(0, i - 1), max_size=3)) if i else set()
        requires[name] = tuple(names[j] for j in sorted(ups))
    grids: dict[str, tuple[int, ...]] = {}
    dependent: set[str] = set()
    for name in names:
        kind = draw(st.sampled_from(["plain", "plain", "grid", "callable"]))
        if kind == "plain":
            continue
        grids[name] = tuple(draw(st.lists(st.integers(0, 20), min_size=1, max_size=3, unique=True)))
        if kind == "callable" and data_dependent and requires[name]:
            dependent.add(name)
    declared = tuple(draw(st.permutations(names)))
    return Dag(tuple(names), requires, grids, frozenset(dependent), declared)


def targets_of(dag: Dag, *, selectors: bool = True) -> st.SearchStrategy[list[str]]:
    """Step names, and instances of sweeps with a grid mapping (``s3[k=5]``)."""
    choices = list(dag.order)
    if selectors:
        choices += [
            node
            for node in dag.nodes
            if "[" in node and dag.node_step[node] not in dag.data_dependent
        ]
    return st.lists(st.sampled_from(choices), unique=True, max_size=3)


class World:
    """Counts calls per instance and makes the first ``fail_first[node]`` attempts raise."""

    def __init__(self) -> None:
        """No call yet, no failure."""
        self.calls: dict[str, int] = {}
        self.fail_first: dict[str, int] = {}
        self._lock = threading.Lock()

    def call(self, node: str) -> None:
        """Count a call of ``node``; raise if it is one of its failing attempts."""
        with self._lock:
            count = self.calls[node] = self.calls.get(node, 0) + 1
        if count <= self.fail_first.get(node, 0):
            msg = f"{node} fails on attempt {count}"
            raise StepFailedError(msg)

    def snapshot(self) -> dict[str, int]:
        """Calls so far, per instance."""
        with self._lock:
            return dict(self.calls)

    def ran_since(self, before: Mapping[str, int]) -> set[str]:
        """The instances called since ``before`` was taken."""
        return {node for node, count in self.snapshot().items() if count != before.get(node, 0)}


def _body(world: World, step: str) -> Callable[..., Any]:
    def body(env: Any, k: int | None = None) -> str:
        node = step if k is None else f"{step}[k={k}]"
        world.call(node)
        env[f"out-{node}"] = node
        return node

    return body


def _callable_grid(dag: Dag, step: str) -> Callable[[Any], list[dict[str, int]]]:
    """The step's points, known only from the data its prerequisites' instances write."""
    needs = [f"out-{node}" for req in dag.requires[step] for node in dag.nodes_of(req)]
    values = dag.grids[step]

    def grid(env: Any) -> list[dict[str, int]]:
        missing = [key for key in needs if key not in env]  # no env at all: TypeError
        if missing:
            raise KeyError(missing[0])
        return [{"k": k} for k in values]

    return grid


def declare(dag: Dag, world: World, retries: Mapping[str, int] | None = None) -> str:
    """Register the DAG's steps (registry emptied first); a fresh environment's path."""
    task_module.registry.clear()
    for name in dag.declared:
        grid: Any = None
        if name in dag.data_dependent:
            grid = _callable_grid(dag, name)
        elif name in dag.grids:
            grid = {"k": list(dag.grids[name])}
        task(
            name=name,
            requires=list(dag.requires[name]),
            grid=grid,
            retries=(retries or {}).get(name, 0),
        )(_body(world, name))
    # Hypothesis examples share the test's directory: each gets its own environment.
    path = f"env-{uuid.uuid4().hex}"
    Environment.create(".", path, symlink=False)
    return path


def statuses(path: str) -> dict[str, Status]:
    """Each recorded step's status."""
    return {name: record.status for name, record in Environment.load(path).steps.items()}


def done_nodes(path: str) -> set[str]:
    """The instances DONE in the environment."""
    return {name for name, status in statuses(path).items() if status is Status.DONE}


def assert_respects_graph(dag: Dag, planned: Plan, targets: list[str], done: set[str]) -> None:
    """Every entry after all it requires; the entries and their requirements as the graph says."""
    expected = dag.entries(targets, done)
    position = {entry.name: i for i, entry in enumerate(planned)}
    assert list(position) == [entry.name for entry in planned.entries.values()]
    assert set(position) == set(expected)
    for entry in planned:
        assert set(entry.requires) == expected[entry.name], entry
        assert entry.step == entry.name.partition("[")[0]
        assert entry.action in ("run", "skip")
        for up in entry.requires:
            assert position[up] < position[entry.name], (up, entry.name)
    assert planned.to_run == [entry.name for entry in planned if entry.action == "run"]


@SETTINGS
@given(data=st.data(), dag=dags(), executor=EXECUTORS)
def test_a_plan_respects_the_graph(
    data: st.DataObject, dag: Dag, executor: tuple[str, int | None]
) -> None:
    """Fresh, and after a run with failures: every entry comes after all it requires."""
    world = World()
    path = declare(dag, world)
    targets = data.draw(targets_of(dag), label="targets")
    fresh = plan(*targets, env=path)
    assert_respects_graph(dag, fresh, targets, set())
    for entry in fresh:
        assert entry.action == "run"
        assert entry.reason == (DEFERRED if entry.name in dag.data_dependent else "never run")

    failing = data.draw(st.sets(st.sampled_from(dag.nodes), max_size=3), label="failing")
    world.fail_first = dict.fromkeys(failing, 1)
    name, jobs = executor
    make(*targets, env=path, executor=name, jobs=jobs, check=False)
    other = data.draw(targets_of(dag), label="other targets")
    assert_respects_graph(dag, plan(*other, env=path), other, done_nodes(path))


@SETTINGS
@given(data=st.data(), dag=dags(), executor=EXECUTORS)
def test_make_on_a_finished_plan_runs_nothing(
    data: st.DataObject, dag: Dag, executor: tuple[str, int | None]
) -> None:
    """Everything done: a second make runs nothing, and the plan says "up to date"."""
    world = World()
    path = declare(dag, world)
    targets = data.draw(targets_of(dag), label="targets")
    name, jobs = executor
    first = make(*targets, env=path, executor=name, jobs=jobs)
    needed = set(dag.entries(targets, set(dag.nodes)))
    assert first.ok
    assert set(first.ran) == needed
    assert world.snapshot() == dict.fromkeys(needed, 1)

    again = make(*targets, env=path, executor=name, jobs=jobs)
    assert again.ok
    assert again.ran == []
    assert world.snapshot() == dict.fromkeys(needed, 1)
    assert set(again.steps) == needed
    assert all(outcome.status is Status.DONE for outcome in again)
    finished = plan(*targets, env=path)
    assert {(e.name, e.action, e.reason) for e in finished} == {
        (n, "skip", "up to date") for n in needed
    }


@SETTINGS
@given(data=st.data(), dag=dags(data_dependent=False), executor=EXECUTORS)
def test_after_a_failure_the_plan_holds_the_failed_steps_and_their_downstream(
    data: st.DataObject, dag: Dag, executor: tuple[str, int | None]
) -> None:
    """Failed instances and all downstream of them run next; nothing else does."""
    world = World()
    path = declare(dag, world)
    targets = data.draw(targets_of(dag), label="targets")
    needed = set(dag.entries(targets, set()))
    failing = data.draw(
        st.sets(st.sampled_from(sorted(needed)), min_size=1, max_size=3), label="failing"
    )
    world.fail_first = dict.fromkeys(failing, 1)
    name, jobs = executor
    report = make(*targets, env=path, executor=name, jobs=jobs, check=False)
    assert not report.ok

    bad = dag.downstream(failing) & needed
    # An instance runs unless something it needs, transitively, failed.
    reached = {node for node in needed if not failing & dag.ancestors(node)}
    assert set(world.snapshot()) == reached
    recorded = statuses(path)
    for node in needed:
        if node not in bad:
            expected = Status.DONE
        elif node in reached:
            expected = Status.FAILED
        else:
            expected = Status.SKIPPED
        assert recorded.get(node) is expected, (node, recorded.get(node))
        assert report[node].status is expected
    assert set(report.failed) == bad

    # The next plan: exactly the failed instances and the not-DONE ones downstream.
    again = plan(*targets, env=path)
    assert set(again.to_run) == bad
    for entry in again:
        if recorded[entry.name] is Status.FAILED:
            assert entry.reason.startswith("failed at"), entry
        elif recorded[entry.name] is Status.SKIPPED:
            assert entry.reason == "skipped before (a prerequisite had not finished)", entry
        else:
            assert entry.reason == "up to date", entry
    # A plan of everything adds only the instances no target needed.
    assert set(plan(env=path).to_run) == bad | (set(dag.nodes) - needed)

    world.fail_first = {}
    before = world.snapshot()
    fixed = make(*targets, env=path, executor=name, jobs=jobs)
    assert fixed.ok
    assert fixed.ran == again.to_run
    assert world.ran_since(before) == bad
    assert world.snapshot() == {node: 1 + (node in bad and node in reached) for node in needed}


@dataclasses.dataclass(frozen=True)
class Flaky:
    """A DAG whose instances fail their first ``fail_first[node]`` attempts."""

    dag: Dag
    retries: Mapping[str, int]
    fail_first: Mapping[str, int]


@st.composite
def flaky_dags(draw: st.DrawFn, *, data_dependent: bool) -> Flaky:
    """A random DAG, 0 or 1 retries per step, 0-3 failing first attempts per instance."""
    dag = draw(dags(data_dependent=data_dependent))
    retries = {step: draw(st.integers(0, 1), label=f"retries {step}") for step in dag.order}
    fails = {node: draw(st.integers(0, 3), label=f"fails {node}") for node in dag.nodes}
    return Flaky(dag, retries, fails)


def assert_converges(flaky: Flaky, executor: tuple[str, int | None]) -> None:
    """All DONE after exactly the predicted number of runs; no DONE instance ever runs again."""
    dag = flaky.dag
    world = World()
    path = declare(dag, world, flaky.retries)
    world.fail_first = dict(flaky.fail_first)

    # An instance is first tried in the run that finishes all it requires;
    # from then on it takes ceil((fails + 1) / (retries + 1)) runs.
    first_try: dict[str, int] = {}
    done_in: dict[str, int] = {}
    for node in dag.nodes:
        first_try[node] = max((done_in[up] for up in dag.node_requires(node)), default=1)
        per_run = flaky.retries[dag.node_step[node]] + 1
        done_in[node] = first_try[node] + math.ceil((flaky.fail_first[node] + 1) / per_run) - 1
    last = max(done_in.values())

    name, jobs = executor
    done: set[str] = set()
    for run in range(1, last + 1):
        before = world.snapshot()
        report = make(env=path, executor=name, jobs=jobs, check=False)
        ran = world.ran_since(before)
        assert not ran & done, "a DONE step ran again"
        assert (
            set(report.ran)
            == ran
            == {n for n in dag.nodes if n not in done and first_try[n] <= run}
        )
        for node in ran:
            assert report[node].attempts == world.snapshot()[node] - before.get(node, 0), node
        now = done_nodes(path)
        assert now == {node for node, r in done_in.items() if r <= run}, run
        assert report.ok is (run == last)
        done = now
    assert world.snapshot() == {node: fails + 1 for node, fails in flaky.fail_first.items()}
    assert make(env=path, executor=name, jobs=jobs).ran == []


@SETTINGS
@given(flaky=flaky_dags(data_dependent=False), executor=EXECUTORS)
def test_repeated_make_converges_and_never_reruns_a_done_step(
    flaky: Flaky, executor: tuple[str, int | None]
) -> None:
    """Each instance fails its first ``k`` attempts: all DONE after exactly the predicted run."""
    assert_converges(flaky, executor)


# A failing step next to a data-dependent sweep: the smallest case hypothesis finds.
_FAIL_BESIDE_A_WAVE = Flaky(
    Dag(
        order=("s0", "s1", "s2"),
        requires={"s0": (), "s1": ("s0",), "s2": ()},
        grids={"s1": (0,)},
        data_dependent=frozenset({"s1"}),
        declared=("s0", "s1", "s2"),
    ),
    retries={"s0": 0, "s1": 0, "s2": 0},
    fail_first={"s0": 0, "s1[k=0]": 0, "s2": 1},
)


@SETTINGS
@example(flaky=_FAIL_BESIDE_A_WAVE, executor=("sequential", None))
@given(flaky=flaky_dags(data_dependent=True), executor=EXECUTORS)
def test_repeated_make_converges_with_data_dependent_sweeps(
    flaky: Flaky, executor: tuple[str, int | None]
) -> None:
    """The same property, with sweeps expanded in a later wave of make."""
    assert_converges(flaky, executor)


# -- planner bugs found by the properties above, reduced to their smallest form


def test_a_data_dependent_sweep_is_expanded_after_its_prerequisite_runs_again() -> None:
    """``make`` returning ok must leave nothing to do; here the grid grows when ``source`` re-runs."""
    width = {"n": 1}

    @task
    def source(env: Any) -> None:
        env["ks"] = list(range(width["n"]))

    @task(requires=[source], grid=lambda env: [{"k": k} for k in env["ks"]])
    def sweep(env: Any, k: int) -> int:
        return k

    Environment.create(".", "e", symlink=False)
    assert make(env="e").ran == ["source", "sweep[k=0]"]
    width["n"] = 2
    report = make(env="e", force=["source"])
    assert report.ok
    # Observed: ["source", "sweep[k=0]"]; sweep[k=1] is left "never run" for the next make.
    assert report.ran == ["source", "sweep[k=0]", "sweep[k=1]"]
    assert make(env="e").ran == []


def test_a_failure_skips_a_data_dependent_sweep_and_its_dependents() -> None:
    """A step whose prerequisite fails is SKIPPED (DESIGN section 5), also behind a wave."""

    @task
    def source(env: Any) -> None:
        msg = "boom"
        raise ValueError(msg)

    @task(requires=[source], grid=lambda env: [{"k": k} for k in env["ks"]])
    def sweep(env: Any, k: int) -> None:
        pass

    @task(requires=[sweep])
    def report_step(env: Any) -> None:
        pass

    Environment.create(".", "e", symlink=False)
    report = make(env="e", check=False)
    # Observed: sweep and report_step are PENDING, "waits for the instances of a sweep",
    # with no record; report.failed == ["source"].
    assert {name: o.status for name, o in report.steps.items()} == {
        "source": Status.FAILED,
        "sweep": Status.SKIPPED,
        "report_step": Status.SKIPPED,
    }
    assert report.failed == ["source", "sweep", "report_step"]
    assert statuses("e") == {
        "source": Status.FAILED,
        "sweep": Status.SKIPPED,
        "report_step": Status.SKIPPED,
    }


def test_a_failed_step_does_not_run_again_in_a_later_wave() -> None:
    """A step with ``retries=0`` runs once per make, whatever waves the make takes."""
    calls: list[str] = []

    @task
    def source(env: Any) -> None:
        env["ks"] = [1]

    @task(requires=[source], grid=lambda env: [{"k": k} for k in env["ks"]])
    def sweep(env: Any, k: int) -> None:
        calls.append(f"sweep[k={k}]")

    @task
    def flaky(env: Any) -> None:
        calls.append("flaky")
        msg = "boom"
        raise ValueError(msg)

    Environment.create(".", "e", symlink=False)
    report = make(env="e", check=False)
    assert report["flaky"].status is Status.FAILED
    assert report["flaky"].attempts == 1
    # Observed: ["flaky", "sweep[k=1]", "flaky"].
    assert calls == ["flaky", "sweep[k=1]"]


def test_fail_fast_starts_no_step_after_a_failure_in_a_later_wave() -> None:
    """With fail_fast, no new step starts after a failure (DESIGN section 13)."""
    calls: list[str] = []

    @task
    def source(env: Any) -> None:
        calls.append("source")
        env["ks"] = [1]

    @task(requires=[source], grid=lambda env: [{"k": k} for k in env["ks"]])
    def sweep(env: Any, k: int) -> None:
        calls.append(f"sweep[k={k}]")

    @task
    def flaky(env: Any) -> None:
        calls.append("flaky")
        msg = "boom"
        raise ValueError(msg)

    Environment.create(".", "e", symlink=False)
    make(env="e", check=False, fail_fast=True)
    # Observed: ["source", "flaky", "sweep[k=1]", "flaky"].
    assert calls == ["source", "flaky"]
