"""Tests of ``expkit._task`` and its runner: the ``@task`` decorator and direct calls."""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from expkit import (
    Environment,
    EnvironmentExistsError,
    NoEnvironmentError,
    Owner,
    PrerequisiteError,
    Status,
    StepRecord,
    StepRunningError,
    StepTimeoutError,
    Task,
    TaskOptions,
    UnknownStepError,
    UnpicklableValueError,
    get_or_create_env,
    task,
)
from expkit._process import current_owner, is_alive
from tests.helpers import run_python

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d(-\d+)?")
WAIT_S = 30.0


def _make_env(name: str = "e") -> Environment:
    """Create an environment at ``results/<name>`` (``./current`` points to it)."""
    return Environment.create("results", name)


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    """Poll ``condition`` with short sleeps until it holds, failing after ``timeout`` seconds."""
    limit = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > limit:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def _fresh_json(path: Path, expression: str) -> Any:
    """Load the environment at ``path`` in a fresh interpreter and return ``expression`` (JSON)."""
    code = f"""
        import json
        from expkit import Environment
        env = Environment.load({str(path)!r})
        print(json.dumps({expression}))
    """
    return json.loads(run_python(code).stdout)


# A step, run in a child process, that says it started and then waits to be released.
_HOLD_CODE = """
import os
import sys
import time
from pathlib import Path

from expkit import task

@task
def hold(env):
    Path({marker!r}).write_text(str(os.getpid()))
    limit = time.monotonic() + 60
    while not Path({release!r}).exists():
        if time.monotonic() > limit:
            raise TimeoutError("never released")
        time.sleep(0.01)
    env["held_by"] = os.getpid()
    return "released"

print(hold(env={path!r}))
"""


def _start_holder(path: Path) -> tuple[subprocess.Popen[str], Path, Path]:
    """Start a child running step ``hold`` on ``path``; return it once its body has started."""
    marker, release = Path("started").absolute(), Path("release").absolute()
    code = _HOLD_CODE.format(marker=str(marker), release=str(release), path=str(path))
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def started() -> bool:
        if child.poll() is not None:
            out, _ = child.communicate(timeout=WAIT_S)
            pytest.fail(f"the holder exited early ({child.returncode}):\n{out}")
        return marker.exists()

    try:
        _wait_for(started, "the child step to start")
    except BaseException:
        _stop(child)
        raise
    return child, marker, release


def _stop(child: subprocess.Popen[str]) -> None:
    """Kill ``child`` if it still runs, and reap it."""
    if child.poll() is None:
        child.kill()
    child.communicate(timeout=WAIT_S)


# --------------------------------------------------------------------------- decorator


class TestDecorator:
    """``@task`` bare and with options: the wrapper, its name, requires and options."""

    def test_bare_decorator_makes_a_task(self) -> None:
        """Bare ``@task`` returns a Task named after the function."""

        @task
        def provision(env: Environment) -> int:
            return 1

        assert isinstance(provision, Task)
        assert provision.name == "provision"

    def test_decorator_with_options_makes_a_task(self) -> None:
        """``@task(...)`` returns a Task carrying the options given."""

        @task(retries=2, retry_delay=0.5, timeout=30, new=True, priority=3)
        def deploy(env: Environment) -> None:
            return None

        assert isinstance(deploy, Task)
        assert isinstance(deploy.options, TaskOptions)
        assert deploy.options.retries == 2
        assert deploy.options.retry_delay == 0.5
        assert deploy.options.timeout == 30
        assert deploy.options.new is True
        assert deploy.options.priority == 3

    def test_wraps_keeps_name_doc_and_signature(self) -> None:
        """The wrapper keeps the function's ``__name__``, ``__doc__`` and signature."""

        def bench(env: Environment, rate: int, seed: int = 0) -> dict[str, int]:
            """Measure throughput."""
            return {"rate": rate, "seed": seed}

        step = task(bench)
        assert vars(step)["__name__"] == "bench"
        assert step.__doc__ == "Measure throughput."
        assert inspect.signature(step) == inspect.signature(bench)

    def test_name_option_overrides_the_function_name(self) -> None:
        """``name=`` sets ``.name`` and ``.options.name``."""

        @task(name="custom")
        def provision(env: Environment) -> None:
            return None

        assert provision.name == "custom"
        assert provision.options.name == "custom"

    def test_requires_given_as_objects_and_names_resolve_to_tasks(self) -> None:
        """``requires`` given as task objects or names resolves to the Task objects."""

        @task
        def first(env: Environment) -> None:
            return None

        @task(name="second_step")
        def second(env: Environment) -> None:
            return None

        @task(requires=[first, "second_step"])
        def third(env: Environment) -> None:
            return None

        assert third.requires == (first, second)
        assert third.requires[0] is first
        assert third.requires[1] is second
        assert third.options.requires == ("first", "second_step")

    def test_requires_accepts_a_single_task_or_name(self) -> None:
        """``requires`` given as one task, or one name, is a one-element tuple."""

        @task
        def first(env: Environment) -> None:
            return None

        @task(requires=first)
        def by_object(env: Environment) -> None:
            return None

        @task(requires="first")
        def by_name(env: Environment) -> None:
            return None

        assert by_object.requires == (first,)
        assert by_name.requires == (first,)

    def test_required_name_may_be_declared_later(self) -> None:
        """A name in ``requires`` is resolved when needed, so it may be declared after."""

        @task(requires=["later"])
        def early(env: Environment) -> None:
            return None

        @task
        def later(env: Environment) -> None:
            return None

        assert early.requires == (later,)

    @pytest.mark.parametrize(
        "options",
        [{"retries": -1}, {"timeout": 0}, {"timeout": -1.5}, {"retry_delay": -1}],
        ids=["retries=-1", "timeout=0", "timeout<0", "retry_delay<0"],
    )
    def test_invalid_options_raise_value_error(self, options: dict[str, Any]) -> None:
        """An impossible option value is refused at decoration time with ValueError."""
        with pytest.raises(ValueError, match=next(iter(options))):
            task(**options)

    def test_unknown_required_name_raises_when_called(self) -> None:
        """Requiring an undeclared name raises UnknownStepError when called; the body never runs."""
        ran: list[bool] = []

        @task(requires=["nowhere"])
        def orphan(env: Environment) -> None:
            ran.append(True)

        env = _make_env()
        with pytest.raises(UnknownStepError, match="nowhere"):
            orphan(env=env)
        assert ran == []
        assert env.get_status(orphan) is Status.PENDING


