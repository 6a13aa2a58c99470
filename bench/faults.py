"""FAULTS (BENCHMARKS.md, DESIGN.md section 12): kill -9 at random instants, and concurrent writers.

Crash safety. An experiment of ``STEPS`` small independent steps and a
``total`` step that requires them all is run with the installed ``exp run``
(sequential and threads executors in turn), SIGKILLed at a random instant,
and run again, ``KILLS`` times; once every step is DONE, the next run starts
a fresh environment. Each step body first appends its name to a log of its
own (one ``O_APPEND`` write), so the harness knows which bodies each run
started. After each kill, in this process:

- the environment loads (else: a corrupt environment);
- every step recorded DONE holds its value, and ``total`` the right sum
  (else: committed data lost);
- no body the killed run started belongs to a step that was DONE before it
  (else: a DONE step run again).

Every ``FINISH_EVERY`` kills, one run is left to finish: it must exit 0 with
every step DONE, having started only steps that were not DONE (a resume
that re-runs only what is missing, and no step stuck in RUNNING).

Concurrency: 4 processes x 250 decorated steps committing their own key of
one environment at the same time; every key and record must be there.
"""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import ROOT, Ratio, Section, standalone, table
from w3 import BASE_ENV, command

from expkit import CorruptValueError, Environment, ExpkitError, Status

# The concurrent stepper of the tests, shared so that both run the same processes.
sys.path.append(str(ROOT))
from tests.helpers import STEPPER

STEPS = 200
KILLS, QUICK_KILLS = 1000, 60
FINISH_EVERY = 10
WRITERS, WRITES, QUICK_WRITES = 4, 250, 50

EXPERIMENT = f'''\
"""FAULTS: {STEPS} small independent steps and their total."""

import os
import time

from expkit import task

STARTED = os.environ["FAULTS_STARTED"]


def started(name):
    """One line per body started, in one O_APPEND write: never torn by a kill."""
    fd = os.open(STARTED, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (name + "\\n").encode())
    finally:
        os.close(fd)


def point_step(i):
    def point(env):
        started(f"s{{i:03d}}")
        env[f"k{{i:03d}}"] = i * i
        time.sleep(0.002)  # a body long enough for many kills to land inside one

    return point


for i in range({STEPS}):
    task(name=f"s{{i:03d}}")(point_step(i))


@task(requires=[f"s{{i:03d}}" for i in range({STEPS})])
def total(env):
    """The sum of every point's value."""
    started("total")
    env["total"] = sum(env[f"k{{i:03d}}"] for i in range({STEPS}))
'''

EXPECTED_TOTAL = sum(i * i for i in range(STEPS))
ALL_STEPS = {f"s{i:03d}" for i in range(STEPS)} | {"total"}


@dataclass
class Tally:
    """What the kills found."""

    kills: int = 0
    missed: int = 0
    inside_a_step: int = 0
    corrupt: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    rerun: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    finished_runs: int = 0
    environments: int = 0


class Experiment:
    """The experiment's directory, its log of bodies started, and what is DONE."""

    def __init__(self, base: Path) -> None:
        """The experiment file in ``base/experiment``; the log beside it."""
        self.where = base / "experiment"
        self.where.mkdir()
        (self.where / "faults.py").write_text(EXPERIMENT, encoding="utf-8")
        self.started_log = base / "started.log"
        self.env = {**BASE_ENV, "FAULTS_STARTED": str(self.started_log)}
        self.exp = command("exp")
        self.done: set[str] = set()
        self.runs = 0

    def command(self) -> list[str]:
        """``exp run``, alternately on the sequential and the threads executor."""
        executor = ("sequential", "threads")[self.runs % 2]
        self.runs += 1
        return [self.exp, "-q", "-f", "faults.py", "run", "--executor", executor, "-j", "2"]

    def fresh(self) -> None:
        """Forget the environment: the next run makes a new one."""
        for name in ("current", "results"):
            path = self.where / name
            if path.is_symlink():
                path.unlink()
            elif path.exists():
                shutil.rmtree(path)
        self.done = set()

    def bodies_started(self, since: int) -> list[str]:
        """Names of the bodies started after byte ``since`` of the log."""
        with self.started_log.open("rb") as log:
            log.seek(since)
            return log.read().decode().split()

    def log_size(self) -> int:
        """The log's size now."""
        return self.started_log.stat().st_size if self.started_log.exists() else 0

    def check(self, tally: Tally, when: str) -> Environment | None:
        """Load the environment and check every DONE step's data; ``None`` if there is none."""
        if not (self.where / "current").exists():
            return None
        try:
            env = Environment.load(self.where / "current")
        except ExpkitError as error:  # corrupt, half made, refused: whatever it is, a failure
            tally.corrupt.append(f"{when}: {type(error).__name__}: {error}")
            self.fresh()
            return None
        done = {name for name, record in env.steps.items() if record.status is Status.DONE}
        expected = {f"k{name[1:]}": int(name[1:]) ** 2 for name in done - {"total"}}
        if "total" in done:
            expected["total"] = EXPECTED_TOTAL
        for key, value in expected.items():
            try:
                found = env.get(key)
            except CorruptValueError as error:
                found = error
            if found != value:
                tally.lost.append(f"{when}: {key} is {found!r}, not {value!r}")
        lost_done = self.done - done
        if lost_done:
            tally.lost.append(f"{when}: DONE before, not now: {sorted(lost_done)[:5]}")
        self.done = done
        return env


