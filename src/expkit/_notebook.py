"""Run progress in a Jupyter notebook: one table under the cell, updated in place.

``make`` shows it when it runs in a Jupyter kernel and is given no
``on_event`` (:func:`default_observer`). IPython is imported only inside a
kernel, where it is loaded already: ``import expkit`` must not load it
anywhere else.

The table has a row per step and one per sweep (with a bar counting its
instances), so a sweep of ten thousand instances stays a small table.
Updates are throttled: a fast sweep would otherwise send more display
messages than the kernel's output channel lets through. What an update held
back would have shown is drawn by a timer, and at the latest when the cell
ends (IPython's ``post_run_cell``), so the table never stays behind the run.
"""

from __future__ import annotations

import html
import sys
import threading
import time
from collections import Counter
from typing import TYPE_CHECKING

from ._events import PlanReady, RunFinished, StepFinished, StepStarted
from ._status import Status
from ._tables import STATUS_COLOURS

if TYPE_CHECKING:
    from ._events import Event, Observer
    from ._plan import Plan, PlanEntry
    from ._report import RunReport, StepOutcome

__all__ = ["NotebookProgress", "default_observer", "in_kernel"]

#: Seconds between two updates of the table, at most one per interval.
INTERVAL = 0.2
#: Failed instances of one sweep named in its row; the rest are counted.
_NAMED = 3
#: Rows drawn at most: those running or gone wrong first, then the others in
#: graph order; the rest are counted in a last line (a big DAG stays readable).
ROWS_SHOWN = 30


