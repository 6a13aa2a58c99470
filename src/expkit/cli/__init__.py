"""The ``exp`` command (typer); imported only when the command runs."""

from __future__ import annotations

import gc

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``exp`` console script."""
    # The modules imported here live as long as the process: the cycle
    # collector need not walk their objects, neither while they load (about
    # 40 collections, 6 ms here) nor in the collections of the run and the
    # last one at exit (about 35 ms of a one-step `exp run`). Frozen before
    # the experiment file loads, whose objects are collected as usual.
    gc.disable()
    try:
        from ._app import app  # typer and rich load only for the command
    finally:
        gc.freeze()
        gc.enable()
    app()
