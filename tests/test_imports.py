"""``import expkit`` stays light: heavy dependencies load only when used."""

from __future__ import annotations

import json

from .helpers import run_python

FORBIDDEN = (
    "typer",
    "rich",
    "click",
    "dask",
    "distributed",
    "cloudpickle",
    "IPython",
    "yaml",
    "numpy",
)


def test_import_loads_no_heavy_dependency() -> None:
    """A fresh interpreter importing expkit loads none of the CLI, Dask, notebook or YAML modules."""
    out = run_python(
        """
        import json, sys
        import expkit
        print(json.dumps(sorted(sys.modules)))
        """
    ).stdout
    loaded = json.loads(out)
    heavy = [name for name in loaded if name.split(".")[0] in FORBIDDEN]
    assert heavy == []


def test_cli_module_is_lazy() -> None:
    """Importing the CLI package does not import typer until the command runs."""
    out = run_python(
        """
        import sys
        import expkit.cli
        print("typer" in sys.modules)
        """
    ).stdout
    assert out.strip() == "False"


def test_import_loads_neither_typing_nor_pathlib() -> None:
    """``typing`` and ``pathlib`` load when first needed, not with expkit.

    Together they were nearly a third of ``import expkit`` (50 ms budget, DESIGN.md
    section 12). Only what a bare interpreter had not loaded already counts.
    """
    out = run_python(
        """
        import json, sys
        before = set(sys.modules)
        import expkit
        print(json.dumps(sorted(set(sys.modules) - before)))
        """
    ).stdout
    loaded = set(json.loads(out))
    assert loaded & {"typing", "pathlib", "urllib.parse", "fnmatch", "ast", "inspect"} == set()
    assert "expkit._task" in loaded  # the check saw expkit's modules load


def test_first_use_loads_pathlib() -> None:
    """Paths still come back as ``pathlib.Path`` once an environment is made."""
    out = run_python(
        """
        import os, sys, tempfile
        import expkit
        os.chdir(tempfile.mkdtemp())
        env = expkit.Environment.create("results", "one")
        print(type(env.resultdir).__name__, env.resultdir.name, "pathlib" in sys.modules)
        """
    ).stdout
    assert out.split() == ["PosixPath", "one", "True"]
