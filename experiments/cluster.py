"""A systems experiment: provision nodes, deploy a benchmark, run it, back up, tear down.

The shape is that of a testbed experiment: ``provision`` reserves machines and
records them, ``deploy`` installs the software on each, ``bench`` is a sweep
(block size x repetition) that runs the benchmark on every node, ``backup``
gathers what the nodes wrote, and ``destroy`` releases exactly the nodes that
``provision`` recorded. Here the nodes are stand-ins: directories of this
machine, and each command runs locally through ``expkit.shell.run`` with
``nodes=None``. On a real testbed, ``provision`` would record host names and
the same commands would run on them with ``run(cmd, nodes)``.

Run it, look at it, resume it::

    exp -f experiments/cluster.py run                 # everything
    exp -f experiments/cluster.py status
    exp -f experiments/cluster.py log 'bench[block_kb=64,repeat=0]'
    exp -f experiments/cluster.py run -p provision.count=5 --new

Settings come from the configuration (``--config FILE`` or ``--set``):
``bench.pause`` makes each bench instance wait that many seconds, which leaves
time to press Ctrl-C (or to ``kill -9`` the run) and see that the next
``exp run`` goes on where it stopped.
"""

from __future__ import annotations

import csv
import logging
import shlex
import time
from pathlib import Path
from typing import Any

from expkit import Environment, task
from expkit.shell import ShellResult, run

log = logging.getLogger("cluster")

#: What `deploy` installs on every node: write COUNT blocks of BLOCK_KB KiB, synced.
BENCH_SCRIPT = """#!/bin/sh
# bench.sh BLOCK_KB COUNT
set -e
dd if=/dev/zero of=data.bin bs="${1}k" count="$2" conv=fsync 2>/dev/null
rm -f data.bin
echo "bs=${1}k count=$2 ok" >> results.log
"""


def checked(result: ShellResult, what: str) -> ShellResult:
    """``result``, or an error naming the nodes where ``what`` failed."""
    if result.max_retcode != 0 or result.timeouts:
        raise RuntimeError(f"{what} failed:\n{result}")
    return result


def setting(env: Environment, section: str, key: str, default: Any) -> Any:
    """A value of the configuration (``exp run --set section.key=...``), or ``default``."""
    config = env.get("config") or {}
    return (config.get(section) or {}).get(key, default)


@task(new=True)
def provision(env: Environment, count: int = 3) -> list[str]:
    """Reserve ``count`` stand-in nodes and record them: ``destroy`` releases these."""
    root = env.resultdir / "nodes"
    nodes = {f"node-{i}": str(root / f"node-{i}") for i in range(1, count + 1)}
    checked(run(["mkdir", "-p", *nodes.values()]), "mkdir")
    env["nodes"] = nodes
    print(f"provisioned {count} nodes under {root}")
    return sorted(nodes)


@task(requires=[provision], retries=1)
def deploy(env: Environment) -> None:
    """Install the benchmark on every node."""
    for name, home in env["nodes"].items():
        script = shlex.quote(f"{home}/bench.sh")
        checked(run(f"cat > {script} && chmod 700 {script}", stdin=BENCH_SCRIPT), f"deploy {name}")
        log.info("deployed bench.sh on %s", name)
    env["deployed"] = sorted(env["nodes"])


@task(requires=[deploy], grid={"block_kb": [4, 64, 1024], "repeat": range(2)})
def bench(env: Environment, block_kb: int, repeat: int) -> dict[str, Any]:
    """Write 1 MiB in blocks of ``block_kb`` KiB on every node; MiB/s per node."""
    count = max(1, 1024 // block_kb)
    speeds = {}
    for name, home in env["nodes"].items():
        start = time.perf_counter()
        checked(run(f"cd {shlex.quote(home)} && ./bench.sh {block_kb} {count}"), f"bench {name}")
        speeds[name] = round(count * block_kb / 1024 / (time.perf_counter() - start), 1)
    print(f"block {block_kb} KiB, repeat {repeat}: {speeds} MiB/s")
    time.sleep(float(setting(env, "bench", "pause", 0)))
    return {"block_kb": block_kb, "repeat": repeat, "mib_per_s": speeds}


@task(requires=[bench])
def backup(env: Environment) -> str:
    """Write the sweep's results as CSV and archive what each node logged."""
    table = env.resultdir / "bench.csv"
    with table.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["block_kb", "repeat", "node", "mib_per_s"])
        for point in env.results("bench").values():
            for node, speed in sorted(point["mib_per_s"].items()):
                writer.writerow([point["block_kb"], point["repeat"], node, speed])
    archive = env.resultdir / "backup.tar.gz"
    homes = [Path(home) for home in env["nodes"].values()]
    files = [f"{home.name}/results.log" for home in homes]
    checked(run(["tar", "czf", str(archive), "-C", str(homes[0].parent), *files]), "tar")
    env["backup"] = {"table": str(table), "archive": str(archive)}
    return str(archive)


@task(requires=[backup])
def destroy(env: Environment) -> list[str]:
    """Release the nodes ``provision`` recorded, and nothing else."""
    nodes: dict[str, str] = env["nodes"]
    checked(run(["rm", "-rf", "--", *nodes.values()]), "rm")
    env["destroyed"] = sorted(nodes)
    print(f"released {', '.join(sorted(nodes))}")
    return sorted(nodes)


if __name__ == "__main__":
    from expkit import make

    print(make(destroy))
