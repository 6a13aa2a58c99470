"""Per-step output: what a step prints or logs also goes to ``logs/<step>.log``.

Several steps may run at once in one process (the threads executor), and
``contextlib.redirect_stdout`` is process-wide, so ``sys.stdout`` and
``sys.stderr`` are replaced once by routing streams: a write goes to the log
of the step running in the writing thread, if any, and always on to the
stream that was replaced, so output is still shown as it comes. A handler on
the root logger adds a step's ``logging`` records to its log, unless another
handler already writes them through those streams (then they are in the log
once, not twice). A process worker runs its steps under the same routing and
writes the log files itself.

Output of programs a step starts goes to the terminal, not through Python's
streams, so it is not in the log (``expkit.shell.run`` captures its own).
A log file is opened at the step's first output: a silent step leaves none.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ._errors import ExpkitError

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._environment import Environment

__all__ = ["LOG_DIR", "MARKER", "StepLog", "capturing", "log_path"]

#: The directory of the logs, inside the environment's directory.
LOG_DIR = "logs"
#: Each attempt of a step starts its part of the log with a line beginning so.
MARKER = "--- expkit: "


def log_path(resultdir: Path, name: str) -> Path:
    """The log file of step (or step instance) ``name``."""
    # Instance names hold str() of grid values, which may contain "/".
    safe = name.replace("%", "%25").replace("/", "%2F").replace("\0", "%00")
    if safe.startswith("."):
        safe = "%2E" + safe[1:]
    return resultdir / LOG_DIR / f"{safe}.log"


class StepLog:
    """The log of one attempt of one step, opened at its first line."""

    def __init__(self, name: str, env: Environment, attempt: int) -> None:
        self.name = name
        self._env = env
        self._attempt = attempt
        self._started = time.time()  # formatted only if the step writes something
        self._file: TextIO | None = None
        self._broken = False
        self._guard = threading.Lock()

    def write(self, text: str) -> None:
        """Append ``text`` (to the file only)."""
        if not text or self._broken:
            return
        with self._guard:
            if self._file is None and not self._open():
                return
            assert self._file is not None  # noqa: S101 - _open set it
            try:
                self._file.write(text)
            except (OSError, ValueError):
                self._broken = True

    def note_error(self, error: BaseException) -> None:
        """Append the traceback of the exception that ended the step."""
        import traceback  # only for a failure: a run does not pay for loading it

        self.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))

    def _open(self) -> bool:
        try:
            directory = self._env.resultdir
        except ExpkitError:  # an environment that lives in memory keeps no logs
            self._broken = True
            return False
        path = log_path(directory, self.name)
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError:  # e.g. a Dask worker that does not see the directory: output still shows
            self._broken = True
            return False
        # Line-buffered: `exp log` shows a running step's output as it comes.
        self._file = open(  # noqa: SIM115 - closed by close()
            fd, "a", buffering=1, encoding="utf-8", errors="backslashreplace"
        )
        import socket  # only once a step writes something

        when = datetime.fromtimestamp(self._started).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")
        self._file.write(
            f"{MARKER}{self.name}, attempt {self._attempt}, started {when}, "
            f"pid {os.getpid()} on {socket.gethostname()}\n"
        )
        return True

    def close(self) -> None:
        """Close the file, if it was opened."""
        with self._guard:
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None


_local = threading.local()
_install_lock = threading.Lock()

#: Called before each write through the routing streams and before this
#: process starts a program, when set (see :func:`set_before_output`).
before_output: Callable[[], None] | None = None
#: The audit events of starting a program.
_SPAWNS = frozenset(
    {"subprocess.Popen", "os.system", "os.posix_spawn", "os.exec", "os.fork", "os.forkpty"}
)
_audited = False


def set_before_output(hook: Callable[[], None] | None) -> None:
    """Call ``hook`` before anything else reaches the terminal; ``None``: stop.

    For a display that holds lines back (``exp run``'s plain lines): it writes
    them out first, so they still come before what follows them. That is a
    write through ``sys.stdout`` or ``sys.stderr``, or a program this process
    starts, which writes to the terminal directly: Python raises an audit
    event before it starts one, and a hook (installed once and for good, as
    audit hooks are) calls ``hook`` then.
    """
    global before_output, _audited  # noqa: PLW0603 - one display per process
    before_output = hook
    if hook is not None and not _audited:
        _audited = True
        sys.addaudithook(_on_audit_event)


def _on_audit_event(event: str, _args: tuple[object, ...]) -> None:
    # Called for every audited event of the process: keep the common path short.
    if event in _SPAWNS:
        hook = before_output
        if hook is not None:
            hook()


def _current() -> StepLog | None:
    log: StepLog | None = getattr(_local, "log", None)
    return log


class _Router(io.TextIOBase):
    """Stands in for ``sys.stdout`` or ``sys.stderr``: copies a step's writes to its log."""

    def __init__(self, target: TextIO) -> None:
        super().__init__()
        self.target = target

    def write(self, text: str) -> int:
        hook = before_output
        if hook is not None:
            hook()
        log = _current()
        if log is None:
            return self.target.write(text)
        log.write(text)
        written = self.target.write(text)
        if "\n" in text:
            # A worker's stream may be a block-buffered pipe: show each line as it comes.
            self.target.flush()
        return written

    def flush(self) -> None:
        self.target.flush()

    def fileno(self) -> int:
        return self.target.fileno()

    def isatty(self) -> bool:
        return self.target.isatty()

    def readable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.target.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self.target.errors

    @property
    def buffer(self) -> object:
        return self.target.buffer

    def close(self) -> None:
        # Closing sys.stdout must not close the stream it stands in for, which
        # whoever installed it still owns. Also called when this router is
        # collected, maybe after that stream was closed: nothing to flush then.
        if not getattr(self.target, "closed", False):
            self.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self.target, name)


