"""W4 (BENCHMARKS.md): the planner, the threads executor, and start-up time.

- ``plan`` over 10,000 steps (100 layers x 100, W3's edges), the first 50
  layers DONE by one ``make`` of layer 49: ``plan(*targets, env=loaded_env)``
  interleaved with ``Environment.load`` of the same environment and with
  ``plan(*targets, env=path)`` (load and plan).
- The threads executor: ``make(executor="threads")`` of 10,000 independent
  no-op steps on a fresh environment, durable commits (the default),
  interleaved with the sequential executor on the same work.
- Start-up, whole processes, interleaved: ``python -c pass``,
  ``python -c "import expkit"`` and ``exp --help`` (and, for information,
  ``python -c "import typer"``: the floor of any typer command).

The Dask row of W4 is measured by ``bench/w4_dask.py`` (``W4DASK`` in
``bench/run.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from _common import (
    DURABLE_VAR,
    Ratio,
    Row,
    Section,
    chdir,
    env_var,
    interleave,
    median,
    ms,
    ratio_table,
    read_back,
    standalone,
    table,
)

from expkit import Environment, make, plan, task

if TYPE_CHECKING:
    from expkit import RunReport

LAYERS, WIDTH = 100, 100
THREAD_STEPS, QUICK_THREAD_STEPS = 10_000, 2_000
PLAN_WARMUP, PLAN_TIMED = 2, 15
QUICK_PLAN_WARMUP, QUICK_PLAN_TIMED = 1, 5
THREADS_WARMUP, THREADS_TIMED = 1, 5
QUICK_THREADS_WARMUP, QUICK_THREADS_TIMED = 0, 1
START_WARMUP, START_TIMED = 5, 40
QUICK_START_WARMUP, QUICK_START_TIMED = 2, 10

PLAN_TARGET_MS = 100.0
THREADS_TARGET_RATE = 2_000.0
IMPORT_TARGET_MS = 50.0
HELP_TARGET_MS = 250.0


def noop() -> None:
    """Every step of the workloads: does nothing."""


def dag_name(layer: int, j: int) -> str:
    """The name of step (layer, j) of the planner's DAG."""
    return f"w4_dag_{layer:03d}_{j:03d}"


def thread_name(i: int) -> str:
    """The name of the i-th independent step of the threads workload."""
    return f"w4_free_{i:05d}"


def declare_dag() -> int:
    """Declare the 10,000-step DAG with ``@task``; nanoseconds it took."""
    start = time.perf_counter_ns()
    for layer in range(LAYERS):
        for j in range(WIDTH):
            requires = (
                [] if layer == 0 else [dag_name(layer - 1, (j + k) % WIDTH) for k in range(3)]
            )
            task(name=dag_name(layer, j), requires=requires)(noop)
    return time.perf_counter_ns() - start


def declare_free(count: int) -> list[str]:
    """Declare ``count`` independent no-op steps; their names."""
    names = [thread_name(i) for i in range(count)]
    for name in names:
        task(name=name)(noop)
    return names


# -- plan --------------------------------------------------------------------------


