"""The behaviour every executor shares: make runs, records, retries, skips and stops alike."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from expkit import Environment, RunFailedError, Status, make, plan, task
from tests.helpers import run_python

EXECUTORS = ["sequential", "threads", "processes"]
PARALLEL = ["threads", "processes"]


@pytest.fixture(params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> str:
    """Each test of this suite runs once per executor."""
    return str(request.param)


def _runs(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _log(path: str, word: str) -> None:
    with open(path, "a") as handle:
        handle.write(word + "\n")


def test_runs_in_graph_order_and_records_everything(executor: str) -> None:
    """Runs in graph order and records everything."""
    log = str(Path("log").absolute())

    @task
    def provision(env: Any, nodes: int = 3) -> int:
        _log(log, "provision")
        env["nodes"] = [f"n{i}" for i in range(nodes)]
        return nodes

    @task(requires=[provision])
    def deploy(env: Any) -> None:
        _log(log, "deploy")
        env["deployed"] = list(env["nodes"])

    @task(requires=[deploy], grid={"rate": [10, 100]})
    def bench(env: Any, rate: int) -> dict[str, int]:
        _log(log, f"bench{rate}")
        return {"rate": rate, "n": len(env["deployed"])}

    report = make(bench, env="e", new=True, executor=executor, jobs=2)
    assert report.ok
    assert report.ran == ["provision", "deploy", "bench[rate=10]", "bench[rate=100]"]
    lines = _runs(Path(log))
    assert lines[:2] == ["provision", "deploy"]
    assert sorted(lines[2:]) == ["bench10", "bench100"]
    env = Environment.load("e")
    assert env["deployed"] == ["n0", "n1", "n2"]
    assert env.results("bench") == {
        "bench[rate=100]": {"rate": 100, "n": 3},
        "bench[rate=10]": {"rate": 10, "n": 3},
    }
    record = env.steps["deploy"]
    assert record.status is Status.DONE
    assert record.reads == {"nodes"}
    assert record.writes == {"deployed"}
    assert env.steps["provision"].result == 3
    assert env.steps["provision"].params == {"nodes": 3}
    # Everything is done: a second run runs nothing.
    again = make(bench, env="e", executor=executor)
    assert again.ran == []
    assert _runs(Path(log)) == lines


def test_each_step_is_running_on_disk_before_its_body(executor: str) -> None:
    """A chain's steps, each claimed in the commit of the step before it, read RUNNING as they run."""
    log = str(Path("log").absolute())
    where = str(Path("e").absolute())

    @task
    def first() -> None:
        _log(log, f"first={Environment.load(where).steps['first'].status.value}")

    @task(requires=[first])
    def second() -> None:
        steps = Environment.load(where).steps
        _log(log, f"second={steps['second'].status.value},{steps['first'].status.value}")

    @task(requires=[second])
    def third() -> None:
        steps = Environment.load(where).steps
        _log(log, f"third={steps['third'].status.value},{steps['second'].status.value}")

    assert make(third, env="e", new=True, executor=executor).ok
    assert _runs(Path(log)) == ["first=running", "second=running,done", "third=running,done"]


def test_failure_skips_dependents_and_keeps_going(executor: str) -> None:
    """Failure skips dependents and keeps going."""
    log = str(Path("log").absolute())

    @task
    def root(env: Any) -> None:
        env["root"] = 1

    @task(requires=[root])
    def broken(env: Any) -> None:
        env["partial"] = "kept"
        _log(log, "broken")
        msg = "disk full"
        raise ValueError(msg)

    @task(requires=[broken])
    def after(env: Any) -> None:
        _log(log, "after")

    @task(requires=[root])
    def independent(env: Any) -> None:
        _log(log, "independent")
        env["independent"] = True

    with pytest.raises(RunFailedError) as caught:
        make(after, independent, env="e", new=True, executor=executor)
    report = caught.value.report
    assert report.steps["broken"].status is Status.FAILED
    assert _error(report.steps["broken"]).summary() == "ValueError: disk full"
    assert report.steps["after"].status is Status.SKIPPED
    assert report.steps["independent"].status is Status.DONE
    assert "after" not in _runs(Path(log))
    env = Environment.load("e")
    assert env["partial"] == "kept"  # a failing step's writes are saved
    assert env.steps["after"].status is Status.SKIPPED
    assert "upstream 'broken' failed" in _error(env.steps["after"]).message
    assert "ValueError: disk full" in _error(env.steps["broken"]).traceback
    # The next plan holds exactly the failed step and what it blocked.
    assert plan(after, independent, env="e").to_run == ["broken", "after"]