def kill_cycle(experiment: Experiment, tally: Tally, delay: float) -> None:
    """One run of ``exp run``, SIGKILLed after ``delay`` seconds, then checked.

    A run that ended before its kill came is checked as a finished one.
    """
    done_before = set(experiment.done)
    mark = experiment.log_size()
    with subprocess.Popen(
        experiment.command(),
        cwd=experiment.where,
        env=experiment.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as child:
        time.sleep(delay)
        killed = child.poll() is None
        if killed:
            child.send_signal(signal.SIGKILL)
        code = child.wait()
    if killed:
        tally.kills += 1
        when = f"kill {tally.kills}"
    else:
        tally.missed += 1
        when = f"a run that ended before its kill, after kill {tally.kills}"
    started = experiment.bodies_started(mark)
    again = sorted(set(started) & done_before)
    if again:
        tally.rerun.append(f"{when}: {again[:5]}")
    experiment.check(tally, when)
    if killed and started and started[-1] not in experiment.done:
        tally.inside_a_step += 1
    if not killed and (code != 0 or experiment.done != ALL_STEPS):
        tally.unfinished.append(f"{when}: exit {code}, {len(experiment.done)} steps DONE")


def finish_run(experiment: Experiment, tally: Tally, *, keep: bool = False) -> None:
    """A run left to finish: exit 0, every step DONE, only the missing ones started.

    The next run starts a fresh environment, unless ``keep``.
    """
    done_before = set(experiment.done)
    mark = experiment.log_size()
    result = subprocess.run(
        experiment.command(),
        cwd=experiment.where,
        env=experiment.env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    when = f"finishing run after kill {tally.kills}"
    started = experiment.bodies_started(mark)
    again = sorted(set(started) & done_before)
    if again:
        tally.rerun.append(f"{when}: {again[:5]}")
    if result.returncode != 0:
        tally.unfinished.append(f"{when}: exit {result.returncode}: {result.stderr[-300:]}")
    experiment.check(tally, when)
    if experiment.done != ALL_STEPS:
        tally.unfinished.append(f"{when}: {len(ALL_STEPS - experiment.done)} steps not DONE")
    tally.finished_runs += 1
    if not keep:
        experiment.fresh()
        tally.environments += 1


def crash_safety(base: Path, kills: int) -> tuple[Tally, tuple[float, float], float]:
    """The kill cycles; the tally, the span kills were drawn from, and the seconds taken."""
    experiment = Experiment(base)
    # A kill comes after the start-up of a run (an up-to-date run's whole
    # time, less a margin), within the time the steps left should take.
    begin = time.monotonic()
    finish_run(experiment, Tally(), keep=True)
    span = time.monotonic() - begin
    begin = time.monotonic()
    finish_run(experiment, Tally())
    start_up = 0.8 * (time.monotonic() - begin)
    tally = Tally()
    rng = random.Random(20261121)
    begin = time.monotonic()
    finish_at = FINISH_EVERY
    while tally.kills < kills:
        # Drawn over the time the steps still to run should take.
        left = len(ALL_STEPS - experiment.done) / len(ALL_STEPS)
        kill_cycle(experiment, tally, start_up + rng.uniform(0, left * max(0.0, span - start_up)))
        if experiment.done == ALL_STEPS or tally.kills >= finish_at:
            finish_run(experiment, tally)
            finish_at = tally.kills + FINISH_EVERY
        if sys.stderr.isatty():
            print(f"\rFAULTS: {tally.kills}/{kills} kills", end="", file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    return tally, (start_up, span), time.monotonic() - begin


def concurrency(base: Path, writes: int) -> tuple[int, int, float]:
    """4 processes x ``writes`` steps on one environment: keys lost, records not DONE, seconds."""
    path = base / "shared"
    Environment.create(base, "shared", symlink=False)
    begin = time.monotonic()
    writers = [
        subprocess.Popen([sys.executable, "-c", STEPPER, str(path), f"p{p}", str(writes)])
        for p in range(WRITERS)
    ]
    codes = [writer.wait(timeout=600) for writer in writers]
    seconds = time.monotonic() - begin
    if codes != [0] * WRITERS:
        msg = f"FAULTS: a concurrent writer failed: exit codes {codes}"
        raise RuntimeError(msg)
    env = Environment.load(path)
    lost = sum(env.get(f"p{p}-{j}") != j for p in range(WRITERS) for j in range(writes))
    not_done = sum(
        env.steps.get(f"step-p{p}") is None or env.steps[f"step-p{p}"].status is not Status.DONE
        for p in range(WRITERS)
    )
    return lost, not_done, seconds


def run(*, quick: bool = False, tmp: Path | None = None) -> Section:
    """Run FAULTS and return its section of the report."""
    kills, writes = (QUICK_KILLS, QUICK_WRITES) if quick else (KILLS, WRITES)
    base = Path(tempfile.mkdtemp(prefix="expkit-bench-faults-", dir=tmp))
    try:
        tally, span, seconds = crash_safety(base, kills)
        lost_keys, not_done, concurrent_seconds = concurrency(base, writes)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return _section(tally, span, seconds, (lost_keys, not_done, concurrent_seconds), writes)


def _section(
    tally: Tally,
    span: tuple[float, float],
    seconds: float,
    concurrent: tuple[int, int, float],
    writes: int,
) -> Section:
    lost_keys, not_done, concurrent_seconds = concurrent
    failures = [
        ("corrupt environments (load failed)", tally.corrupt),
        ("committed data lost (a DONE step without its value)", tally.lost),
        ("DONE steps run again", tally.rerun),
        ("resumed runs that did not finish every step", tally.unfinished),
    ]
    body = [
        ["kills (SIGKILL of `exp run` at a random instant)", f"{tally.kills:,}", ""],
        ["kills that landed inside a step body (info)", f"{tally.inside_a_step:,}", ""],
        ["runs that ended before their kill came (info)", f"{tally.missed:,}", ""],
        ["runs left to finish after kills", f"{tally.finished_runs:,}", ""],
        *[[name, str(len(found)), "0"] for name, found in failures],
        [f"concurrent: keys lost of {WRITERS * writes:,}", str(lost_keys), "0"],
        [f"concurrent: step records not DONE of {WRITERS}", str(not_done), "0"],
    ]
    lines = [
        (
            f"### FAULTS — kill -9 during `exp run` ({STEPS} steps and their total), "
            f"and {WRITERS} concurrent processes"
        ),
        "",
        table(["check", "count", "target"], body, "lrr"),
        "",
        (
            f"Each kill came {span[0]:.2f} s after the start (within an up-to-date run's "
            "start-up) plus a uniform draw over the share of a whole first run "
            f"({span[1]:.2f} s) that the steps not yet DONE should take; the sequential and "
            f"threads executors in turn; {tally.environments} environments "
            f"run to completion through kills; {seconds:.0f} s in all. Concurrency: "
            f"{WRITERS} processes x {writes} decorated steps, each committing its own key, "
            f"in {concurrent_seconds:.1f} s."
        ),
    ]
    for name, found in failures:
        if found:
            lines += ["", f"{name}, first ones:", "", *[f"- {item}" for item in found[:5]]]
    ratios = [Ratio(name, float(len(found)), 0.0, "0") for name, found in failures]
    ratios += [
        Ratio("concurrent: keys lost", float(lost_keys), 0.0, "0"),
        Ratio("concurrent: step records not DONE", float(not_done), 0.0, "0"),
    ]
    ok = all(ratio.met for ratio in ratios)
    return Section("FAULTS", "\n".join(lines), ratios, ok=ok)


if __name__ == "__main__":
    standalone(run, __doc__, "60 kills and 4 x 50 concurrent steps instead of 1,000 and 4 x 250")
