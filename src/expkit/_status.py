"""The statuses a step can have."""

from __future__ import annotations

import enum

__all__ = ["Status"]


class Status(str, enum.Enum):
    """Where a step stands; stored by value, so names may be read from YAML or JSON."""

    #: Never run, or reset.
    PENDING = "pending"
    #: In a running plan, its prerequisites not done yet (never committed).
    WAITING = "waiting"
    #: Running now, or was when its process died (see INTERRUPTED).
    RUNNING = "running"
    #: Finished and committed.
    DONE = "done"
    #: Raised an exception (or timed out).
    FAILED = "failed"
    #: Not attempted because a prerequisite failed.
    SKIPPED = "skipped"
    #: Stopped by Ctrl-C or by the user.
    CANCELLED = "cancelled"
    #: Was RUNNING in a process that died; found and marked on a later load.
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value