# --------------------------------------------------------------------------- environment resolution


class TestEnvironmentResolution:
    """A direct call finds its environment: given, fresh when ``new``, else ``./current``."""

    def test_environment_object_is_used_as_is(self) -> None:
        """``env=Environment`` passes that very object to the step."""
        seen: list[Environment] = []

        @task
        def probe(env: Environment) -> None:
            seen.append(env)

        env = _make_env()
        probe(env=env)
        assert seen == [env]
        assert seen[0] is env
        assert env.is_done(probe)

    @pytest.mark.parametrize("as_type", [str, Path], ids=["str", "Path"])
    def test_path_loads_the_environment_there(self, as_type: Callable[[str], Any]) -> None:
        """``env=`` a str or Path loads the environment in that directory and records there."""
        seen: list[Path] = []

        @task
        def probe(env: Any) -> None:
            seen.append(env.resultdir)
            env["seen"] = True

        where = _make_env("target").resultdir
        _make_env("other")  # ./current points elsewhere
        probe(env=as_type(str(where)))
        assert seen == [where]
        loaded = Environment.load(where)
        assert loaded.is_done("probe")
        assert loaded["seen"] is True

    def test_new_without_env_creates_a_timestamped_env_and_repoints_current(self) -> None:
        """Without env, a ``new=True`` step makes ``results/<timestamp>``, linked as ``current``."""
        seen: list[Path] = []

        @task(new=True)
        def provision(env: Environment) -> None:
            seen.append(env.resultdir)
            env["n"] = len(seen)

        provision()
        provision()
        first, second = seen
        assert first != second
        for where in (first, second):
            assert where.parent == Path("results").resolve()
            assert TIMESTAMP.fullmatch(where.name), where.name
            assert (where / "env").is_file()
        assert Path("current").resolve() == second.resolve()
        assert Environment.load(first)["n"] == 1
        assert Environment.load(second)["n"] == 2

    def test_without_env_uses_current(self) -> None:
        """A step called without env (``new=False``) uses ``./current``."""
        seen: list[Path] = []

        @task
        def probe(env: Environment) -> None:
            seen.append(env.resultdir)

        _make_env("old")
        where = _make_env("latest").resultdir
        probe()
        assert seen == [where]
        assert Environment.load(where).is_done("probe")
        assert not Environment.load("results/old").is_done("probe")

    def test_no_current_raises_no_environment_error(self) -> None:
        """Without env and without ``./current``, the call raises NoEnvironmentError."""
        ran: list[bool] = []

        @task
        def probe(env: Environment) -> None:
            ran.append(True)

        with pytest.raises(NoEnvironmentError, match="new=True"):
            probe()
        assert ran == []

    def test_path_without_environment_raises_no_environment_error(self) -> None:
        """A ``new=False`` step given a path holding no environment raises NoEnvironmentError."""
        ran: list[bool] = []

        @task
        def probe(env: Any) -> None:
            ran.append(True)

        with pytest.raises(NoEnvironmentError):
            probe(env="results/missing")
        assert ran == []
        assert not Path("results/missing/env").exists()

    def test_new_step_on_existing_env_path_uses_it_as_is(self) -> None:
        """A ``new=True`` step given a path holding an environment uses it: data kept, no error."""
        seen: list[Path] = []

        @task(new=True)
        def provision(env: Any) -> None:
            seen.append(env.resultdir)
            env["added"] = env["kept"] + 1

        old = _make_env("exp")
        old["kept"] = 41
        old.dump()
        provision(env=Path("results/exp"))
        assert seen == [old.resultdir]
        assert _fresh_json(
            old.resultdir, "[env['kept'], env['added'], env.get_status('provision').value]"
        ) == [
            41,
            42,
            "done",
        ]

    def test_new_step_on_env_file_path_uses_that_env(self) -> None:
        """A ``new=True`` step given an environment's ``env`` file uses that environment."""

        @task(new=True)
        def provision(env: Any) -> None:
            env["added"] = env["kept"] + 1

        old = _make_env("exp")
        old["kept"] = 1
        old.dump()
        provision(env=old.resultdir / "env")
        assert _fresh_json(old.resultdir, "[env['kept'], env['added']]") == [1, 2]

    def test_new_step_on_empty_path_creates_the_env_there(self) -> None:
        """A ``new=True`` step given a path holding no environment creates it at that path."""

        @task(new=True)
        def provision(env: Any) -> None:
            env["made"] = True

        provision(env="results/named")
        where = Path("results/named")
        assert (where / "env").is_file()
        assert Environment.load(where)["made"] is True
        assert Environment.load(where).is_done("provision")


