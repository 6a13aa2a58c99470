"""Which data keys the running step reads and writes.

A context variable holds the tracker of the step running in this thread (or
task), so steps on several threads of one environment are told apart.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

__all__ = ["Tracker", "current_tracker", "tracking"]


class Tracker:
    """The keys one step read, assigned and deleted in one environment."""

    __slots__ = ("assigned", "deleted", "env_id", "reads")

    def __init__(self, env_id: int) -> None:
        self.env_id = env_id
        self.reads: set[str] = set()
        self.assigned: set[str] = set()
        self.deleted: set[str] = set()

    def absorb(self, inner: Tracker) -> None:
        """Count a nested step's accesses as the enclosing step's too."""
        self.reads |= inner.reads
        self.assigned |= inner.assigned
        self.deleted |= inner.deleted


_CURRENT: contextvars.ContextVar[Tracker | None] = contextvars.ContextVar(
    "expkit_tracker", default=None
)

current_tracker = _CURRENT.get


@contextlib.contextmanager
def tracking(env_id: int) -> Iterator[Tracker]:
    """Track the accesses to environment ``env_id`` made inside the block."""
    outer = _CURRENT.get()
    tracker = Tracker(env_id)
    token = _CURRENT.set(tracker)
    try:
        yield tracker
    finally:
        _CURRENT.reset(token)
        if outer is not None and outer.env_id == env_id:
            outer.absorb(tracker)