def in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel (ipykernel's shell), not a terminal or script."""
    zmqshell = sys.modules.get("ipykernel.zmqshell")
    if zmqshell is None:  # not a kernel: do not import IPython to find out
        return False
    from IPython import get_ipython

    return isinstance(get_ipython(), zmqshell.ZMQInteractiveShell)


def default_observer() -> Observer | None:
    """The progress ``make`` shows when not told otherwise: a live table in a kernel, else none."""
    return NotebookProgress() if in_kernel() else None


class _Row:
    """What the table shows for one step, or for one sweep's instances together."""

    __slots__ = ("instances", "kept", "note", "status", "tally")

    def __init__(self, status: Status, note: str) -> None:
        self.status = status
        self.note = note
        #: A sweep's instances that run: name -> status, and how many in each.
        self.instances: dict[str, Status] = {}
        self.tally: Counter[Status] = Counter()
        #: A sweep's instances that do not run, counted by reason.
        self.kept: Counter[str] = Counter()

    @property
    def ended(self) -> int:
        """A sweep's instances no longer waiting or running."""
        return len(self.instances) - self.tally[Status.WAITING] - self.tally[Status.RUNNING]

    def set_instance(self, name: str, status: Status) -> None:
        before = self.instances.get(name)
        if before is not None:
            self.tally[before] -= 1
        self.instances[name] = status
        self.tally[status] += 1
        self.status = _sweep_status(self.tally)


class NotebookProgress:
    """An observer for ``make(on_event=...)`` that draws the run as an HTML table.

    The table is shown with an IPython display handle when the first plan is
    ready, then updated in place; its plain-text form serves frontends
    without HTML.
    """

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.rows: dict[str, _Row] = {}
        #: Instance name -> its sweep's row name.
        self.sweep_of: dict[str, str] = {}
        #: Every step and instance this run runs -> its status; kept counted
        #: as it changes, since a sweep may have ten thousand.
        self.units: dict[str, Status] = {}
        self.finished = 0
        self.where = ""
        self.display_id: str | None = None
        # The driver calls in one thread, a timer flushes in another.
        self._lock = threading.Lock()
        self._last = 0.0
        self._timer: threading.Timer | None = None
        self._pending = False

    # -- events ------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        """Record one event, and show it unless the table was updated a moment ago."""
        with self._lock:
            if isinstance(event, PlanReady):
                self._plan(event.plan)
            elif isinstance(event, StepStarted):
                self._started(event.name, event.attempt)
            elif isinstance(event, StepFinished):
                self._finished(event.outcome)
            elif isinstance(event, RunFinished):
                changed = self._never_started(event.report)
                if not changed:
                    return  # the last step's end was drawn already
            ended = self.finished == len(self.units)
            self._show(now=isinstance(event, PlanReady) or ended)

    def _never_started(self, report: RunReport) -> bool:
        """Steps still waiting when the run ended (fail_fast) say so, as the report does."""
        waiting = [o for o in report.steps.values() if self.units.get(o.name) is Status.WAITING]
        for outcome in waiting:
            self._finished(outcome)
        return bool(waiting)

    def _track(self, name: str, status: Status) -> None:
        before = self.units.get(name)
        self.finished += (status not in _BUSY) - (before is not None and before not in _BUSY)
        self.units[name] = status

    def _plan(self, plan: Plan) -> None:
        if plan.env is not None:
            self.where = str(plan.env.resultdir)
        for entry in plan:
            if entry.name != entry.step:
                self._plan_instance(entry)
            elif entry.runs:
                self.rows[entry.name] = _Row(Status.WAITING, entry.reason)
                self._track(entry.name, Status.WAITING)
            elif entry.name not in self.rows:
                # A later wave re-plans steps this run finished: keep what they did.
                self.rows[entry.name] = _Row(entry.status, entry.reason)

    def _plan_instance(self, entry: PlanEntry) -> None:
        self.sweep_of[entry.name] = entry.step
        row = self.rows.get(entry.step)
        if row is None:
            row = self.rows[entry.step] = _Row(entry.status, "")
        if entry.runs:
            row.set_instance(entry.name, Status.WAITING)
            self._track(entry.name, Status.WAITING)
        elif entry.name not in row.instances:
            row.kept[entry.reason] += 1

    def _started(self, name: str, attempt: int) -> None:
        self._track(name, Status.RUNNING)
        sweep = self.sweep_of.get(name)
        if sweep is not None:
            self.rows[sweep].set_instance(name, Status.RUNNING)
            return
        row = self.rows.setdefault(name, _Row(Status.RUNNING, ""))
        row.status = Status.RUNNING
        row.note = f"attempt {attempt}" if attempt > 1 else "running"

    def _finished(self, outcome: StepOutcome) -> None:
        self._track(outcome.name, outcome.status)
        sweep = self.sweep_of.get(outcome.name)
        if sweep is not None:
            self.rows[sweep].set_instance(outcome.name, outcome.status)
            return
        row = self.rows.setdefault(outcome.name, _Row(outcome.status, ""))
        row.status = outcome.status
        row.note = _note(outcome)

    # -- display -----------------------------------------------------------

    def _show(self, *, now: bool) -> None:
        """Update the table now, or within ``interval`` (one timer at a time)."""
        wait = self._last + self.interval - time.monotonic()
        if now or wait <= 0:
            self._draw()
            return
        self._pending = True
        if self._timer is None:
            self._timer = threading.Timer(wait, self.draw_held)
            self._timer.daemon = True
            self._timer.start()

    # Not named flush(): the run calls an observer's flush() before every
    # step, which would undo the throttling (see expkit._events).
    def draw_held(self) -> None:
        """Draw what an update held back, if any."""
        with self._lock:
            if self._pending:
                self._draw()

    def _draw(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending = False
        self._last = time.monotonic()
        self.publish({"text/html": self.html(), "text/plain": self.text()})

    def publish(self, bundle: dict[str, str]) -> None:
        """Show the table: the first time under the cell, then in place of the last one."""
        from IPython import get_ipython
        from IPython.display import display, update_display

        if self.display_id is not None:
            update_display(bundle, raw=True, display_id=self.display_id)  # type: ignore[no-untyped-call]
            return
        # IPython's display functions are not annotated.
        handle = display(bundle, raw=True, display_id=True)  # type: ignore[no-untyped-call]
        self.display_id = handle.display_id if handle is not None else None
        shell = get_ipython()
        if shell is not None:
            # A timer may fire after the cell has ended, when its output is
            # no longer listened to: the cell's end draws what is pending.
            shell.events.register("post_run_cell", self._cell_ended)

    def _cell_ended(self, *_result: object) -> None:
        from IPython import get_ipython

        self.draw_held()
        shell = get_ipython()
        if shell is not None:
            shell.events.unregister("post_run_cell", self._cell_ended)

    def counts(self) -> tuple[int, int]:
        """Steps and instances finished, and planned to run."""
        return self.finished, len(self.units)

    def _cells(self, name: str, row: _Row) -> tuple[str, str, str]:
        if not row.instances and not row.kept:
            return name, row.status.value, row.note
        parts = [f"{n} {s.value}" for s, n in sorted(row.tally.items(), key=_by_value) if n]
        parts += [f"{n} kept: {reason}" for reason, n in sorted(row.kept.items())]
        bad = (
            [i for i, s in row.instances.items() if s in _BAD]
            if any(row.tally[s] for s in _BAD)
            else []
        )
        named = ", ".join(bad[:_NAMED]) + (", ..." if len(bad) > _NAMED else "")
        note = ", ".join(parts) + (f" (not done: {named})" if bad else "")
        size = len(row.instances) + sum(row.kept.values())
        return f"{name} ({size} instances)", row.status.value, note

    def html(self) -> str:
        """The table as HTML: a summary with a bar, then a row per step or sweep."""
        done, total = self.counts()
        shown, hidden = self._visible()
        rows = []
        for name, row in shown:
            step, status, note = self._cells(name, row)
            bar = ""
            if row.instances:
                finished = (
                    len(row.instances) - row.tally[Status.WAITING] - row.tally[Status.RUNNING]
                )
                bar = f' <progress value="{finished}" max="{len(row.instances)}"></progress>'
            rows.append(
                f'<tr style="background:{STATUS_COLOURS[row.status]}">'
                f"<td><code>{html.escape(step)}</code></td><td>{status}</td>"
                f"<td>{html.escape(note)}{bar}</td></tr>"
            )
        if hidden:
            rows.append(f'<tr><td colspan="3"><i>{html.escape(hidden)}</i></td></tr>')
        where = f" in <code>{html.escape(self.where)}</code>" if self.where else ""
        return (
            f"<div><p><b>expkit</b>{where}: {done}/{total} finished "
            f'<progress value="{done}" max="{max(total, 1)}"></progress></p>'
            "<table><thead><tr><th>step</th><th>status</th><th>note</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>"
        )

    def _visible(self) -> tuple[list[tuple[str, _Row]], str]:
        """The rows to draw, in graph order, and a line counting the others ("" if none)."""
        rows = list(self.rows.items())
        if len(rows) <= ROWS_SHOWN:
            return rows, ""
        urgent = [i for i, (_, row) in enumerate(rows) if row.status not in _QUIET]
        chosen = set(urgent[:ROWS_SHOWN])
        for i in range(len(rows)):
            if len(chosen) >= ROWS_SHOWN:
                break
            chosen.add(i)
        hidden = Counter(row.status for i, (_, row) in enumerate(rows) if i not in chosen)
        counts = ", ".join(
            f"{n} {s.value.lower()}" for s, n in sorted(hidden.items(), key=_by_value)
        )
        return [rows[i] for i in sorted(chosen)], f"... and {sum(hidden.values())} more: {counts}"

    def text(self) -> str:
        """The table as plain text, for frontends that show no HTML."""
        from ._tables import text_table

        done, total = self.counts()
        shown, hidden = self._visible()
        rows = [self._cells(name, row) for name, row in shown]
        head = f"expkit{' in ' + self.where if self.where else ''}: {done}/{total} finished"
        table = "\n" + text_table(("step", "status", "note"), rows) if rows else ""
        return head + table + (f"\n{hidden}" if hidden else "")


_BAD = (Status.FAILED, Status.INTERRUPTED, Status.CANCELLED, Status.SKIPPED)
_BUSY = (Status.WAITING, Status.RUNNING)
#: Rows that need no attention: drawn only when there is room.
_QUIET = frozenset((Status.DONE, Status.WAITING, Status.PENDING))


def _sweep_status(tally: Counter[Status]) -> Status:
    """A sweep's colour: running while any instance runs, then its worst outcome."""
    for status in (Status.RUNNING, Status.WAITING, *_BAD):
        if tally[status]:
            return status
    return Status.DONE


def _by_value(item: tuple[Status, int]) -> str:
    return item[0].value


def _note(outcome: StepOutcome) -> str:
    if outcome.error is not None and outcome.status is not Status.DONE:
        return outcome.error.summary()
    if outcome.duration is not None and outcome.ran:
        return f"{outcome.duration:.2f} s"
    return outcome.reason
