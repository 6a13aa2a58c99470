"""Shared fixtures: every test runs in its own working directory with a clean registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from expkit import _task


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run in a fresh directory (``./current`` and ``./results`` are per test), registry emptied."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EXP_RESULTS", raising=False)
    monkeypatch.delenv("EXPKIT_DURABLE", raising=False)
    saved = dict(_task.registry)
    _task.registry.clear()
    yield
    _task.registry.clear()
    _task.registry.update(saved)
