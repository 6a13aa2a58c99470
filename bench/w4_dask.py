"""W4, Dask row (BENCHMARKS.md): a 1,000-instance sweep of a no-op step on Dask.

On one ``distributed.LocalCluster`` of 2 worker processes (one thread each),
started once, rows interleaved:

- ``make(sweep, executor="dask", address=...)`` on a fresh environment each
  time: planning, the RUNNING claims, one ``client.map`` for the 1,000
  instances, their outcomes committed as they arrive, durably;
- the bare ``client.gather(client.map(noop, range(1000)))`` of the same function;
- ``client.submit`` called once per instance, then one gather (information:
  what submitting one future at a time costs).

Target (DESIGN.md section 12): make <= 2x the bare ``client.map``. The module
is not named ``dask.py``: ``bench/`` comes first on ``sys.path`` when these
scripts run, and would shadow the real package.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from _common import (
    DURABLE_VAR,
    Ratio,
    Row,
    Section,
    chdir,
    env_var,
    interleave,
    ms,
    ratio_table,
    read_back,
    standalone,
    table,
    version_of,
)

from expkit import Environment, make, task

INSTANCES = 1_000
WORKERS = 2
WARMUP, TIMED = 1, 7
QUICK_WARMUP, QUICK_TIMED = 1, 3
TARGET = 2.0


def noop(i: int) -> None:
    """Every instance of the sweep, and every task of the bare map: does nothing."""


def _cluster() -> tuple[Any, Any]:
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        scheduler_kwargs={
            "allowed_failures": 0,
            "dashboard": False,
            "dashboard_address": "127.0.0.1:0",
        },
    )
    return cluster, distributed.Client(cluster, set_as_default=False)


def run(*, quick: bool = False, tmp: Path | None = None) -> Section:
    """Run the Dask row of W4 and return its section of the report."""
    base = Path(tempfile.mkdtemp(prefix="expkit-bench-dask-", dir=tmp))
    try:
        with chdir(base), env_var(DURABLE_VAR, None):
            return _run(base, quick=quick)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run(base: Path, *, quick: bool) -> Section:
    warmup, timed = (QUICK_WARMUP, QUICK_TIMED) if quick else (WARMUP, TIMED)
    sweep = task(name="w4_dask_sweep", grid={"i": range(INSTANCES)})(noop)
    cluster, client = _cluster()
    try:
        address = cluster.scheduler_address
        made: list[Path] = []
        fresh: dict[str, Environment] = {}

        def new_env() -> None:
            fresh["env"] = Environment.create(base, f"dask-{len(made):03d}", symlink=False)
            made.append(fresh["env"].resultdir)

        def check_make() -> None:
            report = made_reports[-1]
            assert report.ok, report.summary()
            assert len(report.ran) == INSTANCES, report.summary()
            if len(made) > 1:
                shutil.rmtree(made[-2], ignore_errors=True)

        made_reports: list[Any] = []

        def with_make(_i: int) -> None:
            made_reports.append(make(sweep, env=fresh["env"], executor="dask", address=address))

        def bare_map(_i: int) -> None:
            results = client.gather(client.map(noop, range(INSTANCES), pure=False))
            assert len(results) == INSTANCES

        def one_by_one(_i: int) -> None:
            futures = [client.submit(noop, i, pure=False) for i in range(INSTANCES)]
            assert len(client.gather(futures)) == INSTANCES

        rows = [
            Row('`make(sweep, executor="dask")`', with_make, before=new_env, after=check_make),
            Row("bare `client.map` + gather", bare_map),
            Row("`client.submit` x 1,000 + gather (info)", one_by_one),
        ]
        interleave(rows, warmup=warmup, timed=timed, progress="W4 dask")
    finally:
        client.close()
        cluster.close()
    expkit_row, map_row, submit_row = rows

    got = read_back(_COUNT_DONE, str(made[-1]))
    if got != str(INSTANCES):
        msg = f"W4 dask: {got} DONE instances read back, expected {INSTANCES}"
        raise AssertionError(msg)

    body = [
        [
            row.name,
            ms(row.median),
            ms(min(row.samples)),
            ms(max(row.samples)),
            f"{INSTANCES / (row.median / 1e9):,.0f}",
            str(timed),
        ]
        for row in rows
    ]
    ratio = expkit_row.median / map_row.median
    ratios = [
        Ratio(
            "Dask executor sweep / bare `client.map`",
            ratio,
            TARGET,
            f"<= {TARGET:g}",
        ),
        Ratio(
            "`client.submit` one at a time / bare `client.map`",
            submit_row.median / map_row.median,
            None,
        ),
    ]
    markdown = "\n\n".join(
        [
            "### W4 — Dask executor",
            (
                f"#### {INSTANCES:,}-instance sweep of a no-op step, local cluster of "
                f"{WORKERS} worker processes x 1 thread ({timed} timed runs per row after "
                f"{warmup} warm-up, interleaved; distributed {version_of('distributed')})"
            ),
            table(
                ["row", "median (ms)", "min (ms)", "max (ms)", "tasks/s (median)", "n"],
                body,
                "lrrrrr",
            ),
            (
                "The make row includes planning, the RUNNING claims, shipping, and the "
                "durable commits of all outcomes (a fresh environment each run). Read back "
                f"from a fresh process: {INSTANCES:,} DONE instances. The scheduler runs in "
                "this process, as it does for any LocalCluster client."
            ),
            ratio_table(ratios),
        ]
    )
    return Section("W4 Dask", markdown, ratios, ok=all(r.met is not False for r in ratios))


_COUNT_DONE = (
    "import sys\n"
    "from expkit import Environment, Status\n"
    "env = Environment.load(sys.argv[1])\n"
    "print(sum(1 for n, r in env.steps.items()"
    " if n.startswith('w4_dask_sweep[') and r.status is Status.DONE))\n"
)


if __name__ == "__main__":
    standalone(run, __doc__, "3 timed runs instead of 7")
