"""The README's example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

from .helpers import run_python

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs() -> None:
    """The first Python block of the README runs in a fresh interpreter and directory."""
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert block is not None
    run_python(block.group(1) + "\nprint('ok')\n")
    assert Path("current").is_symlink()