def _plan_part(base: Path, warmup: int, timed: int) -> tuple[str, list[Ratio]]:
    declare_ns = declare_dag()
    path = base / "plan-env"
    env = Environment.create(base, path.name, symlink=False)
    half = [dag_name(LAYERS // 2 - 1, j) for j in range(WIDTH)]
    start = time.perf_counter_ns()
    seeded = make(*half, env=env)
    seed_ns = time.perf_counter_ns() - start
    assert len(seeded.ran) == LAYERS * WIDTH // 2, seeded.summary()

    targets = [dag_name(LAYERS - 1, j) for j in range(WIDTH)]
    loaded = Environment.load(path)
    # The first plan of a process also reads each step's signature once.
    start = time.perf_counter_ns()
    first = plan(*targets, env=loaded)
    first_ns = time.perf_counter_ns() - start
    done = LAYERS * WIDTH // 2
    assert len(first) == LAYERS * WIDTH, len(first)
    assert len(first.to_run) == done, len(first.to_run)
    assert all(e.reason == "up to date" for e in first if not e.runs)

    rows = [
        Row("`Environment.load` (5,000 DONE records)", lambda _i: Environment.load(path)),
        Row("`plan(*targets, env=loaded_env)`", lambda _i: plan(*targets, env=loaded)),
        Row("`plan(*targets, env=path)` (load + plan)", lambda _i: plan(*targets, env=path)),
    ]
    interleave(rows, warmup=warmup, timed=timed, progress="W4 plan")
    load, planned, both = rows

    body = [
        [row.name, ms(row.median), ms(min(row.samples)), ms(max(row.samples)), str(timed)]
        for row in rows
    ]
    ratios = [
        Ratio(
            "`plan`, loaded env, median / 100 ms",
            planned.median / 1e6 / PLAN_TARGET_MS,
            1.0,
            f"<= 1 ({ms(planned.median)} ms)",
        ),
        Ratio("`Environment.load` / `plan`", load.median / planned.median, None),
        Ratio("load + plan / `plan`", both.median / planned.median, None),
    ]
    markdown = "\n\n".join(
        [
            (
                f"#### `plan` over {LAYERS * WIDTH:,} steps ({LAYERS} layers x {WIDTH}), "
                f"half DONE ({timed} timed runs per row after {warmup} warm-up, interleaved)"
            ),
            table(["row", "median (ms)", "min (ms)", "max (ms)", "n"], body, "lrrrr"),
            (
                f"Each plan: {LAYERS * WIDTH:,} entries, {done:,} to run ({done:,} "
                '"up to date"). Untimed by the rows: declaring the DAG with `@task` '
                f"{declare_ns / 1e9:,.1f} s; one sequential `make` of layer {LAYERS // 2 - 1} "
                f"(the {done:,} DONE steps, durable) {seed_ns / 1e9:,.1f} s; the first plan of "
                f"the process {ms(first_ns)} ms."
            ),
        ]
    )
    return markdown, ratios


# -- threads executor -----------------------------------------------------------------


def _threads_part(base: Path, count: int, warmup: int, timed: int) -> tuple[str, list[Ratio]]:
    start = time.perf_counter_ns()
    names = declare_free(count)
    declare_ns = time.perf_counter_ns() - start
    made: list[Path] = []
    fresh: dict[str, Environment] = {}
    reports: list[RunReport] = []

    def new_env() -> None:
        fresh["env"] = Environment.create(base, f"threads-{len(made):03d}", symlink=False)
        made.append(fresh["env"].resultdir)

    def check() -> None:
        report = reports[-1]
        assert report.ok, report.summary()
        assert len(report.ran) == count, report.summary()
        # Keep the last environment for the read-back.
        if len(made) > 1:
            shutil.rmtree(made[-2], ignore_errors=True)

    def run_with(executor: str) -> None:
        reports.append(make(*names, env=fresh["env"], executor=executor))

    rows = [
        Row(
            '`make(executor="threads")`',
            lambda _i: run_with("threads"),
            before=new_env,
            after=check,
        ),
        Row(
            '`make(executor="sequential")`',
            lambda _i: run_with("sequential"),
            before=new_env,
            after=check,
        ),
    ]
    interleave(rows, warmup=warmup, timed=timed, progress="W4 threads")
    threads, sequential = rows

    got = read_back(_COUNT_DONE, str(made[-1]), "w4_free_")
    if got != str(count):
        msg = f"W4 threads: {got} DONE steps read back, expected {count}"
        raise AssertionError(msg)

    body = [
        [
            row.name,
            f"{row.median / 1e9:,.2f}",
            f"{count / (row.median / 1e9):,.0f}",
            f"{count / (max(row.samples) / 1e9):,.0f}",
            f"{count / (min(row.samples) / 1e9):,.0f}",
            str(timed),
        ]
        for row in rows
    ]
    rate = count / (threads.median / 1e9)
    ratios = [
        Ratio(
            "threads: 2,000 steps/s / measured steps/s",
            THREADS_TARGET_RATE / rate,
            1.0,
            f"<= 1 ({rate:,.0f} steps/s)",
        ),
        Ratio("threads / sequential (time)", threads.median / sequential.median, None),
    ]
    markdown = "\n\n".join(
        [
            (
                f"#### Threads executor: {count:,} independent no-op steps, durable commits "
                f"({timed} timed runs per row after {warmup} warm-up, interleaved, a fresh "
                f"environment for each, `jobs` = CPU count = {os.cpu_count()})"
            ),
            table(
                ["row", "median (s)", "steps/s (median)", "slowest", "fastest", "n"],
                body,
                "lrrrrr",
            ),
            (
                f"Every run: {count:,} steps ran, all DONE. Read back from a fresh process: "
                f"{count:,} DONE records. Untimed: declaring the steps "
                f"{declare_ns / 1e9:,.2f} s."
            ),
        ]
    )
    return markdown, ratios


_COUNT_DONE = (
    "import sys\n"
    "from expkit import Environment, Status\n"
    "env = Environment.load(sys.argv[1])\n"
    "print(sum(1 for n, r in env.steps.items()"
    " if n.startswith(sys.argv[2]) and r.status is Status.DONE))\n"
)


# -- start-up ------------------------------------------------------------------------


def _exp_command() -> list[str]:
    found = Path(sys.executable).with_name("exp")
    if found.exists():
        return [str(found)]
    on_path = shutil.which("exp")
    if on_path is None:
        msg = "W4: no `exp` command next to this interpreter or on PATH (pip install -e .)"
        raise RuntimeError(msg)
    return [on_path]


#: The start-up rows run with bytecode caches, as an installed package has them:
#: without this, ``PYTHONDONTWRITEBYTECODE=1`` in the caller's environment would
#: make every run compile expkit's sources again. The warm-up runs write them.
_CACHING_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _quiet(command: list[str]) -> None:
    subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_CACHING_ENV
    )


def _startup_part(warmup: int, timed: int) -> tuple[str, list[Ratio]]:
    python = sys.executable
    exp = _exp_command()
    rows = [
        Row("`python -c pass`", lambda _i: _quiet([python, "-c", "pass"])),
        Row('`python -c "import expkit"`', lambda _i: _quiet([python, "-c", "import expkit"])),
        Row("`exp --help`", lambda _i: _quiet([*exp, "--help"])),
        # For information: what typer alone costs, which every `exp` command pays.
        Row('`python -c "import typer"`', lambda _i: _quiet([python, "-c", "import typer"])),
    ]
    interleave(rows, warmup=warmup, timed=timed, progress="W4 start-up")
    bare, imported, helped, typer_only = rows
    # Paired differences: round i of each row ran back to back.
    extra = median([a - b for a, b in zip(imported.samples, bare.samples, strict=True)])

    body = [
        [row.name, ms(row.median), ms(min(row.samples)), ms(max(row.samples)), str(timed)]
        for row in rows
    ]
    ratios = [
        Ratio(
            "`import expkit` over bare interpreter / 50 ms",
            extra / 1e6 / IMPORT_TARGET_MS,
            1.0,
            f"<= 1 ({ms(extra)} ms over bare)",
        ),
        Ratio(
            "`exp --help` / 0.25 s",
            helped.median / 1e6 / HELP_TARGET_MS,
            1.0,
            f"<= 1 ({ms(helped.median)} ms)",
        ),
        Ratio("`exp --help` / `import typer`", helped.median / typer_only.median, None),
    ]
    markdown = "\n\n".join(
        [
            (
                f"#### Start-up, whole process ({timed} timed runs per row after {warmup} "
                "warm-up, interleaved)"
            ),
            table(["row", "median (ms)", "min (ms)", "max (ms)", "n"], body, "lrrrr"),
            (
                "`import expkit` over bare is the median of the paired differences "
                f"(round by round): {ms(extra)} ms. Bytecode caches on "
                "(`PYTHONDONTWRITEBYTECODE` removed; the warm-up runs write them)."
            ),
        ]
    )
    return markdown, ratios


# -- the workload -------------------------------------------------------------------------


def run(*, quick: bool = False, tmp: Path | None = None) -> Section:
    """Run W4 and return its section of the report."""
    base = Path(tempfile.mkdtemp(prefix="expkit-bench-w4-", dir=tmp))
    try:
        with chdir(base), env_var(DURABLE_VAR, None):
            return _run(base, quick=quick)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run(base: Path, *, quick: bool) -> Section:
    if quick:
        plan_rounds = (QUICK_PLAN_WARMUP, QUICK_PLAN_TIMED)
        threads = (QUICK_THREAD_STEPS, QUICK_THREADS_WARMUP, QUICK_THREADS_TIMED)
        start_rounds = (QUICK_START_WARMUP, QUICK_START_TIMED)
    else:
        plan_rounds = (PLAN_WARMUP, PLAN_TIMED)
        threads = (THREAD_STEPS, THREADS_WARMUP, THREADS_TIMED)
        start_rounds = (START_WARMUP, START_TIMED)
    parts = [
        _plan_part(base, *plan_rounds),
        _threads_part(base, *threads),
        _startup_part(*start_rounds),
    ]
    ratios = [ratio for _, part in parts for ratio in part]
    markdown = "\n\n".join(
        [
            "### W4 — planner, threads executor, start-up",
            *(text for text, _ in parts),
            ratio_table(ratios),
            "The Dask row of W4 is measured separately: `bench/w4_dask.py` (W4DASK).",
        ]
    )
    return Section("W4", markdown, ratios, ok=all(r.met is not False for r in ratios))


if __name__ == "__main__":
    standalone(run, __doc__, "fewer runs, 2,000 threads-executor steps")