def test_fail_fast_starts_nothing_after_a_failure(executor: str) -> None:
    """Fail fast starts nothing after a failure."""
    log = str(Path("log").absolute())

    @task(priority=0)
    def first(env: Any) -> None:
        _log(log, "first")
        raise RuntimeError

    @task(priority=1)
    def second(env: Any) -> None:
        _log(log, "second")

    report = make(
        first, second, env="e", new=True, executor=executor, jobs=1, fail_fast=True, check=False
    )
    assert _runs(Path(log)) == ["first"]
    assert not report.ok
    assert report.steps["second"].ran is False
    assert "second" not in Environment.load("e").steps  # never started: no record


def test_priority_orders_ready_steps(executor: str) -> None:
    """Priority orders ready steps."""
    log = str(Path("log").absolute())
    for name, priority in [("c", 3), ("a", 1), ("b", 2)]:
        task(name=name, priority=priority)(lambda name=name: _log(log, name))
    make(env="e", new=True, executor=executor, jobs=1)
    assert _runs(Path(log)) == ["a", "b", "c"]


def test_retries_then_done(executor: str) -> None:
    """Retries then done."""
    counter = Path("attempts").absolute()

    @task(retries=2)
    def flaky(env: Any) -> str:
        _log(str(counter), "try")
        if len(_runs(counter)) < 3:
            msg = "not yet"
            raise OSError(msg)
        env["ok"] = True
        return "finally"

    report = make(flaky, env="e", new=True, executor=executor)
    assert report.steps["flaky"].attempts == 3
    env = Environment.load("e")
    assert env.steps["flaky"].attempts == 3
    assert env.steps["flaky"].result == "finally"
    assert env["ok"] is True


def test_system_exit_is_recorded_not_lost(executor: str) -> None:
    """System exit is recorded not lost."""

    @task
    def quits(env: Any) -> None:
        env["before"] = 1
        sys.exit(3)

    report = make(quits, env="e", new=True, executor=executor, check=False)
    assert report.steps["quits"].status is Status.FAILED
    env = Environment.load("e")
    assert _error(env.steps["quits"]).type == "SystemExit"
    assert env["before"] == 1


@pytest.mark.parametrize("executor", PARALLEL)
def test_keyboard_interrupt_raised_by_a_step_is_recorded(executor: str) -> None:
    """Keyboard interrupt raised by a step is recorded."""

    @task
    def stops(env: Any) -> None:
        raise KeyboardInterrupt

    @task
    def other(env: Any) -> None:
        env["other"] = 1

    report = make(stops, other, env="e", new=True, executor=executor, check=False)
    assert report.steps["stops"].status is Status.CANCELLED
    assert report.steps["other"].status is Status.DONE
    assert Environment.load("e").steps["stops"].status is Status.CANCELLED


def test_unpicklable_value_fails_the_step_only(executor: str) -> None:
    """Unpicklable value fails the step only."""

    @task
    def bad(env: Any) -> None:
        env["fine"] = 1
        env["lock"] = threading.Lock()

    report = make(bad, env="e", new=True, executor=executor, check=False)
    assert report.steps["bad"].status is Status.FAILED
    assert "lock" in _error(report.steps["bad"]).message
    env = Environment.load("e")
    assert env["fine"] == 1
    assert "lock" not in env


