"""Executors run the steps a run's driver hands them; the driver alone writes.

An executor receives ready jobs in batches, runs each on a view of the
environment, and hands back :class:`~expkit._work.Outcome` objects. The
sequential and threads executors live here; processes and Dask have their
own modules.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

from ._status import Status
from ._work import Job, Outcome, execute

if TYPE_CHECKING:
    from ._environment import Environment

__all__ = ["Executor", "SequentialExecutor", "ThreadsExecutor", "get_executor", "pickle_by_value"]

#: Modules whose functions travel by value to worker processes, not yet told to cloudpickle.
_BY_VALUE: list[ModuleType] = []


def pickle_by_value(module: ModuleType) -> None:
    """Ship ``module``'s functions by value to worker processes (it cannot be imported there).

    cloudpickle is told when an executor that pickles functions starts, or now
    if it is already loaded: a run in this process does not pay for loading it.
    """
    _BY_VALUE.append(module)
    if "cloudpickle" in sys.modules:
        _register_by_value()


def _register_by_value() -> None:
    import cloudpickle

    while _BY_VALUE:
        cloudpickle.register_pickle_by_value(_BY_VALUE.pop(0))


#: Seconds the driver blocks at most before it looks for a Ctrl-C again.
SLICE = 0.2


def block_ctrl_c() -> None:
    """In a helper thread: leave SIGINT to the main thread, which handles it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


class Executor:
    """The interface between a run's driver and whatever runs its steps."""

    #: Shown in progress and reports.
    name = "executor"

    def width(self) -> int | None:
        """How many steps run at once when ``jobs`` is not given (``None``: no bound)."""
        return 1

    def submit(self, jobs: Sequence[Job], env: Environment) -> None:
        """Start ``jobs`` (all ready together) on ``env``'s committed state."""
        raise NotImplementedError

    def wait(self, timeout: float | None) -> list[Outcome]:
        """Outcomes of finished jobs: at least one, unless ``timeout`` passes first."""
        raise NotImplementedError

    def interrupt(self) -> None:
        """Ask the running steps to stop (they report CANCELLED)."""

    def left_running(self, where: str) -> dict[str, str]:  # noqa: ARG002 - for executors with remote workers
        """Steps of the environment ``where`` still running on workers after their run died.

        By name, why each must not start again yet. Local executors have none:
        their workers die with the run. Asked once per run.
        """
        return {}

    def busy(self) -> bool:
        """Whether some submitted job has not reported yet."""
        return False

    def close(self) -> None:
        """Release workers; called once at the end of a run."""


class SequentialExecutor(Executor):
    """One step at a time, in the driver's own thread (Ctrl-C reaches the step)."""

    name = "sequential"

    def __init__(self) -> None:
        self._queue: deque[tuple[Job, Environment]] = deque()

    def submit(self, jobs: Sequence[Job], env: Environment) -> None:
        self._queue.extend((job, env) for job in jobs)

    def wait(self, timeout: float | None) -> list[Outcome]:  # noqa: ARG002
        if not self._queue:
            return []
        job, env = self._queue.popleft()
        # The view is made as the step starts, in the driver's thread, which
        # commits no record until the step ends (the step's own dump() commits
        # data only): it may read the driver's table of step records instead
        # of copying it (thousands of records a step).
        view = env._view(share_records=True) if job.takes_env else env  # noqa: SLF001
        return [execute(job, view, in_driver_thread=True)]

    def interrupt(self) -> None:
        self._queue.clear()  # queued steps never started: they are recorded CANCELLED


class _Stop:
    """Tells a worker thread to leave."""


class ThreadsExecutor(Executor):
    """Steps on worker threads of the driver's process.

    Each step runs on its own view; on Ctrl-C the driver raises
    ``KeyboardInterrupt`` in the running steps' threads (effective at their
    next Python instruction).
    """

    name = "threads"

    def __init__(self, jobs: int | None = None) -> None:
        self._count = jobs or os.cpu_count() or 1
        self._todo: queue.SimpleQueue[tuple[Job, Environment] | _Stop] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._busy: dict[int, str] = {}  # thread ident -> step name
        self._guard = threading.Lock()

    def width(self) -> int | None:
        return os.cpu_count() or 1

    def submit(self, jobs: Sequence[Job], env: Environment) -> None:
        for job in jobs:
            self._todo.put((job, env._view() if job.takes_env else env))  # noqa: SLF001
        while len(self._threads) < min(self._count, len(self._threads) + len(jobs)):
            thread = threading.Thread(
                target=self._work, name=f"expkit-{len(self._threads)}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        block_ctrl_c()
        me = threading.get_ident()
        while True:
            item = self._todo.get()
            if isinstance(item, _Stop):
                return
            job, view = item
            outcome: Outcome | None = None
            with self._guard:
                self._busy[me] = job.name
            try:
                outcome = execute(job, view)
            except KeyboardInterrupt:
                # Injected just outside the step's own handler: still a cancelled step.
                outcome = outcome or Outcome(job.name, Status.CANCELLED, attempt=job.attempt)
            finally:
                with self._guard:
                    self._busy.pop(me, None)
            while True:
                try:
                    self._done.put(outcome)
                    break
                except KeyboardInterrupt:  # a late injection: the outcome must not be lost
                    continue

    def wait(self, timeout: float | None) -> list[Outcome]:
        limit = None if timeout is None else time.monotonic() + timeout
        while True:
            # In short slices: a Ctrl-C the kernel hands to another thread
            # does not wake a blocked main thread, only its next check.
            left = SLICE if limit is None else min(SLICE, limit - time.monotonic())
            try:
                found = [self._done.get(timeout=max(0.0, left))]
                break
            except queue.Empty:
                if limit is not None and time.monotonic() >= limit:
                    return []
        # Take every outcome already there: they share one commit.
        with contextlib.suppress(queue.Empty):
            while True:
                found.append(self._done.get_nowait())
        return found

    def interrupt(self) -> None:
        import ctypes  # only on Ctrl-C: a run does not pay for loading it

        with self._guard:
            for ident in self._busy:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(ident), ctypes.py_object(KeyboardInterrupt)
                )

    def close(self) -> None:
        for _ in self._threads:
            self._todo.put(_Stop())
        for thread in self._threads:
            thread.join(timeout=0.5)  # a step stuck in C code must not hold the run


def get_executor(executor: str | Executor, jobs: int | None, address: str | None) -> Executor:
    """An executor by name (``sequential``, ``threads``, ``processes``, ``dask``), or as given."""
    if isinstance(executor, Executor):
        return executor
    if executor == "sequential":
        return SequentialExecutor()
    if executor == "threads":
        return ThreadsExecutor(jobs)
    if executor == "processes":
        from ._processes import ProcessesExecutor

        _register_by_value()
        return ProcessesExecutor(jobs)
    if executor == "dask":
        from ._dask import DaskExecutor

        _register_by_value()
        return DaskExecutor(jobs, address)
    msg = f"unknown executor {executor!r}: use 'sequential', 'threads', 'processes' or 'dask'"
    raise ValueError(msg)
