"""The public API: ``expkit.__all__`` is sorted and complete."""

from __future__ import annotations

import expkit


def test_all_is_sorted() -> None:
    """``__all__`` is kept in sorted order."""
    assert expkit.__all__ == sorted(expkit.__all__)


def test_all_is_complete() -> None:
    """Every public name of the package is exported, and every export exists."""
    # The planner's names load on first access: reach each, then every public
    # name is in the package's namespace, whatever other tests touched before.
    for name in expkit.__all__:
        assert getattr(expkit, name) is not None
    public = {name for name in vars(expkit) if not name.startswith("_")} | {"__version__"}
    modules = {name for name, value in vars(expkit).items() if type(value) is type(expkit)}
    assert set(expkit.__all__) == public - modules - {"annotations"}
