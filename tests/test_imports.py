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
