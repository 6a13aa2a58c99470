"""Run the benchmarks of BENCHMARKS.md and report medians, p95 and ratios.

Usage: ``python bench/run.py [--quick] [--only W1,W3] [--tmp DIR] [--output FILE] [--strict]``.
Prints a markdown report and writes it to ``build/bench/latest.md`` (a
generated file: figures worth keeping are copied into ``docs/performance.md``).
With ``--strict``, exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from importlib import import_module
from pathlib import Path

from _common import ROOT, Section, machine_info

#: Each workload's module in bench/, imported only when the workload is asked for.
WORKLOADS = {
    "W1": "w1",
    "W2": "w2",
    "W3": "w3",
    "W4": "w4",
    "W4DASK": "w4_dask",
    "SHELL": "shell",
    "FAULTS": "faults",
}


def _runner(name: str) -> Callable[..., Section]:
    """The ``run`` function of one workload."""
    module = WORKLOADS.get(name)
    if module is None:
        msg = f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}"
        raise SystemExit(msg)
    run: Callable[..., Section] = import_module(module).run
    return run


def _selected(only: str | None) -> list[str]:
    if not only:
        return list(WORKLOADS)
    names = [part.strip().upper() for part in only.split(",") if part.strip()]
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        msg = f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}"
        raise SystemExit(msg)
    return names


def report(sections: list[Section], *, quick: bool, seconds: float) -> str:
    """The whole markdown report."""
    mode = (
        "--quick (fewer iterations, smaller W2 array: targets indicative only)" if quick else "full"
    )
    lines = [
        "# Benchmark results (generated)",
        "",
        "<!-- Written by bench/run.py; do not edit. Copy figures into docs/performance.md. -->",
        "",
        f"Machine: {machine_info()}.",
        "",
        (
            f"Mode: {mode}; took {seconds:.0f} s. Times are wall clock "
            "(`time.perf_counter_ns`) of one call each; the rows of a workload run "
            "interleaved in one process, and only ratios of medians from the same run are "
            "meant to be compared."
        ),
    ]
    for section in sections:
        lines += ["", section.markdown]
    missed = [
        f"{section.title}: {ratio.name}"
        for section in sections
        for ratio in section.ratios
        if ratio.met is False
    ]
    lines += ["", "## Summary", ""]
    if missed:
        lines += [f"Targets missed ({len(missed)}):", ""] + [f"- {item}" for item in missed]
    else:
        lines.append("Every target met.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, run the workloads, print and write the report."""
    parser = argparse.ArgumentParser(description="Run expkit's benchmarks (BENCHMARKS.md).")
    parser.add_argument("--quick", action="store_true", help="fewer iterations, smaller data")
    parser.add_argument("--only", default=None, help="comma-separated workloads, e.g. W1,W2")
    parser.add_argument(
        "--tmp", type=Path, default=None, help="directory for temporary environments"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "build" / "bench" / "latest.md",
        help="where to write the report (default: build/bench/latest.md)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)

    start = time.monotonic()
    sections = []
    for name in _selected(args.only):
        print(f"running {name}...", file=sys.stderr, flush=True)
        sections.append(_runner(name)(quick=args.quick, tmp=args.tmp))
    text = report(sections, quick=args.quick, seconds=time.monotonic() - start)
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"written to {args.output}", file=sys.stderr)
    missed = not all(section.ok for section in sections)
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
