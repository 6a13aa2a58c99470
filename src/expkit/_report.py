"""What a run did: one outcome per planned step, and counts by status."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ._records import Frozen
from ._status import Status

if TYPE_CHECKING:
    from pathlib import Path

    from ._records import ErrorInfo

__all__ = ["RunReport", "StepOutcome"]

_BAD = (Status.FAILED, Status.INTERRUPTED, Status.CANCELLED, Status.SKIPPED, Status.RUNNING)


_set = object.__setattr__


# Frozen records, not dataclasses: `exp run` would build each class at start-up.
class StepOutcome(Frozen):
    """One step of a run: its status afterwards and how it got there."""

    __slots__ = _fields = ("name", "status", "ran", "attempts", "duration", "error", "reason")

    name: str
    status: Status
    #: Whether the run started it (``False``: up to date, or never reached).
    ran: bool
    attempts: int
    #: Seconds, for a step that ran.
    duration: float | None
    error: ErrorInfo | None
    #: Why it ran or was skipped.
    reason: str

    def __init__(  # noqa: PLR0917 - the fields, positional as the dataclass took them
        self,
        name: str,
        status: Status,
        ran: bool,  # noqa: FBT001 - a field
        attempts: int = 0,
        duration: float | None = None,
        error: ErrorInfo | None = None,
        reason: str = "",
    ) -> None:
        # One assignment a field, unrolled: a run makes one of these a step.
        _set(self, "name", name)
        _set(self, "status", status)
        _set(self, "ran", ran)
        _set(self, "attempts", attempts)
        _set(self, "duration", duration)
        _set(self, "error", error)
        _set(self, "reason", reason)


class RunReport(Frozen):
    """The outcome of :func:`expkit.make`; prints as a table."""

    __slots__ = _fields = ("steps", "env_path", "resume", "interrupted")

    steps: dict[str, StepOutcome]
    #: Where the environment is.
    env_path: Path | None
    #: The call or command that resumes this run.
    resume: str
    interrupted: bool

    def __init__(
        self,
        steps: dict[str, StepOutcome],
        env_path: Path | None = None,
        resume: str = "",
        interrupted: bool = False,  # noqa: FBT001, FBT002 - a field
    ) -> None:
        _set(self, "steps", steps)
        _set(self, "env_path", env_path)
        _set(self, "resume", resume)
        _set(self, "interrupted", interrupted)

    @property
    def ok(self) -> bool:
        """Every planned step is DONE."""
        return not self.interrupted and all(o.status is Status.DONE for o in self.steps.values())

    @property
    def ran(self) -> list[str]:
        """The steps the run started, in graph order."""
        return [name for name, outcome in self.steps.items() if outcome.ran]

    @property
    def counts(self) -> Counter[Status]:
        """How many steps ended in each status."""
        return Counter(outcome.status for outcome in self.steps.values())

    @property
    def failed(self) -> list[str]:
        """Steps not DONE after the run."""
        return [name for name, o in self.steps.items() if o.status in _BAD]

    def __iter__(self) -> Iterator[StepOutcome]:
        return iter(self.steps.values())

    def __getitem__(self, name: str) -> StepOutcome:
        return self.steps[name]

    def __len__(self) -> int:
        return len(self.steps)

    def _rows(self) -> list[tuple[str, str, str, str, str]]:
        return [
            (
                o.name,
                o.status.value,
                str(o.attempts) if o.ran else "",
                "" if o.duration is None else f"{o.duration:.3f} s",
                o.error.summary() if o.error is not None else ("" if o.ran else o.reason),
            )
            for o in self.steps.values()
        ]

    def summary(self) -> str:
        """One line: counts by status."""
        counts = ", ".join(f"{n} {s.value}" for s, n in sorted(self.counts.items()))
        return f"{len(self.ran)} ran; {counts or 'nothing planned'}"

    def __repr__(self) -> str:
        # Short: Jupyter stores the text form beside the HTML of every output.
        return f"<RunReport: {self.summary()}>"

    def __str__(self) -> str:
        from ._tables import text_table

        header = ("step", "status", "attempts", "duration", "note")
        table = text_table(header, self._rows()) if self.steps else ""
        return "\n".join(filter(None, [table, self.summary()]))

    def _repr_html_(self) -> str:
        from ._html import report_html  # only notebooks need it

        return report_html(self)
