"""Frozen records describing a step's last run: status, timing, outcome, owner."""

from __future__ import annotations

import dataclasses
import pickle
import traceback
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from ._errors import CorruptValueError
from ._status import Status

__all__ = ["ErrorInfo", "Owner", "StepRecord", "finished_state", "running_state"]

_UNSET: Any = object()


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An exception as text: it survives processes, restarts and renamed classes."""

    type: str
    message: str
    traceback: str

    @classmethod
    def from_exception(cls, error: BaseException) -> ErrorInfo:
        """Capture an exception's type, message and formatted traceback."""
        kind = type(error)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        text = "".join(traceback.format_exception(kind, error, error.__traceback__))
        return cls(type=name, message=str(error), traceback=text)

    def summary(self) -> str:
        """``Type: message`` on one line."""
        short = self.type.rsplit(".", 1)[-1]
        first = self.message.splitlines()[0] if self.message else ""
        return f"{short}: {first}" if first else short


@dataclasses.dataclass(frozen=True, slots=True)
class Owner:
    """The process that ran a step: enough to tell whether it is still alive."""

    host: str
    pid: int
    #: When that process started; tells a recycled pid from the owner.
    started: datetime | None


class StoredResult:
    """A step's return value, kept pickled until first read."""

    __slots__ = ("_data", "_value")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._value: Any = _UNSET

    @classmethod
    def of(cls, value: Any) -> StoredResult:
        """Pickle ``value`` now (raises if it does not pickle)."""
        if value is None:
            return _NO_RESULT  # most steps return nothing: one shared, immutable result
        result = cls(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        result._value = value
        return result

    @property
    def data(self) -> bytes:
        """The pickled bytes."""
        return self._data

    def value(self, step: str) -> Any:
        """Unpickle on first use; a bad pickle fails only this result."""
        if self._value is _UNSET:
            try:
                self._value = pickle.loads(self._data)  # trust checked at load
            except Exception as error:  # any unpickling failure is reported the same way
                raise CorruptValueError(
                    f"result of {step}", "<step record>", repr(error)
                ) from error
        return self._value

    def __reduce__(self) -> tuple[type[StoredResult], tuple[bytes]]:
        # Only the bytes travel (to a worker, a snapshot): the unread marker is
        # a module-level sentinel, which pickling would turn into a new object.
        return (StoredResult, (self._data,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StoredResult) and other._data == self._data

    def __hash__(self) -> int:
        return hash(self._data)


_NO_RESULT = StoredResult(pickle.dumps(None))
_NO_RESULT_DATA = _NO_RESULT.data
_EMPTY_PARAMS = pickle.dumps({}, protocol=pickle.HIGHEST_PROTOCOL)
_STATUSES = {status.value: status for status in Status}


@dataclasses.dataclass(frozen=True, slots=True)
class StepRecord:
    """What the environment knows of one step (or one step instance)."""

    name: str
    status: Status = Status.PENDING
    attempts: int = 0
    started: datetime | None = None
    ended: datetime | None = None
    error: ErrorInfo | None = None
    stored_result: StoredResult = dataclasses.field(default=_NO_RESULT, repr=False)
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    fingerprint: str | None = None
    reads: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    owner: Owner | None = None

    @property
    def result(self) -> Any:
        """The step's return value (``None`` until it is DONE)."""
        return self.stored_result.value(self.name)

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, or ``None`` while either is unknown."""
        if self.started is None or self.ended is None:
            return None
        return (self.ended - self.started).total_seconds()

    def replace(self, **changes: Any) -> StepRecord:
        """A copy with some fields changed."""
        # dataclasses.replace without its per-call inspection of the fields: the
        # copy's slots are set as the frozen __init__ sets them.
        new = object.__new__(StepRecord)
        for name in _FIELD_NAMES:
            _set(new, name, changes.pop(name) if name in changes else getattr(self, name))
        if changes:
            msg = f"StepRecord has no field {next(iter(changes))!r}"
            raise TypeError(msg)
        return new

    # The stored form holds only builtins, so a record always loads even when
    # a user class inside its result no longer unpickles.
    def to_state(self) -> dict[str, Any]:
        """Builtins-only form for storage."""
        return {
            "name": self.name,
            "status": self.status._value_,
            "attempts": self.attempts,
            "started": None if self.started is None else self.started.timestamp(),
            "ended": None if self.ended is None else self.ended.timestamp(),
            "error": (self.error.type, self.error.message, self.error.traceback)
            if self.error
            else None,
            "result": self.stored_result.data,
            "params": pickle.dumps(self.params, protocol=pickle.HIGHEST_PROTOCOL)
            if self.params
            else _EMPTY_PARAMS,
            "fingerprint": self.fingerprint,
            "reads": sorted(self.reads),
            "writes": sorted(self.writes),
            "owner": (self.owner.host, self.owner.pid, _ts(self.owner.started))
            if self.owner
            else None,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> StepRecord:
        """Inverse of :meth:`to_state`."""
        owner = state["owner"]
        raw = state["params"]
        if raw == _EMPTY_PARAMS:
            params: dict[str, Any] = {}
        else:
            try:
                params = pickle.loads(raw)  # trust checked at load
            except Exception:  # noqa: BLE001 - a bad param pickle must not hide the record
                params = {}
        status = state["status"]
        return cls(
            name=state["name"],
            status=_STATUSES.get(status) or Status(status),
            attempts=state["attempts"],
            started=_dt(state["started"]),
            ended=_dt(state["ended"]),
            error=ErrorInfo(*state["error"]) if state["error"] else None,
            stored_result=StoredResult(state["result"]),
            params=params,
            fingerprint=state["fingerprint"],
            reads=frozenset(state["reads"]),
            writes=frozenset(state["writes"]),
            owner=Owner(owner[0], owner[1], _dt(owner[2])) if owner else None,
        )


_FIELD_NAMES = tuple(field.name for field in dataclasses.fields(StepRecord))
_RUNNING = Status.RUNNING._value_


def running_state(
    name: str,
    started: float,
    params: bytes,
    fingerprint: str | None,
    owner: tuple[str, int, float | None],
) -> dict[str, Any]:
    """The stored form of a step's record as it starts: ``StepRecord.to_state`` of it.

    ``params`` is the pickle of the parameters (protocol HIGHEST_PROTOCOL),
    ``owner`` the stored form of an :class:`Owner`. A direct call records its
    step in this form: no record object is built unless one is asked for.
    """
    return {
        "name": name,
        "status": _RUNNING,
        "attempts": 1,
        "started": started,
        "ended": None,
        "error": None,
        "result": _NO_RESULT_DATA,
        "params": params,
        "fingerprint": fingerprint,
        "reads": [],
        "writes": [],
        "owner": owner,
    }


def finished_state(
    running: dict[str, Any],
    *,
    status: Status,
    attempts: int,
    ended: float,
    error: ErrorInfo | None,
    result: bytes | None,
    reads: Iterable[str],
    writes: Iterable[str],
) -> dict[str, Any]:
    """The stored form of a record that ``running`` (a :func:`running_state`) ends as."""
    state = dict(running)
    state["status"] = status._value_
    state["attempts"] = attempts
    state["ended"] = ended
    state["error"] = None if error is None else (error.type, error.message, error.traceback)
    if result is not None:
        state["result"] = result
    state["reads"] = sorted(reads)
    state["writes"] = sorted(writes)
    return state


_set = object.__setattr__


def _ts(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _dt(stamp: float | None) -> datetime | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, tz=timezone.utc)
