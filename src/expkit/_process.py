"""Who runs a step, and whether that process is still alive.

A pid alone is not an identity: pids are recycled, so a step RUNNING under
pid 4242 is only still running if process 4242 exists *and* started when the
owner did. On Linux the start time comes from ``/proc``; elsewhere only the
pid is checked.
"""

from __future__ import annotations

import functools
import os
from datetime import datetime, timezone

from ._records import Owner

__all__ = ["current_owner", "current_owner_state", "is_alive"]

# Start times computed from /proc jitter by up to a clock tick plus the
# rounding of the boot time; a recycled pid starts much later than this.
_START_TOLERANCE_S = 1.0


@functools.cache
def _hostname() -> str:
    # socket.gethostname() without importing socket: both read uname(2).
    return os.uname().nodename


@functools.cache
def _boot_time() -> float | None:
    try:
        with open("/proc/stat", "rb") as stat:
            for line in stat:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def _proc_stat(pid: int) -> tuple[bytes, datetime] | None:
    """Process ``pid``'s state letter and start time, or ``None`` if unknown or gone."""
    boot = _boot_time()
    if boot is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = raw[raw.rindex(b")") + 2 :].split()
    ticks = int(fields[19])  # field 22 of the whole line: starttime, in clock ticks
    return fields[0], datetime.fromtimestamp(
        boot + ticks / os.sysconf("SC_CLK_TCK"), tz=timezone.utc
    )


def process_start_time(pid: int) -> datetime | None:
    """When process ``pid`` started, or ``None`` if unknown or gone."""
    stat = _proc_stat(pid)
    return None if stat is None else stat[1]


_owner: tuple[int, Owner, tuple[str, int, float | None]] | None = None


def current_owner() -> Owner:
    """This process as a step owner (cached; refreshed after a fork)."""
    return _current()[1]


def current_owner_state() -> tuple[str, int, float | None]:
    """:func:`current_owner` in a step record's stored form (see ``StepRecord.to_state``)."""
    return _current()[2]


def _current() -> tuple[int, Owner, tuple[str, int, float | None]]:
    global _owner  # noqa: PLW0603 - a per-process cache, reset when the pid changes
    pid = os.getpid()
    if _owner is None or _owner[0] != pid:
        owner = Owner(host=_hostname(), pid=pid, started=process_start_time(pid))
        started = None if owner.started is None else owner.started.timestamp()
        _owner = (pid, owner, (owner.host, owner.pid, started))
    return _owner


def is_alive(owner: Owner) -> bool:  # noqa: PLR0911 - one answer per kind of evidence
    """Whether ``owner`` may still be running.

    A process on another host cannot be probed: it is assumed alive, and the
    error raised then says so.
    """
    if owner.host != _hostname():
        return True
    if owner.pid == os.getpid():
        return owner.started == current_owner().started
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    stat = _proc_stat(owner.pid)
    if stat is None:
        return not os.path.exists("/proc/self/stat")  # no /proc: the pid exists, trust it
    state, started = stat
    if state in (b"Z", b"X"):  # killed but not yet reaped by its parent
        return False
    if owner.started is None:
        return True
    return abs((started - owner.started).total_seconds()) < _START_TOLERANCE_S
