"""``make``: run a plan, the driver being the environment's only writer.

The driver claims ready steps (RUNNING, one commit for all of them), hands
them to an executor, and commits what comes back: data, records, SKIPPED
for the dependents of a failure. Commits are not fsynced one by one: an
fsync follows within ``GROUP_WINDOW`` seconds of a commit and before
``make`` returns (group commit, DESIGN section 8).
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._environment import Environment
from ._errors import RunFailedError, StepRunningError
from ._events import Event, Observer, PlanReady, RunFinished, StepFinished, StepStarted
from ._executors import Executor, block_ctrl_c, get_executor
from ._fingerprint import params_fingerprint
from ._instances import parse_selector
from ._paths import CURRENT_LINK, default_root
from ._plan import Plan, make_plan
from ._process import current_owner, current_owner_state, is_alive
from ._records import (
    ErrorInfo,
    StepRecord,
    StoredResult,
    as_datetime,
    clock,
    finished_state,
    running_state,
)
from ._report import RunReport, StepOutcome
from ._status import Status
from ._work import Job, Outcome

if TYPE_CHECKING:
    from types import FrameType

    from ._task import Task

__all__ = ["make"]

#: Seconds a committed step may wait for the fsync it shares with later ones.
GROUP_WINDOW = 0.05
#: Seconds running steps get to stop after Ctrl-C before they are recorded CANCELLED.
CANCEL_GRACE = 10.0

#: (environment directory, step) pairs this process is running now: a RUNNING
#: record owned by this process but not in here was left by an aborted run.
ACTIVE: set[tuple[str, str]] = set()
_NONE: Mapping[str, str] = {}


def make(
    *targets: Task[Any, Any] | str,
    env: Environment | str | os.PathLike[str] | None = None,
    new: bool = False,
    jobs: int | None = None,
    executor: str | Executor = "sequential",
    address: str | None = None,
    fail_fast: bool = False,
    force: Iterable[Task[Any, Any] | str] = (),
    params: Mapping[str, Mapping[str, Any]] | None = None,
    resume_from: Environment | str | os.PathLike[str] | None = None,
    check: bool = True,
    resume_hint: str | None = None,
    on_event: Observer | None = None,
) -> RunReport:
    """Run what ``targets`` need and is not done: failed, interrupted, missing or stale steps.

    No targets: every leaf step. Returns a :class:`RunReport`; with
    ``check`` a failure raises :class:`RunFailedError` carrying it. On
    Ctrl-C the running steps are recorded CANCELLED, everything is
    committed, the call that resumes is printed, and ``KeyboardInterrupt``
    propagates. ``on_event`` is called with each :mod:`expkit._events`
    event as the run goes (the plan, each step started and finished); in a
    Jupyter kernel it defaults to a live progress table under the cell.
    """
    from ._task import registry

    if jobs is not None and jobs < 1:
        msg = f"jobs must be >= 1, not {jobs}"
        raise ValueError(msg)
    if on_event is None:  # in a notebook: a live progress table under the cell
        from ._notebook import default_observer

        on_event = default_observer()
    environment = _environment_for(env, new=new, resume_from=resume_from)
    runner = get_executor(executor, jobs, address)
    forced = [f if isinstance(f, str) else f.name for f in force]
    hint = resume_hint or _resume_call(
        targets, environment, params=params, executor=executor, jobs=jobs
    )
    driver = _Driver(environment, runner, jobs, fail_fast=fail_fast, hint=hint, on_event=on_event)
    try:
        report = driver.run(list(targets), registry, forced, params or {})
    finally:
        runner.close()
    if check and not report.ok:
        raise RunFailedError(report, f"the run failed: {report.summary()}\n{report}")
    return report


def _environment_for(
    env: Environment | str | os.PathLike[str] | None,
    *,
    new: bool,
    resume_from: Environment | str | os.PathLike[str] | None,
) -> Environment:
    if isinstance(env, Environment):
        return env
    if resume_from is not None:
        earlier = (
            resume_from if isinstance(resume_from, Environment) else Environment.load(resume_from)
        )
        fresh = _create(env)
        fresh.merge_done_tasks(earlier)
        fresh.dump()
        return fresh
    if new:
        return _create(env)
    if env is not None:
        return Environment.load(env)
    if os.path.lexists(CURRENT_LINK):
        return Environment.load()
    return _create(None)


def _create(env: str | os.PathLike[str] | None) -> Environment:
    if env is None:
        return Environment.create(default_root())
    path = Path(env)
    return Environment.create(path.parent, path.name)


def _resume_call(
    targets: Iterable[Task[Any, Any] | str],
    env: Environment,
    *,
    params: Mapping[str, Mapping[str, Any]] | None,
    executor: str | Executor,
    jobs: int | None,
) -> str:
    """The call that resumes this run: same targets, params and executor, this environment."""
    parts = [repr(t if isinstance(t, str) else t.name) for t in targets]
    parts.append(f"env={str(env.resultdir)!r}")
    if params:
        parts.append(f"params={ {k: dict(v) for k, v in params.items()}!r}")
    if isinstance(executor, str) and executor != "sequential":
        parts.append(f"executor={executor!r}")
    if jobs is not None:
        parts.append(f"jobs={jobs}")
    return f"make({', '.join(parts)})"


_RUNNING = Status.RUNNING
#: The stored form of no parameters (see StepRecord.to_state).
_NO_PARAMS = pickle.dumps({}, protocol=pickle.HIGHEST_PROTOCOL)


@functools.cache
def _no_params() -> str:
    """The fingerprint of no parameters: most steps have none."""
    return params_fingerprint({})


class _CtrlC:
    """Ctrl-C during a run: raised at once, except inside the driver's bookkeeping.

    A signal mask cannot do this: a signal that arrived just before the mask
    is still raised at Python's next check, anywhere. So while a run is on,
    the driver's own SIGINT handler notes a Ctrl-C that lands in a held
    section and raises it when the section ends.
    """

    def __init__(self) -> None:
        self.depth = 0
        self.pending = False

    def handler(self, _signum: int, _frame: FrameType | None) -> None:
        if self.depth:
            self.pending = True
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Use this handler for the block, in the main thread, unless Ctrl-C is ignored."""
        main = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGINT) if main else None
        if previous is not signal.default_int_handler:
            yield  # another thread, or someone else's handler: leave it alone
            return
        signal.signal(signal.SIGINT, self.handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def held(self) -> _CtrlC:
        """A section Ctrl-C must not cut: a Ctrl-C inside it is raised at its end."""
        # The guard is its own context manager: entered twice a step, a
        # generator-based one cost more than the section it guards.
        return self

    def __enter__(self) -> None:
        self.depth += 1

    def __exit__(self, *_exc: object) -> None:
        self.depth -= 1
        if not self.depth and self.pending:
            self.pending = False
            raise KeyboardInterrupt


class _GroupSync:
    """One fsync for the commits of a short window, made by one helper thread."""

    def __init__(self, env: Environment) -> None:
        self._env = env
        self._wake = threading.Condition()
        self._due: float | None = None
        self._closed = False
        self._thread: threading.Thread | None = None
        self._syncing = threading.Lock()
        # Without fsync there is nothing to group: no helper thread to wake
        # (and to take the GIL and the environment's lock) every window.
        self._durable = env.durable

    def committed(self) -> None:
        if not self._durable:
            return
        with self._wake:
            if self._due is None:
                self._due = time.monotonic() + GROUP_WINDOW
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="expkit-sync", daemon=True
                    )
                    self._thread.start()
                self._wake.notify()

    def _run(self) -> None:
        block_ctrl_c()
        while True:
            with self._wake:
                while not self._closed and (self._due is None or self._due > time.monotonic()):
                    left = None if self._due is None else self._due - time.monotonic()
                    self._wake.wait(left)
                if self._closed:
                    return
                self._due = None
            self._sync()  # outside the condition: the driver goes on committing

    def _sync(self) -> None:
        # The fdatasync runs outside the environment's lock, so the driver's
        # next commits do not wait for the disk; ``_syncing`` makes flush()
        # wait for a sync in flight, so make() returns only once all is durable.
        with self._syncing:
            journal = self._env._journal  # noqa: SLF001
            with self._env._lock:  # noqa: SLF001
                point = None if journal is None else journal.sync_point()
            if journal is None or point is None:
                return
            os.fdatasync(point[0])
            with self._env._lock:  # noqa: SLF001
                journal.synced(point)

    def flush(self) -> None:
        """Sync now; no sync stays pending."""
        with self._wake:
            self._due = None
        self._sync()

    def close(self) -> None:
        self.flush()
        with self._wake:
            self._closed = True
            self._wake.notify()


