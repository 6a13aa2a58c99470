"""A systems experiment: provision nodes, deploy a benchmark, run it, back up, tear down.

``provision`` checks the machines it is given and records them, ``deploy``
copies the benchmark to each, ``bench`` is a sweep (block size x repetition)
that runs it on every node at once, ``backup`` brings back what the nodes
wrote, and ``destroy`` cleans up exactly the nodes that ``provision``
recorded. Commands go through ``expkit.shell``: ``run``, ``copy`` and
``rcopy`` over the OpenSSH client, so ``~/.ssh/config``, keys and jump hosts
apply.

The nodes come from the configuration, a YAML file or ``--set``::

    # cluster.yaml, for: exp -f experiments/cluster.py run --config cluster.yaml
    nodes: node[1-4]                  # as ssh names them (NodeSet syntax)
    ssh_config: ~/testbed/ssh_config  # optional: instead of ~/.ssh/config (ssh -F)
    ssh_options: [User=bench]         # optional: more ssh options
    workdir: expkit-cluster           # optional: on each node, under its home

    exp -f experiments/cluster.py run --set nodes='node[1-4]'

Without ``nodes``, everything runs here, on one stand-in node named
``localhost`` whose work directory is in the result directory: no sshd, no
testbed, the same steps. ``bench.pause`` (seconds) makes each bench instance
wait, which leaves time to press Ctrl-C (or ``kill -9`` the run) and see the
next ``exp run`` go on where it stopped::

    exp -f experiments/cluster.py run --set bench.pause=5
    exp -f experiments/cluster.py status
    exp -f experiments/cluster.py log 'bench[block_kb=64,repeat=0]'
"""

from __future__ import annotations

import csv
import re
import shlex
import shutil
import time
from pathlib import Path
from typing import Any

from expkit import Environment, task
from expkit.shell import NodeSet, ShellResult, copy, rcopy, run

#: What `deploy` installs on every node: write COUNT blocks of BLOCK_KB KiB, synced.
BENCH_SCRIPT = """#!/bin/sh
# bench.sh BLOCK_KB COUNT: prints and logs dd's summary (bytes, seconds, speed)
set -e
LC_ALL=C dd if=/dev/zero of=data.bin bs="${1}k" count="$2" conv=fsync 2> dd.out
rm -f data.bin
echo "bs=${1}k: $(tail -n 1 dd.out)" | tee -a results.log
"""


def checked(result: ShellResult, what: str) -> ShellResult:
    """``result``, or an error naming the nodes where ``what`` failed and what they said."""
    if result.max_retcode != 0 or result.timeouts:
        raise RuntimeError(f"{what} failed:\n{result}")
    return result


def setting(env: Environment, section: str, key: str, default: Any) -> Any:
    """A value of the configuration (``exp run --set section.key=...``), or ``default``."""
    config = env.get("config") or {}
    return (config.get(section) or {}).get(key, default)


def on_nodes(env: Environment, cmd: str, **options: Any) -> ShellResult:
    """Run the shell command ``cmd`` in the work directory of every provisioned node."""
    cluster = env["cluster"]
    # A bare `cd` goes home first, so a relative work directory is under the home.
    line = f"cd && cd {shlex.quote(cluster['workdir'])} && {cmd}"
    return checked(run(line, cluster["nodes"], **cluster["ssh"], **options), cmd)


@task(new=True)
def provision(env: Environment) -> list[str]:
    """Check that the configured nodes answer, make their work directory, and record them.

    On a testbed, this is where nodes would be reserved (``oarsub``, ``salloc``...).
    """
    config = env.get("config") or {}
    if config.get("nodes"):
        nodes: str | None = str(NodeSet(config["nodes"]))  # a pattern or a list
        ssh: dict[str, Any] = {}
        if "ssh_options" in config:  # "Key=value" strings, one or a list
            options = config["ssh_options"]
            ssh["ssh_options"] = [options] if isinstance(options, str) else list(options)
        if "ssh_config" in config:  # absolute: later runs may start elsewhere
            ssh["ssh_config"] = str(Path(config["ssh_config"]).expanduser().absolute())
        workdir = str(config.get("workdir", "expkit-cluster"))
    else:  # no nodes: this machine stands in for one, `run` without nodes runs here
        nodes, ssh, workdir = None, {}, str(env.resultdir / "node")
    if workdir.strip("/") in {"", ".", ".."}:
        raise ValueError(f"workdir {workdir!r} would make destroy remove a home or more")
    probe = f"mkdir -p {shlex.quote(workdir)} && uname -n && getconf _NPROCESSORS_ONLN"
    found = checked(run(f"cd && {probe}", nodes, **ssh, timeout=60), "provision")
    # Recorded for every later step, and for destroy even if the configuration changes.
    env["cluster"] = {"nodes": nodes, "ssh": ssh, "workdir": workdir}
    env["hosts"] = {
        node: dict(zip(("hostname", "cpus"), found.buffer(node).split(), strict=True))
        for node in found.nodes
    }
    print(f"provisioned {found.nodes}: {workdir}")
    return list(found.nodes)


