"""The planner's decisions and reasons, graph checks, sweeps naming, exports and reports."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from expkit import (
    CycleError,
    Environment,
    RunFailedError,
    Status,
    UnknownStepError,
    make,
    plan,
    task,
)
from expkit._process import current_owner
from expkit._records import Owner
from tests.helpers import run_python


def _actions(p: Any) -> dict[str, tuple[str, str]]:
    return {entry.name: (entry.action, entry.reason) for entry in p}


def test_plan_without_environment_is_never_run_in_graph_order() -> None:
    """Plan without environment is never run in graph order."""

    @task
    def a(env: Any) -> None: ...

    @task(requires=[a])
    def c(env: Any) -> None: ...

    @task(requires=["c", a])
    def b(env: Any) -> None: ...

    p = plan()
    assert [e.name for e in p] == ["a", "c", "b"]
    assert {e.reason for e in p} == {"never run"}
    assert p["b"].requires == ("c", "a")
    assert p.to_run == ["a", "c", "b"]
    assert not Path("current").exists()  # planning writes nothing
    assert str(p).splitlines()[0].split() == ["step", "action", "reason"]


def test_reasons_for_each_rule() -> None:
    """Reasons for each rule."""

    @task
    def a(env: Any, size: int = 1) -> None:
        env["a"] = size

    @task(requires=[a])
    def b(env: Any) -> None:
        if "fail" in os.environ.get("PLAN_TEST", ""):
            msg = "bad input"
            raise ValueError(msg)

    make(b, env="e", new=True)
    assert _actions(plan(b, env="e")) == {"a": ("skip", "up to date"), "b": ("skip", "up to date")}
    assert _actions(plan(b, env="e", params={"a": {"size": 2}}))["a"] == ("run", "params changed")
    assert _actions(plan(b, env="e", params={"a": {"size": 2}}))["b"] == (
        "run",
        "upstream 'a' runs again",
    )
    assert _actions(plan(b, env="e", force=["b"])) == {
        "a": ("skip", "up to date"),
        "b": ("run", "forced"),
    }
    # valjean's rule: a prerequisite that finished after the step started.
    a(env="e")
    assert _actions(plan(b, env="e"))["b"] == ("run", "upstream 'a' finished after this step ran")
    os.environ["PLAN_TEST"] = "fail"
    try:
        make(b, env="e", check=False)
    finally:
        del os.environ["PLAN_TEST"]
    action, reason = _actions(plan(b, env="e"))["b"]
    assert action == "run"
    assert reason.startswith("failed at ")
    assert reason.endswith("(ValueError: bad input)")


def test_interrupted_and_cancelled_reasons() -> None:
    """Interrupted and cancelled reasons."""

    @task
    def a(env: Any) -> None: ...

    @task
    def b(env: Any) -> None: ...

    env = Environment.create(".", "e", symlink=False)
    dead = Owner(host=current_owner().host, pid=999_999, started=None)

    def put(_changed: set[str]) -> None:
        from expkit import StepRecord

        env._put_record(StepRecord("a", Status.RUNNING, owner=dead))
        env._put_record(StepRecord("b", Status.CANCELLED))

    env._commit(before=put)
    reasons = _actions(plan(env="e"))
    assert reasons["a"] == ("run", f"interrupted (pid 999999 on host {dead.host} died)")
    assert reasons["b"] == ("run", "cancelled")


def test_code_change_is_shown_and_rerun_only_on_request(tmp_path: Path) -> None:
    """Fingerprints come from the source: a fresh process sees the same; an edit is seen."""
    source = tmp_path / "exp.py"

    def write(body: str, *, rerun: bool) -> None:
        source.write_text(
            "from expkit import task\n"
            f"@task(rerun_on_change={rerun})\n"
            "def step(env):\n"
            "    '''Docstrings and formatting do not count.'''\n"
            f"    {body}\n"
        )

    run = f"""
        import sys, json
        sys.path.insert(0, {str(tmp_path)!r})
        import exp
        from expkit import make, plan
        print(json.dumps([[e.action, e.reason] for e in plan(env="e")]))
        make(env="e")
    """
    Environment.create(".", "e", symlink=False)
    write('env["x"] = 1', rerun=False)
    assert run_python(run).stdout.strip() == '[["run", "never run"]]'
    write('env["x"]   =   1  # same code', rerun=False)
    assert run_python(run).stdout.strip() == '[["skip", "up to date"]]'
    write('env["x"] = 2', rerun=False)
    out = run_python(run).stdout.strip()
    assert out == '[["skip", "code changed (kept: rerun_on_change is off)"]]'
    write('env["x"] = 2', rerun=True)
    assert run_python(run).stdout.strip() == '[["run", "code changed"]]'
    assert Environment.load("e")["x"] == 2


def test_cycle_is_refused_at_decoration_naming_it() -> None:
    """Cycle is refused at decoration naming it."""

    @task(requires=["c"])
    def a(env: Any) -> None: ...

    @task(requires=[a])
    def b(env: Any) -> None: ...

    with pytest.raises(CycleError) as caught:

        @task(requires=[b])
        def c(env: Any) -> None: ...

    assert caught.value.cycle == ("c", "b", "a", "c")
    assert "c -> b -> a -> c" in str(caught.value)
    assert isinstance(caught.value, ValueError)
    # The registry is left as it was: fixing the cell and re-running works.
    from expkit._task import registry

    assert "c" not in registry

    @task  # type: ignore[no-redef] # the cell, fixed and run again
    def c(env: Any) -> None: ...

    assert plan(b).to_run == ["c", "a", "b"]


def test_declaring_the_same_steps_again_walks_no_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    """A notebook cell run again re-declares its steps without a cycle check each: no n^2."""
    from expkit import _graph, _task

    checked: list[str] = []
    real_check = _graph.check_acyclic

    def counting_check(step: Any, registry: Any) -> None:
        checked.append(step.name)
        real_check(step, registry)

    monkeypatch.setattr(_task, "check_acyclic", counting_check)

    def noop() -> None: ...

    def cell() -> None:
        # Last step first: each step is required before it is declared.
        for i in reversed(range(30)):
            task(name=f"chain{i}", requires=[f"chain{i - 1}"] if i else [])(noop)

    cell()
    assert len(checked) == 29  # every step that some declared step requires
    checked.clear()
    cell()
    assert checked == []  # the same edges: nothing to check
    assert plan("chain29").to_run == [f"chain{i}" for i in range(30)]
    # A changed prerequisite is still checked, and a cycle still refused.
    with pytest.raises(CycleError) as caught:
        task(name="chain0", requires=["chain29"])(noop)
    assert checked == ["chain0"]
    assert caught.value.cycle[0] == caught.value.cycle[-1] == "chain0"
    assert len(caught.value.cycle) == 31
    assert plan("chain29").to_run == [f"chain{i}" for i in range(30)]


def test_unknown_step_suggests_close_names() -> None:
    """Unknown step suggests close names."""

    @task
    def deploy(env: Any) -> None: ...

    with pytest.raises(UnknownStepError) as caught:
        plan("deplyo")
    assert caught.value.suggestions == ("deploy",)
    assert "did you mean 'deploy'" in str(caught.value)
    with pytest.raises(UnknownStepError):
        plan(force=["nothing"])
    with pytest.raises(UnknownStepError):
        plan(params={"nothing": {"x": 1}})

    @task(requires=["missing"])
    def later(env: Any) -> None: ...

    with pytest.raises(UnknownStepError, match="missing"):
        plan(later)


def test_params_are_checked_against_the_signature() -> None:
    """Params are checked against the signature."""

    @task
    def train(env: Any, epochs: int) -> None: ...

    with pytest.raises(TypeError, match=r"needs a value for 'epochs'.*params=\{'train'"):
        plan(train)
    with pytest.raises(TypeError, match="takes no parameter 'epoch'"):
        plan(train, params={"train": {"epoch": 3}})
    assert plan(train, params={"train": {"epochs": 3}})["train"].params == {"epochs": 3}


def test_sweep_instances_names_order_and_selectors() -> None:
    """Sweep instances names order and selectors."""

    @task(grid={"rate": [10, 100], "seed": range(2)})
    def bench(env: Any, rate: int, seed: int, label: str = "x") -> int:
        return rate + seed

    @task(requires=[bench])
    def analyse(env: Any) -> None: ...

    names = [e.name for e in plan(bench)]
    assert names == [
        "bench[rate=10,seed=0]",
        "bench[rate=10,seed=1]",
        "bench[rate=100,seed=0]",
        "bench[rate=100,seed=1]",
    ]
    assert [e.name for e in plan("bench[rate=100]")] == names[2:]
    assert [e.name for e in plan("bench[rate=100,seed=1]")] == names[3:]
    # A downstream step waits for every instance, whatever the target selected.
    assert plan("bench[rate=10]", analyse)["analyse"].requires == tuple(names)
    with pytest.raises(UnknownStepError, match="rate=5"):
        plan("bench[rate=5]")
    assert plan(bench, params={"bench[seed=1]": {"label": "y"}})[names[1]].params == {
        "rate": 10,
        "seed": 1,
        "label": "y",
    }


def test_sweep_grid_keys_must_be_parameters() -> None:
    """Sweep grid keys must be parameters."""
    with pytest.raises(TypeError, match="grid key 'rat' is not a parameter"):

        @task(grid={"rat": [1]})
        def bench(env: Any, rate: int) -> None: ...


def test_only_failed_instances_rerun_and_results_in_one_call() -> None:
    """Only failed instances rerun and results in one call."""
    calls = Path("calls").absolute()

    @task(grid={"x": [1, 2, 3]})
    def square(env: Any, x: int) -> int:
        with calls.open("a") as handle:
            handle.write(f"{x}\n")
        if x == 2 and not Path("fixed").exists():
            raise ValueError
        return x * x

    with pytest.raises(RunFailedError):
        make(square, env="e", new=True)
    assert plan(square, env="e").to_run == ["square[x=2]"]
    Path("fixed").touch()
    assert make(square, env="e").ran == ["square[x=2]"]
    assert calls.read_text().split() == ["1", "2", "3", "2"]
    env = Environment.load("e")
    assert env.results(square) == {"square[x=1]": 1, "square[x=2]": 4, "square[x=3]": 9}


def test_results_of_a_step_follow_its_grid_as_declared_now() -> None:
    """A narrowed grid: ``env.results(step)`` leaves out the old points, by name it keeps all."""

    def declare(values: list[int]) -> Any:
        @task(name="square", grid={"x": values})
        def square(x: int) -> int:
            return x * x

        return square

    assert make(declare([1, 2, 3]), env="e", new=True).ok
    narrowed = declare([1, 3])
    assert make(narrowed, env="e").ran == []
    env = Environment.load("e")
    assert env.results(narrowed) == {"square[x=1]": 1, "square[x=3]": 9}
    assert env.results("square") == {"square[x=1]": 1, "square[x=2]": 4, "square[x=3]": 9}
    widened = declare([1, 3, 4])
    assert make(widened, env="e").ran == ["square[x=4]"]
    assert Environment.load("e").results(widened) == {
        "square[x=1]": 1,
        "square[x=3]": 9,
        "square[x=4]": 16,
    }


def test_callable_grid_reads_upstream_data() -> None:
    """Callable grid reads upstream data."""

    @task
    def provision(env: Any) -> None:
        env["nodes"] = ["n1", "n2"]

    @task(requires=[provision], grid=lambda env: [{"node": n} for n in env["nodes"]])
    def install(env: Any, node: str) -> str:
        return f"installed on {node}"

    @task(requires=[install])
    def check(env: Any) -> None:
        env["checked"] = sorted(env.results("install"))

    p = plan(check)
    assert (
        p["install"].reason == "a sweep whose instances are known once its prerequisites are done"
    )
    report = make(check, env="e", new=True)
    assert report.ran == ["provision", "install[node=n1]", "install[node=n2]", "check"]
    assert Environment.load("e")["checked"] == ["install[node=n1]", "install[node=n2]"]
    assert make(check, env="e").ran == []
    # Its points depend on data: given the step, every instance on record counts.
    assert Environment.load("e").results(install) == {
        "install[node=n1]": "installed on n1",
        "install[node=n2]": "installed on n2",
    }


def test_direct_call_of_a_sweep_instance_and_prerequisite_check() -> None:
    """Direct call of a sweep instance and prerequisite check."""

    @task(grid={"x": [1, 2]})
    def part(env: Any, x: int) -> int:
        return x

    @task(requires=[part])
    def total(env: Any) -> int:
        return sum(env.results("part").values())

    env = Environment.create(".", "e", symlink=False)
    part(env=env, x=1)
    assert env.steps["part[x=1]"].status is Status.DONE
    from expkit import PrerequisiteError

    with pytest.raises(PrerequisiteError):
        total(env=env)
    part(env=env, x=2)
    assert total(env=env) == 3
    assert make(total, env=env).ran == []


def test_check_raises_with_the_report_and_new_starts_fresh() -> None:
    """Check raises with the report and new starts fresh."""

    @task
    def boom(env: Any) -> None:
        raise KeyError("k")

    with pytest.raises(RunFailedError) as caught:
        make(boom, new=True)
    report = caught.value.report
    assert not report.ok
    assert report.failed == ["boom"]
    assert "boom" in str(report)
    assert "1 failed" in report.summary()
    assert caught.value.exit_code == 1
    first = Path("current").resolve()
    report = make(boom, new=True, check=False)
    assert Path("current").resolve() != first
    assert report.counts[Status.FAILED] == 1
    assert pickle.loads(pickle.dumps(caught.value)).report.failed == ["boom"]


def test_task_make_and_make_without_env_creates_one() -> None:
    """Task make and make without env creates one."""

    @task
    def hello(env: Any) -> str:
        env["hello"] = "world"
        return "hi"

    assert not Path("current").exists()
    report = hello.make()
    assert report.ok
    assert Environment.load()["hello"] == "world"
    assert hello.make().ran == []  # ./current is used the second time


def test_graph_exports_are_deterministic_and_coloured() -> None:
    """Graph exports are deterministic and coloured."""

    @task
    def a(env: Any) -> None: ...

    @task(requires=[a], grid={"n": [1, 2]})
    def b(env: Any, n: int) -> None: ...

    make(a, env="e", new=True)
    p = plan(b, env="e")
    dot = p.graph("dot")
    assert dot == plan(b, env="e").graph("dot")
    assert '"a" [label="a\\ndone", fillcolor="#a1d99b"];' in dot
    assert '"a" -> "b[n=1]";' in dot
    mermaid = p.graph("mermaid")
    assert mermaid.startswith("flowchart LR\n")
    assert "s0 --> s1" in mermaid
    assert "classDef done fill:#a1d99b" in mermaid
    assert p.graph("ascii") == "a [done]\n|-- b[n=1] [pending]\n`-- b[n=2] [pending]\n"
    with pytest.raises(ValueError, match="unknown graph format"):
        p.graph("png")


def test_report_and_plan_render_as_html() -> None:
    """Report and plan render as html."""

    @task
    def a(env: Any) -> None: ...

    report = make(a, env="e", new=True)
    assert "<table>" in report._repr_html_()
    assert "a" in plan(a, env="e")._repr_html_()
    assert "<b>Plan</b>: 0 to run, 1 to skip" in plan(a, env="e")._repr_html_()
    # Jupyter stores the text form too: it stays one line however big the run.
    assert repr(report) == f"<RunReport: {report.summary()}>"
    assert "\n" not in repr(report)
    assert "<b>Plan</b>: 1 to run, 0 to skip" in plan(a, env="e", force=[a])._repr_html_()
