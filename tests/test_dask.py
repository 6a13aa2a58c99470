"""The Dask executor on a real ``distributed.LocalCluster`` of 2 worker processes.

The executors' shared behaviour (tests/test_make.py) on Dask, then what is
Dask's own: sweeps in one batch, large values shipped once, a worker killed
mid-step, an unreachable scheduler, Ctrl-C, functions of ``__main__``.
The cluster starts once for the module; each ``make`` connects to it by
address, as a user's would to ``dask scheduler``.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from expkit import (
    Environment,
    ErrorInfo,
    ExpkitError,
    RunFailedError,
    RunReport,
    Status,
    make,
    plan,
    task,
)
from expkit._dask_worker import steps_left_running
from expkit._journal import digest_of
from tests.helpers import run_python
from tests.test_make import _interrupted_run, _log, _runs

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.dask


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Two worker processes of one thread each, started once for the module.

    The scheduler fails a task whose worker dies at once (``allowed_failures=0``),
    as docs/how-to/scale-out-with-dask.md asks of a scheduler expkit uses.
    """
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        # No dashboard, HTTP endpoints on a free port: no warning when 8787 is taken.
        scheduler_kwargs={
            "allowed_failures": 0,
            "dashboard": False,
            "dashboard_address": "127.0.0.1:0",
        },
    ) as local:
        yield local


@pytest.fixture
def address(cluster: Any) -> str:
    """The scheduler's address, as ``make(address=...)`` takes it."""
    return str(cluster.scheduler_address)


@pytest.fixture
def client(cluster: Any) -> Iterator[Any]:
    """A client of our own, to look at what the scheduler saw."""
    with distributed.Client(cluster, set_as_default=False) as own:
        yield own


def _error(info: ErrorInfo | None) -> ErrorInfo:
    assert info is not None
    return info


# -- the shared behaviour -------------------------------------------------------------


def test_runs_in_graph_order_and_records_everything(address: str) -> None:
    """A DAG with a sweep runs in order; data, reads, writes, results and params are recorded."""
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

    report = make(bench, env="e", new=True, executor="dask", address=address)
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
    assert env.steps["deploy"].reads == {"nodes"}
    assert env.steps["deploy"].writes == {"deployed"}
    assert env.steps["provision"].result == 3
    assert env.steps["provision"].params == {"nodes": 3}
    assert make(bench, env="e", executor="dask", address=address).ran == []
    assert _runs(Path(log)) == lines


def test_a_step_on_a_worker_reads_the_sweeps_results(address: str) -> None:
    """Results recorded by the driver reach a worker's step as values, not placeholders."""

    @task(grid={"x": [1, 2, 3]})
    def square(x: int) -> int:
        return x * x

    @task(requires=[square])
    def total(env: Any) -> int:
        return sum(env.results("square").values())

    make(total, env="e", new=True, executor="dask", address=address)
    assert Environment.load("e").steps["total"].result == 14


def test_failure_skips_dependents_and_keeps_going(address: str) -> None:
    """A failure keeps its partial writes and traceback, skips its dependents, spares the rest."""
    log = str(Path("log").absolute())

    @task
    def root(env: Any) -> None:
        env["root"] = 1

    @task(requires=[root])
    def broken(env: Any) -> None:
        env["partial"] = "kept"
        msg = "disk full"
        raise ValueError(msg)

    @task(requires=[broken])
    def after(env: Any) -> None:
        _log(log, "after")

    @task(requires=[root])
    def independent(env: Any) -> None:
        env["independent"] = True

    with pytest.raises(RunFailedError) as caught:
        make(after, independent, env="e", new=True, executor="dask", address=address)
    report = caught.value.report
    assert isinstance(report, RunReport)
    assert _error(report.steps["broken"].error).summary() == "ValueError: disk full"
    assert report.steps["after"].status is Status.SKIPPED
    assert report.steps["independent"].status is Status.DONE
    assert _runs(Path(log)) == []
    env = Environment.load("e")
    assert env["partial"] == "kept"
    assert "ValueError: disk full" in _error(env.steps["broken"].error).traceback
    assert plan(after, independent, env="e").to_run == ["broken", "after"]


