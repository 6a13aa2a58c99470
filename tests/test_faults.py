"""Fault injection with real processes: SIGKILL at random instants, and concurrent writers."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from expkit import Environment, Status
from tests.helpers import STEPPER

pytestmark = pytest.mark.slow

KILLS = 200

# A child that runs small steps forever, each call loading the environment
# from disk and committing; it reports each step's start and return.
CHILD = textwrap.dedent(
    """
    import os
    import sys
    import time
    from expkit import task

    path, first = sys.argv[1], int(sys.argv[2])

    def say(line):
        # One write(2) per line: a kill never leaves half a line, even when
        # PYTHONUNBUFFERED makes print() write each piece separately.
        os.write(1, (line + "\\n").encode())

    def body(env, i):
        say(f"start {i}")
        env[f"k{i}"] = i
        env["counter"] = env.get("counter", 0) + 1
        env.setdefault("log", []).append(i)
        time.sleep(0.002)  # widen the body so that many kills land inside a step

    steps = [task(name=f"s{n}")(body) for n in range(10)]
    # A first call loads what a process loads once (inspect, the fingerprint's
    # parser): the kills that follow land among steady steps, not in imports.
    task(name="warm-up")(lambda env: None)(env=path)
    say("ready")
    i = first
    while True:
        steps[i % 10](env=path, i=i)
        say(f"done {i}")
        i += 1
    """
)


def _kill_at_random(path: Path, first: int, rng: random.Random) -> tuple[set[int], int | None]:
    """Start the child, SIGKILL it at a random instant; the steps it returned from and the last it started."""
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(first)],
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0, 0.03))
        child.send_signal(signal.SIGKILL)
        child.wait()
        output = child.stdout.read()
    done: set[int] = set()
    started: int | None = None
    for line in output.splitlines():
        word, _, number = line.partition(" ")
        if word == "start":
            started = int(number)
        elif word == "done":
            done.add(int(number))
    return done, started


def test_sigkill_at_random_instants_loses_no_commit() -> None:
    """200 kills at random instants: every load succeeds, returned steps are intact, none stays RUNNING."""
    rng = random.Random(1234)
    Environment.create(".", "victim", symlink=False)
    path = Path("victim")
    returned: set[int] = set()
    first = 0
    interrupted = 0
    for _ in range(KILLS):
        done, started = _kill_at_random(path, first, rng)
        returned |= done
        env = Environment.load(path)
        for i in returned:
            assert env[f"k{i}"] == i, f"committed step {i} lost"
        assert not [r.name for r in env.steps.values() if r.status is Status.RUNNING]
        if started is not None and started not in done:
            # Killed inside the step: its record is INTERRUPTED, or DONE if the
            # kill came between the durable commit and the "done" line.
            record = env.steps[f"s{started % 10}"]
            assert record.status in (Status.INTERRUPTED, Status.DONE), record
            interrupted += record.status is Status.INTERRUPTED
            if record.status is Status.DONE:
                assert env[f"k{started}"] == started
        # Every commit is whole: the log holds each finished step exactly once.
        log = env.get("log", [])
        assert len(log) == len(set(log)) == env.get("counter", 0)
        if started is not None:
            first = max(first, started + 1)
    assert interrupted >= KILLS // 10, "the kills should mostly land inside steps"


WRITER = textwrap.dedent(
    """
    import sys
    from expkit import Environment

    path, me, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    env = Environment.load(path)
    for j in range(count):
        env[f"{me}-{j}"] = j
        env.dump()
    """
)


def test_concurrent_writers_lose_no_update() -> None:
    """4 processes x 250 commits of distinct keys to one environment: all 1,000 keys present."""
    Environment.create(".", "shared", symlink=False)
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, "shared", f"p{p}", "250"]) for p in range(4)
    ]
    assert [w.wait(timeout=300) for w in writers] == [0, 0, 0, 0]
    env = Environment.load("shared")
    assert len(env) == 1000
    assert all(env[f"p{p}-{j}"] == j for p in range(4) for j in range(250))


def test_concurrent_steps_lose_no_update() -> None:
    """4 processes running steps on one environment: every step's data and record arrive."""
    Environment.create(".", "steps", symlink=False)
    workers = [
        subprocess.Popen([sys.executable, "-c", STEPPER, "steps", f"p{p}", "60"]) for p in range(4)
    ]
    assert [w.wait(timeout=300) for w in workers] == [0, 0, 0, 0]
    env = Environment.load("steps")
    assert len(env) == 240
    assert {name: r.status for name, r in env.steps.items()} == {
        f"step-p{p}": Status.DONE for p in range(4)
    }


def test_lock_of_killed_holder_is_released() -> None:
    """A process killed while holding the environment's lock does not block the next writer."""
    Environment.create(".", "locked", symlink=False)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time\n"
                "from expkit import Environment\n"
                "env = Environment.load('locked')\n"
                "with env._journal.locked():\n"
                "    print('holding', flush=True)\n"
                "    time.sleep(600)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "holding"
    holder.kill()
    holder.wait()
    holder.stdout.close()
    env = Environment.load("locked")
    env["after"] = os.getpid()
    env.dump()
    assert Environment.load("locked")["after"] == os.getpid()


