"""Per-step logs: what a step prints or logs, in ``logs/<step>.log``, for every executor."""

from __future__ import annotations

import io
import logging
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from expkit import Environment, make, task
from expkit._capture import MARKER, _Router, log_path

EXECUTORS = ["sequential", "threads", "processes"]


def _body(env: Environment, name: str) -> list[str]:
    """The lines of a step's log, without the line that opens each attempt."""
    text = log_path(env.resultdir, name).read_text()
    return [line for line in text.splitlines() if not line.startswith(MARKER)]


@pytest.mark.parametrize("executor", EXECUTORS)
def test_each_step_keeps_its_own_output(executor: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Steps running at once each log only what they print, to stdout or stderr, still shown."""

    @task(grid={"i": range(4)})
    def work(i: int) -> None:
        for k in range(3):
            print(f"out {i}.{k}")  # noqa: T201 - the output under test
            print(f"err {i}.{k}", file=sys.stderr)  # noqa: T201
            time.sleep(0.01)  # let the steps interleave

    make(work, env="e", new=True, executor=executor, jobs=4)
    env = Environment.load("e")
    for i in range(4):
        lines = _body(env, f"work[i={i}]")
        assert sorted(lines) == sorted(
            f"{kind} {i}.{k}" for kind in ("out", "err") for k in range(3)
        )
    shown = capsys.readouterr()
    if executor != "processes":  # a worker process writes to the terminal, not to pytest
        assert "out 3.2" in shown.out
        assert "err 0.0" in shown.err


def test_logging_records_once_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    """A step's logging records are in its log once; a failure's traceback is there too."""
    caplog.set_level(logging.INFO)

    @task
    def noisy() -> None:
        logging.getLogger("noisy").info("hello from %s", "noisy")
        raise ValueError("broken")

    @task
    def silent() -> int:
        return 1

    report = make(noisy, silent, env="e", new=True, check=False)
    assert not report.ok
    env = Environment.load("e")
    body = "\n".join(_body(env, "noisy"))
    assert body.count("hello from noisy") == 1
    assert "ValueError: broken" in body
    assert "hello from noisy" in caplog.text  # the user's own handlers still get it
    assert not log_path(env.resultdir, "silent").exists()  # a silent step leaves no file


def test_attempts_are_appended() -> None:
    """A retried step's log holds every attempt, each opened by a marker line."""
    runs: list[int] = []

    @task(retries=1)
    def flaky(env: Any) -> None:
        runs.append(1)
        print(f"attempt {len(runs)}")  # noqa: T201 - the output under test
        if len(runs) == 1:
            raise RuntimeError("first time")

    make(flaky, env="e", new=True)
    text = log_path(Environment.load("e").resultdir, "flaky").read_text()
    assert text.count(MARKER) == 2
    assert "attempt 1" in text
    assert "attempt 2" in text
    assert text.index(", attempt 2, ") > text.index("RuntimeError: first time")


def test_log_names_are_safe() -> None:
    """Instance names with a slash or a leading dot stay inside the logs directory."""
    root = Path("/r")
    assert log_path(root, "s[p=a/b]") == root / "logs" / "s[p=a%2Fb].log"
    assert log_path(root, "..") == root / "logs" / "%2E..log"


def test_router_over_a_closed_stream_closes_quietly() -> None:
    """A router collected after the stream it stood in for was closed raises nothing."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8")
    router = _Router(stream)
    router.write("shown\n")
    router.flush()
    assert raw.getvalue() == b"shown\n"
    stream.close()
    router.close()  # what collecting it does: it flushed the closed stream, a ValueError
