"""One step run by an executor: what a worker receives, and what it sends back.

A worker runs the step on a private view of the environment and reports
plain data — the pickled result, the pickled values of the keys the step
changed, the keys it read, the error as text — so that the run's driver, the
only writer, can commit it. Nothing here is unpickled by the driver except
this report, which comes from its own worker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._capture import capturing
from ._errors import UnpicklableValueError
from ._records import ErrorInfo, StoredResult
from ._status import Status
from ._tracking import tracking

if TYPE_CHECKING:
    from ._environment import Environment

__all__ = ["Job", "Outcome", "execute"]


class Job:
    """A step instance to run once."""

    # Plain slotted classes: a dataclass compiles code at import, for every `exp` command.
    __slots__ = ("attempt", "fn", "name", "params", "takes_env", "timeout")

    def __init__(  # noqa: PLR0917 - the job's fields, positional as workers build them
        self,
        name: str,
        fn: Callable[..., Any],
        params: Mapping[str, Any],
        takes_env: bool,  # noqa: FBT001 - a field
        timeout: float | None,
        attempt: int = 1,
    ) -> None:
        self.name = name
        self.fn = fn
        self.params = params
        self.takes_env = takes_env
        self.timeout = timeout
        self.attempt = attempt

    def __repr__(self) -> str:
        return f"Job({self.name!r}, attempt={self.attempt})"


class Outcome:
    """What one attempt of a step did."""

    __slots__ = (
        "attempt",
        "data",
        "error",
        "interrupted_driver",
        "name",
        "reads",
        "records",
        "result",
        "status",
        "writes",
    )

    def __init__(  # noqa: PLR0917 - the outcome's fields, positional as a dataclass took them
        self,
        name: str,
        status: Status,
        result: bytes | None = None,
        data: dict[str, bytes | None] | None = None,
        reads: frozenset[str] = frozenset(),
        writes: frozenset[str] = frozenset(),
        error: ErrorInfo | None = None,
        records: dict[str, Any] | None = None,
        interrupted_driver: bool = False,  # noqa: FBT001, FBT002 - a field
        attempt: int = 1,
    ) -> None:
        self.name = name
        self.status = status
        #: The pickled return value (DONE only).
        self.result = result
        #: Keys whose value changed, pickled; ``None`` for a deleted key.
        self.data: dict[str, bytes | None] = {} if data is None else data
        self.reads = reads
        self.writes = writes
        self.error = error
        #: Records of steps called directly inside this one, as state dicts.
        self.records: dict[str, Any] = {} if records is None else records
        #: The step was stopped by a KeyboardInterrupt raised in the driver's own thread.
        self.interrupted_driver = interrupted_driver
        self.attempt = attempt

    def __repr__(self) -> str:
        return f"Outcome({self.name!r}, {self.status!r}, attempt={self.attempt})"

    @classmethod
    def failed(cls, job: Job, error: BaseException) -> Outcome:
        """A step that failed before it ran (it could not be shipped to a worker)."""
        return cls(
            job.name, Status.FAILED, error=ErrorInfo.from_exception(error), attempt=job.attempt
        )


_NOTHING: frozenset[str] = frozenset()


def execute(job: Job, view: Environment, *, in_driver_thread: bool = False) -> Outcome:
    """Run ``job`` on ``view`` and report what it did; never raises for the step's errors.

    A step that takes no ``env`` cannot reach the environment: it may be
    given the run's own in place of a view, which is then only read for its
    log's place, and nothing is collected from it.
    """
    kwargs = dict(job.params)
    if job.takes_env:
        kwargs["env"] = view
    status = Status.DONE
    error: BaseException | None = None
    result: bytes | None = None
    # What the step prints or logs also goes to its log file (see _capture).
    with tracking(id(view)) as tracker, capturing(job.name, view, job.attempt) as log:
        try:
            if job.timeout is None:
                value = job.fn(**kwargs)
            else:
                from ._timeout import deadline  # signal and ctypes: only for a step with a timeout

                with deadline(job.timeout, job.name):
                    value = job.fn(**kwargs)
        except KeyboardInterrupt as raised:
            status, error = Status.CANCELLED, raised
        except BaseException as raised:  # noqa: BLE001 - SystemExit too: the step's outcome
            status, error = Status.FAILED, raised
        else:
            try:
                result = StoredResult.of(value).data
            except Exception as raised:  # noqa: BLE001 - any pickling failure
                status = Status.FAILED
                error = UnpicklableValueError(
                    f"result of {job.name}", f"{type(raised).__name__}: {raised}"
                )
        if error is not None:
            log.note_error(error)
    data: dict[str, bytes | None] | None = None
    records: dict[str, Any] | None = None
    reads = writes = _NOTHING
    if job.takes_env:  # else it had no view: nothing to collect
        data, _, failed = view._collect(skip_unpicklable=True)  # noqa: SLF001 - the view's partner
        if failed and status is Status.DONE:
            status = Status.FAILED
            error = UnpicklableValueError(
                failed[0], "its value cannot be pickled; nothing else is lost"
            )
            result = None
        records = {
            name: view._steps[name].to_state()  # noqa: SLF001
            for name in view._steps_dirty  # noqa: SLF001
            if name in view._steps  # noqa: SLF001
        }
        reads, writes = frozenset(tracker.reads), frozenset(tracker.written(set(data)))
    return Outcome(
        name=job.name,
        status=status,
        result=result,
        data=data,
        reads=reads,
        writes=writes,
        error=None if error is None else ErrorInfo.from_exception(error),
        records=records,
        interrupted_driver=in_driver_thread and status is Status.CANCELLED,
        attempt=job.attempt,
    )
