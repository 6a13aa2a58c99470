"""What a run did: one outcome per planned step, and counts by status."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ._status import Status

if TYPE_CHECKING:
    from pathlib import Path

    from ._records import ErrorInfo

__all__ = ["RunReport", "StepOutcome"]

_BAD = (Status.FAILED, Status.INTERRUPTED, Status.CANCELLED, Status.SKIPPED, Status.RUNNING)


@dataclasses.dataclass(frozen=True, slots=True)
class StepOutcome:
    """One step of a run: its status afterwards and how it got there."""

    name: str
    status: Status
    #: Whether the run started it (``False``: up to date, or never reached).
    ran: bool
    attempts: int = 0
    #: Seconds, for a step that ran.
    duration: float | None = None
    error: ErrorInfo | None = None
    #: Why it ran or was skipped.
    reason: str = ""


@dataclasses.dataclass(frozen=True, repr=False)
class RunReport:
    """The outcome of :func:`expkit.make`; prints as a table."""

    steps: dict[str, StepOutcome]
    #: Where the environment is.
    env_path: Path | None = None
    #: The call or command that resumes this run.
    resume: str = ""
    interrupted: bool = False

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
