"""The step-record API of an environment (valjean's ``Env`` methods)."""

from __future__ import annotations

import threading
import types
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Protocol

from ._records import StepRecord
from ._status import Status

__all__ = ["StepsMixin", "step_name"]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


def step_name(step: str | _Named) -> str:
    """A step's name, from the step itself or its name."""
    return step if isinstance(step, str) else step.name


def _as_datetime(moment: datetime | float | None) -> datetime | None:
    if moment is None:
        return None
    if isinstance(moment, datetime):
        return (
            moment if moment.tzinfo is not None else moment.astimezone()
        )  # naive means local time
    return datetime.fromtimestamp(moment, tz=timezone.utc)


class StepsMixin:
    """Status, clocks and records of steps, kept beside the data."""

    _lock: threading.RLock
    _steps: dict[str, StepRecord]
    _steps_dirty: set[str]

    @property
    def steps(self) -> Mapping[str, StepRecord]:
        """Read-only snapshot: step name -> :class:`StepRecord`."""
        with self._lock:
            return types.MappingProxyType(dict(self._steps))

    def _record(self, step: str | _Named) -> StepRecord:
        name = step_name(step)
        return self._steps.get(name) or StepRecord(name)

    def _put_record(self, record: StepRecord) -> None:
        with self._lock:
            self._steps[record.name] = record
            self._steps_dirty.add(record.name)

    def get_status(self, step: str | _Named) -> Status:
        """The step's status; PENDING if never recorded (reading records nothing)."""
        with self._lock:
            record = self._steps.get(step_name(step))
            return Status.PENDING if record is None else record.status

    def set_status(self, step: str | _Named, status: Status) -> None:
        """Record a status (committed by the next ``dump()`` or step)."""
        with self._lock:
            self._put_record(self._record(step).replace(status=Status(status)))

    def set_start_end_clock(
        self, step: str | _Named, *, start: datetime | float | None, end: datetime | float | None
    ) -> None:
        """Set when the step started and ended (datetimes, or POSIX timestamps)."""
        with self._lock:
            self._put_record(
                self._record(step).replace(started=_as_datetime(start), ended=_as_datetime(end))
            )

    def get_start_clock(self, step: str | _Named) -> datetime | None:
        """When the step last started."""
        with self._lock:
            return self._record(step).started

    def get_end_clock(self, step: str | _Named) -> datetime | None:
        """When the step last ended."""
        with self._lock:
            return self._record(step).ended

    def _is(self, step: str | _Named, status: Status) -> bool:
        return self.get_status(step) is status

    # One predicate and one setter per status, spelled out so that type
    # checkers and editors see them.
    def is_pending(self, step: str | _Named) -> bool:
        """Whether the step is PENDING."""
        return self._is(step, Status.PENDING)

    def is_waiting(self, step: str | _Named) -> bool:
        """Whether the step is WAITING."""
        return self._is(step, Status.WAITING)

    def is_running(self, step: str | _Named) -> bool:
        """Whether the step is RUNNING."""
        return self._is(step, Status.RUNNING)

    def is_done(self, step: str | _Named) -> bool:
        """Whether the step is DONE."""
        return self._is(step, Status.DONE)

    def is_failed(self, step: str | _Named) -> bool:
        """Whether the step is FAILED."""
        return self._is(step, Status.FAILED)

    def is_skipped(self, step: str | _Named) -> bool:
        """Whether the step is SKIPPED."""
        return self._is(step, Status.SKIPPED)

    def is_cancelled(self, step: str | _Named) -> bool:
        """Whether the step is CANCELLED."""
        return self._is(step, Status.CANCELLED)

    def is_interrupted(self, step: str | _Named) -> bool:
        """Whether the step is INTERRUPTED."""
        return self._is(step, Status.INTERRUPTED)

    def set_pending(self, step: str | _Named) -> None:
        """Mark the step PENDING."""
        self.set_status(step, Status.PENDING)

    def set_waiting(self, step: str | _Named) -> None:
        """Mark the step WAITING."""
        self.set_status(step, Status.WAITING)

    def set_running(self, step: str | _Named) -> None:
        """Mark the step RUNNING."""
        self.set_status(step, Status.RUNNING)

    def set_done(self, step: str | _Named) -> None:
        """Mark the step DONE."""
        self.set_status(step, Status.DONE)

    def set_failed(self, step: str | _Named) -> None:
        """Mark the step FAILED."""
        self.set_status(step, Status.FAILED)

    def set_skipped(self, step: str | _Named) -> None:
        """Mark the step SKIPPED."""
        self.set_status(step, Status.SKIPPED)

    def set_cancelled(self, step: str | _Named) -> None:
        """Mark the step CANCELLED."""
        self.set_status(step, Status.CANCELLED)

    def set_interrupted(self, step: str | _Named) -> None:
        """Mark the step INTERRUPTED."""
        self.set_status(step, Status.INTERRUPTED)
