"""SHELL: ``true`` on 32 loopback nodes through a real sshd, expkit.shell against ClusterShell.

Rows, interleaved, every one running ``true`` on ``node[1-32]`` over ssh:
``expkit.shell.run`` with fanout 32 and with fanout 1 (in this process),
ClusterShell's ``Task.shell`` with fanout 32 (in this process), and, as whole
processes, ``clush -f 32`` against a fresh interpreter calling ``run``. Every
node is an alias of 127.0.0.1 on its own port, served by the same sshd the
tests use (``tests/_sshd.py``: generated keys, nothing under ``~/.ssh``
touched). Each call must return 0 on all 32 nodes.

expkit starts each ssh in a session of its own (so that nothing can stop on
a terminal read, and a timeout kills a whole process group); with the
kernel's scheduler autogroups, each session also gets its own share of a
busy machine's CPUs, which ClusterShell's children, all in the caller's
session, do not. One more row therefore runs expkit with its children kept
in the caller's session, to compare the two engines alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import ROOT, Ratio, Row, Section, interleave, ms, ratio_table, standalone, table

from expkit.shell import _fleet
from expkit.shell import run as shell_run

# The sshd fixture of the tests, shared so that both measure the same set-up.
sys.path.append(str(ROOT))
from tests._sshd import loopback_sshd

NODES = 32
PATTERN = f"node[1-{NODES}]"
WARMUP, TIMED = 1, 5
QUICK_WARMUP, QUICK_TIMED = 0, 2
TARGET = 1.5

_CHILD = (
    "import sys\n"
    "from expkit.shell import run\n"
    "result = run('true', sys.argv[1], fanout=int(sys.argv[2]), ssh_config=sys.argv[3])\n"
    "sys.exit(0 if result.max_retcode == 0 and not result.timeouts else 1)\n"
)


def expkit_run(ssh_config: Path, fanout: int) -> None:
    """``true`` on every node with ``expkit.shell.run``; fails unless every node returns 0."""
    result = shell_run("true", PATTERN, fanout=fanout, ssh_config=ssh_config)
    if result.max_retcode != 0 or result.timeouts:
        raise AssertionError(f"expkit run failed:\n{result}")


def expkit_same_session(ssh_config: Path, fanout: int) -> None:
    """:func:`expkit_run` with every child kept in this process's session, as ClusterShell does."""
    with _children_in_our_session():
        expkit_run(ssh_config, fanout)


class _SameSessionPopen(subprocess.Popen[bytes]):
    """``Popen`` that makes a new process group, but not a new session (autogroup)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("start_new_session", None)
        kwargs["preexec_fn"] = os.setpgrp
        super().__init__(*args, **kwargs)


class _SubprocessWithSameSession:
    """The subprocess module as expkit.shell sees it, with :class:`_SameSessionPopen`."""

    Popen = _SameSessionPopen

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)


@contextlib.contextmanager
def _children_in_our_session() -> Iterator[None]:
    # Benchmark-only: swaps the module expkit.shell starts its processes with.
    _fleet.subprocess = _SubprocessWithSameSession()  # type: ignore[assignment]
    try:
        yield
    finally:
        _fleet.subprocess = subprocess


def expkit_process(ssh_config: Path, fanout: int) -> None:
    """The same call from a fresh interpreter, timed as a whole process like ``clush``."""
    command = [sys.executable, "-c", _CHILD, PATTERN, str(fanout), str(ssh_config)]
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL)


def clush_process(clush: str, ssh_config: Path, fanout: int) -> None:
    """``clush -S -f N -w node[1-32] true``, with the same ssh configuration."""
    command = [
        clush,
        "-S",
        "-q",
        "-f",
        str(fanout),
        "-o",
        f"-F {ssh_config}",
        "-w",
        PATTERN,
        "true",
    ]
    subprocess.run(command, check=True, stdin=subprocess.DEVNULL)


def clustershell_task(ssh_config: Path, fanout: int) -> None:
    """ClusterShell's Python API in this process: ``task.shell`` then ``task.run``."""
    from ClusterShell.Task import task_self

    task: Any = task_self()
    task.set_info("fanout", fanout)
    task.set_info("ssh_options", f"-F {ssh_config}")
    task.set_info("connect_timeout", 10)
    task.shell("true", nodes=PATTERN)
    task.run()
    if task.max_retcode() != 0:
        raise AssertionError(f"ClusterShell task failed: max_retcode {task.max_retcode()}")


