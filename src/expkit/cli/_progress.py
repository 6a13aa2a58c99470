"""Live progress of ``exp run``: the plan, then a line as each step starts and ends.

On a terminal the lines are coloured and, while steps run in this process
(sequential and threads executors), a live area below them shows each
running step with its elapsed time and each sweep with a bar. Elsewhere
(a pipe, a CI log, ``TERM=dumb``) the same lines are printed plain, one per
event. Worker processes write their steps' output to the terminal
themselves, so with them no live area is drawn that their output could
break.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from expkit import _capture as capture
from expkit._events import PlanReady, StepFinished, StepStarted
from expkit._status import Status

from ._common import STATUS_STYLES, is_terminal

if TYPE_CHECKING:
    from expkit._events import Event, Observer
    from expkit._plan import Plan, PlanEntry
    from expkit._report import StepOutcome

__all__ = ["Lines", "display", "seconds"]

#: A line's first column: the status, padded.
_STATUS_COLUMN = {status.value: f"{status.value:<9} " for status in Status}
#: At most this many names on the line that sums up the steps already up to date.
_SHOWN = 4
_UP_TO_DATE = "up to date"


class Lines:
    """Turns run events into lines; ``write(text, style)`` shows each."""

    def __init__(self, write: Callable[[str, str], None], *, verbose: int) -> None:
        self.write = write
        #: The writer's own flush(), when it holds lines back (see :class:`_Plain`).
        self._flush_writer: Callable[[], None] | None = getattr(write, "flush", None)
        self.verbose = verbose
        self.entries: dict[str, PlanEntry] = {}
        #: Sweep step -> [instances finished, instances to run].
        self.sweeps: dict[str, list[int]] = {}

    def flush(self) -> None:
        """Write out what the writer holds, if it holds anything (see :class:`_Plain`)."""
        if self._flush_writer is not None:
            self._flush_writer()

    def __call__(self, event: Event) -> None:
        """Show one event."""
        # A thousand-step run sends two thousand events: the common ones first.
        if isinstance(event, StepFinished):
            self.finished(event.outcome)
        elif isinstance(event, StepStarted):
            self.started(event.name, event.attempt)
        elif isinstance(event, PlanReady):
            self.plan(event.plan, event.wave)

    def plan(self, plan: Plan, wave: int) -> None:
        """The plan's summary, and why each step not run is skipped."""
        entries = list(plan)
        self.entries.update((e.name, e) for e in entries)
        runs = [e for e in entries if e.runs]
        for entry in runs:
            if entry.name != entry.step:
                self.sweeps.setdefault(entry.step, [0, 0])[1] += 1
        skips = [e for e in entries if not e.runs]
        head = "plan" if wave == 0 else f"plan, wave {wave + 1}"
        self.write(f"{head}: {len(runs)} to run, {len(skips)} to skip", "bold")
        # Steps up to date make one line (each its own with -v): a big DAG stays readable.
        up_to_date = [e.name for e in skips if e.reason == _UP_TO_DATE and not self.verbose]
        if up_to_date:
            some = ", ".join(up_to_date[:_SHOWN]) + (", ..." if len(up_to_date) > _SHOWN else "")
            count = f"{len(up_to_date)} step{'s' if len(up_to_date) > 1 else ''}"
            self.write(f"  skip      {count} up to date: {some}", "dim")
        summed = set(up_to_date)
        for step, reason, names in _grouped(e for e in skips if e.name not in summed):
            self.write(f"  skip      {_names(step, names)}  ({reason})", "dim")

    def started(self, name: str, attempt: int) -> None:
        """A step is running."""
        entry = self.entries.get(name)
        why = f"attempt {attempt}" if attempt > 1 else (entry.reason if entry else "")
        self.write(f"start     {name}  ({why})" if why else f"start     {name}", "cyan")

    def finished(self, outcome: StepOutcome) -> None:
        """A step ended, or was skipped after a failure upstream."""
        status = outcome.status._value_  # not .value: an enum property, read a thousand times
        line = _STATUS_COLUMN[status] + outcome.name
        if outcome.duration is not None and outcome.ran:
            line += "  " + seconds(outcome.duration)
        if outcome.error is not None and status != "done":
            line += "  " + outcome.error.summary()
        elif outcome.reason and not outcome.ran:
            line += "  " + outcome.reason
        if self.sweeps:  # only then may it be a sweep's instance
            entry = self.entries.get(outcome.name)
            if entry is not None and entry.step in self.sweeps and entry.name != entry.step:
                progress = self.sweeps[entry.step]
                progress[0] += 1
                line += f"  [{entry.step} {progress[0]}/{progress[1]}]"
        self.write(line, STATUS_STYLES.get(status, ""))


