"""Every file in experiments/ runs, as a user would run it."""

from __future__ import annotations

import csv
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