def test_fail_fast_and_priority(address: str) -> None:
    """With jobs=1, ready steps start by priority; after a failure, fail_fast starts nothing."""
    log = str(Path("log").absolute())
    for name, priority in [("c", 3), ("a", 1), ("b", 2)]:
        task(name=name, priority=priority)(lambda name=name: _log(log, name))
    make(env="e", new=True, executor="dask", address=address, jobs=1)
    assert _runs(Path(log)) == ["a", "b", "c"]

    @task(priority=0)
    def first(env: Any) -> None:
        _log(log, "first")
        raise RuntimeError

    @task(priority=1)
    def second(env: Any) -> None:
        _log(log, "second")

    report = make(
        first, second, env="f", new=True, executor="dask", address=address, jobs=1,
        fail_fast=True, check=False,
    )  # fmt: skip
    assert _runs(Path(log))[3:] == ["first"]
    assert report.steps["second"].ran is False


def test_retries_then_done(address: str) -> None:
    """A flaky step is retried by the driver and its attempts recorded."""
    counter = Path("attempts").absolute()

    @task(retries=2)
    def flaky(env: Any) -> str:
        _log(str(counter), "try")
        if len(_runs(counter)) < 3:
            msg = "not yet"
            raise OSError(msg)
        env["ok"] = True
        return "finally"

    report = make(flaky, env="e", new=True, executor="dask", address=address)
    assert report.steps["flaky"].attempts == 3
    env = Environment.load("e")
    assert env.steps["flaky"].result == "finally"
    assert env["ok"] is True


def test_exits_interrupts_and_unpicklable_values_are_recorded(address: str) -> None:
    """SystemExit fails a step, KeyboardInterrupt cancels it, an unpicklable value fails it only."""

    @task
    def quits(env: Any) -> None:
        env["before"] = 1
        sys.exit(3)

    @task
    def stops(env: Any) -> None:
        raise KeyboardInterrupt

    @task
    def bad(env: Any) -> None:
        env["fine"] = 1
        env["lock"] = threading.Lock()

    @task
    def other(env: Any) -> None:
        env["other"] = 1

    report = make(env="e", new=True, executor="dask", address=address, check=False)
    assert report.steps["quits"].status is Status.FAILED
    assert report.steps["stops"].status is Status.CANCELLED
    assert report.steps["bad"].status is Status.FAILED
    assert "lock" in _error(report.steps["bad"].error).message
    assert report.steps["other"].status is Status.DONE
    env = Environment.load("e")
    assert _error(env.steps["quits"].error).type == "SystemExit"
    assert (env["before"], env["fine"], env["other"]) == (1, 1, 1)
    assert "lock" not in env


def test_jobs_bounds_parallel_steps(address: str) -> None:
    """jobs=1 runs one step at a time even on two workers; without jobs both run together."""
    running = Path("running").absolute()
    running.mkdir()
    patient = Path("patient").absolute()  # wait for a partner only when one may come

    def body(env: Any, i: int) -> int:
        mine = running / str(i)
        mine.touch()
        for _ in range(400 if patient.exists() else 0):  # bounded: parallel steps overlap
            if len(list(running.iterdir())) >= 2:
                break
            time.sleep(0.005)
        seen = len(list(running.iterdir()))
        time.sleep(0.02)
        mine.unlink()
        return seen

    task(name="work", grid={"i": range(4)})(body)
    make(env="one", new=True, executor="dask", address=address, jobs=1)
    assert max(Environment.load("one").results("work").values()) == 1
    patient.touch()
    make(env="all", new=True, executor="dask", address=address)
    assert max(Environment.load("all").results("work").values()) == 2


def test_timeout_fails_the_step(address: str) -> None:
    """A step past its timeout is stopped on its worker thread and FAILED."""

    @task(timeout=0.5)
    def slow(env: Any) -> None:
        env["started"] = True
        for _ in range(6000):  # small sleeps: a thread is stopped between instructions
            time.sleep(0.01)

    report = make(slow, env="e", new=True, executor="dask", address=address, check=False)
    assert report.steps["slow"].status is Status.FAILED
    assert "StepTimeoutError" in _error(report.steps["slow"].error).type
    assert Environment.load("e")["started"] is True