class TestNeverWipes:
    """Unlike EnOSlib, ``new=True`` never wipes an existing environment."""

    def test_new_step_on_existing_path_keeps_every_key(self) -> None:
        """Calling a ``new=True`` step twice on one env path keeps the earlier data."""

        @task(new=True)
        def provision(env: Any, n: int = 0) -> None:
            env[f"k{n}"] = n

        provision(env="results/exp", n=1)
        provision(env="results/exp", n=2)
        assert _fresh_json(Path("results/exp"), "sorted(env)") == ["k1", "k2"]

    def test_new_step_without_env_leaves_previous_env_intact(self) -> None:
        """A ``new=True`` step without env makes a new environment; the old one keeps its data."""

        @task(new=True)
        def provision(env: Environment) -> None:
            env["fresh"] = True

        old = _make_env("old")
        old["precious"] = [1, 2, 3]
        old.dump()
        provision()
        assert Path("current").resolve() != old.resultdir
        assert _fresh_json(old.resultdir, "[env['precious'], 'fresh' in env]") == [[1, 2, 3], False]

    def test_get_or_create_env_new_on_existing_raises_and_keeps_data(self) -> None:
        """``get_or_create_env(True, PATH)`` on an existing env raises EnvironmentExistsError."""
        old = _make_env("exp")
        old["precious"] = "yes"
        old.dump()
        with pytest.raises(EnvironmentExistsError):
            get_or_create_env(new=True, env_name="results/exp")
        assert _fresh_json(old.resultdir, "env['precious']") == "yes"


class TestGetOrCreateEnv:
    """EnOSlib's helper: pass through, load, or create."""

    def test_environment_passes_through_even_with_new(self) -> None:
        """An Environment given to ``get_or_create_env`` is returned as is, even with new=True."""
        env = _make_env()
        assert get_or_create_env(new=True, env_name=env) is env
        assert get_or_create_env(new=False, env_name=env) is env

    def test_none_and_new_creates_a_fresh_env(self) -> None:
        """``get_or_create_env(True)`` makes a timestamped env in ./results, linked as current."""
        env = get_or_create_env(new=True)
        assert env.resultdir.parent == Path("results").resolve()
        assert TIMESTAMP.fullmatch(env.resultdir.name)
        assert Path("current").resolve() == env.resultdir.resolve()

    def test_none_without_new_loads_current(self) -> None:
        """``get_or_create_env(False)`` loads ``./current``."""
        made = _make_env()
        made["x"] = 1
        made.dump()
        loaded = get_or_create_env(new=False)
        assert loaded.resultdir == made.resultdir
        assert loaded["x"] == 1


# --------------------------------------------------------------------------- env injection


class TestEnvInjection:
    """The environment is passed as ``env`` only to functions that take it."""

    def test_env_parameter_receives_the_environment(self) -> None:
        """A function with an ``env`` parameter gets the environment."""

        @task
        def probe(env: Environment) -> bool:
            return isinstance(env, Environment)

        env = _make_env()
        assert probe(env=env) is True

    def test_var_keyword_receives_env_in_kwargs(self) -> None:
        """A function with ``**kwargs`` gets the environment as ``kwargs["env"]``."""
        seen: list[dict[str, Any]] = []

        @task
        def probe(**kwargs: Any) -> None:
            seen.append(kwargs)

        env = _make_env()
        probe(env=env, rate=3)
        assert seen == [{"env": env, "rate": 3}]
        assert seen[0]["env"] is env
        assert env.steps["probe"].params == {"rate": 3}

    def test_function_without_env_is_called_without_it(self) -> None:
        """A function taking neither ``env`` nor ``**kwargs`` is called without env."""

        @task
        def constant() -> int:
            return 42

        env = _make_env()
        assert constant(env=env) == 42
        assert env.steps["constant"].status is Status.DONE
        assert env.steps["constant"].result == 42


# --------------------------------------------------------------------------- RUNNING first


class TestRunningCommittedFirst:
    """RUNNING, with its owner, is committed before the body runs."""

    def test_another_process_sees_running_during_the_body(self) -> None:
        """A process loading the environment while the body runs sees RUNNING owned by this pid."""
        seen: list[Any] = []

        @task
        def probe(env: Environment) -> None:
            seen.append(
                _fresh_json(
                    env.resultdir,
                    "[env.get_status('probe').value, env.steps['probe'].owner.pid, "
                    "env.steps['probe'].owner.host]",
                )
            )

        env = _make_env()
        probe(env=env)
        assert seen == [["running", os.getpid(), socket.gethostname()]]
        assert env.steps["probe"].status is Status.DONE


# --------------------------------------------------------------------------- outcome


