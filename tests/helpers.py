"""Helpers shared by the tests."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

#: A process that runs ``count`` steps named ``step-<me>`` on one environment,
#: each committing its own key ``<me>-<j>``: ``python -c STEPPER PATH ME COUNT``.
#: Several at once show that concurrent steps lose no update (the tests, and
#: bench/faults.py at full size).
STEPPER = textwrap.dedent(
    """
    import sys
    from expkit import task

    path, me, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

    @task(name=f"step-{me}")
    def step(env, j):
        env[f"{me}-{j}"] = j

    for j in range(count):
        step(env=path, j=j)
    """
)


def run_python(
    code: str, *, cwd: Path | None = None, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (a real separate process) and return its outcome."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=cwd or Path.cwd(),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )
    if check and result.returncode != 0:
        msg = f"child failed ({result.returncode}):\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        raise AssertionError(msg)
    return result
