"""W2 (BENCHMARKS.md): a small change to an environment that also holds a 256 MiB array.

Rows, interleaved, with an untimed ``os.sync()`` after each call: expkit
(durable), EnOSlib's ``@enostask()``, the full-rewrite floor (the array's
bytes written + fsync) and the incremental floor (one small pickled value
written + fsync + ``os.replace``).
"""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    DURABLE_VAR,
    Ratio,
    Row,
    Section,
    chdir,
    env_var,
    fsync_write_replace,
    interleave,
    ms,
    ratio_table,
    read_back,
    standalone,
    table,
    write_all,
)

from expkit import Environment, task

KEYS = 100
ELEMENTS, QUICK_ELEMENTS = 2**25, 2**22
WARMUP, TIMED = 1, 7
QUICK_WARMUP, QUICK_TIMED = 1, 3


def key_of(i: int) -> str:
    """The small key step ``i`` sets."""
    return "k%03d" % (i % KEYS)  # noqa: UP031 - as written in BENCHMARKS.md


def value_of(i: int) -> str:
    """The small value step ``i`` sets."""
    return "v" * 24 + "%08d" % i  # noqa: UP031


def make_array(elements: int) -> np.ndarray:
    """The float64 array of key ``big``."""
    return np.random.default_rng(0).random(elements)


def small_keys() -> dict[str, str]:
    """The 100 small keys ``k000``..``k099``."""
    return {"k%03d" % n: "%032d" % n for n in range(KEYS)}  # noqa: UP031


# -- expkit ---------------------------------------------------------------------


@task(new=True, symlink=False)
def w2_expkit_init(env: Environment, elements: int) -> None:
    """Create the state: the array and the small keys.

    The array is made here, not passed in: a step's parameters are recorded.
    """
    env["big"] = make_array(elements)
    env.update(small_keys())


@task
def w2_expkit_step(env: Environment, i: int) -> None:
    """Set one small key; the array is untouched."""
    env["k%03d" % (i % 100)] = "v" * 24 + "%08d" % i  # noqa: UP031


# -- EnOSlib -----------------------------------------------------------------------


def enoslib_steps() -> tuple[Any, Any]:
    """EnOSlib's init and step, decorated with ``@enostask`` (imported only when run)."""
    from enoslib.task import enostask

    @enostask(new=True, symlink=False)
    def w2_enoslib_init(elements: int, env: Any = None) -> None:
        env["big"] = make_array(elements)
        env.update(small_keys())

    @enostask()
    def w2_enoslib_step(i: int, env: Any = None) -> None:
        env["k%03d" % (i % 100)] = "v" * 24 + "%08d" % i  # noqa: UP031

    return w2_enoslib_init, w2_enoslib_step


# -- floors ---------------------------------------------------------------------------


def full_rewrite(path: Path, big: np.ndarray) -> None:
    """The full-rewrite floor: the array's bytes written to a file, then fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_all(fd, memoryview(big))
        os.fsync(fd)
    finally:
        os.close(fd)


def small_write(directory: Path, i: int) -> None:
    """The incremental floor: one small pickled value written + fsync + ``os.replace``."""
    data = pickle.dumps(value_of(i), protocol=pickle.HIGHEST_PROTOCOL)
    fsync_write_replace(directory, "value", data)


# -- the workload -------------------------------------------------------------------

_READ_BACK = (
    "import sys\n"
    "from expkit import Environment\n"
    "env = Environment.load(sys.argv[1])\n"
    "big = env['big']\n"
    "print(env[sys.argv[2]], big.shape[0], repr(float(big[-1])))\n"
)


def run(*, quick: bool = False, tmp: Path | None = None) -> Section:
    """Run W2 and return its section of the report."""
    elements = QUICK_ELEMENTS if quick else ELEMENTS
    warmup, timed = (QUICK_WARMUP, QUICK_TIMED) if quick else (WARMUP, TIMED)
    base = Path(tempfile.mkdtemp(prefix="expkit-bench-w2-", dir=tmp))
    try:
        with chdir(base), env_var(DURABLE_VAR, "1"):
            return _run(base, elements, warmup, timed)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run(base: Path, elements: int, warmup: int, timed: int) -> Section:
    expkit_dir = base / "expkit"
    enos_dir = base / "enoslib"
    floor_dir = base / "floor"
    floor_dir.mkdir()
    big = make_array(elements)  # the floors' copy
    mib = big.nbytes / 2**20

    start = time.perf_counter_ns()
    w2_expkit_init(env=str(expkit_dir), elements=elements)
    expkit_init = time.perf_counter_ns() - start
    enos_init, enos_step = enoslib_steps()
    start = time.perf_counter_ns()
    enos_init(elements=elements, env=str(enos_dir))
    enos_init_ns = time.perf_counter_ns() - start
    os.sync()

    rows = [
        Row("expkit (durable)", lambda i: w2_expkit_step(env=str(expkit_dir), i=i)),
        Row("EnOSlib `@enostask()`", lambda i: enos_step(i=i, env=str(enos_dir))),
        Row(
            f"full-rewrite floor: {mib:g} MiB write + fsync",
            lambda _i: full_rewrite(floor_dir / "big", big),
        ),
        Row(
            "incremental floor: small pickled value write + fsync + `os.replace`",
            lambda i: small_write(floor_dir, i),
        ),
    ]
    interleave(rows, warmup=warmup, timed=timed, between=os.sync, progress="W2")
    expkit, enos, full, small = rows

    last = warmup + timed - 1
    expected = f"{value_of(last)} {elements} {float(big[-1])!r}"
    got = read_back(_READ_BACK, str(expkit_dir), key_of(last))
    if got != expected:
        msg = f"W2 expkit: read back {got!r}, expected {expected!r}"
        raise AssertionError(msg)

    body = [
        [
            row.name,
            ms(row.median),
            ms(min(row.samples)),
            ms(max(row.samples)),
            str(len(row.samples)),
        ]
        for row in rows
    ]
    ratios = [
        Ratio("expkit / EnOSlib", expkit.median / enos.median, 0.01, "<= 0.01 (1 %)"),
        Ratio("expkit / incremental floor", expkit.median / small.median, 3.0),
        Ratio("EnOSlib / full-rewrite floor", enos.median / full.median, None),
    ]
    markdown = "\n\n".join(
        [
            (
                f"### W2 — big environment ({mib:g} MiB array + {KEYS} small keys), small change "
                f"({timed} timed steps per row after {warmup} warm-up, interleaved, "
                "`os.sync()` between calls)"
            ),
            table(["row", "median (ms)", "min (ms)", "max (ms)", "n"], body, "lrrrr"),
            ratio_table(ratios),
            (
                f"State created once, untimed by the workload: expkit {ms(expkit_init)} ms, "
                f"EnOSlib {ms(enos_init_ns)} ms. Read back from a fresh process (expkit): "
                f"`env[{key_of(last)!r}] == {value_of(last)!r}` and the array's length and last "
                "element, ok."
            ),
        ]
    )
    return Section("W2", markdown, ratios, ok=all(r.met is not False for r in ratios))


if __name__ == "__main__":
    standalone(run, __doc__, "a 32 MiB array, fewer steps")