class _Driver:
    """Runs plans on one environment with one executor."""

    def __init__(
        self,
        env: Environment,
        executor: Executor,
        jobs: int | None,
        *,
        fail_fast: bool,
        hint: str,
        on_event: Observer | None = None,
    ) -> None:
        self.env = env
        self.executor = executor
        width = jobs or executor.width()
        self.capacity = width if width is not None else sys.maxsize
        if executor.name == "sequential":
            self.capacity = 1
        self.fail_fast = fail_fast
        self.hint = hint
        self.on_event = on_event
        self.sync = _GroupSync(env)
        #: This process as the owner of the steps it claims (read once: it costs a getpid).
        self.owner = (current_owner(), current_owner_state())
        self.ctrl_c = _CtrlC()
        self.where = str(env.resultdir)
        self.outcomes: dict[str, StepOutcome] = {}
        #: Deferred sweeps whose prerequisites are done: expanded in the next wave.
        self.expandable: set[str] = set()
        #: Steps this run ran or skipped for a failure, in any wave.
        self.settled: set[str] = set()
        #: fail_fast saw a failure: no new step starts, no new wave.
        self.stopped = False
        #: The report's order: the last plan's.
        self.order: list[str] = []
        #: Steps recorded RUNNING and not yet handed to the executor: a Ctrl-C
        #: raised at the end of their claim's commit must still cancel them.
        self.unstarted: dict[str, Job] = {}
        #: Steps a run that died left running on the executor's workers (asked once).
        self.left_running: dict[str, str] | None = None

    # -- whole run ---------------------------------------------------------

    def run(
        self,
        targets: list[Task[Any, Any] | str],
        registry: Mapping[str, Task[Any, Any]],
        forced: list[str],
        params: Mapping[str, Mapping[str, Any]],
    ) -> RunReport:
        with self.ctrl_c.installed():
            return self._run(targets, registry, forced, params)

    def _run(
        self,
        targets: list[Task[Any, Any] | str],
        registry: Mapping[str, Task[Any, Any]],
        forced: list[str],
        params: Mapping[str, Mapping[str, Any]],
    ) -> RunReport:
        self.env.refresh()
        self._reclaim_orphans()
        self.env._upkeep_held += 1  # noqa: SLF001 - views read stored values by position
        try:
            force = forced
            # A sweep whose grid reads upstream data is expanded in a later
            # wave, once that data is made.
            for _wave in range(len(registry) + 1):
                plan = make_plan(targets, self.env, registry, force=force, params=params)
                self._emit(PlanReady(plan, _wave))
                self.expandable.clear()
                self._run_plan(plan)
                if not self.expandable or self.stopped:
                    break
                # Forcing applied in the wave that ran the step; a forced sweep
                # still to expand stays forced.
                force = [f for f in forced if parse_selector(f)[0] in self.expandable]
        except KeyboardInterrupt:
            self._print_resume()
            raise
        finally:
            self.env._upkeep_held -= 1  # noqa: SLF001
            self.sync.close()
            with self.ctrl_c.held():
                self.env._commit(label="run", sync=True)  # noqa: SLF001 - upkeep, now that no step reads
        report = RunReport(
            {name: self.outcomes[name] for name in self.order},
            env_path=self.env.resultdir,
            resume=self.hint,
        )
        self._emit(RunFinished(report))
        self._flush_observer()
        return report

    def _reclaim_orphans(self) -> None:
        """RUNNING records of this process that no run here owns: left by an aborted run."""
        me = current_owner()
        with self.env._lock:  # noqa: SLF001
            # Only the RUNNING records are decoded: not a thousand DONE ones.
            running = self.env._steps.running()  # noqa: SLF001
        orphans = [r.name for r in running if r.owner == me and (self.where, r.name) not in ACTIVE]
        if orphans:

            def mark(_changed: set[str]) -> None:
                for name in orphans:
                    record = self.env._steps[name]  # noqa: SLF001
                    if record.status is Status.RUNNING and record.owner == me:
                        self.env._put_record(record.replace(status=Status.INTERRUPTED))  # noqa: SLF001

            self.env._commit(before=mark, label="interrupted")  # noqa: SLF001

    def _print_resume(self) -> None:
        print(  # noqa: T201 - the user must see how to resume
            f"\nexpkit: interrupted; running steps recorded CANCELLED, everything committed.\n"
            f"expkit: resume with: {self.hint}",
            file=sys.stderr,
            flush=True,
        )

    # -- one plan -------------------------------------------------------------

    def _run_plan(self, plan: Plan) -> None:  # noqa: C901, PLR0912, PLR0915 - the scheduling loop
        nodes = plan._nodes  # noqa: SLF001
        self.order = list(plan.entries)
        # What an earlier wave of this run settled is not run again: a failure stays one.
        settled = set(self.settled)
        for entry in plan:
            earlier = self.outcomes.get(entry.name)
            if not entry.runs and (earlier is None or not earlier.ran):
                self.outcomes[entry.name] = StepOutcome(
                    entry.name, entry.status, ran=False, reason=entry.reason
                )
        todo = [e for e in plan if e.runs and e.name not in settled]
        todo_names = {e.name for e in todo}
        blockers = {e.name: {r for r in e.requires if r in todo_names} for e in todo}
        dependents: dict[str, list[str]] = {}
        for entry in todo:
            for upstream in entry.requires:
                dependents.setdefault(upstream, []).append(entry.name)
        index = {e.name: i for i, e in enumerate(todo)}
        ready = [(e.priority, index[e.name], e.name) for e in todo if not blockers[e.name]]
        heapq.heapify(ready)
        running: dict[str, Job] = {}
        delayed: list[tuple[float, int, Job]] = []

        def job_for(name: str) -> Job:
            node = nodes[name]
            return Job(
                name=name,
                fn=node.step.fn,
                params=plan[name].params,
                takes_env=node.step.takes_env,
                timeout=node.step.options.timeout,
            )

        def skip_downstream(failed: str, status: Status, skipped: dict[str, str]) -> None:
            stack = list(dependents.get(failed, ()))
            while stack:
                name = stack.pop()
                if name in skipped or name in running or name not in blockers:
                    continue
                skipped[name] = f"upstream {failed!r} {status.value.lower()}"
                stack.extend(dependents.get(name, ()))

        def settle(skipped: dict[str, str]) -> None:
            for name in skipped:
                blockers.pop(name, None)

        # Dependents of what failed in an earlier wave are skipped now.
        skipped: dict[str, str] = {}
        for name in settled:
            if self.outcomes[name].status is not Status.DONE:
                skip_downstream(name, self.outcomes[name].status, skipped)
        if skipped:
            self._commit([], skipped)
            settle(skipped)

        def take(room: int) -> list[Job]:
            """Ready steps to start, at most ``room``."""
            batch: list[Job] = []
            while ready and not self.stopped and len(batch) < room:
                _, _, name = heapq.heappop(ready)
                if name not in blockers:
                    continue  # skipped meanwhile
                if nodes[name].deferred:
                    # Its prerequisites are done: expanded in the next wave.
                    self.expandable.add(name)
                    continue
                batch.append(job_for(name))
            return batch

        def start(claimed: list[Job], refused: dict[str, str], retry: list[Job]) -> None:
            """Hand claimed steps and retries to the executor; skip what depends on refused ones."""
            for job in claimed:
                running[job.name] = job
            self.unstarted.clear()  # after: at any instant, a claimed step is in one of them
            for job in claimed:
                self._emit(StepStarted(job.name, job.attempt))
            if refused:
                skipped: dict[str, str] = {}
                for name in refused:
                    skip_downstream(name, Status.RUNNING, skipped)
                self._commit([], skipped, refused)
                settle(skipped)
                for name in refused:
                    blockers.pop(name, None)
            for job in retry:
                running[job.name] = job
                self._emit(StepStarted(job.name, job.attempt))
            if claimed or retry:
                self._flush_observer()  # before the steps can print
                with self.ctrl_c.held():  # the executor's bookkeeping stays whole
                    self.executor.submit([*claimed, *retry], self.env)

        try:
            while (ready and not self.stopped) or running or delayed:
                room = self.capacity - len(running)
                # Full (one step at a time: after every step), nothing to start here.
                if (room > 0 and ready) or delayed:
                    batch = take(room)
                    retry: list[Job] = []
                    now = time.monotonic()
                    while delayed and delayed[0][0] <= now:
                        retry.append(heapq.heappop(delayed)[2])
                    claimed, refused = self._claim(batch, plan) if batch else ([], {})
                    start(claimed, refused, retry)
                self._flush_observer()  # the run now waits: what was said shows
                if not running:
                    if delayed:
                        time.sleep(max(0.0, delayed[0][0] - time.monotonic()))
                    continue
                timeout = max(0.0, delayed[0][0] - time.monotonic()) if delayed else None
                finals: list[Outcome] = []
                interrupted = False
                for outcome in self.executor.wait(timeout):
                    job = running.pop(outcome.name)
                    interrupted |= outcome.interrupted_driver
                    options = nodes[job.name].step.options
                    failed = outcome.status in (Status.FAILED, Status.INTERRUPTED)
                    if failed and job.attempt <= options.retries and not interrupted:
                        delay = options.retry_delay * 2 ** (job.attempt - 1)
                        heapq.heappush(
                            delayed, (time.monotonic() + delay, index[job.name], _again(job))
                        )
                        continue
                    finals.append(outcome)
                if not finals:
                    continue
                skipped = {}
                for outcome in finals:
                    blockers.pop(outcome.name, None)
                    if outcome.status is not Status.DONE:
                        skip_downstream(outcome.name, outcome.status, skipped)
                        self.stopped |= self.fail_fast
                settle(skipped)
                for outcome in finals:
                    if outcome.status is not Status.DONE:
                        continue
                    for name in dependents.get(outcome.name, ()):
                        waiting_on = blockers.get(name)
                        if waiting_on is None:
                            continue
                        waiting_on.discard(outcome.name)
                        if not waiting_on:
                            heapq.heappush(ready, (plan[name].priority, index[name], name))
                # The steps to start next are claimed in the outcomes' own commit:
                # one commit per step instead of two, the claim still before the body.
                batch = [] if interrupted else take(self.capacity - len(running))
                claimed, refused = self._commit(finals, skipped, claim=batch, plan=plan)
                start(claimed, refused, [])
                if interrupted:
                    raise KeyboardInterrupt  # noqa: TRY301 - Ctrl-C reached a step in this thread
        except KeyboardInterrupt:
            self._cancel(running, delayed)
            raise
        finally:
            for name, waiting_on in blockers.items():
                if name in self.outcomes and self.outcomes[name].ran:
                    continue
                if (
                    nodes[name].deferred
                    or name in self.expandable
                    or any(nodes[r].deferred for r in waiting_on)
                ):
                    note = "waits for the instances of a sweep"
                elif self.stopped:
                    note = "not started: fail_fast after a failure"
                else:
                    note = "not started"
                self.outcomes[name] = StepOutcome(name, plan[name].status, ran=False, reason=note)

    # -- claiming and committing ------------------------------------------

    def _claim(self, batch: list[Job], plan: Plan) -> tuple[list[Job], dict[str, str]]:
        """Record RUNNING for the batch in one commit; steps running elsewhere are refused."""
        claimed: list[Job] = []
        refused: dict[str, str] = {}
        claim = self._claimer(batch, plan, claimed, refused)
        with self.ctrl_c.held():
            self.env._commit(before=lambda _changed: claim(), sync=False, label="claim")  # noqa: SLF001
            ACTIVE.update((self.where, job.name) for job in claimed)
            self.unstarted.update((job.name, job) for job in claimed)
        return claimed, refused

    def _claimer(
        self,
        batch: list[Job],
        plan: Plan,
        claimed: list[Job],
        refused: dict[str, str],
        moment: float | None = None,
    ) -> Callable[[], None]:
        """What records the batch RUNNING, under the commit's lock, filling the two results."""
        owner, owner_state = self.owner
        # Seconds since the epoch, as records store them: no datetime a step.
        started = clock() if moment is None else moment
        nodes = plan._nodes  # noqa: SLF001
        code = {job.name: nodes[job.name].step.code_fingerprint for job in batch}
        if self.left_running is None:  # outside the commit's lock: it may ask the workers
            self.left_running = self.executor.left_running(self.where)
        left_running = self.left_running

        def claim() -> None:
            claimed.clear()
            refused.clear()
            steps = self.env._steps  # noqa: SLF001
            for job in batch:
                if left_running and job.name in left_running:
                    refused[job.name] = left_running[job.name]
                    continue
                # Only a RUNNING record is decoded, to see whether its owner lives.
                previous = steps.get(job.name) if steps.status(job.name) is _RUNNING else None
                other = previous.owner if previous is not None else None
                if other is not None and other != owner and is_alive(other):
                    refused[job.name] = str(StepRunningError(job.name, other.host, other.pid))
                    continue
                params = job.params
                # The record in its stored form (StepRecord.to_state of it), built directly.
                self.env._put_state(  # noqa: SLF001
                    job.name,
                    running_state(
                        job.name,
                        started,
                        pickle.dumps(dict(params), protocol=pickle.HIGHEST_PROTOCOL)
                        if params
                        else _NO_PARAMS,
                        code[job.name] + (params_fingerprint(params) if params else _no_params()),
                        owner_state,
                    ),
                )
                claimed.append(job)

        return claim

    def _commit(
        self,
        finals: list[Outcome],
        skipped: dict[str, str],
        refused: Mapping[str, str] = _NONE,
        *,
        claim: list[Job] | None = None,
        plan: Plan | None = None,
    ) -> tuple[list[Job], dict[str, str]]:
        """Apply outcomes and SKIPPED records in one commit (fsynced with the group).

        With ``claim`` (and its ``plan``), the same commit records those steps
        RUNNING: returns the steps claimed and those refused (running elsewhere).
        """
        moment = clock()
        env = self.env
        claimed: list[Job] = []
        refusing: dict[str, str] = {}
        claimer = (
            self._claimer(claim, plan, claimed, refusing, moment)
            if claim and plan is not None
            else None
        )

        def records(_changed: set[str]) -> None:
            self._put_records(finals, skipped, moment)
            if claimer is not None:
                claimer()

        with self.ctrl_c.held(), env._lock:  # noqa: SLF001
            for outcome in finals:
                for key, raw in outcome.data.items():
                    if raw is not None:
                        env._set_pickled(key, raw)  # noqa: SLF001
                    elif key in env:
                        del env[key]
            env._commit(before=records, sync=False, label="run")  # noqa: SLF001
            where = self.where
            for outcome in finals:
                ACTIVE.discard((where, outcome.name))
            for job in claimed:
                ACTIVE.add((where, job.name))
                self.unstarted[job.name] = job
        self.sync.committed()
        self._note(finals, skipped, refused)
        return claimed, refusing

    def _put_records(self, finals: list[Outcome], skipped: dict[str, str], ended: float) -> None:
        env = self.env
        for outcome in finals:
            for name, state in outcome.records.items():
                env._put_state(name, state)  # noqa: SLF001
            if outcome.name in env._steps:  # noqa: SLF001 - claimed: its stored form, updated
                env._put_state(  # noqa: SLF001
                    outcome.name,
                    finished_state(
                        env._steps.state(outcome.name),  # noqa: SLF001
                        status=outcome.status,
                        attempts=outcome.attempt,
                        ended=ended,
                        error=outcome.error,
                        result=outcome.result,
                        reads=outcome.reads,
                        writes=outcome.writes,
                    ),
                )
                continue
            current = StepRecord(outcome.name)
            changes: dict[str, Any] = {
                "status": outcome.status,
                "attempts": outcome.attempt,
                "ended": as_datetime(ended),
                "error": outcome.error,
                "reads": outcome.reads,
                "writes": outcome.writes,
            }
            if outcome.result is not None:
                changes["stored_result"] = StoredResult(outcome.result)
            env._put_record(current.replace(**changes))  # noqa: SLF001
        for name, reason in skipped.items():
            previous = env._steps.get(name) or StepRecord(name)  # noqa: SLF001
            skip = ErrorInfo("Skipped", reason, "")
            skipped_record = previous.replace(
                status=Status.SKIPPED, ended=as_datetime(ended), error=skip
            )
            env._put_record(skipped_record)  # noqa: SLF001

    def _note(
        self, finals: list[Outcome], skipped: dict[str, str], refused: Mapping[str, str]
    ) -> None:
        """Keep what the report will say."""
        self.settled.update(skipped)
        steps = self.env._steps  # noqa: SLF001
        for outcome in finals:
            self.settled.add(outcome.name)
            duration = None
            if outcome.name in steps:
                state = steps.state(outcome.name)
                if state["started"] is not None and state["ended"] is not None:
                    duration = state["ended"] - state["started"]
            self.outcomes[outcome.name] = StepOutcome(
                outcome.name,
                outcome.status,
                ran=True,
                attempts=outcome.attempt,
                duration=duration,
                error=outcome.error,
            )
        for name, reason in skipped.items():
            self.outcomes[name] = StepOutcome(name, Status.SKIPPED, ran=False, reason=reason)
        for name, reason in refused.items():
            busy = ErrorInfo("StepRunningError", reason, "")
            self.outcomes[name] = StepOutcome(
                name, Status.RUNNING, ran=False, error=busy, reason=reason
            )
        if self.on_event is not None:
            for outcome in finals:
                self._emit(StepFinished(self.outcomes[outcome.name]))
            for name in [*skipped, *refused]:
                self._emit(StepFinished(self.outcomes[name]))

    def _emit(self, event: Event) -> None:
        """Tell the observer; one that raises is reported and not called again."""
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:  # noqa: BLE001 - a display must never stop a run or lose its records
            self._observer_failed()

    def _flush_observer(self) -> None:
        """Call the observer's ``flush()``, if it has one: the run is about to wait or start steps.

        An observer that writes to a pipe can then write a batch of lines in
        one go, and still show each of them before anything blocks.
        """
        flush = getattr(self.on_event, "flush", None)
        if flush is None:
            return
        try:
            flush()
        except Exception:  # noqa: BLE001 - as in _emit
            self._observer_failed()

    def _observer_failed(self) -> None:
        self.on_event = None
        import traceback

        print(  # noqa: T201 - the observer's failure is the user's to see
            f"expkit: the run's on_event observer failed and is no longer called:\n"
            f"{traceback.format_exc()}",
            file=sys.stderr,
            flush=True,
        )

    def _cancel(
        self,
        running: dict[str, Job],
        delayed: list[tuple[float, int, Job]],
    ) -> None:
        """After Ctrl-C: let running steps stop, record the rest CANCELLED, commit durably."""
        running.update(self.unstarted)
        self.unstarted.clear()
        for _, _, job in delayed:
            running[job.name] = job
        delayed.clear()
        finals: list[Outcome] = []
        try:
            self.executor.interrupt()
            limit = time.monotonic() + CANCEL_GRACE
            reported: set[str] = set()
            while set(running) - reported and time.monotonic() < limit:
                found = self.executor.wait(min(0.5, max(0.0, limit - time.monotonic())))
                finals += found
                reported.update(o.name for o in found)
                if not found and not self.executor.busy():
                    break  # nothing left that could report
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: leave now
        reported = {o.name for o in finals}
        for outcome in finals:
            if outcome.status is Status.DONE:
                continue
            outcome.status = Status.CANCELLED
        finals += [
            Outcome(
                name,
                Status.CANCELLED,
                attempt=job.attempt,
                error=ErrorInfo("KeyboardInterrupt", "the run was interrupted", ""),
            )
            for name, job in running.items()
            if name not in reported
        ]
        with contextlib.suppress(KeyboardInterrupt):
            self._commit(finals, {})
            self.sync.flush()
        running.clear()


def _again(job: Job) -> Job:
    return Job(job.name, job.fn, job.params, job.takes_env, job.timeout, job.attempt + 1)