def run(*, quick: bool = False, tmp: Path | None = None) -> Section:
    """Run the SHELL workload and return its section of the report."""
    # The bench session's virtualenv holds clush beside its interpreter, activated or not.
    clush = shutil.which(
        "clush", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    )
    if clush is None:
        msg = "clush is not installed: run `nox -s bench` (it installs ClusterShell)"
        raise SystemExit(msg)
    warmup, timed = (QUICK_WARMUP, QUICK_TIMED) if quick else (WARMUP, TIMED)
    base = Path(tempfile.mkdtemp(prefix="expkit-bench-shell-", dir=tmp))
    try:
        with loopback_sshd(base / "sshd", NODES) as sshd:
            return _run(clush, sshd.ssh_config, warmup, timed)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run(clush: str, ssh_config: Path, warmup: int, timed: int) -> Section:
    rows = [
        Row(f"expkit `run`, fanout {NODES}", lambda _i: expkit_run(ssh_config, NODES)),
        Row("expkit `run`, fanout 1", lambda _i: expkit_run(ssh_config, 1)),
        Row(
            f"expkit `run`, fanout {NODES}, children in our session",
            lambda _i: expkit_same_session(ssh_config, NODES),
        ),
        Row(
            f"ClusterShell `Task.shell`, fanout {NODES}",
            lambda _i: clustershell_task(ssh_config, NODES),
        ),
        Row(
            f"expkit `run`, new process, fanout {NODES}",
            lambda _i: expkit_process(ssh_config, NODES),
        ),
        Row(
            f"`clush -f {NODES}`, whole process", lambda _i: clush_process(clush, ssh_config, NODES)
        ),
    ]
    interleave(rows, warmup=warmup, timed=timed, progress="SHELL")
    wide, narrow, same_session, task, process, clush_row = rows

    body = [[row.name, ms(row.median), ms(row.p95), str(len(row.samples))] for row in rows]
    ratios = [
        Ratio(f"speed-up: fanout 1 / fanout {NODES}", narrow.median / wide.median, None),
        Ratio(
            "expkit new process / `clush` (whole processes)",
            process.median / clush_row.median,
            TARGET,
        ),
        Ratio(
            "expkit `run`, children in our session / ClusterShell `Task.shell` (engines alone)",
            same_session.median / task.median,
            TARGET,
        ),
        Ratio(
            "expkit `run` / ClusterShell `Task.shell` (in process)", wide.median / task.median, None
        ),
    ]
    markdown = "\n\n".join(
        [
            (
                f"### SHELL — `true` on {NODES} loopback nodes over ssh ({timed} timed rounds "
                f"after {warmup} warm-up, interleaved)"
            ),
            table(["row", "median (ms)", "p95 (ms)", "n"], body, "lrrr"),
            ratio_table(ratios),
            (
                f"Every call returned 0 on all {NODES} nodes. One OpenSSH server per 16 nodes, "
                "on 127.0.0.1; connection set-up (key exchange on both ends, on this machine's "
                "CPUs) is most of the time, so the speed-up is bounded by the CPU count. On a "
                "busy machine, expkit's children (one session each) get more CPU than "
                "ClusterShell's (one session for all) from the scheduler's autogroups; the "
                "'children in our session' row removes that difference."
            ),
        ]
    )
    return Section("SHELL", markdown, ratios, ok=all(r.met is not False for r in ratios))


if __name__ == "__main__":
    standalone(run, __doc__, "fewer rounds")