def test_a_step_that_cannot_travel_fails_alone() -> None:
    """A step whose function cannot be pickled for a worker fails; the others run."""
    held = threading.Lock()

    @task
    def stuck(env: Any) -> None:
        with held:  # the closure holds a lock: cloudpickle refuses it
            env["never"] = 1

    @task
    def fine(env: Any) -> None:
        env["fine"] = 1

    report = make(stuck, fine, env="e", new=True, executor="processes", check=False)
    assert report.steps["stuck"].status is Status.FAILED
    assert "lock" in _error(report.steps["stuck"]).message
    assert report.steps["fine"].status is Status.DONE
    assert Environment.load("e")["fine"] == 1


def test_jobs_bounds_parallel_steps(executor: str) -> None:
    """Jobs bounds parallel steps."""
    running = Path("running").absolute()
    running.mkdir()

    parallel = executor != "sequential"

    def body(env: Any, i: int) -> int:
        mine = running / str(i)
        mine.touch()
        # Wait (bounded) for a partner, so parallel executors really overlap.
        for _ in range(400 if parallel else 0):
            if len(list(running.iterdir())) >= 2:
                break
            time.sleep(0.005)
        seen = len(list(running.iterdir()))
        time.sleep(0.02)
        mine.unlink()
        return seen

    task(name="work", grid={"i": range(6)})(body)
    jobs = 1 if executor == "sequential" else 2
    make(env="e", new=True, executor=executor, jobs=jobs)
    seen = Environment.load("e").results("work").values()
    assert max(seen) <= jobs
    if parallel:
        assert max(seen) == 2  # they did run side by side


def test_timeout_fails_the_step(executor: str) -> None:
    """Timeout fails the step."""

    @task(timeout=0.5)
    def slow(env: Any) -> None:
        env["started"] = True
        for _ in range(6000):  # in small sleeps: a thread is stopped between instructions
            time.sleep(0.01)

    report = make(slow, env="e", new=True, executor=executor, check=False)
    assert report.steps["slow"].status is Status.FAILED
    assert "StepTimeoutError" in _error(report.steps["slow"]).type


