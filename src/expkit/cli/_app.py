"""The typer application behind ``exp``."""

from __future__ import annotations

import typer

from expkit import __version__

app = typer.Typer(
    name="exp",
    help="Run experiment steps that survive crashes. (The commands arrive with the CLI issue.)",
    no_args_is_help=True,
    add_completion=True,
)


@app.command()
def version() -> None:
    """Print expkit's version."""
    typer.echo(__version__)