class TestDone:
    """A step that returns is DONE, with its result, times, params and fingerprint."""

    def test_result_and_record(self) -> None:
        """The record holds DONE, result, aware times, duration, one attempt, params and owner."""

        @task
        def bench(env: Environment, rate: int, seed: int = 7) -> dict[str, int]:
            return {"throughput": rate * 2, "seed": seed}

        env = _make_env()
        before = datetime.now(timezone.utc)
        assert bench(env=env, rate=10) == {"throughput": 20, "seed": 7}
        after = datetime.now(timezone.utc)
        record = env.steps["bench"]
        assert record.status is Status.DONE
        assert record.result == {"throughput": 20, "seed": 7}
        assert record.started is not None
        assert record.ended is not None
        assert record.started.utcoffset() is not None
        assert record.ended.utcoffset() is not None
        assert before <= record.started <= record.ended <= after
        assert record.duration is not None
        assert record.duration >= 0
        assert record.attempts == 1
        assert record.error is None
        assert record.params == {"rate": 10, "seed": 7}
        assert record.owner is not None
        assert (record.owner.host, record.owner.pid) == (socket.gethostname(), os.getpid())

    def test_result_survives_reload_in_a_fresh_process(self) -> None:
        """Another interpreter loading the environment reads the DONE status and the result."""

        @task
        def bench(env: Environment) -> dict[str, list[int]]:
            return {"values": [1, 2, 3]}

        env = _make_env()
        bench(env=env)
        assert _fresh_json(
            env.resultdir, "[env.get_status('bench').value, env.steps['bench'].result]"
        ) == [
            "done",
            {"values": [1, 2, 3]},
        ]

    def test_fingerprint_follows_params(self) -> None:
        """The fingerprint is a non-empty str, stable for equal params, changed by other params."""

        @task
        def bench(env: Environment, rate: int, seed: int = 0) -> None:
            return None

        env = _make_env()
        bench(env=env, rate=10)
        first = env.steps["bench"].fingerprint
        bench(env=env, rate=10)
        again = env.steps["bench"].fingerprint
        bench(env=env, rate=20)
        other = env.steps["bench"].fingerprint
        assert isinstance(first, str)
        assert first
        assert again == first
        assert other != first
        assert env.steps["bench"].params == {"rate": 20, "seed": 0}

    def test_rerun_of_a_done_step_runs_it_again(self) -> None:
        """A direct call of a DONE step runs its body again (direct calls do not resume)."""
        runs: list[int] = []

        @task
        def count(env: Environment) -> int:
            runs.append(1)
            return len(runs)

        env = _make_env()
        assert count(env=env) == 1
        assert count(env=env) == 2
        assert env.steps["count"].result == 2


class TestFailed:
    """A step that raises is FAILED, keeps its writes, and the original exception propagates."""

    def test_original_exception_is_reraised_and_recorded(self) -> None:
        """The ValueError propagates unchanged; the record keeps its type, message, traceback."""
        raised: list[BaseException] = []

        @task
        def explode_now(env: Environment) -> None:
            error = ValueError("boom: disk full")
            raised.append(error)
            raise error

        env = _make_env()
        with pytest.raises(ValueError, match="boom: disk full") as caught:
            explode_now(env=env)
        assert caught.value is raised[0]
        record = env.steps["explode_now"]
        assert record.status is Status.FAILED
        assert record.attempts == 1
        assert record.ended is not None
        assert record.error is not None
        assert record.error.type == "ValueError"
        assert record.error.message == "boom: disk full"
        assert "explode_now" in record.error.traceback
        assert "ValueError: boom: disk full" in record.error.traceback

    def test_error_survives_reload_in_a_fresh_process(self) -> None:
        """Another interpreter sees FAILED and the error's type and message."""

        @task
        def explode(env: Environment) -> None:
            msg = "no nodes left"
            raise RuntimeError(msg)

        env = _make_env()
        with pytest.raises(RuntimeError, match="no nodes left"):
            explode(env=env)
        assert _fresh_json(
            env.resultdir,
            "[env.get_status('explode').value, env.steps['explode'].error.type, "
            "env.steps['explode'].error.message]",
        ) == ["failed", "RuntimeError", "no nodes left"]

    def test_partial_writes_are_kept(self) -> None:
        """Keys written before the raise are committed: another process sees them (EnOSlib)."""

        @task
        def provision(env: Environment) -> None:
            env["job_id"] = 1234
            msg = "deploy failed after reserving"
            raise OSError(msg)

        env = _make_env()
        with pytest.raises(OSError, match="after reserving"):
            provision(env=env)
        assert _fresh_json(env.resultdir, "[env['job_id'], env.get_status('provision').value]") == [
            1234,
            "failed",
        ]
        assert "job_id" in env.steps["provision"].writes

    def test_keyboard_interrupt_cancels_and_reraises(self) -> None:
        """KeyboardInterrupt raised by the body records CANCELLED and propagates."""

        @task
        def long_run(env: Environment) -> None:
            env["progress"] = 3
            raise KeyboardInterrupt

        env = _make_env()
        with pytest.raises(KeyboardInterrupt):
            long_run(env=env)
        assert env.steps["long_run"].status is Status.CANCELLED
        assert _fresh_json(
            env.resultdir, "[env.get_status('long_run').value, env['progress']]"
        ) == [
            "cancelled",
            3,
        ]

    def test_system_exit_fails_and_reraises(self) -> None:
        """SystemExit raised by the body records FAILED and propagates."""

        @task
        def quits(env: Environment) -> None:
            sys.exit(3)

        env = _make_env()
        with pytest.raises(SystemExit) as caught:
            quits(env=env)
        assert caught.value.code == 3
        record = env.steps["quits"]
        assert record.status is Status.FAILED
        assert record.error is not None
        assert "SystemExit" in record.error.type
        assert Environment.load(env.resultdir).get_status("quits") is Status.FAILED

    def test_failed_step_can_be_called_again(self) -> None:
        """After a failure, calling the step again runs it and may end DONE."""
        calls: list[int] = []

        @task
        def flaky(env: Environment) -> str:
            calls.append(1)
            if len(calls) == 1:
                msg = "first call fails"
                raise ValueError(msg)
            return "ok"

        env = _make_env()
        with pytest.raises(ValueError, match="first call fails"):
            flaky(env=env)
        assert flaky(env=env) == "ok"
        record = env.steps["flaky"]
        assert record.status is Status.DONE
        assert record.error is None


