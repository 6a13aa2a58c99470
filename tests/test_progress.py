"""``exp run``'s plain lines (output not a terminal): batched writes, every line, in order."""

from __future__ import annotations

import io
import sys
import time

import pytest

from expkit import make, task
from expkit._events import StepStarted
from expkit.cli._progress import HOLD, display


class _CountingStream(io.StringIO):
    """Stands in for a pipe: counts the writes that reach it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)

    def isatty(self) -> bool:
        return False


@pytest.mark.parametrize("executor", ["sequential", "threads"])
def test_quick_steps_share_writes(monkeypatch: pytest.MonkeyPatch, executor: str) -> None:
    """200 no-op steps: at most one write a tenth of a second, yet every line, in order."""
    stream = _CountingStream()
    monkeypatch.setattr(sys, "stdout", stream)
    names = [f"s{i:03d}" for i in range(200)]
    for i, name in enumerate(names):
        task(name=name, requires=names[i - 1 : i])(lambda: None)

    started = time.monotonic()
    with display(quiet=False, verbose=0, live=True) as observer:
        make(names[-1], env="e", new=True, executor=executor, on_event=observer)
    elapsed = time.monotonic() - started

    lines = stream.getvalue().splitlines()
    assert lines[0] == "plan: 200 to run, 0 to skip"
    expected = [word for name in names for word in (f"start {name}", f"done {name}")]
    assert [" ".join(line.split()[:2]) for line in lines[1:]] == expected
    # One write a step before the lines were batched: 200 here.
    assert stream.writes <= 2 + elapsed / HOLD


def test_workers_flush_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without holding (steps in worker processes), each flush writes what it has."""
    stream = _CountingStream()
    monkeypatch.setattr(sys, "stdout", stream)
    with display(quiet=False, verbose=0, live=False) as observer:
        assert observer is not None
        for i in range(3):
            observer(StepStarted(f"s{i}", 1))
            observer.flush()  # type: ignore[attr-defined] # Lines has flush()
            assert stream.getvalue().splitlines()[-1] == f"start     s{i}"
    assert stream.writes == 3
