"""The ``exp`` command (typer); imported only when the command runs."""

from __future__ import annotations

import gc

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``exp`` console script."""
    from ._app import app  # typer and rich load only for the command

    # The modules just imported live as long as the process: the cycle
    # collector need not walk their objects again, in the collections of the
    # run and in the last one at exit (about 35 ms of a one-step `exp run`
    # here). Frozen before the experiment file loads, whose objects are
    # collected as usual.
    gc.freeze()
    app()
