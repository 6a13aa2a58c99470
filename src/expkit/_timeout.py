"""Stopping a step that runs past its timeout.

In the main thread a ``SIGALRM`` timer raises :class:`StepTimeoutError`
inside the step: it interrupts ``time.sleep`` and blocking I/O. In another
thread no signal can reach the step, so the exception is injected into that
thread and takes effect at its next Python instruction; a step blocked inside
C code is stopped when it returns to Python. (The processes executor stops a
timed-out step by killing its worker.)
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

from ._errors import StepTimeoutError

__all__ = ["deadline"]


@contextlib.contextmanager
def deadline(seconds: float | None, step: str) -> Iterator[None]:
    """Raise :class:`StepTimeoutError` in the block after ``seconds``."""
    if seconds is None:
        yield
    elif threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        with _alarm(seconds, step):
            yield
    else:
        with _injected(seconds, step):
            yield


@contextlib.contextmanager
def _alarm(seconds: float, step: str) -> Iterator[None]:
    def on_alarm(_signum: int, _frame: FrameType | None) -> None:
        raise StepTimeoutError(step, seconds)

    previous = signal.signal(signal.SIGALRM, on_alarm)
    start = time.monotonic()
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:  # an enclosing step's timer: give it back what it has left
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3))


class _Injected(BaseException):
    """Raised asynchronously in a step's thread; turned into StepTimeoutError."""


@contextlib.contextmanager
def _injected(seconds: float, step: str) -> Iterator[None]:
    ident = threading.get_ident()
    guard = threading.Lock()
    finished = False

    def inject() -> None:
        with guard:
            if not finished:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(ident), ctypes.py_object(_Injected)
                )

    timer = threading.Timer(seconds, inject)
    timer.daemon = True
    timer.start()
    try:
        yield
    except _Injected:
        raise StepTimeoutError(step, seconds) from None
    finally:
        with guard:
            finished = True
        timer.cancel()