def test_processes_run_functions_defined_in_main(tmp_path: Path) -> None:
    """Processes run functions defined in main."""
    script = tmp_path / "exp.py"
    script.write_text(
        textwrap.dedent(
            """
            from expkit import task, make, Environment
            FACTOR = 7

            def helper(x):
                return x * FACTOR

            @task(grid={"x": [1, 2, 3]})
            def scaled(env, x):
                return helper(x)

            if __name__ == "__main__":
                make(env="e", new=True, executor="processes", jobs=2)
                print(sorted(Environment.load("e").results("scaled").values()))
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[7, 14, 21]"


def test_worker_death_interrupts_then_retries() -> None:
    """Worker death interrupts then retries."""
    flag = Path("died").absolute()

    @task(retries=1)
    def fragile(env: Any) -> int:
        env["pid"] = os.getpid()
        if not flag.exists():
            flag.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return 42

    @task
    def other(env: Any) -> int:
        return 1

    report = make(fragile, other, env="e", new=True, executor="processes", jobs=2)
    assert report.steps["fragile"].attempts == 2
    assert report.steps["other"].status is Status.DONE
    assert Environment.load("e").steps["fragile"].result == 42


def test_worker_death_without_retries_is_interrupted() -> None:
    """Worker death without retries is interrupted."""

    @task
    def dies(env: Any) -> None:
        os._exit(9)

    report = make(dies, env="e", new=True, executor="processes", check=False)
    outcome = report.steps["dies"]
    assert outcome.status is Status.INTERRUPTED
    assert "exited with status 9" in _error(outcome).message
    assert Environment.load("e").steps["dies"].status is Status.INTERRUPTED
    assert plan(dies, env="e").to_run == ["dies"]


def test_times_are_kept_to_the_microsecond_and_a_finished_run_is_up_to_date() -> None:
    """Start and end times survive a ``datetime``; a run just finished plans nothing.

    A step is claimed in the commit where its upstream ends, at the same
    time: were that time finer than a microsecond, the upstream's end, read
    back through a ``datetime``, could fall after the step's start and the
    step would seem stale.
    """

    @task(grid={"size": [1, 2, 3]})
    def bench(size: int) -> int:
        return size

    @task(requires=[bench])
    def report(env: Any) -> None:
        env["report"] = True

    @task
    def alone() -> None:
        pass

    assert make(report, env="e", new=True).ok
    alone(env="current")  # a direct call records its times too
    env = Environment.load("current")
    names = ["bench[size=1]", "bench[size=2]", "bench[size=3]", "report", "alone"]
    briefs = env._steps.briefs(names)  # the times as stored
    assert sorted(briefs) == sorted(names)
    for name, brief in briefs.items():
        for stamp in (brief.started, brief.ended):
            assert stamp is not None
            assert datetime.fromtimestamp(stamp, tz=timezone.utc).timestamp() == stamp, name
    assert plan(report, env="current").to_run == []


def test_a_running_step_reads_big_values_after_another_process_compacts() -> None:
    """A step's lazy read of a big value survives a compaction by another process mid-run.

    The step's view holds the value's place in the journal it started on;
    the driver then reopens the compacted journal, where that place holds
    other bytes. The old file stays readable through the descriptor kept.
    """
    big = os.urandom(200_000)  # a blob: read from the journal on first access
    seed = Environment.create(".", "shared", symlink=False, durable=False)
    seed["gone"] = os.urandom(100_000)  # before it in the journal; compaction drops it
    seed.dump()
    seed["big"] = big
    del seed["gone"]
    seed.dump()
    path = str(seed.resultdir)
    inode = os.stat(os.path.join(path, "env")).st_ino

    @task
    def compactor() -> None:
        run_python(
            f"""
            import os
            from expkit import Environment
            env = Environment.load({path!r}, durable=False)
            for i in range(400):
                env["churn"] = "z" * 4000 + str(i)
                env.dump()
            assert os.stat(os.path.join({path!r}, "env")).st_ino != {inode}, "not compacted"
            """
        )

    @task
    def reader(env: Any) -> int:
        # Read only once the driver has committed compactor's end, which it
        # does after reopening the journal another process compacted.
        deadline = time.monotonic() + 120
        while not Environment.load(path).is_done("compactor"):
            assert time.monotonic() < deadline, "compactor never finished"
            time.sleep(0.01)
        return len(env["big"])

    report = make(compactor, reader, env=path, executor="threads", jobs=2)
    assert report.ok, report["reader"].error
    assert os.stat(os.path.join(path, "env")).st_ino != inode
    assert Environment.load(path).steps["reader"].result == len(big)
    assert Environment.load(path)["big"] == big


@pytest.mark.parametrize("executor", ["sequential", "threads"])
def test_driver_death_leaves_interrupted_then_resumes(executor: str) -> None:
    """In-process executors: the step dying takes the driver along; the next make re-runs it."""
    code = f"""
        import os
        from pathlib import Path
        from expkit import task, make

        @task
        def first(env):
            env["first"] = 1

        @task(requires=[first])
        def dies(env):
            if not Path("died").exists():
                Path("died").touch()
                os._exit(9)
            env["second"] = 2

        make(dies, env="e", executor={executor!r})
    """
    Environment.create(".", "e", symlink=False)
    assert run_python(code, check=False).returncode == 9
    env = Environment.load("e")
    assert env.steps["dies"].status is Status.INTERRUPTED
    assert env.steps["first"].status is Status.DONE
    run_python(code)
    env = Environment.load("e")
    assert env["second"] == 2
    assert env.steps["first"].attempts == 1


CHECKPOINT_CHILD = """
import os, sys, time
from expkit import task, make

def say(line):
    os.write(1, (line + "\\n").encode())

@task
def train(env):
    history = env.get("history", [])  # what an earlier, killed run checkpointed
    say(f"resumed from {len(history)}")
    if "gone" in env:
        del env["gone"]
    env["log"].append(f"run {len(history)}")  # changed in place: only dump() sees it
    for epoch in range(len(history), 3):
        history.append(epoch)
        env["history"] = history
        env.dump()  # a checkpoint: kept if the run dies now
        say(f"epoch {epoch}")
        if epoch == 1 and os.environ.get("CHECKPOINT_DIE"):  # workers see it too
            time.sleep(600)  # the test kills the whole run here
    return len(history)

make(train, env="e", executor=sys.argv[1])
"""


def test_dump_in_a_step_is_a_checkpoint_that_survives_sigkill(executor: str) -> None:
    """``env.dump()`` in a step commits its work so far; a killed run resumes from there."""
    seed = Environment.create(".", "e", symlink=False)
    seed["gone"] = 1
    seed["log"] = []
    seed.dump()
    with subprocess.Popen(
        [sys.executable, "-c", CHECKPOINT_CHILD, executor],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "CHECKPOINT_DIE": "1"},
        start_new_session=True,  # its workers die with it
    ) as child:
        assert child.stdout is not None
        lines = [child.stdout.readline().strip() for _ in range(3)]
        assert lines == ["resumed from 0", "epoch 0", "epoch 1"]
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    env = Environment.load("e")
    assert env["history"] == [0, 1]  # both checkpoints, not lost with the run
    assert "gone" not in env  # a deletion is checkpointed too
    assert env["log"] == ["run 0"]
    assert env.steps["train"].status is Status.INTERRUPTED  # its owner is dead
    resumed = run_python(CHECKPOINT_CHILD.replace("sys.argv[1]", repr(executor)))
    assert resumed.stdout.split("\n")[:2] == ["resumed from 2", "epoch 2"]
    env = Environment.load("e")
    assert env["history"] == [0, 1, 2]
    assert env["log"] == ["run 0", "run 2"]
    record = env.steps["train"]
    assert record.status is Status.DONE
    assert record.result == 3
    assert record.writes == {"history", "log"}  # "log" changed only before the last dump()


@pytest.mark.parametrize("durable", [True, False])
def test_a_process_worker_checkpoints_as_durably_as_the_run(durable: bool) -> None:
    """A step's dump() on a worker process commits with the run's durability (fsync or not)."""

    @task
    def where(env: Any) -> bool:
        return bool(env._source.durable)  # the worker's own handle, which dump() commits through

    Environment.create(".", "e", symlink=False, durable=durable)
    make(where, env=Environment.load("e", durable=durable), executor="processes")
    assert Environment.load("e").steps["where"].result is durable


SIGINT_CHILD = """
import os, sys, time
import expkit._make
from expkit import task, make, Environment

expkit._make.CANCEL_GRACE = 600  # only a second Ctrl-C may cut the wait short
stubborn = sys.argv[2] == "stubborn"

def say(line):
    os.write(1, (line + "\\n").encode())

@task
def quick(env):
    env["quick"] = 1

@task(requires=[quick])
def slow(env):
    env["partial"] = "written"
    deadline = time.monotonic() + 600
    announced = False
    while True:
        # The try holds all the step does after "started": an interrupt may land
        # on any instruction.
        try:
            if not announced:
                announced = True
                say("started")
            while time.monotonic() < deadline:
                time.sleep(0.01)
            break
        except KeyboardInterrupt:
            if not stubborn:
                raise
            say("ignored")

try:
    make(slow, env="e", executor=sys.argv[1])
except KeyboardInterrupt:
    say("interrupted")
    sys.exit(130)
"""


def _interrupted_run(executor: str, mode: str) -> tuple[int, str, str]:
    with subprocess.Popen(
        [sys.executable, "-c", SIGINT_CHILD, executor, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "started"
        child.send_signal(signal.SIGINT)
        if mode == "stubborn":
            # The step swallowed the first interrupt (workers share this stdout).
            assert child.stdout.readline().strip() == "ignored"
            child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=120)
        return child.returncode, out, err


def test_ctrl_c_cancels_commits_and_prints_the_resume_call(executor: str) -> None:
    """Ctrl c cancels commits and prints the resume call."""
    Environment.create(".", "e", symlink=False)
    code, out, err = _interrupted_run(executor, "plain")
    assert code == 130
    assert "interrupted" in out
    assert "resume with: make('slow', env=" in err
    env = Environment.load("e")
    assert env.steps["slow"].status is Status.CANCELLED
    assert env["partial"] == "written"
    assert env.steps["quick"].status is Status.DONE
    again = run_python(
        """
        from expkit import task, make
        @task
        def quick(env):
            raise AssertionError("DONE: must not run again")
        @task(requires=[quick])
        def slow(env):
            env["finished"] = True
        print(make(slow, env="e").ran)
        """
    )
    assert again.stdout.strip() == "['slow']"


@pytest.mark.parametrize("executor", PARALLEL)
def test_second_ctrl_c_leaves_at_once(executor: str) -> None:
    """Second ctrl c leaves at once."""
    Environment.create(".", "e", symlink=False)
    code, _, err = _interrupted_run(executor, "stubborn")
    assert code == 130
    assert "resume with:" in err
    env = Environment.load("e")  # consistent, loadable
    assert env.steps["slow"].status is Status.CANCELLED


def test_group_commit_shares_fsyncs(tmp_path: Path) -> None:
    """Many steps finishing together cost far fewer fsyncs than steps."""
    script = tmp_path / "many.py"
    script.write_text(
        textwrap.dedent(
            """
            from expkit import task, make
            for i in range(200):
                task(name=f"s{i}")(lambda env, i=i: env.__setitem__(f"k{i}", i))
            make(env="e", new=True, executor="threads")
            """
        )
    )
    traced = subprocess.run(
        ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", sys.executable, str(script)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    counts = {
        line.split()[-1]: int(line.split()[3])
        for line in traced.stderr.splitlines()
        if line.strip().endswith(("fsync", "fdatasync")) and line.split()[3].isdigit()
    }
    assert Environment.load("e")["k199"] == 199
    assert 1 <= sum(counts.values()) < 50, counts


def test_resume_from_seeds_a_new_environment(executor: str) -> None:
    """Resume from seeds a new environment."""
    calls = Path("calls").absolute()

    @task
    def expensive(env: Any) -> None:
        _log(str(calls), "expensive")
        env["model"] = "trained"

    @task(requires=[expensive])
    def evaluate(env: Any) -> None:
        _log(str(calls), "evaluate")
        if not Path("fixed").exists():
            raise ValueError
        env["score"] = 0.9

    make(evaluate, env="first", new=True, executor=executor, check=False)
    Path("fixed").touch()
    report = make(evaluate, env="second", resume_from="first", executor=executor)
    assert report.ran == ["evaluate"]
    assert _runs(calls) == ["expensive", "evaluate", "evaluate"]
    second = Environment.load("second")
    assert second["model"] == "trained"
    assert second["score"] == 0.9
    assert Environment.load("first").steps["evaluate"].status is Status.FAILED


def test_force_reruns_the_step_and_its_dependents(executor: str) -> None:
    """Force reruns the step and its dependents."""
    calls = Path("calls").absolute()

    @task
    def a(env: Any) -> None:
        _log(str(calls), "a")

    @task(requires=[a])
    def b(env: Any) -> None:
        _log(str(calls), "b")

    @task
    def c(env: Any) -> None:
        _log(str(calls), "c")

    make(env="e", new=True, executor=executor)
    report = make(env="e", executor=executor, force=["a"])
    assert sorted(report.ran) == ["a", "b"]
    assert sorted(_runs(calls)) == ["a", "a", "b", "b", "c"]


def _error(record: Any) -> Any:
    """A failed record's (or outcome's) error, which must be there."""
    assert record.error is not None, record
    return record.error