# --------------------------------------------------------------------------- prerequisites


class TestPrerequisiteError:
    """A direct call refuses to run before its prerequisites are DONE."""

    def test_missing_prerequisite_refuses_and_does_not_run(self) -> None:
        """PrerequisiteError names the step and ``make(``; the body does not run; PENDING stays."""

        @task
        def provision(env: Environment) -> None:
            env["nodes"] = 2

        @task(requires=[provision])
        def deploy(env: Environment) -> None:
            Path("deployed").write_text("yes")

        env = _make_env()
        with pytest.raises(PrerequisiteError) as caught:
            deploy(env=env)
        assert caught.value.missing == ("provision",)
        assert "'provision'" in str(caught.value)
        assert "make(" in str(caught.value)
        assert not Path("deployed").exists()
        assert env.get_status(deploy) is Status.PENDING
        assert Environment.load(env.resultdir).get_status("deploy") is Status.PENDING

    def test_failed_prerequisite_also_refuses(self) -> None:
        """A prerequisite that FAILED is not DONE: the call is refused."""

        @task
        def provision(env: Environment) -> None:
            msg = "no nodes"
            raise RuntimeError(msg)

        @task(requires=["provision"])
        def deploy(env: Environment) -> None:
            Path("deployed").write_text("yes")

        env = _make_env()
        with pytest.raises(RuntimeError, match="no nodes"):
            provision(env=env)
        with pytest.raises(PrerequisiteError, match="provision"):
            deploy(env=env)
        assert not Path("deployed").exists()

    def test_done_prerequisite_lets_it_run(self) -> None:
        """Once the prerequisite is DONE, the step runs and is DONE."""

        @task
        def provision(env: Environment) -> None:
            env["nodes"] = 2

        @task(requires=[provision])
        def deploy(env: Environment) -> int:
            Path("deployed").write_text("yes")
            return int(env["nodes"])

        env = _make_env()
        provision(env=env)
        assert deploy(env=env) == 2
        assert Path("deployed").read_text() == "yes"
        assert env.is_done(deploy)


# --------------------------------------------------------------------------- live and dead owners


class TestStepRunningError:
    """A step RUNNING in a live process cannot be started again."""

    def test_step_running_in_a_live_child_is_refused(self) -> None:
        """While a child runs the step, a call here raises StepRunningError naming host and pid."""
        ran_here: list[bool] = []

        @task
        def hold(env: Any) -> None:
            ran_here.append(True)

        where = _make_env().resultdir
        child, _marker, release = _start_holder(where)
        try:
            with pytest.raises(StepRunningError) as caught:
                hold(env=where)
            assert caught.value.pid == child.pid
            assert caught.value.host == socket.gethostname()
            assert str(child.pid) in str(caught.value)
            assert socket.gethostname() in str(caught.value)
            assert ran_here == []
            record = Environment.load(where).steps["hold"]
            assert record.status is Status.RUNNING
            assert record.owner is not None
            assert record.owner.pid == child.pid
            release.write_text("go")
            out, _ = child.communicate(timeout=WAIT_S)
        finally:
            _stop(child)
        assert child.returncode == 0, out
        assert out.strip() == "released"
        loaded = Environment.load(where)
        assert loaded.get_status("hold") is Status.DONE
        assert loaded["held_by"] == child.pid

    def test_step_running_in_another_thread_is_refused(self) -> None:
        """A step RUNNING in another thread here is alive: a second call raises StepRunningError."""
        started, release = threading.Event(), threading.Event()
        errors: list[BaseException] = []

        @task
        def hold(env: Any) -> None:
            started.set()
            if not release.wait(WAIT_S):
                msg = "never released"
                raise TimeoutError(msg)

        where = _make_env().resultdir

        def run() -> None:
            try:
                hold(env=where)
            except BaseException as error:  # noqa: BLE001 - reported by the test
                errors.append(error)

        thread = threading.Thread(target=run)
        thread.start()
        try:
            assert started.wait(WAIT_S)
            with pytest.raises(StepRunningError) as caught:
                hold(env=where)
            assert caught.value.pid == os.getpid()
        finally:
            release.set()
            thread.join(WAIT_S)
        assert not thread.is_alive()
        assert errors == []
        assert Environment.load(where).get_status("hold") is Status.DONE


