"""Frozen records describing a step's last run: status, timing, outcome, owner."""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterable
from datetime import datetime, timezone

from ._errors import CorruptValueError
from ._status import Status
from ._typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._typing import Any

__all__ = [
    "ErrorInfo",
    "Frozen",
    "Owner",
    "StepRecord",
    "as_datetime",
    "clock",
    "finished_state",
    "running_state",
]

_UNSET: Any = object()


class FrozenRecordError(AttributeError):
    """A record's field was assigned: records are frozen (``replace`` makes a changed copy)."""


class Frozen:
    """Frozen, slotted records without ``dataclasses``: their classes are made at import.

    ``dataclasses`` would build each class by generating and compiling code
    (about 2 ms for StepRecord); these behave as frozen slotted dataclasses:
    keyword or positional construction, equality and hash by fields, a repr,
    pickling by fields, assignment refused.
    """

    __slots__ = ()
    #: The fields, in order; those in ``_hidden`` are left out of the repr.
    _fields: tuple[str, ...] = ()
    _hidden: frozenset[str] = frozenset()

    def __setattr__(self, name: str, value: object) -> None:
        msg = f"cannot assign to field {name!r}"
        raise FrozenRecordError(msg)

    def __delattr__(self, name: str) -> None:
        msg = f"cannot delete field {name!r}"
        raise FrozenRecordError(msg)

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={getattr(self, name)!r}" for name in self._fields if name not in self._hidden
        )
        return f"{type(self).__qualname__}({shown})"

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        return (type(self), self._values())


_set = object.__setattr__


class ErrorInfo(Frozen):
    """An exception as text: it survives processes, restarts and renamed classes."""

    __slots__ = ("message", "traceback", "type")
    _fields = ("type", "message", "traceback")

    type: str
    message: str
    traceback: str

    def __init__(self, type: str, message: str, traceback: str) -> None:  # noqa: A002
        _set(self, "type", type)
        _set(self, "message", message)
        _set(self, "traceback", traceback)

    @classmethod
    def from_exception(cls, error: BaseException) -> ErrorInfo:
        """Capture an exception's type, message and formatted traceback."""
        kind = type(error)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else f"{kind.__module__}.{kind.__qualname__}"
        )
        import traceback  # only for a failure: `import expkit` stays light

        text = "".join(traceback.format_exception(kind, error, error.__traceback__))
        return cls(type=name, message=str(error), traceback=text)

    def summary(self) -> str:
        """``Type: message`` on one line."""
        short = self.type.rsplit(".", 1)[-1]
        first = self.message.splitlines()[0] if self.message else ""
        return f"{short}: {first}" if first else short


class Owner(Frozen):
    """The process that ran a step: enough to tell whether it is still alive."""

    __slots__ = ("host", "pid", "started")
    _fields = ("host", "pid", "started")

    host: str
    pid: int
    #: When that process started; tells a recycled pid from the owner.
    started: datetime | None

    def __init__(self, host: str, pid: int, started: datetime | None) -> None:
        _set(self, "host", host)
        _set(self, "pid", pid)
        _set(self, "started", started)


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


class StepRecord(Frozen):
    """What the environment knows of one step (or one step instance)."""

    __slots__ = (
        "attempts",
        "ended",
        "error",
        "fingerprint",
        "name",
        "owner",
        "params",
        "reads",
        "started",
        "status",
        "stored_result",
        "writes",
    )
    _fields = (
        "name",
        "status",
        "attempts",
        "started",
        "ended",
        "error",
        "stored_result",
        "params",
        "fingerprint",
        "reads",
        "writes",
        "owner",
    )
    _hidden = frozenset({"stored_result"})

    name: str
    status: Status
    attempts: int
    started: datetime | None
    ended: datetime | None
    error: ErrorInfo | None
    stored_result: StoredResult
    params: dict[str, Any]
    fingerprint: str | None
    reads: frozenset[str]
    writes: frozenset[str]
    owner: Owner | None

    def __init__(  # noqa: PLR0917 - one argument per field, as a dataclass takes them
        self,
        name: str,
        status: Status = Status.PENDING,
        attempts: int = 0,
        started: datetime | None = None,
        ended: datetime | None = None,
        error: ErrorInfo | None = None,
        stored_result: StoredResult | None = None,
        params: dict[str, Any] | None = None,
        fingerprint: str | None = None,
        reads: frozenset[str] = frozenset(),
        writes: frozenset[str] = frozenset(),
        owner: Owner | None = None,
    ) -> None:
        _set(self, "name", name)
        _set(self, "status", status)
        _set(self, "attempts", attempts)
        _set(self, "started", started)
        _set(self, "ended", ended)
        _set(self, "error", error)
        _set(self, "stored_result", _NO_RESULT if stored_result is None else stored_result)
        _set(self, "params", {} if params is None else params)
        _set(self, "fingerprint", fingerprint)
        _set(self, "reads", reads)
        _set(self, "writes", writes)
        _set(self, "owner", owner)

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
            started=as_datetime(state["started"]),
            ended=as_datetime(state["ended"]),
            error=ErrorInfo(*state["error"]) if state["error"] else None,
            stored_result=StoredResult(state["result"]),
            params=params,
            fingerprint=state["fingerprint"],
            reads=frozenset(state["reads"]),
            writes=frozenset(state["writes"]),
            owner=Owner(owner[0], owner[1], as_datetime(owner[2])) if owner else None,
        )


_FIELD_NAMES = StepRecord._fields
_RUNNING = Status.RUNNING._value_


def clock() -> float:
    """Now, as records keep it: seconds since the epoch, in whole microseconds.

    That is what a ``datetime`` holds. Some records are built from one; a
    finer time would then compare unequal to itself, and a step claimed in
    the very commit its upstream ended in would seem to have started first.
    """
    return time.time_ns() // 1000 / 1_000_000


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


def _ts(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def as_datetime(stamp: float | None) -> datetime | None:
    """A time as records store it (see :func:`clock`), as the ``datetime`` they show."""
    return None if stamp is None else datetime.fromtimestamp(stamp, tz=timezone.utc)
