"""W1 (BENCHMARKS.md): a small step that sets one key of a 100-key environment.

Rows, interleaved: expkit durable, expkit with ``EXPKIT_DURABLE=0``, EnOSlib's
``@enostask()``, the bare function on a dict, and the floor (one 4 KB write +
fsync + ``os.replace`` in the same directory). Each decorated call is given
its environment by path, so it loads it from disk and commits.
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
    fsync_write_replace,
    interleave,
    ratio_table,
    read_back,
    set_env,
    standalone,
    table,
    us,
)

from expkit import Environment, task

KEYS = 100
WARMUP, TIMED = 10, 500
QUICK_WARMUP, QUICK_TIMED = 3, 50
FLOOR_BYTES = 4096


def key_of(i: int) -> str:
    """The key step ``i`` sets."""
    return "k%03d" % (i % KEYS)  # noqa: UP031 - the workload is written this way in BENCHMARKS.md


def value_of(i: int) -> str:
    """The 32-character value step ``i`` sets."""
    return "v" * 24 + "%08d" % i  # noqa: UP031


def initial_state() -> dict[str, str]:
    """The 100 keys ``k000``..``k099``, each a 32-character string."""
    return {"k%03d" % n: "%032d" % n for n in range(KEYS)}  # noqa: UP031


# -- expkit ---------------------------------------------------------------------


@task(new=True, symlink=False)
def w1_expkit_init(env: Environment) -> None:
    """Create the state."""
    env.update(initial_state())


@task
def w1_expkit_step(env: Environment, i: int) -> None:
    """Set one existing key."""
    env["k%03d" % (i % 100)] = "v" * 24 + "%08d" % i  # noqa: UP031


# -- the bare function ------------------------------------------------------------


def bare_step(env: dict[str, Any], i: int) -> None:
    """The step's body on a plain dict: no loading, no commit."""
    env["k%03d" % (i % 100)] = "v" * 24 + "%08d" % i  # noqa: UP031


# -- EnOSlib -----------------------------------------------------------------------


def enoslib_steps() -> tuple[Any, Any]:
    """EnOSlib's init and step, decorated with ``@enostask`` (imported only when run)."""
    from enoslib.task import enostask

    @enostask(new=True, symlink=False)
    def w1_enoslib_init(env: Any = None) -> None:
        env.update(initial_state())

    @enostask()
    def w1_enoslib_step(i: int, env: Any = None) -> None:
        env["k%03d" % (i % 100)] = "v" * 24 + "%08d" % i  # noqa: UP031

    return w1_enoslib_init, w1_enoslib_step


# -- the workload -------------------------------------------------------------------

_READ_BACK = (
    "import sys\n"
    "from expkit import Environment\n"
    "print(Environment.load(sys.argv[1])[sys.argv[2]])\n"
)


def run(*, quick: bool = False, tmp: Path | None = None) -> Section:
    """Run W1 and return its section of the report."""
    warmup, timed = (QUICK_WARMUP, QUICK_TIMED) if quick else (WARMUP, TIMED)
    base = Path(tempfile.mkdtemp(prefix="expkit-bench-w1-", dir=tmp))
    try:
        with chdir(base), env_var(DURABLE_VAR, None):
            return _run(base, warmup, timed)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run(base: Path, warmup: int, timed: int) -> Section:
    durable_dir = base / "expkit-durable"
    fast_dir = base / "expkit-nondurable"
    enos_dir = base / "enoslib"
    floor_dir = base / "floor"
    floor_dir.mkdir()

    set_env(DURABLE_VAR, "1")
    w1_expkit_init(env=str(durable_dir))
    set_env(DURABLE_VAR, "0")
    w1_expkit_init(env=str(fast_dir))
    set_env(DURABLE_VAR, None)
    enos_init, enos_step = enoslib_steps()
    enos_init(env=str(enos_dir))
    plain = initial_state()
    block = b"x" * FLOOR_BYTES

    rows = [
        Row(
            "expkit, durable",
            lambda i: w1_expkit_step(env=str(durable_dir), i=i),
            before=lambda: set_env(DURABLE_VAR, "1"),
        ),
        Row(
            "expkit, `EXPKIT_DURABLE=0`",
            lambda i: w1_expkit_step(env=str(fast_dir), i=i),
            before=lambda: set_env(DURABLE_VAR, "0"),
            after=lambda: set_env(DURABLE_VAR, None),
        ),
        Row("EnOSlib `@enostask()`", lambda i: enos_step(i=i, env=str(enos_dir))),
        Row("bare function on a dict", lambda i: bare_step(plain, i)),
        Row(
            "floor: 4 KB write + fsync + `os.replace`",
            lambda _i: fsync_write_replace(floor_dir, "state", block),
        ),
    ]
    interleave(rows, warmup=warmup, timed=timed, progress="W1")
    durable, fast, enos, bare, floor = rows

    last = warmup + timed - 1
    checks = []
    for row, directory in ((durable, durable_dir), (fast, fast_dir)):
        got = read_back(_READ_BACK, str(directory), key_of(last))
        if got != value_of(last):
            msg = f"W1 {row.name}: {key_of(last)} reads back as {got!r}, not {value_of(last)!r}"
            raise AssertionError(msg)
        checks.append(row.name)

    body = [[row.name, us(row.median), us(row.p95), str(len(row.samples))] for row in rows]
    ratios = [
        Ratio("expkit durable / floor", durable.median / floor.median, 1.5),
        Ratio("expkit `EXPKIT_DURABLE=0` / EnOSlib", fast.median / enos.median, 0.5),
        Ratio("EnOSlib / floor", enos.median / floor.median, None),
        Ratio("expkit durable / expkit `EXPKIT_DURABLE=0`", durable.median / fast.median, None),
        Ratio("expkit `EXPKIT_DURABLE=0` / bare function", fast.median / bare.median, None),
    ]
    markdown = "\n\n".join(
        [
            (
                f"### W1 — small step ({timed} timed steps per row after {warmup} warm-up, "
                "interleaved)"
            ),
            table(["row", "median (us)", "p95 (us)", "n"], body, "lrrr"),
            ratio_table(ratios),
            (
                f"Read back from a fresh process ({len(checks)} expkit rows): "
                f"`env[{key_of(last)!r}] == {value_of(last)!r}`, ok."
            ),
        ]
    )
    return Section("W1", markdown, ratios, ok=all(r.met is not False for r in ratios))


if __name__ == "__main__":
    standalone(run, __doc__, "fewer iterations")
