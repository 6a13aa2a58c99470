"""Every file in experiments/ runs, as a user would run it."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

from expkit import Environment, Status

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


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
    """Each experiment runs through the installed ``exp`` command, and resumes after kill -9."""

    def test_quickstart(self) -> None:
        """The exp command runs the quickstart's three steps, then finds them all done."""
        first = _exp("-f", str(EXPERIMENTS / "quickstart.py"), "run")
        assert "3 ran; 3 done" in first.stdout
        assert "Fastest at n=20000" in (Path("current") / "report.md").read_text()
        again = _exp("-f", str(EXPERIMENTS / "quickstart.py"), "run")
        assert "0 ran; 3 done" in again.stdout

    def test_cluster_killed_and_resumed(self) -> None:
        """SIGKILLed during the sweep, the next run redoes only what did not finish."""
        cluster = str(EXPERIMENTS / "cluster.py")
        # Each bench instance waits 60 s: the run is killed in the first one.
        with subprocess.Popen(
            [str(EXP), "-f", cluster, "run", "--set", "bench.pause=60"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("block "):  # the first bench instance did its work
                    break
            proc.kill()
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        env = Environment.load()
        provisioned = env.steps["provision"]
        assert env.steps["deploy"].status is Status.DONE
        killed = [name for name, r in env.steps.items() if r.status is Status.INTERRUPTED]
        assert len(killed) == 1
        assert killed[0].startswith("bench[")
        nodes = env["nodes"]
        assert all(Path(home, "bench.sh").is_file() for home in nodes.values())
        resumed = _exp("-f", cluster, "run")
        assert "start     provision" not in resumed.stdout
        assert "start     deploy" not in resumed.stdout
        assert f"start     {killed[0]}  (interrupted (pid {proc.pid}" in resumed.stdout
        assert "released node-1, node-2, node-3" in resumed.stdout
        env = Environment.load()
        assert all(record.status is Status.DONE for record in env.steps.values())
        assert env.steps["provision"].started == provisioned.started  # not run again
        assert env["destroyed"] == sorted(nodes)
        assert not any(Path(home).exists() for home in nodes.values())
        with (env.resultdir / "bench.csv").open() as table:
            assert len(list(csv.DictReader(table))) == 6 * 3  # 6 points x 3 nodes
        status = json.loads(_exp("status", "--json").stdout)
        assert {step["status"] for step in status["steps"]} == {"done"}