class TestInterrupted:
    """A RUNNING record whose owner died becomes INTERRUPTED, and the step can run again."""

    def test_killed_owner_gives_interrupted_then_reruns(self) -> None:
        """After SIGKILL of the running child, a load shows INTERRUPTED; a new call runs to DONE."""

        @task
        def hold(env: Any) -> str:
            env["held_by"] = os.getpid()
            return "here"

        where = _make_env().resultdir
        child, _marker, _release = _start_holder(where)
        try:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(WAIT_S)
        finally:
            _stop(child)
        assert child.returncode == -signal.SIGKILL
        loaded = Environment.load(where)
        assert loaded.get_status("hold") is Status.INTERRUPTED
        assert hold(env=where) == "here"
        final = Environment.load(where)
        assert final.get_status("hold") is Status.DONE
        assert final["held_by"] == os.getpid()

    def test_same_pid_other_start_time_is_not_alive(self) -> None:
        """A RUNNING record with this pid but another start time (recycled pid) is INTERRUPTED."""
        env = _make_env()
        env.set_status("ghost", Status.RUNNING)
        owner = Owner(
            host=socket.gethostname(),
            pid=os.getpid(),
            started=datetime.now(timezone.utc) - timedelta(hours=1),
        )
        env._put_record(StepRecord(name="ghost", status=Status.RUNNING, owner=owner))
        env.dump()
        assert Environment.load(env.resultdir).get_status("ghost") is Status.INTERRUPTED

    def test_running_record_of_this_process_stays_running(self) -> None:
        """A RUNNING record owned by this very process (pid and start time) loads as RUNNING."""
        env = _make_env()
        env._put_record(StepRecord(name="mine", status=Status.RUNNING, owner=current_owner()))
        env.dump()
        assert Environment.load(env.resultdir).get_status("mine") is Status.RUNNING

    def test_running_record_without_owner_is_interrupted(self) -> None:
        """A RUNNING record with no owner cannot be alive: it loads as INTERRUPTED."""
        env = _make_env()
        env.set_status("orphan", Status.RUNNING)
        env.dump()
        assert Environment.load(env.resultdir).get_status("orphan") is Status.INTERRUPTED


class TestIsAlive:
    """``expkit._process.is_alive`` tells a live owner from a dead one."""

    def test_current_owner_is_alive(self) -> None:
        """The current process, as ``current_owner()``, is alive."""
        owner = current_owner()
        assert owner.pid == os.getpid()
        assert owner.host == socket.gethostname()
        assert is_alive(owner)

    def test_reaped_child_is_not_alive(self) -> None:
        """The pid of a child that exited and was reaped is not alive."""
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait(WAIT_S)
        assert not is_alive(Owner(host=socket.gethostname(), pid=child.pid, started=None))

    def test_live_child_is_alive_until_killed(self) -> None:
        """A running child is alive; once killed (zombie or reaped) it is not."""
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            owner = Owner(host=socket.gethostname(), pid=child.pid, started=None)
            assert is_alive(owner)
            child.kill()
            _wait_for(lambda: not is_alive(owner), "the killed child to be seen dead")
        finally:
            child.kill()
            child.wait(WAIT_S)
        assert not is_alive(owner)

    def test_live_pid_with_other_start_time_is_not_alive(self) -> None:
        """A live pid whose start time differs from the owner's is a recycled pid: not alive."""
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            owner = Owner(
                host=socket.gethostname(),
                pid=child.pid,
                started=datetime.now(timezone.utc) - timedelta(hours=1),
            )
            assert not is_alive(owner)
        finally:
            child.kill()
            child.wait(WAIT_S)

    def test_other_host_is_assumed_alive(self) -> None:
        """An owner on another host cannot be probed: it is assumed alive."""
        owner = Owner(host=f"not-{socket.gethostname()}.invalid", pid=1, started=None)
        assert is_alive(owner)


# --------------------------------------------------------------------------- tracking


class TestReadsWrites:
    """The record lists the data keys the step read and wrote."""

    def test_reads_and_writes(self) -> None:
        """Read a, set b, delete c, mutate d, read e: reads {a, d, e}, writes {b, c, d}."""

        @task
        def touch(env: Any) -> None:
            assert env["a"] == 1
            env["b"] = 2
            del env["c"]
            env["d"].append(1)
            assert env["e"] == [5]

        env = _make_env()
        env.update({"a": 1, "c": 3, "d": [0], "e": [5], "untouched": [9]})
        env.dump()
        touch(env=env.resultdir)
        record = Environment.load(env.resultdir).steps["touch"]
        assert record.reads == {"a", "d", "e"}
        assert record.writes == {"b", "c", "d"}
        assert "e" not in record.writes
        assert _fresh_json(env.resultdir, "[env['b'], 'c' in env, env['d'], env['e']]") == [
            2,
            False,
            [0, 1],
            [5],
        ]

    def test_reassigning_the_same_value_counts_as_a_write(self) -> None:
        """Assigning a key counts as writing it, even when the value does not change."""

        @task
        def same(env: Environment) -> None:
            env["x"] = 1

        env = _make_env()
        env["x"] = 1
        env.dump()
        same(env=env)
        assert env.steps["same"].writes == {"x"}
        assert env.steps["same"].reads == frozenset()


