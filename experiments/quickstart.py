"""Quickstart: time three sorting algorithms over input sizes and seeds, then report.

Run it twice: the second run finds every step DONE in ``./current`` and skips
it; kill it halfway (Ctrl-C, or ``kill -9``) and run it again: only what did
not finish runs again. Results land in ``results/<timestamp>/``.
"""

from __future__ import annotations

import csv
import random
import statistics
import sys
import time
from collections.abc import Callable

from expkit import Environment, NoEnvironmentError, Status, task

SIZES = (1_000, 5_000, 20_000)
SEEDS = (0, 1, 2)


def insertion_sort(values: list[float]) -> list[float]:
    """Quadratic, but quick on small inputs."""
    result: list[float] = []
    for value in values:
        low, high = 0, len(result)
        while low < high:
            middle = (low + high) // 2
            if result[middle] < value:
                low = middle + 1
            else:
                high = middle
        result.insert(low, value)
    return result


def merge_sort(values: list[float]) -> list[float]:
    """Merge sort: O(n log n), in pure Python."""
    if len(values) <= 1:
        return values
    middle = len(values) // 2
    left, right = merge_sort(values[:middle]), merge_sort(values[middle:])
    merged: list[float] = []
    i = j = 0
    while i < len(left) and j < len(right):
        if left[i] <= right[j]:
            merged.append(left[i])
            i += 1
        else:
            merged.append(right[j])
            j += 1
    return merged + left[i:] + right[j:]


ALGORITHMS: dict[str, Callable[[list[float]], list[float]]] = {
    "insertion": insertion_sort,
    "merge": merge_sort,
    "timsort": sorted,
}


@task(new=True)
def setup(env: Environment) -> None:
    """Record the plan of the experiment."""
    env["sizes"] = list(SIZES)
    env["seeds"] = list(SEEDS)
    env["algorithms"] = list(ALGORITHMS)
    env["timings"] = {}


@task(requires=[setup])
def measure(env: Environment) -> int:
    """Time every algorithm on every (size, seed); resumable point by point."""
    timings: dict[str, float] = env["timings"]
    for size in env["sizes"]:
        for seed in env["seeds"]:
            rng = random.Random(seed)  # noqa: S311 - test data, not secrets
            data = [float(v) for v in rng.sample(range(10 * size), size)]
            for name in env["algorithms"]:
                key = f"{name}/{size}/{seed}"
                if key in timings:
                    continue
                start = time.perf_counter()
                if ALGORITHMS[name](list(data)) != sorted(data):
                    raise AssertionError(f"{name} sorted {size} values wrongly")
                timings[key] = time.perf_counter() - start
                env.dump()  # commit each point: a crash loses at most one
    return len(timings)


@task(requires=[measure])
def report(env: Environment) -> str:
    """Write a CSV of medians and a short markdown report into the result directory."""
    rows = []
    for name in env["algorithms"]:
        for size in env["sizes"]:
            runs = [env["timings"][f"{name}/{size}/{seed}"] for seed in env["seeds"]]
            rows.append((name, size, statistics.median(runs)))
    csv_path = env.resultdir / "timings.csv"
    with csv_path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["algorithm", "size", "median_s"])
        writer.writerows(rows)
    lines = ["# Sorting timings", "", "| algorithm | size | median (ms) |", "| --- | ---: | ---: |"]
    lines += [f"| {name} | {size} | {median * 1e3:.2f} |" for name, size, median in rows]
    largest = max(env["sizes"])
    fastest = min((row for row in rows if row[1] == largest), key=lambda row: row[2])
    lines += ["", f"Fastest at n={largest}: **{fastest[0]}**."]
    (env.resultdir / "report.md").write_text("\n".join(lines) + "\n")
    return str(csv_path)


def main() -> int:
    """Run each step unless ./current already has it DONE."""
    try:
        env = Environment.load()
    except NoEnvironmentError:
        setup()
        env = Environment.load()
    for step in (setup, measure, report):
        if env.get_status(step) is Status.DONE:
            print(f"{step.name}: done already, skipped")
            continue
        result = step(env=env)
        print(f"{step.name}: done ({result})" if result is not None else f"{step.name}: done")
    print((env.resultdir / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
