"""make(on_event=...): the plan, then each step as it starts and ends, in order."""

from __future__ import annotations

from typing import Any

import pytest

from expkit import Status, make, task
from expkit._events import Event, PlanReady, RunFinished, StepFinished, StepStarted


def _trace(events: list[Event]) -> list[str]:
    out = []
    for event in events:
        if isinstance(event, PlanReady):
            out.append(f"plan {len(event.plan.to_run)}")
        elif isinstance(event, StepStarted):
            out.append(f"start {event.name} {event.attempt}")
        elif isinstance(event, RunFinished):
            out.append(f"run {event.report.summary()}")
        else:
            out.append(f"end {event.outcome.name} {event.outcome.status.value}")
    return out


@pytest.mark.parametrize("executor", ["sequential", "threads"])
def test_plan_then_each_step_started_and_finished(executor: str) -> None:
    """The plan comes first; every step that runs starts before it ends; a skipped one only ends."""

    @task
    def provision(env: Any) -> None:
        env["nodes"] = 2

    @task(requires=[provision])
    def deploy(env: Any) -> None:
        raise ValueError("broken")

    @task(requires=[deploy])
    def bench(env: Any) -> None: ...

    events: list[Event] = []
    make(bench, env="e", new=True, executor=executor, check=False, on_event=events.append)
    assert _trace(events) == [
        "plan 3",
        "start provision 1",
        "end provision done",
        "start deploy 1",
        "end deploy failed",
        "end bench skipped",
        "run 2 ran; 1 done, 1 failed, 1 skipped",
    ]
    finished = [e.outcome for e in events if isinstance(e, StepFinished)]
    assert finished[1].error is not None
    assert finished[1].error.message == "broken"
    assert finished[2].reason == "upstream 'deploy' failed"


def test_retries_start_again() -> None:
    """Each attempt of a retried step is a start; it ends once."""
    runs: list[int] = []

    @task(retries=2)
    def flaky(env: Any) -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("not yet")

    events: list[Event] = []
    make(flaky, env="e", new=True, on_event=events.append)
    assert _trace(events) == [
        "plan 1",
        "start flaky 1",
        "start flaky 2",
        "start flaky 3",
        "end flaky done",
        "run 1 ran; 1 done",
    ]


def test_an_observer_that_raises_stops_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """A failing observer is reported once and dropped; the run and its records go on."""
    calls: list[Event] = []

    def broken(event: Event) -> None:
        calls.append(event)
        raise RuntimeError("display bug")

    @task
    def one(env: Any) -> None:
        env["one"] = 1

    @task(requires=[one])
    def two(env: Any) -> None:
        env["two"] = 2

    report = make(two, env="e", new=True, on_event=broken)
    assert report.ok
    assert report["two"].status is Status.DONE
    assert len(calls) == 1
    assert "display bug" in capsys.readouterr().err


def test_steps_never_started_are_in_the_last_event() -> None:
    """With fail_fast, a step that never starts gets no StepFinished; RunFinished reports it."""

    @task
    def broken(env: Any) -> None:
        raise ValueError("broken")

    @task
    def later(env: Any) -> None: ...

    events: list[Event] = []
    make(broken, later, env="e", new=True, fail_fast=True, check=False, on_event=events.append)
    assert "start later 1" not in _trace(events)
    last = events[-1]
    assert isinstance(last, RunFinished)
    assert last.report.steps["later"].status is Status.PENDING
    assert last.report.steps["later"].reason == "not started: fail_fast after a failure"


class _Flushing:
    """An observer with flush(): notes events, flushes and the steps' bodies in one trace."""

    def __init__(self, trace: list[str]) -> None:
        self.trace = trace
        self.held = 0

    def __call__(self, _event: Event) -> None:
        self.held += 1

    def flush(self) -> None:
        if self.held:
            self.trace.append(f"flush {self.held}")
        self.held = 0


@pytest.mark.parametrize("executor", ["sequential", "threads"])
def test_flush_before_each_step_runs_and_at_the_end(executor: str) -> None:
    """An observer's flush() comes after a step's start event and before its body; all at the end."""
    trace: list[str] = []

    @task
    def one() -> None:
        trace.append("body one")

    @task(requires=[one])
    def two() -> None:
        trace.append("body two")

    observer = _Flushing(trace)
    make(two, env="e", new=True, executor=executor, on_event=observer)
    # plan + start one; end one + start two (one write for both); end two + run finished.
    assert trace == ["flush 2", "body one", "flush 2", "body two", "flush 2"]
    assert observer.held == 0
