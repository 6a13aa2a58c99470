"""Shared helpers of the benchmarks: interleaved timing, statistics, markdown tables."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: ``EXPKIT_DURABLE``: read by expkit at each load, so it can be flipped between calls.
DURABLE_VAR = "EXPKIT_DURABLE"


@dataclasses.dataclass
class Row:
    """One timed row: ``call(i)`` is timed; ``before``/``after`` run around it, untimed."""

    name: str
    call: Callable[[int], object]
    before: Callable[[], object] | None = None
    after: Callable[[], object] | None = None
    samples: list[int] = dataclasses.field(default_factory=list)

    @property
    def median(self) -> float:
        """Median of the timed samples, in ns."""
        return median(self.samples)

    @property
    def p95(self) -> float:
        """95th percentile (nearest rank) of the timed samples, in ns."""
        return percentile(self.samples, 95)


@dataclasses.dataclass
class Ratio:
    """A ratio of two medians, checked against a target (``value <= target``)."""

    name: str
    value: float
    target: float | None
    target_text: str = ""

    @property
    def met(self) -> bool | None:
        """Whether the target is met; ``None`` when the ratio has no target."""
        return None if self.target is None else self.value <= self.target


@dataclasses.dataclass
class Section:
    """One workload's results: markdown to print, and its ratios for the summary."""

    title: str
    markdown: str
    ratios: list[Ratio]
    ok: bool = True


def interleave(
    rows: Sequence[Row],
    *,
    warmup: int,
    timed: int,
    between: Callable[[], object] | None = None,
    progress: str = "",
) -> None:
    """Run ``warmup + timed`` rounds; each round calls every row once (A B C A B C ...).

    The order of the rows rotates by one at each round, so that no row always
    follows the same neighbour (whose dirty pages or cache effects it would
    inherit). ``i`` goes 0, 1, ... across rounds, warm-up included; only the
    last ``timed`` rounds are recorded. ``between()`` runs, untimed, after
    each call.
    """
    total = warmup + timed
    clock = time.perf_counter_ns
    for i in range(total):
        shift = i % len(rows)
        for row in (*rows[shift:], *rows[:shift]):
            if row.before is not None:
                row.before()
            start = clock()
            row.call(i)
            elapsed = clock() - start
            if row.after is not None:
                row.after()
            if i >= warmup:
                row.samples.append(elapsed)
            if between is not None:
                between()
        if progress and sys.stderr.isatty():
            print(f"\r{progress}: {i + 1}/{total}", end="", file=sys.stderr, flush=True)
    if progress and sys.stderr.isatty():
        print(file=sys.stderr)


def median(samples: Sequence[float]) -> float:
    """The median (mean of the two middle values for an even count)."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest sample with ``pct`` % of samples at or below it."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[rank - 1])


def table(headers: Sequence[str], body: Sequence[Sequence[str]], align: str = "") -> str:
    """A markdown table; ``align`` has one letter per column, ``l`` or ``r`` (default ``l``)."""
    marks = ["---:" if (align[i : i + 1] == "r") else "---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def ratio_table(ratios: Sequence[Ratio]) -> str:
    """The ratios of one workload, with their targets and whether each is met."""
    body = []
    for item in ratios:
        verdict = "(info)" if item.met is None else "met" if item.met else "**MISSED**"
        target = item.target_text or ("" if item.target is None else f"<= {item.target:g}")
        body.append([item.name, fmt_ratio(item.value), target, verdict])
    return table(["ratio (of medians)", "value", "target", "verdict"], body, "lrrl")


def fmt_ratio(value: float) -> str:
    """A ratio with about three significant digits (small ones as percentages too)."""
    if math.isnan(value):
        return "n/a"
    if value < 0.1:
        return f"{value:.4f} ({value * 100:.2f} %)"
    return f"{value:.2f}x"


def us(ns: float) -> str:
    """Nanoseconds as microseconds, for a table cell."""
    return f"{ns / 1e3:,.1f}"


def ms(ns: float) -> str:
    """Nanoseconds as milliseconds, for a table cell."""
    return f"{ns / 1e6:,.1f}"


@contextlib.contextmanager
def env_var(name: str, value: str | None) -> Iterator[None]:
    """Set (or, with ``None``, remove) an environment variable for a while."""
    old = os.environ.get(name)
    set_env(name, value)
    try:
        yield
    finally:
        set_env(name, old)


def set_env(name: str, value: str | None) -> None:
    """Set an environment variable, or remove it with ``None``."""
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[None]:
    """Work in ``path`` for a while (EnOSlib makes its ``current`` link in the cwd)."""
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def fsync_write_replace(directory: Path, name: str, data: bytes) -> None:
    """The floor of a durable small commit: write a new file, fsync it, rename it over ``name``."""
    tmp = directory / f".{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / name)


def write_all(fd: int, data: bytes | memoryview) -> None:
    """``os.write`` until every byte is written."""
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_back(code: str, *args: str) -> str:
    """Run ``python -c code args...`` in a fresh process; its stripped stdout."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        msg = f"read-back process failed ({done.returncode}):\n{done.stderr}"
        raise RuntimeError(msg)
    return done.stdout.strip()


def version_of(distribution: str) -> str:
    """An installed distribution's version, or ``"not installed"``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def git_commit() -> str:
    """The repository's short commit (with ``+dirty`` when src/ has changes), if known."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def machine_info() -> str:
    """One line: Python, platform, CPUs, date, and the versions measured."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.release()} {platform.machine()}, "
        f"os.cpu_count()={os.cpu_count()}, {now}; "
        f"expkit {version_of('expkit')} (commit {git_commit()}), "
        f"enoslib {version_of('enoslib')}, numpy {version_of('numpy')}"
    )


def standalone(run: Callable[..., Section], doc: str | None, quick_help: str) -> None:
    """Run one workload from its own script and print its section."""
    import argparse

    parser = argparse.ArgumentParser(description=doc)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--tmp", type=Path, default=None, help="where to make temporary files")
    args = parser.parse_args()
    print(run(quick=args.quick, tmp=args.tmp).markdown)