@task(requires=[provision], retries=1)
def deploy(env: Environment) -> None:
    """Copy the benchmark into every node's work directory."""
    script = env.resultdir / "bench.sh"
    script.write_text(BENCH_SCRIPT)
    script.chmod(0o755)
    cluster = env["cluster"]
    if cluster["nodes"] is None:  # the stand-in node is this machine: a plain copy
        shutil.copy(script, cluster["workdir"])
    else:  # preserve=True keeps the file executable
        target = f"{cluster['workdir']}/bench.sh"
        copied = copy(script, target, cluster["nodes"], preserve=True, **cluster["ssh"])
        checked(copied, "copy bench.sh")
    env["deployed"] = list(env["hosts"])


@task(requires=[deploy], grid={"block_kb": [4, 64, 1024], "repeat": range(2)})
def bench(env: Environment, block_kb: int, repeat: int) -> dict[str, Any]:
    """Write 1 MiB in blocks of ``block_kb`` KiB on every node at once; MiB/s per node."""
    count = max(1, 1024 // block_kb)
    result = on_nodes(env, f"./bench.sh {block_kb} {count}", timeout=600)
    speeds = {}
    for node in result.nodes:
        # GNU dd: "1048576 bytes (1.0 MB, 1.0 MiB) copied, 0.0041 s, 255 MB/s"
        seconds = re.search(r"copied, ([0-9.e+-]+) s", result.buffer(node))
        if seconds is None:
            raise RuntimeError(f"no time in dd's summary on {node}: {result.buffer(node)!r}")
        speeds[node] = round(count * block_kb / 1024 / float(seconds[1]), 1)
    print(f"block {block_kb} KiB, repeat {repeat}: {speeds} MiB/s")
    time.sleep(float(setting(env, "bench", "pause", 0)))
    return {"block_kb": block_kb, "repeat": repeat, "mib_per_s": speeds}


@task(requires=[bench])
def backup(env: Environment) -> dict[str, str]:
    """Bring back every node's results.log, and write the sweep's results as CSV."""
    logs = env.resultdir / "logs-from-nodes"
    cluster = env["cluster"]
    if cluster["nodes"] is None:
        logs.mkdir(exist_ok=True)
        shutil.copy(Path(cluster["workdir"], "results.log"), logs / "results.log.localhost")
    else:  # each copy is named after its node: results.log.node1, ...
        source = f"{cluster['workdir']}/results.log"
        checked(rcopy(source, logs, cluster["nodes"], **cluster["ssh"]), "rcopy results.log")
    table = env.resultdir / "bench.csv"
    with table.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["block_kb", "repeat", "node", "mib_per_s"])
        for point in env.results(bench).values():
            for node, speed in sorted(point["mib_per_s"].items()):
                writer.writerow([point["block_kb"], point["repeat"], node, speed])
    saved = {"table": str(table), "logs": str(logs)}
    env["backup"] = saved
    return saved


@task(requires=[backup])
def destroy(env: Environment) -> list[str]:
    """Remove the work directory from the nodes ``provision`` recorded, and nothing else."""
    cluster = env["cluster"]
    removed = f"cd && rm -rf -- {shlex.quote(cluster['workdir'])}"
    checked(run(removed, cluster["nodes"], **cluster["ssh"], timeout=60), "destroy")
    released = list(env["hosts"])
    env["destroyed"] = released
    print(f"released {', '.join(released)}")
    return released


if __name__ == "__main__":
    from expkit import make

    print(make(destroy))
