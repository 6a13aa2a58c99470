"""The step-record API of an environment (valjean's ``Env`` methods)."""

from __future__ import annotations

import threading
import types
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from datetime import datetime, timezone

from ._journal import PackedState, unpacked
from ._records import StepRecord
from ._status import Status
from ._typing import Any, NamedTuple, Protocol

__all__ = ["Brief", "StepRecords", "StepsMixin", "StoredState", "step_name"]

#: A step record's stored form: a dict of builtins (``StepRecord.to_state``),
#: or, from the index cache, what a plan reads of it and that dict packed (see _journal).
StoredState = dict[str, Any] | PackedState


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


_BY_VALUE = {status.value: status for status in Status}
_RUNNING = Status.RUNNING.value


_state = unpacked


def _status(stored: StoredState) -> Status:
    value = stored[0] if isinstance(stored, tuple) else stored["status"]
    return _BY_VALUE.get(value) or Status(value)


class Brief(NamedTuple):
    """What the planner reads of a record; nothing else of it is decoded."""

    status: Status
    #: POSIX timestamps.
    started: float | None
    ended: float | None
    fingerprint: str | None


def _timestamp(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


class StepRecords(MutableMapping[str, StepRecord]):
    """Step records by name; one read from the journal is decoded on first use.

    Loading keeps each record in its stored form (see StoredState): a step
    run on an environment of many records decodes only the few it uses.
    """

    __slots__ = ("_items", "_shared")

    def __init__(
        self, items: dict[str, StepRecord | StoredState] | None = None, *, shared: bool = False
    ) -> None:
        self._items: dict[str, StepRecord | StoredState] = {} if items is None else items
        #: ``_items`` is another StepRecords' too (see :meth:`shared`): copied before a change.
        self._shared = shared

    def _own(self) -> dict[str, StepRecord | StoredState]:
        if self._shared:
            self._items = dict(self._items)
            self._shared = False
        return self._items

    def __getitem__(self, name: str) -> StepRecord:
        item = self._items[name]
        if not isinstance(item, StepRecord):
            item = self._items[name] = StepRecord.from_state(_state(item))
        return item

    def get(self, name: str, default: Any = None) -> Any:
        """The record of step ``name`` (decoded now if needed), or ``default``."""
        item = self._items.get(name)
        if item is None:
            return default
        if not isinstance(item, StepRecord):
            item = self._items[name] = StepRecord.from_state(_state(item))
        return item

    def __setitem__(self, name: str, record: StepRecord) -> None:
        self._own()[name] = record

    def __delitem__(self, name: str) -> None:
        del self._own()[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def put_state(self, name: str, state: StoredState) -> None:
        """Keep a record in its stored form, to decode when first used."""
        self._own()[name] = state

    def stored(self, name: str) -> StepRecord | StoredState | None:
        """What is kept for a record now, decoded or not (``None`` when unrecorded)."""
        return self._items.get(name)

    def state(self, name: str) -> dict[str, Any]:
        """A record's stored form as a dict (see :meth:`StepRecord.to_state`)."""
        item = self._items[name]
        return item.to_state() if isinstance(item, StepRecord) else _state(item)

    def states(self, names: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """The stored forms of some records, as dicts; ``None`` for those not recorded."""
        items = self._items
        states: dict[str, dict[str, Any] | None] = {}
        for name in names:
            item = items.get(name)
            if item is None:
                states[name] = None
            else:
                states[name] = item.to_state() if isinstance(item, StepRecord) else _state(item)
        return states

    def status(self, name: str) -> Status | None:
        """A record's status without decoding the rest of it, or ``None`` when unrecorded."""
        item = self._items.get(name)
        if item is None:
            return None
        return item.status if isinstance(item, StepRecord) else _status(item)

    def briefs(self, names: Iterable[str]) -> dict[str, Brief]:
        """The :class:`Brief` of each of ``names`` that is recorded, in one pass."""
        items = self._items
        found: dict[str, Brief] = {}
        for name in names:
            item = items.get(name)
            if item is None:
                continue
            if isinstance(item, StepRecord):
                found[name] = Brief(
                    item.status, _timestamp(item.started), _timestamp(item.ended), item.fingerprint
                )
                continue
            if isinstance(item, tuple):  # packed: what a plan reads is kept beside the rest
                status, started, ended, fingerprint, _ = item
                found[name] = Brief(
                    _BY_VALUE.get(status) or Status(status), started, ended, fingerprint
                )
                continue
            status = item["status"]
            found[name] = Brief(
                _BY_VALUE.get(status) or Status(status),
                item["started"],
                item["ended"],
                item["fingerprint"],
            )
        return found

    def running(self) -> list[StepRecord]:
        """The RUNNING records (only those are decoded)."""
        found = []
        for name, item in self._items.items():
            if isinstance(item, StepRecord):
                if item.status is Status.RUNNING:
                    found.append(item)
            elif (item[0] if isinstance(item, tuple) else item["status"]) == _RUNNING:
                found.append(self[name])
        return found

    def copy(self) -> StepRecords:
        """A shallow copy (records are immutable, stored forms never changed)."""
        return StepRecords(dict(self._items))

    def shared(self) -> StepRecords:
        """These records, copied only when the copy is changed: no copy of a big table.

        Only for a copy used while these records do not change (a step run
        in the driver's own thread): it reads them as they are. Decoding a
        record on read is no change: the decoded form stands for the same record.
        """
        return StepRecords(self._items, shared=True)


class StepsMixin:
    """Status, clocks and records of steps, kept beside the data."""

    _lock: threading.RLock
    _steps: StepRecords
    _steps_dirty: set[str]

    @property
    def steps(self) -> Mapping[str, StepRecord]:
        """Read-only snapshot: step name -> :class:`StepRecord`."""
        with self._lock:
            return types.MappingProxyType(dict(self._steps))

    def _records_snapshot(self) -> StepRecords:
        """The records as they are now, decoded or not (a shallow copy)."""
        with self._lock:
            return self._steps.copy()

    def _record(self, step: str | _Named) -> StepRecord:
        name = step_name(step)
        return self._steps.get(name) or StepRecord(name)

    def _put_state(self, name: str, state: dict[str, Any]) -> None:
        """Record step ``name`` in its stored form (``StepRecord.to_state``), to commit."""
        with self._lock:
            self._steps.put_state(name, state)
            self._steps_dirty.add(name)

    def _put_record(self, record: StepRecord) -> None:
        with self._lock:
            self._steps[record.name] = record
            self._steps_dirty.add(record.name)

    def get_status(self, step: str | _Named) -> Status:
        """The step's status; PENDING if never recorded (reading records nothing)."""
        with self._lock:
            status = self._steps.status(step_name(step))
            return Status.PENDING if status is None else status

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