DIES_AT_COMPACTION = textwrap.dedent(
    """
    import os
    import signal
    import sys
    from expkit import Environment

    env = Environment.load(sys.argv[1], durable=False)

    def die(*args, **kwargs):
        # The instant a compaction would rename its new journal over the old one.
        os.kill(os.getpid(), signal.SIGKILL)

    os.rename = die
    for i in range(100):
        print(i, flush=True)
        env["big"] = str(i) * 40_000  # each commit appends ~80 KB: a compaction comes soon
        env.dump()
    """
)


def _killed_child(script: str, *args: str) -> str:
    """Run ``script`` in a real child process that SIGKILLs itself; its standard output."""
    child = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    return child.stdout


def test_a_compaction_killed_before_its_rename_leaves_no_file_behind() -> None:
    """A compaction SIGKILLed before its rename loses nothing; the next one removes its leftover."""
    Environment.create(".", "compacting", symlink=False)
    last = int(_killed_child(DIES_AT_COMPACTION, "compacting").split()[-1])
    directory = Path("compacting")
    leftovers = [p.name for p in directory.iterdir() if p.name.startswith("env.compact-")]
    assert len(leftovers) == 1  # what the killed compaction wrote
    env = Environment.load(directory)
    assert env["big"] == str(last) * 40_000  # the commit before the compaction is there
    big_journal = (directory / "env").stat().st_size
    env["after"] = 1
    env.dump()  # its upkeep compacts again, and removes what the killed one left
    assert [p.name for p in directory.iterdir() if p.name.startswith("env.compact-")] == []
    assert (directory / "env").stat().st_size < big_journal
    fresh = Environment.load(directory)
    assert fresh["big"] == str(last) * 40_000
    assert fresh["after"] == 1


DIES_AFTER_LINKING_THE_JOURNAL = textwrap.dedent(
    """
    import os
    import signal
    import sys
    from expkit import Environment

    def die(*args, **kwargs):
        # The instant a creator, its file linked as the journal, would remove its own name.
        os.kill(os.getpid(), signal.SIGKILL)

    os.unlink = die
    Environment.create(".", sys.argv[1], symlink=False, durable=False)
    """
)


def test_a_creator_killed_after_linking_leaves_no_second_name_after_compaction() -> None:
    """A creator's leftover name of the journal goes at the next compaction, not its space."""
    _killed_child(DIES_AFTER_LINKING_THE_JOURNAL, "created")
    directory = Path("created")
    journal = directory / "env"
    (leftover,) = [p for p in directory.iterdir() if p.name.startswith("env.new-")]
    assert leftover.stat().st_ino == journal.stat().st_ino  # a second name of the journal
    unrelated = directory / "env.new-1-00000000"  # another creator's, not yet linked
    unrelated.write_bytes(b"")
    env = Environment.load(directory, durable=False)
    first = journal.stat().st_ino
    for i in range(100):
        env["big"] = str(i) * 40_000  # ~80 KB a commit: a compaction comes soon
        env.dump()
        if journal.stat().st_ino != first:
            break
    assert journal.stat().st_ino != first  # compacted: a new file under the name
    assert not leftover.exists()  # which would have kept the old file's space
    assert unrelated.exists()
    assert Environment.load(directory)["big"] == str(i) * 40_000


# Starts a command with a limit on the size of the files it writes, the
# signal that would kill it at the limit ignored (both survive exec): its
# writes past the limit fail as they would on a full disk.
LIMITED = textwrap.dedent(
    """
    import os
    import resource
    import signal
    import sys

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))
    os.execv(sys.argv[2], sys.argv[2:])
    """
)

BIG_STEP = textwrap.dedent(
    """
    from expkit import task

    @task
    def small(env):
        env["small"] = 1

    @task(requires=[small])
    def big(env):
        env["big"] = "x" * 200_000

    @task(requires=[big])
    def last(env):
        env["last"] = len(env["big"])
    """
)


def test_a_write_that_fails_names_the_journal_and_loses_nothing() -> None:
    """A commit the disk refuses: the error names the journal; the run resumes once there is room."""
    Path("expfile.py").write_text(BIG_STEP)
    exp = str(Path(sys.executable).with_name("exp"))
    full = subprocess.run(
        [sys.executable, "-c", LIMITED, "60000", exp, "run"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert full.returncode == 2, full.stdout + full.stderr
    journal = Path("current").resolve() / "env"
    assert "nothing was committed" in full.stderr
    assert str(journal) in full.stderr
    assert "done      small" in full.stdout
    assert journal.stat().st_size <= 60000
    env = Environment.load("current")
    assert env["small"] == 1
    assert "big" not in env
    assert env.steps["big"].status is Status.INTERRUPTED  # its process is gone
    again = subprocess.run([exp, "run"], capture_output=True, text=True, check=False, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "skip      1 step up to date: small" in again.stdout
    done = Environment.load("current")
    assert done["last"] == 200_000
    assert {r.status for r in done.steps.values()} == {Status.DONE}
