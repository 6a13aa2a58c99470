"""Profile expkit's W1 step alone (cProfile): where a decorated step's time goes.

Usage: ``python bench/prof.py [--durable | --no-durable] [--steps N] [--top N]
[--sort cumulative|tottime] [--out FILE.pstats]``. Not named ``profile.py``:
that would shadow the standard library module cProfile imports.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
from pathlib import Path

from _common import DURABLE_VAR, chdir, env_var
from w1 import w1_expkit_init, w1_expkit_step


def main() -> None:
    """Create a W1 environment, then profile ``--steps`` calls of the step."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--durable", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--sort", default="cumulative", choices=["cumulative", "tottime"])
    parser.add_argument("--out", type=Path, default=None, help="also save the raw pstats")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="expkit-bench-prof-"))
    try:
        with chdir(base), env_var(DURABLE_VAR, "1" if args.durable else "0"):
            path = str(base / "env")
            w1_expkit_init(env=path)
            for i in range(10):  # warm-up: imports, fingerprint cache
                w1_expkit_step(env=path, i=i)
            profiler = cProfile.Profile()
            profiler.enable()
            for i in range(10, 10 + args.steps):
                w1_expkit_step(env=path, i=i)
            profiler.disable()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    stats = pstats.Stats(profiler)
    if args.out is not None:
        stats.dump_stats(args.out)
    stats.sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
