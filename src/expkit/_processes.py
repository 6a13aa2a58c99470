"""The processes executor: steps in worker processes of this machine.

Each worker is a fresh interpreter (``python -m expkit._worker``) linked to
the driver by a socket pair it inherits, so no other process can speak to
either end: the driver unpickles only what its own workers send. Jobs travel
with cloudpickle (functions defined in ``__main__`` or a notebook go by
value); a worker reads the data a step asks for straight from the
environment's journal, so nothing big is shipped. A worker that dies
(SIGKILL, ``os._exit``, the OOM killer) is seen as end-of-file on its
socket: its step is INTERRUPTED and a new worker replaces it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._executors import SLICE, Executor
from ._records import ErrorInfo
from ._status import Status
from ._work import Job, Outcome

if TYPE_CHECKING:
    from ._environment import Environment

__all__ = ["ProcessesExecutor", "recv_message", "send_message"]

_LENGTH = struct.Struct("<Q")
#: Seconds past a step's timeout before its worker is killed (the worker's own
#: alarm normally stops the step first, keeping its partial writes).
KILL_GRACE = 5.0


def send_message(sock: socket.socket, payload: bytes) -> None:
    """One length-prefixed message."""
    sock.sendall(_LENGTH.pack(len(payload)) + payload)


def recv_message(sock: socket.socket) -> bytes | None:
    """The next message, or ``None`` at end of file."""
    head = _recv_exactly(sock, _LENGTH.size)
    if head is None:
        return None
    body = _recv_exactly(sock, _LENGTH.unpack(head)[0])
    if body is None:
        return None
    return body


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = []
    while size:
        try:
            chunk = sock.recv(min(size, 1 << 20))
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


class _Worker:
    """One worker process and the driver's end of its socket."""

    def __init__(self) -> None:
        mine, theirs = socket.socketpair()
        self.sock = mine
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "expkit._worker", str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),),
                # Its own session: a Ctrl-C at the terminal reaches the driver
                # only, which decides what the workers get.
                start_new_session=True,
            )
        finally:
            theirs.close()
        send_message(self.sock, pickle.dumps(list(sys.path)))
        self.job: Job | None = None
        self.started = 0.0

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def death(self) -> str:
        """How the process ended, in words."""
        self.sock.close()
        code = self.process.wait()
        if code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exited with status {code}"


class ProcessesExecutor(Executor):
    """Steps in separate worker processes, at most ``jobs`` at once."""

    name = "processes"

    def __init__(self, jobs: int | None = None) -> None:
        self._count = jobs or os.cpu_count() or 1
        self._idle: list[_Worker] = []
        self._busy: dict[socket.socket, _Worker] = {}
        self._queue: deque[tuple[Job, tuple[str, bool]]] = deque()
        self._ready: list[Outcome] = []
        self._selector = selectors.DefaultSelector()

    def width(self) -> int | None:
        return os.cpu_count() or 1

    def submit(self, jobs: Sequence[Job], env: Environment) -> None:
        # Where the worker opens the environment, and as durable as the run's.
        opening = (str(env.resultdir), env.durable)
        self._queue.extend((job, opening) for job in jobs)
        self._dispatch()

    def _dispatch(self) -> None:
        import cloudpickle

        while self._queue and (self._idle or len(self._busy) < self._count):
            job, (where, durable) = self._queue.popleft()
            try:
                payload = cloudpickle.dumps((where, durable, job), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as error:  # noqa: BLE001 - the step cannot travel: it fails, the run goes on
                self._ready.append(Outcome.failed(job, error))
                continue
            worker = self._idle.pop() if self._idle else _Worker()
            try:
                send_message(worker.sock, payload)
            except OSError:
                self._ready.append(self._died(worker, job))
                continue
            worker.job, worker.started = job, time.monotonic()
            self._busy[worker.sock] = worker
            self._selector.register(worker.sock, selectors.EVENT_READ)

    def wait(self, timeout: float | None) -> list[Outcome]:
        found, self._ready = self._ready, []
        if found:
            return found
        limit = None if timeout is None else time.monotonic() + timeout
        while not found and self._busy:
            wait_for = self._next_kill()
            if limit is not None:
                wait_for = (
                    min(wait_for, limit - time.monotonic())
                    if wait_for is not None
                    else limit - time.monotonic()
                )
            # In short slices: see SLICE.
            events = self._selector.select(
                SLICE if wait_for is None else max(0.0, min(SLICE, wait_for))
            )
            for key, _ in events:
                found.append(self._receive(self._busy[key.fileobj]))  # type: ignore[index]
            found += self._kill_overdue()
            if limit is not None and time.monotonic() >= limit:
                break
        self._dispatch()
        return found

    def _receive(self, worker: _Worker) -> Outcome:
        job = worker.job
        assert job is not None  # noqa: S101 - only busy workers are selected
        self._selector.unregister(worker.sock)
        del self._busy[worker.sock]
        message = recv_message(worker.sock)
        if message is None:
            return self._died(worker, job)
        worker.job = None
        self._idle.append(worker)
        outcome: Outcome = pickle.loads(message)  # from our own child, over a private socket
        return outcome

    def _died(self, worker: _Worker, job: Job) -> Outcome:
        how = worker.death()
        return Outcome(
            job.name,
            Status.INTERRUPTED,
            error=ErrorInfo(
                "WorkerDied", f"its worker process (pid {worker.process.pid}) {how}", ""
            ),
            attempt=job.attempt,
        )

    def _next_kill(self) -> float | None:
        limits = [
            w.started + w.job.timeout + KILL_GRACE - time.monotonic()
            for w in self._busy.values()
            if w.job is not None and w.job.timeout is not None
        ]
        return max(0.0, min(limits)) if limits else None

    def _kill_overdue(self) -> list[Outcome]:
        found = []
        now = time.monotonic()
        for worker in list(self._busy.values()):
            job = worker.job
            if (
                job is None
                or job.timeout is None
                or now < worker.started + job.timeout + KILL_GRACE
            ):
                continue
            worker.process.kill()
            self._selector.unregister(worker.sock)
            del self._busy[worker.sock]
            worker.death()
            from ._errors import StepTimeoutError

            error = StepTimeoutError(job.name, job.timeout)
            found.append(
                Outcome(
                    job.name,
                    Status.FAILED,
                    error=ErrorInfo(
                        "expkit.StepTimeoutError", f"{error} (its worker was killed)", ""
                    ),
                    attempt=job.attempt,
                )
            )
        return found

    def interrupt(self) -> None:
        for worker in self._busy.values():
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGINT)
        self._queue.clear()

    def close(self) -> None:
        for worker in [*self._idle, *self._busy.values()]:
            if worker.job is not None:
                worker.process.kill()
            worker.stop()
        self._idle.clear()
        self._busy.clear()
        self._selector.close()
