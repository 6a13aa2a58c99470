"""Every file in experiments/ runs, as a user would run it."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from expkit import Environment, Status

from ._sshd import LoopbackSshd, loopback_sshd

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
CLUSTER = str(EXPERIMENTS / "cluster.py")


def _run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXPERIMENTS / script)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )


class TestQuickstart:
    """The README's main job: a real experiment that resumes instead of re-running."""

    def test_runs_then_skips_everything(self) -> None:
        """A first run writes the CSV and report; a second run skips every DONE step."""
        first = _run("quickstart.py")
        assert "report: done" in first.stdout
        env = Environment.load()
        assert all(env.get_status(step) is Status.DONE for step in ("setup", "measure", "report"))
        with (env.resultdir / "timings.csv").open() as table:
            rows = list(csv.DictReader(table))
        assert len(rows) == 9
        assert all(float(row["median_s"]) > 0 for row in rows)
        assert "Fastest at n=20000" in (env.resultdir / "report.md").read_text()
        second = _run("quickstart.py")
        assert second.stdout.count("done already, skipped") == 3
        assert Environment.load().resultdir == env.resultdir


EXP = Path(sys.executable).with_name("exp")


def _exp(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(EXP), *args], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == code, (
        f"exp {args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    )
    return result


class TestThroughExp:
    """The quickstart runs through the installed ``exp`` command (cluster.py: TestCluster)."""

    def test_quickstart(self) -> None:
        """The exp command runs the quickstart's three steps, then finds them all done."""
        first = _exp("-f", str(EXPERIMENTS / "quickstart.py"), "run")
        assert "3 ran; 3 done" in first.stdout
        assert "Fastest at n=20000" in (Path("current") / "report.md").read_text()
        again = _exp("-f", str(EXPERIMENTS / "quickstart.py"), "run")
        assert "0 ran; 3 done" in again.stdout


# -- experiments/cluster.py ----------------------------------------------------------------


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    """Four loopback nodes, ``node1`` .. ``node4``, each with a home of its own."""
    with loopback_sshd(tmp_path_factory.mktemp("sshd"), 4, separate_homes=True) as server:
        yield server


def _configure(sshd: LoopbackSshd, nodes: str, **more: Any) -> tuple[str, str]:
    """Write ``cluster.yaml`` naming ``nodes``, with a work directory of this test's own."""
    # The fixture's nodes serve every test of the module: each test works apart.
    workdir = f"work-{Path.cwd().name}"
    lines = [f"nodes: {nodes}", f"ssh_config: {sshd.ssh_config}", f"workdir: {workdir}"]
    lines += [f"{key}: {json.dumps(value)}" for key, value in more.items()]
    Path("cluster.yaml").write_text("\n".join(lines) + "\n")
    return "cluster.yaml", workdir


def _results_log(path: Path) -> list[str]:
    """The block sizes that bench.sh logged in ``path``, one per run."""
    return [line.split(":")[0] for line in path.read_text().splitlines()]


BLOCKS = ["bs=4k", "bs=4k", "bs=64k", "bs=64k", "bs=1024k", "bs=1024k"]


class TestCluster:
    """experiments/cluster.py through ``exp``: loopback ssh nodes, or this machine alone."""

    def test_without_nodes_runs_here(self) -> None:
        """With no nodes configured, every step runs on the stand-in node ``localhost``."""
        first = _exp("-f", CLUSTER, "run")
        assert "10 ran; 10 done" in first.stdout
        assert "released localhost" in first.stdout
        env = Environment.load()
        assert env["cluster"] == {
            "nodes": None,
            "ssh": {},
            "workdir": str(env.resultdir / "node"),
        }
        assert list(env["hosts"]) == ["localhost"]
        assert int(env["hosts"]["localhost"]["cpus"]) >= 1
        fetched = env.resultdir / "logs-from-nodes" / "results.log.localhost"
        assert sorted(_results_log(fetched)) == sorted(BLOCKS)
        with (env.resultdir / "bench.csv").open() as table:
            assert [row["node"] for row in csv.DictReader(table)] == ["localhost"] * 6
        assert not (env.resultdir / "node").exists()
        assert "0 ran; 10 done" in _exp("-f", CLUSTER, "run").stdout

    def test_runs_on_every_node(self, sshd: LoopbackSshd) -> None:
        """Each node gets the script, runs every bench instance, and its log comes back."""
        config, workdir = _configure(sshd, "node[1-3]", ssh_options="ConnectTimeout=30")
        first = _exp("-f", CLUSTER, "run", "--config", config, "backup")
        assert "9 ran; 9 done" in first.stdout
        env = Environment.load()
        assert env["cluster"] == {
            "nodes": "node[1-3]",
            "ssh": {"ssh_options": ["ConnectTimeout=30"], "ssh_config": str(sshd.ssh_config)},
            "workdir": workdir,
        }
        assert list(env["hosts"]) == ["node1", "node2", "node3"]
        points = env.results("bench").values()
        assert len(points) == 6
        for point in points:
            assert sorted(point["mib_per_s"]) == ["node1", "node2", "node3"]
            assert all(speed > 0 for speed in point["mib_per_s"].values())
        script = (env.resultdir / "bench.sh").read_text()
        for node in ("node1", "node2", "node3"):
            there = sshd.homes[node] / workdir
            assert (there / "bench.sh").read_text() == script  # copied there...
            assert (there / "bench.sh").stat().st_mode & 0o100
            back = env.resultdir / "logs-from-nodes" / f"results.log.{node}"
            assert back.read_text() == (there / "results.log").read_text()  # ...and back
            assert sorted(_results_log(back)) == sorted(BLOCKS)
        assert not (sshd.homes["node4"] / workdir).exists()
        with (env.resultdir / "bench.csv").open() as table:
            assert len(list(csv.DictReader(table))) == 6 * 3
        last = _exp("-f", CLUSTER, "run")
        assert "1 ran; 10 done" in last.stdout
        assert "released node1, node2, node3" in last.stdout
        assert not any((sshd.homes[node] / workdir).exists() for node in sshd.nodes)

    def test_killed_and_resumed(self, sshd: LoopbackSshd) -> None:
        """SIGKILLed during the sweep, the next run redoes only what did not finish.

        The configuration then names other nodes: ``destroy`` still cleans up
        the ones ``provision`` recorded, and leaves the others alone.
        """
        config, workdir = _configure(sshd, "node[1-3]")
        # Each bench instance waits 60 s: the run is killed in the first one.
        with subprocess.Popen(
            [str(EXP), "-f", CLUSTER, "run", "--config", config, "--set", "bench.pause=60"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as proc:
            deadline = threading.Timer(120, proc.kill)  # never wait for ever
            deadline.start()
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("block "):  # the first bench instance did its work
                    break
            proc.kill()
            proc.wait(timeout=30)
            deadline.cancel()
        assert proc.returncode == -signal.SIGKILL
        env = Environment.load()
        before = {name: env.steps[name].started for name in ("provision", "deploy")}
        assert env.steps["deploy"].status is Status.DONE
        killed = [name for name, r in env.steps.items() if r.status is Status.INTERRUPTED]
        assert killed == ["bench[block_kb=4,repeat=0]"]
        for node in ("node1", "node2", "node3"):
            assert _results_log(sshd.homes[node] / workdir / "results.log") == ["bs=4k"]

        # Another set of nodes now; node4 holds something of its own in the work directory.
        _configure(sshd, "node[2-4]")
        kept = sshd.homes["node4"] / workdir / "keep"
        kept.parent.mkdir()
        kept.write_text("not provisioned here\n")
        resumed = _exp("-f", CLUSTER, "run", "--config", config)
        assert "start     provision" not in resumed.stdout
        assert "start     deploy" not in resumed.stdout
        assert f"start     {killed[0]}  (interrupted (pid {proc.pid}" in resumed.stdout
        assert "10 done" in resumed.stdout
        assert "released node1, node2, node3" in resumed.stdout
        env = Environment.load()
        assert all(record.status is Status.DONE for record in env.steps.values())
        assert {name: env.steps[name].started for name in before} == before  # not run again
        for node in ("node1", "node2", "node3"):
            # The killed instance ran twice, every other instance once.
            back = env.resultdir / "logs-from-nodes" / f"results.log.{node}"
            assert sorted(_results_log(back)) == sorted(["bs=4k", *BLOCKS])
            assert not (sshd.homes[node] / workdir).exists()
        assert kept.read_text() == "not provisioned here\n"
        assert env["destroyed"] == ["node1", "node2", "node3"]
        status = json.loads(_exp("status", "--json").stdout)
        assert {step["status"] for step in status["steps"]} == {"done"}

    def test_unreachable_node_fails_provision(self, sshd: LoopbackSshd) -> None:
        """A node ssh cannot reach fails ``provision``, which names it; nothing else runs."""
        given = ["--set", "nodes=node1,down", "--set", f"ssh_config={sshd.ssh_config}"]
        failed = _exp("-f", CLUSTER, "run", *given, code=1)
        assert "failed: provision" in failed.stdout
        log = (Path("current") / "logs" / "provision.log").read_text()
        assert "down: exit 255" in log
        env = Environment.load()
        assert env.steps["provision"].status is Status.FAILED
        assert "cluster" not in env

    def test_on_nodes_started_by_hand(self) -> None:
        """``python -m tests._sshd 2``, as the how-to says, gives nodes cluster.py runs on."""
        with subprocess.Popen(
            [sys.executable, "-m", "tests._sshd", "2"],
            cwd=EXPERIMENTS.parent,
            stdout=subprocess.PIPE,
            text=True,
        ) as nodes:
            deadline = threading.Timer(60, nodes.kill)  # never wait for ever
            deadline.start()
            assert nodes.stdout is not None
            said = {}
            for line in nodes.stdout:
                key, _, value = line.strip().partition(": ")
                said[key] = value
                if key == "cluster config":
                    break
            deadline.cancel()
            config = Path(said["cluster config"])
            try:
                ran = _exp("-f", CLUSTER, "run", "--config", str(config))
            finally:
                nodes.send_signal(signal.SIGINT)
                nodes.wait(timeout=30)
        assert "released node1, node2" in ran.stdout
        assert nodes.returncode == 0
        assert not config.parent.exists()  # the keys and homes are gone with the nodes
