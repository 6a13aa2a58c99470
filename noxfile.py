"""Development sessions: ``nox -s tests`` (the default), lint, typecheck, docs, bench, build.

Every session but ``compat`` runs on the interpreter that runs nox, so CI and
developers need no particular Python version installed. Dependencies come from
``pyproject.toml`` extras.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent

# A bare `nox` runs only the tests; the other sessions are asked for by name.
nox.options.sessions = ["tests"]

#: The Python versions expkit supports (pyproject.toml's classifiers).
SUPPORTED_PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

# Python sources that lint checks, when they exist (bench/ and experiments/ come later).
LINT_CANDIDATES = ("src", "tests", "bench", "experiments", "docs", "noxfile.py")


def _existing(*names: str) -> list[str]:
    return [name for name in names if (ROOT / name).exists()]


def _test_suite(session: nox.Session) -> None:
    session.install("-e", ".[test,dask]")
    session.run("pytest", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite, slow fault-injection and Dask tests included."""
    _test_suite(session)


@nox.session(python=SUPPORTED_PYTHONS)
def compat(session: nox.Session) -> None:
    """The test suite on each supported Python that nox finds (``nox -s compat``).

    Nox looks for ``python3.10`` and so on; a missing one is skipped with a
    warning. With pyenv, make them all visible at once, for instance
    ``PYENV_VERSION=3.11.7:3.10.13:3.12.1:3.13.0 nox -s compat``.
    """
    _test_suite(session)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff."""
    session.install("ruff")
    paths = _existing(*LINT_CANDIDATES)
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check src/ and tests/ with mypy (strict)."""
    session.install("-e", ".[test,dask]", "mypy", "types-PyYAML")
    session.run("mypy", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation, warnings as errors, into build/site."""
    session.install("-e", ".[docs]")
    generator = ROOT / "docs" / "gen_cli_reference.py"
    if generator.exists():
        session.run("python", str(generator))
    session.run("mkdocs", "build", "--strict", "--site-dir", "build/site")


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks of BENCHMARKS.md against their anchors (EnOSlib, doit, Dask, clush)."""
    # The anchors live in this session's virtualenv only, never in the package's
    # dependencies. enoslib pins rich~=12.0 while expkit needs rich>=13 (as typer does):
    # resolved together, pip backtracks through every enoslib release and fails on an
    # unbuildable one. So enoslib goes in first and expkit is installed over it; pip
    # reports the conflict but exits 0, and @enostask works with the newer rich.
    session.install("enoslib")
    session.install("-e", ".[dask]", "doit", "numpy", "ClusterShell")
    session.run("python", "bench/run.py", *session.posargs)


@nox.session
def build(session: nox.Session) -> None:
    """Build the sdist and wheel into build/dist and check them with twine."""
    session.install("build", "twine")
    dist = ROOT / "build" / "dist"
    # Stale artifacts from an earlier version would be checked (and uploaded) too.
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist))
    session.run("twine", "check", "--strict", *sorted(str(p) for p in dist.iterdir()))