class _Plain:
    """Plain lines to stdout, written in batches: at most about ten writes a second.

    A write to a pipe costs tens of microseconds, more than a no-op step, so
    the lines of steps that end and start in quick succession are held and
    written together. A held line still shows before what follows it, and
    soon:

    - at once when the run flushes (before it starts or waits for a step) and
      the last write is :data:`HOLD` seconds old; otherwise a timer writes
      them when it is: a long step's start line shows within ``HOLD``;
    - before anything written through ``sys.stdout`` or ``sys.stderr`` (the
      step's own output, logging, a traceback);
    - before this process starts a program, whose output would otherwise
      overtake them (see :func:`expkit._capture.set_before_output`).

    Only for steps run in this process: a worker process writes to the
    terminal itself, unseen, so with workers (``hold=False``) each flush
    writes at once.
    """

    def __init__(self, *, hold: bool) -> None:
        self._lines: list[str] = []
        self._hold = HOLD if hold else 0.0
        # Reentrant: writing the lines goes through the routing stream, which calls back.
        self._lock = threading.RLock()
        self._written = -math.inf  # time.monotonic() of the last write
        self._timer_set = False

    def __call__(self, text: str, _style: str) -> None:
        with self._lock:
            self._lines.append(text)

    def flush(self) -> None:
        """The run is about to start or wait for a step: write the held lines, or soon."""
        with self._lock:
            if not self._lines:
                return
            wait = self._written + self._hold - time.monotonic()
            if wait <= 0:
                self.write_held()
            elif not self._timer_set:
                self._timer_set = True
                self._start_timer(wait)

    def write_held(self) -> None:
        """Write the lines held so far, now."""
        with self._lock:
            if not self._lines:
                return
            text = "\n".join(self._lines) + "\n"
            self._lines.clear()
            self._written = time.monotonic()
            stream = sys.stdout
            stream.write(text)
            stream.flush()

    def _start_timer(self, wait: float) -> None:
        timer = threading.Timer(wait, self._on_timer)
        timer.daemon = True  # the run's end writes what is left
        timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            wait = self._written + self._hold - time.monotonic()
            if wait > 0 and self._lines:
                # Written meanwhile (a flush found the last write old enough, or
                # output came): these lines wait for their own tenth of a second.
                self._start_timer(wait)
                return
            self._timer_set = False
            self.write_held()


#: Seconds plain lines may be held (see :class:`_Plain`): a tenth, as tqdm's refresh.
HOLD = 0.1


def _grouped(entries: Iterable[PlanEntry]) -> list[tuple[str, str, list[str]]]:
    """Consecutive instances of one sweep skipped for the same reason make one line."""
    groups: list[tuple[str, str, list[str]]] = []
    for entry in entries:
        if groups and groups[-1][0] == entry.step and groups[-1][1] == entry.reason:
            groups[-1][2].append(entry.name)
        else:
            groups.append((entry.step, entry.reason, [entry.name]))
    return groups


def _names(step: str, names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{step} ({len(names)} instances)"


def seconds(duration: float) -> str:
    """A duration for people: ``1.23 s``, ``4m05s``, ``2h03m00s``."""
    if duration < 60:  # noqa: PLR2004 - a minute
        return f"{duration:.2f} s"
    minutes, secs = divmod(int(duration), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


@contextlib.contextmanager
def display(*, quiet: bool, verbose: int, live: bool) -> Iterator[Observer | None]:
    """The observer for ``make(on_event=...)``, for as long as the run lasts.

    ``live`` allows the live area (steps run in this process).
    """
    if quiet:
        yield None
    elif not is_terminal():
        plain = _Plain(hold=live)
        capture.set_before_output(plain.write_held)
        try:
            yield Lines(plain, verbose=verbose)
        finally:
            capture.set_before_output(None)
            plain.write_held()
    elif not live:
        from rich.console import Console
        from rich.text import Text

        console = Console(highlight=False)

        def styled(text: str, style: str) -> None:
            console.print(Text(text, style=style))

        yield Lines(styled, verbose=verbose)
    else:
        with _Live(verbose=verbose) as observer:
            yield observer


class _Live:
    """Lines above a live area of running steps and sweep bars (rich)."""

    def __init__(self, *, verbose: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = Console(highlight=False)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            # The step output that goes through sys.stdout/sys.stderr is printed above.
            redirect_stdout=True,
            redirect_stderr=True,
        )
        self.lines = Lines(self._print, verbose=verbose)
        self.tasks: dict[str, Any] = {}

    def _print(self, text: str, style: str) -> None:
        from rich.text import Text

        # A styled Text, not print(style=...): that style would also tint the live area.
        self.console.print(Text(text, style=style))

    def __enter__(self) -> Observer:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def __call__(self, event: Event) -> None:
        self.lines(event)
        if isinstance(event, PlanReady):
            counts = Counter(e.step for e in event.plan if e.runs and e.name != e.step)
            for step, total in counts.items():
                if step in self.tasks:
                    self.progress.update(self.tasks[step], total=self.lines.sweeps[step][1])
                else:
                    self.tasks[step] = self.progress.add_task(step, total=total)
        elif isinstance(event, StepStarted):
            entry = self.lines.entries.get(event.name)
            if entry is None or entry.name == entry.step:
                self.tasks[event.name] = self.progress.add_task(event.name, total=None)
        elif isinstance(event, StepFinished):
            name = event.outcome.name
            entry = self.lines.entries.get(name)
            if entry is not None and entry.name != entry.step and entry.step in self.tasks:
                self.progress.advance(self.tasks[entry.step])
            elif name in self.tasks:
                self.progress.remove_task(self.tasks.pop(name))