class _LogHandler(logging.Handler):
    """Adds the records logged by a step to its log."""

    def emit(self, record: logging.LogRecord) -> None:
        others = _other_handlers(record, self)
        if not others:
            # Alone on the root logger, this handler would take away logging's
            # last resort, which prints warnings to stderr (and so to the log).
            last = logging.lastResort
            if last is not None and record.levelno >= last.level:
                last.handle(record)
            return
        log = _current()
        if log is None or any(isinstance(getattr(h, "stream", None), _Router) for h in others):
            return  # not in a step, or already in its log through stderr or stdout
        try:
            log.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging's own convention: report, never raise
            self.handleError(record)


def _other_handlers(record: logging.LogRecord, me: logging.Handler) -> list[logging.Handler]:
    """The handlers besides ``me`` that logging gives ``record`` to."""
    found: list[logging.Handler] = []
    logger: logging.Logger | None = logging.getLogger(record.name)
    while logger is not None:
        found += [h for h in logger.handlers if h is not me and record.levelno >= h.level]
        if not logger.propagate:
            break
        logger = logger.parent
    return found


_handler = _LogHandler()
_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))


def _install() -> None:
    """Route sys.stdout, sys.stderr and logging through the step logs (once)."""
    if (
        isinstance(sys.stdout, _Router)
        and isinstance(sys.stderr, _Router)
        and _handler in logging.root.handlers
    ):
        return
    with _install_lock:
        # Someone may have replaced a stream since (a test harness, a display):
        # route whatever stream is in place now.
        if sys.stdout is not None and not isinstance(sys.stdout, _Router):
            sys.stdout = _Router(sys.stdout)
        if sys.stderr is not None and not isinstance(sys.stderr, _Router):
            sys.stderr = _Router(sys.stderr)
        if _handler not in logging.root.handlers:
            logging.root.addHandler(_handler)


class capturing:  # noqa: N801 - used as a function: ``with capturing(name, env, 1) as log``
    """Send what this thread prints or logs to the log of step ``name`` as well."""

    # A class rather than a generator context manager: it runs for every step.
    __slots__ = ("_log", "_previous")

    def __init__(self, name: str, env: Environment, attempt: int) -> None:
        _install()
        self._log = StepLog(name, env, attempt)
        self._previous: StepLog | None = None

    def __enter__(self) -> StepLog:
        self._previous = _current()
        _local.log = self._log
        return self._log

    def __exit__(self, *_exc: object) -> None:
        _local.log = self._previous
        self._log.close()
