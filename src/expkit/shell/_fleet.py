"""Run many processes at once, at most ``fanout`` at a time, and gather what they print.

One thread multiplexes every pipe with :mod:`selectors`: no thread per node,
and nothing blocks while a node is silent. Each process starts in its own
session, so a timeout can kill the whole process group (a shell and what it
started) and the pipes reach end of file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import selectors
import signal
import subprocess
import time
from collections import deque
from collections.abc import Sequence
from typing import IO

from ._result import ShellResult

__all__ = ["Job", "run_jobs"]

_CHUNK = 65536
# How long to wait, at most, between two looks at a process whose pipes are closed
# but which has not exited yet (it usually exits within microseconds).
_EXIT_POLL = 0.05


@dataclasses.dataclass(eq=False)
class Job:
    """One node's process: its command line and what it has produced."""

    node: str
    argv: list[str]
    out: bytearray = dataclasses.field(default_factory=bytearray)
    err: bytearray = dataclasses.field(default_factory=bytearray)
    pipes: int = 0
    deadline: float | None = None
    code: int | None = None
    timed_out: bool = False


class _Fleet:
    """The processes of one run: pending, running, and finished."""

    def __init__(
        self,
        jobs: Sequence[Job],
        *,
        fanout: int,
        timeout: float | None,
        stdin: bytes | None,
        merge_stderr: bool,
    ) -> None:
        self.jobs = list(jobs)
        self.pending = deque(self.jobs)
        self.running: dict[Job, subprocess.Popen[bytes]] = {}
        self.fanout = fanout
        self.timeout = timeout
        self.stdin = stdin
        self.merge_stderr = merge_stderr
        self.selector = selectors.DefaultSelector()

    def run(self) -> ShellResult:
        try:
            while self.pending or self.running:
                while self.pending and len(self.running) < self.fanout:
                    self._start(self.pending.popleft())
                if self.running:  # not when every start failed
                    self._wait()
                    self._expire()
                    self._reap()
        finally:
            # Reached with processes still running only on an error or Ctrl-C:
            # leave no process and no pipe behind.
            for job in list(self.running):
                self._kill(job)
            self.selector.close()
        return ShellResult(
            {job.node: bytes(job.out) for job in self.jobs},
            {job.node: bytes(job.err) for job in self.jobs},
            {job.node: job.code for job in self.jobs if job.code is not None},
            frozenset(job.node for job in self.jobs if job.timed_out),
        )

    # -- starting -------------------------------------------------------------------

    def _start(self, job: Job) -> None:
        try:
            proc = subprocess.Popen(
                job.argv,
                stdin=subprocess.DEVNULL if self.stdin is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if self.merge_stderr else subprocess.PIPE,
                # Its own process group: a timeout kills the command and its children.
                start_new_session=True,
            )
        except OSError as exc:
            # What a shell would say and return for a program it cannot run.
            message = f"{job.argv[0]}: {exc.strerror or exc}\n".encode()
            (job.out if self.merge_stderr else job.err).extend(message)
            job.code = 127 if isinstance(exc, FileNotFoundError) else 126
            return
        self.running[job] = proc
        if self.timeout is not None:
            job.deadline = time.monotonic() + self.timeout
        for file, sink in ((proc.stdout, job.out), (proc.stderr, job.err)):
            if file is not None:
                self.selector.register(file, selectors.EVENT_READ, _Pipe(job, file, sink))
                job.pipes += 1
        if proc.stdin is not None:
            os.set_blocking(proc.stdin.fileno(), False)
            data = memoryview(self.stdin or b"")
            self.selector.register(proc.stdin, selectors.EVENT_WRITE, _Pipe(job, proc.stdin, data))

    # -- waiting ------------------------------------------------------------------------

    def _wait(self) -> None:
        now = time.monotonic()
        delays = [job.deadline - now for job in self.running if job.deadline is not None]
        if any(job.pipes == 0 for job in self.running):
            delays.append(_EXIT_POLL)
        delay = max(0.0, min(delays)) if delays else None
        for key, _mask in self.selector.select(delay):
            pipe: _Pipe = key.data
            if isinstance(pipe.data, bytearray):
                self._read(pipe, pipe.data)
            else:
                self._write(pipe, pipe.data)

    def _read(self, pipe: _Pipe, sink: bytearray) -> None:
        data = os.read(pipe.file.fileno(), _CHUNK)
        if data:
            sink.extend(data)
        else:
            self._close(pipe)

    def _write(self, pipe: _Pipe, view: memoryview) -> None:
        try:
            written = os.write(pipe.file.fileno(), view[:_CHUNK]) if view else 0
        except BlockingIOError:
            return
        except BrokenPipeError:
            # The command exited or closed its input without reading it all: not an error.
            written = len(view)
        pipe.data = view[written:]
        if not pipe.data:
            self._close(pipe)

    def _close(self, pipe: _Pipe) -> None:
        self.selector.unregister(pipe.file)
        pipe.file.close()
        if isinstance(pipe.data, bytearray):
            pipe.job.pipes -= 1

    # -- ending -------------------------------------------------------------------------

    def _reap(self) -> None:
        for job, proc in list(self.running.items()):
            if job.pipes or (code := proc.poll()) is None:
                continue
            self._close_all(job)  # its input, if the command never read it
            # A negative code is a signal number: report it as a shell would.
            job.code = 128 - code if code < 0 else code
            del self.running[job]

    def _expire(self) -> None:
        now = time.monotonic()
        for job in [job for job in self.running if job.deadline and job.deadline <= now]:
            job.timed_out = True
            self._kill(job)

    def _kill(self, job: Job) -> None:
        """Kill a job's process group, keep what its pipes still hold, and reap it."""
        proc = self.running.pop(job)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        for pipe in self._pipes_of(job):
            if isinstance(pipe.data, bytearray):
                # Output written before the kill is part of the result.
                os.set_blocking(pipe.file.fileno(), False)
                with contextlib.suppress(BlockingIOError):
                    while data := os.read(pipe.file.fileno(), _CHUNK):
                        pipe.data.extend(data)
        self._close_all(job)

    def _close_all(self, job: Job) -> None:
        for pipe in self._pipes_of(job):
            self._close(pipe)

    def _pipes_of(self, job: Job) -> list[_Pipe]:
        pipes = [key.data for key in self.selector.get_map().values()]
        return [pipe for pipe in pipes if pipe.job is job]


@dataclasses.dataclass
class _Pipe:
    """A pipe of a job's process: output is read into a buffer, input written from a view."""

    job: Job
    file: IO[bytes]
    data: bytearray | memoryview


def run_jobs(
    jobs: Sequence[Job],
    *,
    fanout: int,
    timeout: float | None,
    stdin: bytes | None,
    merge_stderr: bool,
) -> ShellResult:
    """Run every job, at most ``fanout`` at once, each stopped after ``timeout`` seconds."""
    if fanout < 1:
        msg = f"fanout must be at least 1, not {fanout}"
        raise ValueError(msg)
    if timeout is not None and timeout <= 0:
        msg = f"timeout must be a positive number of seconds or None, not {timeout}"
        raise ValueError(msg)
    fleet = _Fleet(jobs, fanout=fanout, timeout=timeout, stdin=stdin, merge_stderr=merge_stderr)
    return fleet.run()
