"""Crash-resume with real processes: ``make`` killed with SIGKILL at random instants, then resumed.

A child interpreter runs ``make`` on a 12-step DAG whose steps append the
child's round number to a per-step "runs" file, say ``start <step>`` on
stdout, pause a few milliseconds and write a key. The test SIGKILLs the child
at a random instant after a random number of step starts, checks the
environment, and starts ``make`` again in a fresh child, until a run
completes. The runs files then tell which round ran what.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from expkit import Environment, Status

pytestmark = pytest.mark.slow

GRAPH: dict[str, list[str]] = {
    "s0": [],
    "s1": ["s0"],
    "s2": ["s0"],
    "s3": ["s1"],
    "s4": ["s2"],
    "s5": ["s2"],
    "s6": ["s3", "s4"],
    "s7": ["s5"],
    "s8": ["s6", "s7"],
    "s9": [],
    "s10": ["s9"],
    "s11": ["s8", "s10"],
}

CHILD = textwrap.dedent(
    """
    import json
    import os
    import sys
    import time
    from expkit import make, plan, task

    path, runs, round_id, executor, jobs, graph, slow = sys.argv[1:]
    graph, slow = json.loads(graph), set(json.loads(slow))

    def say(line):
        # One write(2) per line: a kill never leaves half a line.
        os.write(1, (line + "\\n").encode())

    def step(name, pause):
        def body(env):
            fd = os.open(os.path.join(runs, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (round_id + "\\n").encode())
            finally:
                os.close(fd)
            say(f"start {name}")
            time.sleep(pause)
            env[f"key-{name}"] = name
            return name
        return body

    for name, requires in graph.items():
        task(name=name, requires=requires)(step(name, 0.4 if name in slow else 0.003))
    for entry in plan(env=path):
        say(f"plan {entry.name} {entry.action} {entry.reason}")
    say("ready")
    make(env=path, executor=executor, jobs=int(jobs))
    say("finished")
    """
)


@dataclasses.dataclass
class Round:
    """What one child did, as seen from the environment after it ended."""

    number: int
    pid: int
    killed: bool
    done_before: set[str]
    #: Steps DONE after this round that were not before.
    new_done: set[str]
    #: Steps this round's driver claimed that the kill left INTERRUPTED.
    hit: set[str]
    #: What the child printed (a killed one's orphaned workers: read at the end).
    output: list[str]


@dataclasses.dataclass
class Experiment:
    """One environment, resumed until a run completes."""

    path: Path
    runs: Path
    executor: str
    jobs: int
    slow: list[str]
    rounds: list[Round] = dataclasses.field(default_factory=list)
    children: list[subprocess.Popen[str]] = dataclasses.field(default_factory=list)

    @property
    def kills(self) -> int:
        """How many rounds were killed."""
        return sum(r.killed for r in self.rounds)

    @property
    def hits(self) -> int:
        """How many claimed steps the kills left INTERRUPTED."""
        return sum(len(r.hit) for r in self.rounds)


def _errors(experiment: Experiment, number: int) -> Path:
    """Where round ``number`` of ``experiment`` writes its stderr."""
    return experiment.runs.parent / f"{experiment.path.name}-round-{number}.err"


def _load(path: Path) -> Environment:
    env = Environment.load(path)  # always loads, whatever instant the kill came at
    running = [r.name for r in env.steps.values() if r.status is Status.RUNNING]
    assert not running, f"left RUNNING by a dead driver: {running}"
    return env


def _launch(
    stack: contextlib.ExitStack, experiment: Experiment, number: int
) -> subprocess.Popen[str]:
    argv = [
        sys.executable,
        "-c",
        CHILD,
        str(experiment.path),
        str(experiment.runs),
        str(number),
        experiment.executor,
        str(experiment.jobs),
        json.dumps(GRAPH),
        json.dumps(experiment.slow),
    ]
    with _errors(experiment, number).open("wb") as errors:
        # Kept open until the experiment ends: a killed driver's orphaned
        # workers still hold its stdout, so reading it to the end waits for them.
        return stack.enter_context(
            subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors, text=True)
        )


def _check_plan(plan_lines: list[str], env_before: Environment, done_before: set[str]) -> None:
    """The resuming child's plan: exactly the steps not DONE run, each for the right reason."""
    planned = {}
    for line in plan_lines:
        name, action, reason = line.split(" ", 2)
        planned[name] = (action, reason)
    assert set(planned) == set(GRAPH)
    for name, (action, reason) in planned.items():
        record = env_before.steps.get(name)
        if name in done_before:
            assert (action, reason) == ("skip", "up to date"), name
        elif record is None:
            assert (action, reason) == ("run", "never run"), name
        else:
            assert record.status is Status.INTERRUPTED, record
            assert record.owner is not None
            died = f"interrupted (pid {record.owner.pid} on host {record.owner.host} died)"
            assert (action, reason) == ("run", died), name


def _play_round(
    stack: contextlib.ExitStack, experiment: Experiment, rng: random.Random, *, kill: bool
) -> Round:
    number = len(experiment.rounds) + 1
    before = _load(experiment.path)
    done_before = {r.name for r in before.steps.values() if r.status is Status.DONE}
    # Kill a random few milliseconds after a random number of step starts (0:
    # after "ready", as make starts); seldom when one step is left, so that
    # the kills spread over the graph.
    left = len(GRAPH) - len(done_before)
    kill &= left > 1 or rng.random() < 0.25
    kill_after = rng.randint(0, left) if kill else None
    child = _launch(stack, experiment, number)
    experiment.children.append(child)
    assert child.stdout is not None
    plan_lines: list[str] = []
    output: list[str] = []
    starts = 0
    killed = False
    while line := child.stdout.readline():
        output.append(line.rstrip("\n"))
        word, _, rest = output[-1].partition(" ")
        if word == "plan":
            plan_lines.append(rest)
            continue
        starts += word == "start"
        if word in ("ready", "start") and kill_after is not None and starts >= kill_after:
            time.sleep(rng.uniform(0, 0.006))
            child.send_signal(signal.SIGKILL)  # not sent if the child already ended
            killed = True
            break
    code = child.wait()
    if killed and code == 0:  # the run ended before the kill: a complete run after all
        killed = False
        output += child.stdout.read().splitlines()
    expected = -signal.SIGKILL if killed else 0
    assert code == expected, (
        f"round {number} ended with {code}:\n{_errors(experiment, number).read_text()}"
    )
    assert killed or output[-1] == "finished", output
    _check_plan(plan_lines, before, done_before)

    after = _load(experiment.path)
    records = after.steps
    done_after = {r.name for r in records.values() if r.status is Status.DONE}
    assert done_before <= done_after, "a DONE step lost its record"
    new_done = done_after - done_before
    for name in new_done:
        owner = records[name].owner
        assert owner is not None
        assert owner.pid == child.pid, f"{name} became DONE but not by round {number}"
    hit = {
        r.name
        for r in records.values()
        if r.status is Status.INTERRUPTED and r.owner is not None and r.owner.pid == child.pid
    }
    assert len(hit) <= experiment.jobs, hit
    for name in hit:
        assert set(GRAPH[name]) <= done_after, (
            f"{name} was claimed before its prerequisites were done"
        )
    if not killed:
        assert not hit
        assert done_after == set(GRAPH)
    return Round(number, child.pid, killed, done_before, new_done, hit, output)


def _runs_by_round(experiment: Experiment) -> dict[str, list[int]]:
    found = {}
    for name in GRAPH:
        runs = experiment.runs / name
        found[name] = [int(line) for line in runs.read_text().splitlines()] if runs.exists() else []
    return found


def run_experiment(
    name: str, rng: random.Random, *, kills: int, executor: str, jobs: int, slow: list[str]
) -> Experiment:
    """Kill ``make`` ``kills`` times (fewer if a run completes first), then resume until done."""
    Environment.create(".", name, symlink=False)
    runs = Path(f"{name}-runs")
    runs.mkdir()
    experiment = Experiment(Path(name), runs, executor, jobs, slow)
    with contextlib.ExitStack() as stack:
        while True:
            played = _play_round(stack, experiment, rng, kill=experiment.kills < kills)
            experiment.rounds.append(played)
            if not played.killed:
                break
        # A killed driver's orphaned workers have all ended once its stdout is at
        # its end: only then are the runs files complete.
        for played, child in zip(experiment.rounds, experiment.children, strict=True):
            assert child.stdout is not None
            played.output += child.stdout.read().splitlines()
    check_runs(experiment)
    return experiment


def check_runs(experiment: Experiment) -> None:
    """Every run of every step, by round: DONE steps never ran again, only interrupted ones did."""
    runs = _runs_by_round(experiment)
    for name, rounds in runs.items():
        assert len(rounds) == len(set(rounds)), f"{name} ran twice in one round: {rounds}"
        hits = sum(name in r.hit for r in experiment.rounds)
        assert 1 <= len(rounds) <= 1 + hits, (name, rounds, hits)
        if not hits:
            assert len(rounds) == 1, (name, rounds)
    for played in experiment.rounds:
        ran = {name for name, rounds in runs.items() if played.number in rounds}
        assert not ran & played.done_before, f"round {played.number} re-ran DONE steps"
        assert played.new_done <= ran, f"round {played.number}: DONE without running"
        assert ran <= played.new_done | played.hit, (
            f"round {played.number}: ran what it did not claim"
        )
        # A step says "start" just after it appends to its runs file.
        started = [line.split(" ")[1] for line in played.output if line.startswith("start ")]
        assert len(started) == len(set(started))
        assert set(started) <= ran
    env = _load(experiment.path)
    assert {name: r.status for name, r in env.steps.items()} == dict.fromkeys(GRAPH, Status.DONE)
    assert {key: env[key] for key in env if key.startswith("key-")} == {
        f"key-{n}": n for n in GRAPH
    }


def run_experiments(
    prefix: str, rng: random.Random, kills: int, **options: Any
) -> list[Experiment]:
    """Experiments of at most 5 kills each until ``kills`` kills were made."""
    experiments: list[Experiment] = []
    while (made := sum(e.kills for e in experiments)) < kills:
        name = f"{prefix}{len(experiments)}"
        experiments.append(run_experiment(name, rng, kills=min(5, kills - made), **options))
    return experiments


def test_sigkill_during_make_then_resume_reruns_only_the_interrupted_step() -> None:
    """Sequential make killed 20 times: completed steps never run again, all DONE in the end."""
    experiments = run_experiments(
        "seq", random.Random(20240607), 20, executor="sequential", jobs=1, slow=[]
    )
    hits = sum(e.hits for e in experiments)
    assert hits >= 20 // 5, f"the kills should often land inside steps ({hits} of 20 did)"


def test_killed_driver_of_process_workers_leaves_no_step_running() -> None:
    """``processes`` with 2 workers, driver SIGKILLed 10 times: its steps are INTERRUPTED and re-run.

    Two slow steps make the killed driver's orphaned workers often still run
    while the next driver starts: they write nothing to the environment, and
    their step runs again, at most once more per kill that hit it.
    """
    experiments = run_experiments(
        "proc", random.Random(77), 10, executor="processes", jobs=2, slow=["s2", "s6"]
    )
    assert sum(e.hits for e in experiments) >= 2
