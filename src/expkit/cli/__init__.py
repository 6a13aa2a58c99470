"""The ``exp`` command (typer); imported only when the command runs."""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``exp`` console script."""
    from ._app import app  # typer and rich load only for the command

    app()
