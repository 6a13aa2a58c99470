"""W3 (BENCHMARKS.md): a 1,000-step DAG through the command line, against doit.

DAG: 10 layers x 100 no-op steps; step (L, j), L >= 1, requires (L-1, j),
(L-1, (j+1) % 100) and (L-1, (j+2) % 100). Whole processes, rows interleaved:

- ``exp -f dag.py run`` in a fresh directory (all 1,000 steps run), with
  durable commits (the default) and with ``EXPKIT_DURABLE=0``;
- the same command again where it already ran (up to date: none run), both
  ways;
- the same DAG as a ``dodo.py`` (``uptodate=[run_once]``) under
  ``doit -f dodo.py``, in a fresh directory and again where it already ran,
  and (for information) a first run with ``--backend json``: doit's default
  backend is the best ``dbm`` the Python has, ``dbm.dumb`` when it lacks
  ``_gdbm`` and ``_dbm``, and the slowest of them;
- each tool's fixed cost: a one-step file in a fresh directory, and
  ``python -c pass``.

Each run's output is checked: how many steps ran and how many were skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import (
    DURABLE_VAR,
    Ratio,
    Row,
    Section,
    interleave,
    ms,
    ratio_table,
    standalone,
    table,
)

LAYERS, WIDTH = 10, 100
STEPS = LAYERS * WIDTH
WARMUP, TIMED = 2, 15
QUICK_WARMUP, QUICK_TIMED = 1, 4

FIRST_TARGET = 1.0
FIRST_FAST_TARGET = 0.67
UP_TO_DATE_TARGET = 0.67

# -- the experiment files -------------------------------------------------------------

EXP_DAG = f'''\
"""W3: {LAYERS} layers x {WIDTH} no-op steps, each needing three of the layer before."""

from expkit import task


def noop() -> None:
    """Every step: does nothing."""


for layer in range({LAYERS}):
    for j in range({WIDTH}):
        requires = [
            f"s{{layer - 1:02d}}_{{(j + k) % {WIDTH}:03d}}" for k in range(3)
        ] if layer else []
        task(name=f"s{{layer:02d}}_{{j:03d}}", requires=requires)(noop)
'''

EXP_ONE = '''\
"""W3's fixed cost: one no-op step."""

from expkit import task


@task
def only() -> None:
    """Does nothing."""
'''

DOIT_DAG = f'''\
"""W3 for doit: the same DAG, each task run once (uptodate=[run_once])."""

from doit.tools import run_once


def noop():
    """Every task's action: does nothing."""


def task_dag():
    """The {STEPS:,} tasks."""
    for layer in range({LAYERS}):
        for j in range({WIDTH}):
            deps = [
                f"dag:s{{layer - 1:02d}}_{{(j + k) % {WIDTH}:03d}}" for k in range(3)
            ] if layer else []
            yield {{
                "name": f"s{{layer:02d}}_{{j:03d}}",
                "actions": [noop],
                "task_dep": deps,
                "uptodate": [run_once],
            }}
'''

DOIT_ONE = '''\
"""W3's fixed cost for doit: one task."""

from doit.tools import run_once


def noop():
    """Does nothing."""


def task_only():
    """One task."""
    return {"actions": [noop], "uptodate": [run_once]}
