"""Which data keys the running step reads and writes.

A context variable holds the tracker of the step running in this thread (or
task), so steps on several threads of one environment are told apart.
"""

from __future__ import annotations

import contextvars

__all__ = ["Tracker", "current_tracker", "tracking"]


class Tracker:
    """The keys one step read, assigned and deleted in one environment."""

    __slots__ = ("assigned", "committed", "deleted", "env_id", "reads")

    def __init__(self, env_id: int) -> None:
        self.env_id = env_id
        self.reads: set[str] = set()
        self.assigned: set[str] = set()
        self.deleted: set[str] = set()
        #: Keys whose new values a commit made during the step wrote (its own dump()).
        self.committed: set[str] = set()

    def absorb(self, inner: Tracker) -> None:
        """Count a nested step's accesses as the enclosing step's too."""
        self.reads |= inner.reads
        self.assigned |= inner.assigned
        self.deleted |= inner.deleted
        self.committed |= inner.committed

    def written(self, changed: set[str]) -> set[str]:
        """The keys the step wrote: assigned, deleted, or read and changed in place.

        ``changed``: the keys the commit that ends the step finds changed; a
        value changed before a ``dump()`` of the step's own is in ``committed``.
        """
        return self.assigned | self.deleted | ((changed | self.committed) & self.reads)


_CURRENT: contextvars.ContextVar[Tracker | None] = contextvars.ContextVar(
    "expkit_tracker", default=None
)

current_tracker = _CURRENT.get


class tracking:  # noqa: N801 - used as a function: ``with tracking(id(env)) as tracker``
    """Track the accesses to environment ``env_id`` made inside the block."""

    # A class rather than a generator context manager: it runs for every step.
    __slots__ = ("_outer", "_token", "_tracker")

    def __init__(self, env_id: int) -> None:
        self._tracker = Tracker(env_id)
        self._outer: Tracker | None = None
        self._token: contextvars.Token[Tracker | None] | None = None

    def __enter__(self) -> Tracker:
        self._outer = _CURRENT.get()
        self._token = _CURRENT.set(self._tracker)
        return self._tracker

    def __exit__(self, *_exc: object) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)
        outer, tracker = self._outer, self._tracker
        if outer is not None and outer.env_id == tracker.env_id:
            outer.absorb(tracker)