class TestNestedCalls:
    """A step calling another step with ``env=env`` shares one environment (EnOSlib behaviour)."""

    def test_inner_write_visible_to_outer_and_both_done(self) -> None:
        """The inner step's write is seen by the outer one; both end DONE, the data committed."""

        @task
        def inner(env: Environment) -> None:
            env["from_inner"] = "hello"

        @task
        def outer(env: Environment) -> str:
            inner(env=env)
            return str(env["from_inner"]) + " world"

        env = _make_env()
        assert outer(env=env.resultdir) == "hello world"
        assert _fresh_json(
            env.resultdir,
            "[env.get_status('inner').value, env.get_status('outer').value, env['from_inner'], "
            "env.steps['outer'].result]",
        ) == ["done", "done", "hello", "hello world"]

    def test_inner_failure_propagates_through_outer(self) -> None:
        """An inner step's exception fails both steps and reaches the caller unchanged."""

        @task
        def inner(env: Environment) -> None:
            msg = "inner broke"
            raise LookupError(msg)

        @task
        def outer(env: Environment) -> None:
            inner(env=env)

        env = _make_env()
        with pytest.raises(LookupError, match="inner broke"):
            outer(env=env)
        assert env.get_status("inner") is Status.FAILED
        assert env.get_status("outer") is Status.FAILED


# --------------------------------------------------------------------------- retries


class TestRetries:
    """``retries`` re-runs a failing body; ``retry_delay`` doubles between attempts."""

    def test_succeeds_on_third_attempt(self) -> None:
        """Failing twice then succeeding with ``retries=2`` ends DONE after 3 attempts."""
        calls: list[int] = []

        @task(retries=2)
        def flaky(env: Environment) -> str:
            calls.append(1)
            if len(calls) < 3:
                msg = f"attempt {len(calls)} fails"
                raise ConnectionError(msg)
            return "third time lucky"

        env = _make_env()
        assert flaky(env=env) == "third time lucky"
        assert len(calls) == 3
        record = env.steps["flaky"]
        assert record.status is Status.DONE
        assert record.attempts == 3
        assert record.error is None
        assert Environment.load(env.resultdir).steps["flaky"].attempts == 3

    def test_gives_up_after_retries(self) -> None:
        """Always failing with ``retries=1``: FAILED after 2 attempts, the last error re-raised."""
        calls: list[int] = []

        @task(retries=1)
        def broken(env: Environment) -> None:
            calls.append(1)
            msg = f"attempt {len(calls)} fails"
            raise ConnectionError(msg)

        env = _make_env()
        with pytest.raises(ConnectionError, match="attempt 2 fails"):
            broken(env=env)
        assert len(calls) == 2
        record = env.steps["broken"]
        assert record.status is Status.FAILED
        assert record.attempts == 2
        assert record.error is not None
        assert record.error.message == "attempt 2 fails"

    def test_retry_delay_doubles(self) -> None:
        """With ``retry_delay=0.05`` and two retries, the waits are at least 0.05 s then 0.1 s."""
        stamps: list[float] = []

        @task(retries=2, retry_delay=0.05)
        def flaky(env: Environment) -> None:
            stamps.append(time.monotonic())
            if len(stamps) < 3:
                msg = "not yet"
                raise ConnectionError(msg)

        env = _make_env()
        flaky(env=env)
        assert len(stamps) == 3
        assert stamps[1] - stamps[0] >= 0.05
        assert stamps[2] - stamps[1] >= 0.1
        assert stamps[2] - stamps[0] >= 0.15

    def test_keyboard_interrupt_is_not_retried(self) -> None:
        """KeyboardInterrupt is not retried: one attempt, CANCELLED."""
        calls: list[int] = []

        @task(retries=3)
        def stop(env: Environment) -> None:
            calls.append(1)
            raise KeyboardInterrupt

        env = _make_env()
        with pytest.raises(KeyboardInterrupt):
            stop(env=env)
        assert calls == [1]
        assert env.get_status("stop") is Status.CANCELLED

    def test_ctrl_c_while_waiting_to_retry_cancels(self) -> None:
        """A real SIGINT during the retry delay records CANCELLED (not a stale RUNNING)."""
        code = """
            import os, signal, threading
            from expkit import Environment, task

            calls = []

            @task(retries=1, retry_delay=10)
            def flaky(env):
                calls.append(1)
                if len(calls) == 1:
                    threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
                raise ValueError("attempt fails")

            env = Environment.create("results", "e")
            try:
                flaky(env=env)
            except KeyboardInterrupt:
                print("interrupted")
            print(len(calls))
            print(Environment.load("results/e").get_status("flaky").value)
        """
        result = run_python(code)
        assert result.stdout.split() == ["interrupted", "1", "cancelled"]


# --------------------------------------------------------------------------- timeout