'''

# -- running and checking ---------------------------------------------------------------

#: Bytecode caches on, as an installed package has them (see bench/w4.py).
BASE_ENV = {
    k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", DURABLE_VAR)
}
_EXP_SUMMARY = re.compile(r"^(\d+) ran; (\d+) done in ", re.MULTILINE)


def command(name: str) -> str:
    """The path of console script ``name``: next to this interpreter, else on PATH."""
    found = Path(sys.executable).with_name(name)
    if found.exists():
        return str(found)
    on_path = shutil.which(name)
    if on_path is None:
        msg = f"W3: no `{name}` command next to this interpreter or on PATH"
        raise RuntimeError(msg)
    return on_path


def run_command(command: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run ``command`` in ``cwd``; its stdout (an error if it fails)."""
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=600
    )
    if done.returncode != 0:
        msg = f"W3: {' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        raise RuntimeError(msg)
    return done.stdout


def check_exp(output: str, *, ran: int, done: int, what: str) -> None:
    """Check the summary line of ``exp run``: ``ran`` steps ran, ``done`` are done."""
    found = _EXP_SUMMARY.findall(output)
    if found != [(str(ran), str(done))]:
        msg = f"W3 {what}: expected '{ran} ran; {done} done', got {found}:\n{output[-2000:]}"
        raise AssertionError(msg)


def check_doit(output: str, *, ran: int, skipped: int, what: str) -> None:
    """Check doit's output: ``ran`` tasks run (``.``), ``skipped`` up to date (``--``)."""
    counted = (
        sum(line.startswith(".  ") for line in output.splitlines()),
        sum(line.startswith("-- ") for line in output.splitlines()),
    )
    if counted != (ran, skipped):
        msg = f"W3 {what}: expected {ran} run and {skipped} up to date, got {counted}"
        raise AssertionError(msg)


class Fresh:
    """A fresh directory holding one file, made before each timed run and removed after."""

    def __init__(self, base: Path, prefix: str, file: str, text: str) -> None:
        """Directories ``base/prefix-NNN``, each holding ``file`` with ``text``."""
        self.base, self.prefix, self.file, self.text = base, prefix, file, text
        self.count = 0
        self.path = base

    def make(self) -> None:
        """Make the next directory."""
        self.count += 1
        self.path = self.base / f"{self.prefix}-{self.count:03d}"
        self.path.mkdir()
        (self.path / self.file).write_text(self.text, encoding="utf-8")

    def remove(self) -> None:
        """Remove the current directory."""
        shutil.rmtree(self.path, ignore_errors=True)


def prepared(base: Path, name: str, file: str, text: str) -> Path:
    """A directory ``base/name`` holding ``file`` with ``text``."""
    path = base / name
    path.mkdir()
    (path / file).write_text(text, encoding="utf-8")
    return path


def run(*, quick: bool = False, tmp: Path | None = None) -> Section:
    """Run W3 and return its section of the report."""
    warmup, timed = (QUICK_WARMUP, QUICK_TIMED) if quick else (WARMUP, TIMED)
    base = Path(tempfile.mkdtemp(prefix="expkit-bench-w3-", dir=tmp))
    try:
        return _run_all(base, warmup, timed)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run_all(base: Path, warmup: int, timed: int) -> Section:
    exp, doit, python = command("exp"), command("doit"), sys.executable
    durable_env = dict(BASE_ENV)
    fast_env = {**BASE_ENV, DURABLE_VAR: "0"}

    def exp_row(
        name: str, fresh: Fresh | None, where: Path | None, env: dict[str, str], ran: int
    ) -> Row:
        file = "dag.py" if ran != 1 else "one.py"
        total = 1 if file == "one.py" else STEPS

        def call(_i: int) -> None:
            cwd = fresh.path if fresh is not None else where
            assert cwd is not None
            out = run_command([exp, "-f", file, "run"], cwd, env)
            check_exp(out, ran=ran, done=total, what=name)

        return Row(
            name,
            call,
            before=fresh.make if fresh is not None else None,
            after=fresh.remove if fresh is not None else None,
        )

    def doit_row(
        name: str, fresh: Fresh | None, where: Path | None, ran: int, file: str, *options: str
    ) -> Row:
        total = 1 if file == "dodo_one.py" else STEPS

        def call(_i: int) -> None:
            cwd = fresh.path if fresh is not None else where
            assert cwd is not None
            out = run_command([doit, *options, "-f", file], cwd, durable_env)
            check_doit(out, ran=ran, skipped=total - ran, what=name)

        return Row(
            name,
            call,
            before=fresh.make if fresh is not None else None,
            after=fresh.remove if fresh is not None else None,
        )

    # The up-to-date rows run where a first run already happened (untimed).
    exp_done = prepared(base, "exp-done", "dag.py", EXP_DAG)
    exp_done_fast = prepared(base, "exp-done-fast", "dag.py", EXP_DAG)
    doit_done = prepared(base, "doit-done", "dodo.py", DOIT_DAG)
    check_exp(
        run_command([exp, "-f", "dag.py", "run"], exp_done, durable_env),
        ran=STEPS,
        done=STEPS,
        what="seed",
    )
    check_exp(
        run_command([exp, "-f", "dag.py", "run"], exp_done_fast, fast_env),
        ran=STEPS,
        done=STEPS,
        what="seed",
    )
    check_doit(
        run_command([doit, "-f", "dodo.py"], doit_done, durable_env),
        ran=STEPS,
        skipped=0,
        what="seed",
    )

    rows = [
        exp_row(
            "`exp run`, first run, durable",
            Fresh(base, "exp-first", "dag.py", EXP_DAG),
            None,
            durable_env,
            STEPS,
        ),
        exp_row(
            "`exp run`, first run, `EXPKIT_DURABLE=0`",
            Fresh(base, "exp-first-fast", "dag.py", EXP_DAG),
            None,
            fast_env,
            STEPS,
        ),
        doit_row(
            "`doit`, first run",
            Fresh(base, "doit-first", "dodo.py", DOIT_DAG),
            None,
            STEPS,
            "dodo.py",
        ),
        exp_row("`exp run`, up to date, durable", None, exp_done, durable_env, 0),
        exp_row("`exp run`, up to date, `EXPKIT_DURABLE=0`", None, exp_done_fast, fast_env, 0),
        doit_row("`doit`, up to date", None, doit_done, 0, "dodo.py"),
        exp_row(
            "`exp run`, one-step file, first run",
            Fresh(base, "exp-one", "one.py", EXP_ONE),
            None,
            durable_env,
            1,
        ),
        doit_row(
            "`doit`, one-task file, first run",
            Fresh(base, "doit-one", "dodo_one.py", DOIT_ONE),
            None,
            1,
            "dodo_one.py",
        ),
        Row("`python -c pass`", lambda _i: run_command([python, "-c", "pass"], base, durable_env)),
        doit_row(
            "`doit --backend json`, first run (info)",
            Fresh(base, "doit-first-json", "dodo.py", DOIT_DAG),
            None,
            STEPS,
            "dodo.py",
            "--backend",
            "json",
        ),
    ]
    interleave(rows, warmup=warmup, timed=timed, progress="W3")
    first, first_fast, doit_first, fresh_up, fresh_up_fast, doit_up, one, doit_one, bare, json = (
        rows
    )

    body = [
        [row.name, ms(row.median), ms(min(row.samples)), ms(max(row.samples)), str(timed)]
        for row in rows
    ]

    def per_step(row: Row, fixed: Row) -> str:
        return f"{(row.median - fixed.median) / STEPS / 1e3:,.1f}"

    ratios = [
        Ratio(
            "`exp run` first, durable / doit first", first.median / doit_first.median, FIRST_TARGET
        ),
        Ratio(
            "`exp run` first, `EXPKIT_DURABLE=0` / doit first",
            first_fast.median / doit_first.median,
            FIRST_FAST_TARGET,
        ),
        Ratio(
            "`exp run` up to date / doit up to date",
            fresh_up.median / doit_up.median,
            UP_TO_DATE_TARGET,
        ),
        Ratio(
            "`exp run` up to date, `EXPKIT_DURABLE=0` / doit up to date",
            fresh_up_fast.median / doit_up.median,
            None,
        ),
        Ratio(
            "`exp run` first, `EXPKIT_DURABLE=0` / `doit --backend json` first",
            first_fast.median / json.median,
            None,
        ),
        Ratio("`exp` one-step / doit one-task (fixed costs)", one.median / doit_one.median, None),
        Ratio("`exp` one-step / `python -c pass`", one.median / bare.median, None),
    ]
    markdown = "\n\n".join(
        [
            (
                f"### W3 — {STEPS:,}-step DAG through the command line ({LAYERS} layers x "
                f"{WIDTH}; {timed} timed runs per row after {warmup} warm-up, interleaved, "
                "whole processes)"
            ),
            table(["row", "median (ms)", "min (ms)", "max (ms)", "n"], body, "lrrrr"),
            ratio_table(ratios),
            (
                "Every run's output checked: a first run ran all "
                f"{STEPS:,} steps, an up-to-date run none ({STEPS:,} skipped). Per step, "
                "over each tool's one-step fixed cost (us): "
                f"`exp run` first durable {per_step(first, one)}, "
                f"`EXPKIT_DURABLE=0` {per_step(first_fast, one)}, "
                f"up to date {per_step(fresh_up, one)}; "
                f"doit first {per_step(doit_first, doit_one)}, "
                f"up to date {per_step(doit_up, doit_one)}. "
                f"Load average at the end: {loadavg()}."
            ),
            (
                f"doit's default dependency file here is `{default_dbm()}` (the first of "
                "`dbm.gnu`, `dbm.ndbm`, `dbm.dumb` this Python has); `--backend json` "
                "keeps it in one JSON file instead, which doit writes at its end."
            ),
        ]
    )
    return Section("W3", markdown, ratios, ok=all(r.met is not False for r in ratios))


def default_dbm() -> str:
    """The module doit's default backend (``dbm``) opens new files with, in this Python."""
    import importlib

    for name in ("dbm.gnu", "dbm.ndbm"):
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        return name
    return "dbm.dumb"


def loadavg() -> str:
    """The load averages, for the report."""
    try:
        return ", ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


if __name__ == "__main__":
    standalone(run, __doc__, "fewer runs")
