"""W3 for two versions of expkit in one run: an older ``src/`` and the installed one.

Usage: ``python bench/w3_compare.py OLD_SRC [--timed N] [--tmp DIR]``, where
``OLD_SRC`` is the ``src`` directory of the older version (for instance
``git archive COMMIT src | tar -x -C /tmp/old`` then ``/tmp/old/src``). The
rows of ``bench/w3.py`` that run ``exp`` run for both versions (the older one
with ``PYTHONPATH=OLD_SRC``, which comes before an editable install), the doit
rows once, all interleaved; prints a markdown table of medians and the ratios
to doit of each version.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import w3
from _common import DURABLE_VAR, Row, interleave, ms


def _exp_row(
    label: str, env: dict[str, str], fresh: w3.Fresh | None, where: Path | None, ran: int
) -> Row:
    exp = w3.command("exp")
    file, total = ("one.py", 1) if ran == 1 else ("dag.py", w3.STEPS)

    def call(_i: int) -> None:
        cwd = fresh.path if fresh is not None else where
        assert cwd is not None
        out = w3.run_command([exp, "-f", file, "run"], cwd, env)
        w3.check_exp(out, ran=ran, done=total, what=label)

    return Row(
        label,
        call,
        before=fresh.make if fresh is not None else None,
        after=fresh.remove if fresh is not None else None,
    )


def _doit_row(label: str, fresh: w3.Fresh | None, where: Path | None, ran: int) -> Row:
    doit = w3.command("doit")
    one = fresh is not None and fresh.file == "dodo_one.py"
    file, total = ("dodo_one.py", 1) if one else ("dodo.py", w3.STEPS)

    def call(_i: int) -> None:
        cwd = fresh.path if fresh is not None else where
        assert cwd is not None
        out = w3.run_command([doit, "-f", file], cwd, w3.BASE_ENV)
        w3.check_doit(out, ran=ran, skipped=total - ran, what=label)

    return Row(
        label,
        call,
        before=fresh.make if fresh is not None else None,
        after=fresh.remove if fresh is not None else None,
    )


def compare(old_src: Path, base: Path, timed: int) -> str:
    """Run the rows and return the markdown table."""
    versions = {
        "before": {**w3.BASE_ENV, "PYTHONPATH": str(old_src)},
        "after": dict(w3.BASE_ENV),
    }
    rows: list[Row] = []
    for name, env in versions.items():
        done = w3.prepared(base, f"done-{name}", "dag.py", w3.EXP_DAG)
        w3.check_exp(
            w3.run_command([w3.command("exp"), "-f", "dag.py", "run"], done, env),
            ran=w3.STEPS,
            done=w3.STEPS,
            what="seed",
        )
        fast = {**env, DURABLE_VAR: "0"}
        rows += [
            _exp_row(
                f"{name}: first run, durable",
                env,
                w3.Fresh(base, f"first-{name}", "dag.py", w3.EXP_DAG),
                None,
                w3.STEPS,
            ),
            _exp_row(
                f"{name}: first run, `EXPKIT_DURABLE=0`",
                fast,
                w3.Fresh(base, f"fast-{name}", "dag.py", w3.EXP_DAG),
                None,
                w3.STEPS,
            ),
            _exp_row(f"{name}: up to date", env, None, done, 0),
            _exp_row(
                f"{name}: one-step file",
                env,
                w3.Fresh(base, f"one-{name}", "one.py", w3.EXP_ONE),
                None,
                1,
            ),
        ]
    doit_done = w3.prepared(base, "doit-done", "dodo.py", w3.DOIT_DAG)
    w3.run_command([w3.command("doit"), "-f", "dodo.py"], doit_done, w3.BASE_ENV)
    rows += [
        _doit_row(
            "doit: first run",
            w3.Fresh(base, "doit-first", "dodo.py", w3.DOIT_DAG),
            None,
            w3.STEPS,
        ),
        _doit_row("doit: up to date", None, doit_done, 0),
        _doit_row(
            "doit: one-task file", w3.Fresh(base, "doit-one", "dodo_one.py", w3.DOIT_ONE), None, 1
        ),
    ]
    interleave(rows, warmup=1, timed=timed, progress="W3 compare")
    by = {row.name: row.median for row in rows}
    anchors: dict[str, Callable[[], float]] = {
        "first run, durable": lambda: by["doit: first run"],
        "first run, `EXPKIT_DURABLE=0`": lambda: by["doit: first run"],
        "up to date": lambda: by["doit: up to date"],
        "one-step file": lambda: by["doit: one-task file"],
    }
    lines = [
        "| row | before (ms) | after (ms) | doit (ms) | before / doit | after / doit |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for what, anchor in anchors.items():
        old, new, ref = by[f"before: {what}"], by[f"after: {what}"], anchor()
        lines.append(
            f"| {what} | {ms(old)} | {ms(new)} | {ms(ref)} | {old / ref:.2f}x | {new / ref:.2f}x |"
        )
    lines.append("")
    lines.append(f"{timed} timed rounds after 1 warm-up, interleaved; load average {w3.loadavg()}.")
    return "\n".join(lines)


def main() -> None:
    """Parse the command line and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("old_src", type=Path, help="the src directory of the older version")
    parser.add_argument("--timed", type=int, default=12, help="timed rounds (default 12)")
    parser.add_argument("--tmp", type=Path, default=None, help="where to make temporary files")
    args = parser.parse_args()
    if not (args.old_src / "expkit" / "__init__.py").is_file():
        sys.exit(f"{args.old_src}: no expkit package there")
    base = Path(tempfile.mkdtemp(prefix="expkit-bench-w3cmp-", dir=args.tmp))
    try:
        print(compare(args.old_src.resolve(), base, args.timed))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
