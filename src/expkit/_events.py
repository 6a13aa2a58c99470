"""What a run of :func:`expkit.make` reports as it goes, to ``make(on_event=...)``.

The run's driver calls the observer in its own thread, in this order: a
:class:`PlanReady` for each plan (a run makes more than one when a sweep's
grid reads data that an earlier step of the same run makes), then a
:class:`StepStarted` when a step is recorded RUNNING (again for each retry),
and a :class:`StepFinished` when its outcome is committed — also for a step
SKIPPED because a prerequisite failed, which never started. A run that ends
(not by Ctrl-C) sends :class:`RunFinished` last, with its report: steps that
never started (``fail_fast``) are only in it. An observer that
raises is reported on stderr and not called again: a display never stops a
run.

An observer may also have a ``flush()`` method, called before the run
starts steps, waits for them, or ends: one that buffers what it writes
(lines to a pipe, say) writes it out then, so nothing it was told stays
unseen while a step runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ._records import Frozen

if TYPE_CHECKING:
    from ._plan import Plan
    from ._report import RunReport, StepOutcome

__all__ = ["Event", "Observer", "PlanReady", "RunFinished", "StepFinished", "StepStarted"]


_set = object.__setattr__


# Frozen records, not dataclasses: `exp run` would build each class at start-up.
class PlanReady(Frozen):
    """The plan a run is about to carry out: what runs, what is skipped, and why."""

    __slots__ = _fields = ("plan", "wave")

    plan: Plan
    #: 0 for the run's first plan, then 1, 2... for the later waves.
    wave: int

    def __init__(self, plan: Plan, wave: int) -> None:
        _set(self, "plan", plan)
        _set(self, "wave", wave)


class StepStarted(Frozen):
    """A step (or step instance) is recorded RUNNING and handed to the executor."""

    __slots__ = _fields = ("name", "attempt")

    name: str
    #: 1 for the first attempt, 2 for the first retry...
    attempt: int

    def __init__(self, name: str, attempt: int) -> None:
        _set(self, "name", name)
        _set(self, "attempt", attempt)


class StepFinished(Frozen):
    """A step's outcome is committed (DONE, FAILED, CANCELLED, SKIPPED...)."""

    __slots__ = _fields = ("outcome",)

    outcome: StepOutcome

    def __init__(self, outcome: StepOutcome) -> None:
        _set(self, "outcome", outcome)


class RunFinished(Frozen):
    """The run is over: its report, with the steps that never started."""

    __slots__ = _fields = ("report",)

    report: RunReport

    def __init__(self, report: RunReport) -> None:
        _set(self, "report", report)


Event = PlanReady | StepStarted | StepFinished | RunFinished
Observer = Callable[[Event], None]