class TestTimeout:
    """``timeout`` stops a step that runs too long: FAILED with StepTimeoutError."""

    def test_main_thread_timeout(self) -> None:
        """Sleeping 10 s with ``timeout=0.2`` in the main thread: StepTimeoutError, FAILED."""

        @task(timeout=0.2)
        def slow(env: Environment) -> None:
            time.sleep(10)

        env = _make_env()
        with pytest.raises(StepTimeoutError) as caught:
            slow(env=env)
        assert isinstance(caught.value, TimeoutError)
        assert caught.value.step == "slow"
        assert caught.value.timeout == 0.2
        record = env.steps["slow"]
        assert record.status is Status.FAILED
        assert record.error is not None
        assert "StepTimeoutError" in record.error.type
        assert Environment.load(env.resultdir).get_status("slow") is Status.FAILED

    def test_other_thread_timeout(self) -> None:
        """A Python loop past its timeout in another thread: StepTimeoutError, FAILED."""
        errors: list[BaseException] = []

        @task(timeout=0.2)
        def spin(env: Environment) -> None:
            while True:
                time.sleep(0.01)

        env = _make_env()

        def run() -> None:
            try:
                spin(env=env)
            except BaseException as error:  # noqa: BLE001 - reported by the test
                errors.append(error)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(WAIT_S)
        assert not thread.is_alive()
        assert len(errors) == 1
        assert isinstance(errors[0], StepTimeoutError)
        assert isinstance(errors[0], TimeoutError)
        assert env.get_status("spin") is Status.FAILED

    def test_finishing_in_time_is_done_and_no_alarm_fires_later(self) -> None:
        """A quick step is DONE; its timer is cancelled, the previous SIGALRM handler restored."""
        fired: list[int] = []

        def on_alarm(signum: int, _frame: FrameType | None) -> None:
            fired.append(signum)

        @task(timeout=0.2)
        def quick(env: Environment) -> str:
            return "fast"

        env = _make_env()
        previous = signal.signal(signal.SIGALRM, on_alarm)
        try:
            assert quick(env=env) == "fast"
            assert signal.getsignal(signal.SIGALRM) is on_alarm
            assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
            time.sleep(0.5)  # 0.3 s past the timeout: an armed timer would have fired by now
        finally:
            signal.signal(signal.SIGALRM, previous)
        assert fired == []
        assert env.get_status("quick") is Status.DONE

    def test_finishing_in_time_in_a_thread_gets_no_late_exception(self) -> None:
        """A quick step run in a thread is DONE; no exception reaches the thread afterwards."""
        errors: list[BaseException] = []
        results: list[str] = []

        @task(timeout=0.2)
        def quick(env: Environment) -> str:
            return "fast"

        env = _make_env()

        def run() -> None:
            try:
                results.append(quick(env=env))
                limit = time.monotonic() + 0.5  # 0.3 s past the timeout, running Python code
                while time.monotonic() < limit:
                    time.sleep(0.01)
            except BaseException as error:  # noqa: BLE001 - reported by the test
                errors.append(error)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(WAIT_S)
        assert not thread.is_alive()
        assert errors == []
        assert results == ["fast"]
        assert env.get_status("quick") is Status.DONE


# --------------------------------------------------------------------------- unpicklable


class TestUnpicklable:
    """Values that cannot be pickled fail the step without losing what can be stored."""

    def test_unpicklable_result_fails(self) -> None:
        """A step returning a lambda is FAILED with UnpicklableValueError."""

        @task
        def make_fn(env: Environment) -> Callable[[], int]:
            return lambda: 1

        env = _make_env()
        with pytest.raises(UnpicklableValueError, match="make_fn"):
            make_fn(env=env)
        record = env.steps["make_fn"]
        assert record.status is Status.FAILED
        assert record.error is not None
        assert "UnpicklableValueError" in record.error.type
        assert Environment.load(env.resultdir).get_status("make_fn") is Status.FAILED

    def test_unpicklable_value_fails_and_keeps_other_writes(self) -> None:
        """Storing a Lock: UnpicklableValueError naming the key; the other writes are committed."""

        @task
        def store(env: Environment) -> None:
            env["ok"] = [1, 2]
            env["x"] = threading.Lock()

        env = _make_env()
        with pytest.raises(UnpicklableValueError, match="'x'") as caught:
            store(env=env)
        assert caught.value.key == "x"
        assert env.get_status("store") is Status.FAILED
        assert _fresh_json(
            env.resultdir, "[env['ok'], 'x' in env, env.get_status('store').value]"
        ) == [
            [1, 2],
            False,
            "failed",
        ]


def _p_plain(a: Any, b: Any = 1, *, c: Any, d: Any = 2) -> None: ...
def _p_env(env: Any, a: Any, b: Any = 3) -> None: ...
def _p_env_default(a: Any, env: Any = None, *, k: Any = 4) -> None: ...
def _p_varargs(a: Any, /, b: Any, *args: Any, c: Any = 5, **kwargs: Any) -> None: ...
def _p_kwargs(**kwargs: Any) -> None: ...
def _p_none() -> None: ...
def _p_posonly_defaults(a: Any = 1, b: Any = 2, /, c: Any = 3) -> None: ...


@pytest.mark.parametrize(
    "fn",
    [_p_plain, _p_env, _p_env_default, _p_varargs, _p_kwargs, _p_none, _p_posonly_defaults],
)
def test_parameters_read_from_code_agree_with_inspect(fn: Callable[..., None]) -> None:
    """The planner's fast reading of a function's parameters is the signature's."""
    from expkit._task import _plain_facts

    assert _plain_facts(fn) is not None

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> None:  # read through inspect.signature
        fn(*args, **kwargs)

    assert _plain_facts(wrapped) is None
    by_code = Task(fn, TaskOptions(name="by_code"))
    by_signature = Task(wrapped, TaskOptions(name="by_signature"))
    assert by_code._parameters == by_signature._parameters
    assert by_code.takes_env == by_signature.takes_env