def test_timeout_of_a_step_blocked_in_c_is_given_up_on(
    address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step blocked in C past its timeout cannot be stopped: the driver gives up on it."""
    import expkit._dask

    monkeypatch.setattr(expkit._dask, "KILL_GRACE", 1.0)

    @task(timeout=0.5)
    def stuck(env: Any) -> None:
        time.sleep(4)  # one call into C: no exception reaches the thread meanwhile

    start = time.monotonic()
    report = make(stuck, env="e", new=True, executor="dask", address=address, check=False)
    assert time.monotonic() - start < 3.5
    error = _error(report.steps["stuck"].error)
    assert report.steps["stuck"].status is Status.FAILED
    assert "StepTimeoutError" in error.type
    assert "given up on" in error.message


def test_resume_from_and_force(address: str) -> None:
    """resume_from seeds a new environment with DONE steps; force re-runs a step and dependents."""
    calls = str(Path("calls").absolute())
    fixed = Path("fixed").absolute()

    @task
    def expensive(env: Any) -> None:
        _log(calls, "expensive")
        env["model"] = "trained"

    @task(requires=[expensive])
    def evaluate(env: Any) -> None:
        _log(calls, "evaluate")
        if not fixed.exists():
            raise ValueError
        env["score"] = 0.9

    make(evaluate, env="first", new=True, executor="dask", address=address, check=False)
    fixed.touch()
    report = make(evaluate, env="second", resume_from="first", executor="dask", address=address)
    assert report.ran == ["evaluate"]
    assert Environment.load("second")["score"] == 0.9
    forced = make(evaluate, env="second", executor="dask", address=address, force=["expensive"])
    assert forced.ran == ["expensive", "evaluate"]
    assert _runs(Path(calls)) == ["expensive", "evaluate", "evaluate", "expensive", "evaluate"]


# -- Dask's own -------------------------------------------------------------------------


def test_sweep_of_200_then_only_the_failed_run_again(address: str) -> None:
    """A 200-instance sweep with failures; the next make runs exactly the failed instances."""
    log = str(Path("log").absolute())
    fixed = Path("fixed").absolute()

    @task
    def setup(env: Any) -> None:
        env["offset"] = 1000

    @task(requires=[setup], grid={"i": range(200)})
    def point(env: Any, i: int) -> int:
        if i % 17 == 0 and not fixed.exists():
            msg = f"point {i} diverged"
            raise ArithmeticError(msg)
        _log(log, str(i))
        return int(env["offset"]) + i

    failing = [i for i in range(200) if i % 17 == 0]
    first = make(point, env="e", new=True, executor="dask", address=address, check=False)
    assert first.counts[Status.FAILED] == len(failing)
    assert first.counts[Status.DONE] == 201 - len(failing)  # with setup
    assert sorted(map(int, _runs(Path(log)))) == [i for i in range(200) if i % 17]
    fixed.touch()
    second = make(point, env="e", executor="dask", address=address)
    assert sorted(second.ran) == sorted(f"point[i={i}]" for i in failing)
    assert sorted(map(int, _runs(Path(log)))) == list(range(200))
    assert Environment.load("e").results("point")["point[i=199]"] == 1199


def test_worker_killed_mid_step_interrupts_then_retries(address: str, client: Any) -> None:
    """SIGKILL of a worker process mid-step: the step is INTERRUPTED, retried, the run completes."""
    flag = Path("died").absolute()
    workers_before = len(client.scheduler_info()["workers"])

    @task(retries=1)
    def fragile(env: Any) -> int:
        env["pid"] = os.getpid()
        if not flag.exists():
            flag.touch()
            # Mid-step: past the worker's next heartbeat (twice a second),
            # which tells the scheduler that this task was executing.
            time.sleep(1.2)
            os.kill(os.getpid(), signal.SIGKILL)
        return 42

    @task(grid={"i": range(4)})
    def other(env: Any, i: int) -> int:
        time.sleep(0.05)
        return i

    report = make(fragile, other, env="e", new=True, executor="dask", address=address)
    assert report.steps["fragile"].attempts == 2
    assert all(report.steps[f"other[i={i}]"].status is Status.DONE for i in range(4))
    env = Environment.load("e")
    assert env.steps["fragile"].result == 42
    assert env.steps["fragile"].status is Status.DONE
    # The nanny replaces the dead worker, for the tests that follow.
    client.wait_for_workers(workers_before, timeout=60)


def test_worker_death_without_retries_is_interrupted(address: str, client: Any) -> None:
    """Without retries, a step whose worker dies ends INTERRUPTED, and the next plan re-runs it."""
    workers_before = len(client.scheduler_info()["workers"])

    @task
    def dies(env: Any) -> None:
        time.sleep(1.2)  # past a heartbeat: known to be executing
        os._exit(9)

    report = make(dies, env="e", new=True, executor="dask", address=address, check=False)
    outcome = report.steps["dies"]
    assert outcome.status is Status.INTERRUPTED
    assert "KilledWorker" in _error(outcome.error).message
    assert plan(dies, env="e").to_run == ["dies"]
    client.wait_for_workers(workers_before, timeout=60)


def test_large_value_reaches_each_worker_once(address: str, client: Any) -> None:
    """A large value is scattered once per run, and fetched by a worker only when a step reads it.

    The observable: the ``expkit-shipped`` events the driver and the workers
    log on the scheduler, one per scatter and one per fetch of a blob.
    """
    big = os.urandom(1 << 20)  # 1 MiB: far past INLINE_LIMIT, and unique to this test

    @task
    def produce(env: Any) -> None:
        env["big"] = big
        env["small"] = "s"

    @task(requires=[produce], grid={"i": range(20)})
    def ignores(env: Any, i: int) -> str:
        return str(env["small"]) * i

    @task(requires=[produce], grid={"i": range(40)})
    def reads(env: Any, i: int) -> int:
        return len(env["big"]) + i

    make(ignores, env="e", new=True, executor="dask", address=address)
    digest = digest_of(Environment.load("e").pickled("big")).hex()

    def shipped(op: str) -> list[dict[str, Any]]:
        events = client.get_events("expkit-shipped")
        return [msg for _, msg in events if msg["op"] == op and msg["digest"] == digest]

    assert len(shipped("scattered")) == 1
    assert shipped("fetched") == []  # no step read it: no worker fetched it
    make(reads, env="e", executor="dask", address=address)
    assert set(Environment.load("e").results("reads").values()) == {
        (1 << 20) + i for i in range(40)
    }
    assert len(shipped("scattered")) == 2  # once more, for the second run
    fetches = shipped("fetched")
    workers = {msg["worker"] for msg in fetches}
    # 40 reads, at most one fetch per worker (the other reads hit its cache).
    assert 1 <= len(fetches) == len(workers) <= 2


def test_functions_defined_in_main_run_on_workers(address: str, tmp_path: Path) -> None:
    """A script's own functions, helpers and globals reach the workers by value."""
    script = tmp_path / "exp.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            from expkit import task, make, Environment
            FACTOR = 7

            def helper(x):
                return x * FACTOR

            @task(grid={{"x": [1, 2, 3]}})
            def scaled(env, x):
                return helper(x)

            if __name__ == "__main__":
                make(env="e", new=True, executor="dask", address={address!r})
                print(sorted(Environment.load("e").results("scaled").values()))
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[7, 14, 21]"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_scheduler_names_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """No scheduler at the address: a clear ExpkitError naming it, after the connect timeout."""
    import expkit._dask

    monkeypatch.setattr(expkit._dask, "CONNECT_TIMEOUT", 1.0)
    where = f"tcp://127.0.0.1:{_free_port()}"

    @task
    def anything(env: Any) -> None:
        env["never"] = True

    start = time.monotonic()
    with pytest.raises(expkit.SchedulerUnreachableError) as caught:
        make(anything, env="e", new=True, executor="dask", address=where)
    assert time.monotonic() - start < 15
    error = caught.value
    assert isinstance(error, ExpkitError)
    assert isinstance(error, ConnectionError)
    assert error.address == where
    assert where in str(error)
    assert "dask scheduler" in str(error)
    assert error.exit_code == 2
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.address, str(copy)) == (type(error), where, str(error))
    assert "anything" not in Environment.load("e").steps  # nothing claimed


def test_missing_dask_says_what_to_install() -> None:
    """Without Dask installed, the executor's error says to install expkit[dask]."""
    out = run_python(
        """
        import sys
        sys.modules["distributed"] = None  # as if it were not installed
        from expkit import task, make, ExpkitError
        @task
        def anything(env):
            pass
        try:
            make(anything, env="e", new=True, executor="dask")
        except ImportError as error:
            print(isinstance(error, ExpkitError), error)
        """
    )
    assert out.stdout.startswith("True ")
    assert "pip install 'expkit[dask]'" in out.stdout


def test_width_is_unbounded(address: str) -> None:
    """Without jobs, expkit sets no bound of its own: the cluster's threads do."""
    from expkit._dask import DaskExecutor

    executor = DaskExecutor(None, address)
    try:
        assert executor.width() is None
    finally:
        executor.close()


DOC = Path(__file__).resolve().parent.parent / "docs" / "how-to" / "scale-out-with-dask.md"


@pytest.mark.slow
def test_how_to_example_runs_as_shown(tmp_path: Path) -> None:
    """The how-to's script, run as written, starts its own local cluster and prints what it shows."""
    text = DOC.read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    shown = text.split("$ python sweep_dask.py\n", 1)[1].split("```", 1)[0]
    (tmp_path / "sweep_dask.py").write_text(code)
    out = subprocess.run(
        [sys.executable, "sweep_dask.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout == shown


@pytest.mark.slow
def test_ctrl_c_cancels_commits_and_prints_the_resume_call() -> None:
    """Ctrl-C on a run with its own local cluster: the step is CANCELLED with its writes kept."""
    Environment.create(".", "e", symlink=False)
    code, out, err = _interrupted_run("dask", "plain")
    assert code == 130, err
    assert "interrupted" in out
    assert "resume with: make('slow', env=" in err
    env = Environment.load("e")
    assert env.steps["slow"].status is Status.CANCELLED
    assert env["partial"] == "written"
    assert env.steps["quick"].status is Status.DONE


@pytest.mark.slow
def test_second_ctrl_c_leaves_at_once() -> None:
    """A step that swallows the interrupt: a second Ctrl-C leaves, the cluster is closed."""
    Environment.create(".", "e", symlink=False)
    start = time.monotonic()
    code, _, err = _interrupted_run("dask", "stubborn")
    assert code == 130, err
    assert "resume with:" in err
    assert time.monotonic() - start < 60
    assert Environment.load("e").steps["slow"].status is Status.CANCELLED


# -- the exp command ---------------------------------------------------------------------

EXP = Path(sys.executable).with_name("exp")

EXPFILE = """
from expkit import task

@task
def setup(env):
    print("setting up")
    env["base"] = 10

@task(requires=[setup], grid={"x": [1, 2]})
def square(env, x):
    print(f"squaring {x}")
    return env["base"] + x * x

@task(requires=[square])
def report(env):
    return len(env.results("square"))
"""


def _progress(*args: str) -> list[str]:
    """The lines ``exp run`` prints, durations blanked, in order."""
    out = subprocess.run(
        [str(EXP), "run", *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, f"exp run {args}: {out.returncode}\n{out.stdout}\n{out.stderr}"
    return [
        re.sub(r"\d+\.\d+ (s|ms)", "T", line)
        for line in out.stdout.splitlines()
        if not line.startswith("environment: ")
    ]


def test_exp_run_shows_the_same_progress_as_the_local_executors(address: str) -> None:
    """``exp run --executor dask`` prints the progress lines of ``exp run`` on the sequential executor.

    A start and a done line per step, the sweep's count and the summary; the
    lines differ only in durations and in the order of the sweep's instances.
    """
    Path("expfile.py").write_text(EXPFILE)
    local = _progress("--env", "local")
    dask = _progress("--env", "dask", "--executor", "dask", "--address", address)
    names = ["setup", "square[x=1]", "square[x=2]", "report"]
    for lines in (local, dask):
        assert lines[0] == "plan: 4 to run, 0 to skip"
        for name in names:
            assert f"start     {name}  (never run)" in lines
            assert any(line.startswith(f"done      {name}  T") for line in lines), lines
        assert {line.split("[square ")[1] for line in lines if "[square " in line} == {
            "1/2]",
            "2/2]",
        }
        assert lines[-1] == "4 ran; 4 done in T"

    # The same lines but for the order of the sweep's instances; the steps' own
    # output is printed live by the local executor, by the workers on Dask.
    def shown(lines: list[str]) -> list[str]:
        progress = [re.sub(r"\[square \d/2\]", "[square n/2]", line) for line in lines]
        return sorted(set(progress) - {"setting up", "squaring 1", "squaring 2"})

    assert shown(dask) == shown(local)
    for env in ("local", "dask"):
        # The steps' output is in their logs: `exp log` shows it.
        out = subprocess.run(
            [str(EXP), "log", "square[x=2]", "--env", env],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert "squaring 2" in out.stdout
    again = _progress("--env", "dask", "--executor", "dask", "--address", address)
    assert again[-1] == "0 ran; 4 done in T"


def test_exp_run_on_its_own_cluster_keeps_dask_chatter_out() -> None:
    """Without ``--address``, exp starts a local cluster; its INFO logs are not shown."""
    Path("expfile.py").write_text(EXPFILE)
    out = subprocess.run(
        [str(EXP), "run", "--executor", "dask"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"
    assert out.stdout.splitlines()[-1].startswith("4 ran; 4 done in ")
    assert "distributed" not in out.stderr, out.stderr


def test_a_step_that_cannot_travel_fails_alone(address: str) -> None:
    """A step whose function cannot be pickled for the cluster fails; the others run."""
    held = threading.Lock()

    @task
    def stuck(env: Any) -> None:
        with held:  # the closure holds a lock: cloudpickle refuses it
            env["never"] = 1

    @task
    def fine(env: Any) -> None:
        env["fine"] = 1

    report = make(stuck, fine, env="e", new=True, executor="dask", address=address, check=False)
    assert report.steps["stuck"].status is Status.FAILED
    assert "lock" in _error(report.steps["stuck"].error).message
    assert report.steps["fine"].status is Status.DONE
    assert Environment.load("e")["fine"] == 1


LEFT_BEHIND = """\
import os
import time
from pathlib import Path

from expkit import task

MARKS = Path(os.environ["MARKS"])


@task
def slow(env):
    with open(MARKS / "started", "a") as log:
        log.write("x")
    # Held until the test releases it: the driver is killed meanwhile.
    deadline = time.monotonic() + 120
    while not (MARKS / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    (MARKS / "finished").write_text("yes")
    env["done"] = True


@task(requires=[slow])
def after(env):
    env["after"] = env["done"]
"""


def test_a_step_a_dead_run_left_on_a_worker_is_not_run_again_beside_it(
    address: str, client: Any, tmp_path: Path
) -> None:
    """Kill -9 of ``exp run`` on a cluster of its own: the step goes on on its worker.

    Until it ends, the next run refuses to start it a second time (exit 1,
    naming the worker); once it has ended, the next run runs it again, as
    its outcome died with the first driver.
    """
    Path("expfile.py").write_text(LEFT_BEHIND)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "MARKS": str(marks)}
    run = [str(EXP), "run", "--executor", "dask", "--address", address]
    with subprocess.Popen(
        run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as first:
        deadline = time.monotonic() + 60
        while not (marks / "started").exists():
            assert time.monotonic() < deadline, "the step never started"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()

    second = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert second.returncode == 1, f"{second.stdout}\n{second.stderr}"
    shown = second.stdout + second.stderr
    assert "'slow' is still running on Dask worker tcp://" in shown, shown
    assert (marks / "started").read_text() == "x"  # not started beside the first
    assert Environment.load("current").steps["slow"].status is not Status.DONE

    def left_on_workers() -> list[str]:
        where = str(Path("current").resolve())
        answers = client.run(steps_left_running, where, "")
        return [name for _, _, names in answers.values() for name in names]

    assert left_on_workers() == ["slow"]
    (marks / "release").touch()
    deadline = time.monotonic() + 60
    while left_on_workers():
        assert time.monotonic() < deadline, "the step left behind never ended"
        time.sleep(0.05)
    assert (marks / "finished").exists()

    third = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert third.returncode == 0, f"{third.stdout}\n{third.stderr}"
    assert (marks / "started").read_text() == "xx"  # its first outcome died with the first driver
    done = Environment.load("current")
    assert done["after"] is True
    assert {name: r.status for name, r in done.steps.items()} == {
        "slow": Status.DONE,
        "after": Status.DONE,
    }
