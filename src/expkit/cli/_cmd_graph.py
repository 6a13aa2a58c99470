"""``exp graph``: the dependency graph, coloured by status."""

import enum
import re
from typing import Annotated

import typer

from ._cmd_run import Targets
from ._common import (
    STATUS_STYLES,
    EnvOption,
    FileOption,
    QuietOption,
    ResultsOption,
    VerboseOption,
    is_terminal,
    settle,
)

__all__ = ["GraphFormat", "graph"]


class GraphFormat(str, enum.Enum):
    """How the graph is written."""

    dot = "dot"
    mermaid = "mermaid"
    ascii = "ascii"


def graph(
    ctx: typer.Context,
    *,
    targets: Targets = None,
    fmt: Annotated[
        GraphFormat,
        typer.Option(
            "--format",
            help="Graphviz DOT (pipe it to `dot -Tsvg`), Mermaid, or a text tree.",
        ),
    ] = GraphFormat.ascii,
    file: FileOption = None,
    env: EnvOption = None,
    results: ResultsOption = None,
    verbose: VerboseOption = 0,
    quiet: QuietOption = False,
) -> None:
    """Print the steps' dependency graph with each step's status. Works without an environment."""
    from ._cmd_plan import plan_for
    from ._experiment import load_experiment

    state = settle(ctx, file=file, env=env, results=results, verbose=verbose, quiet=quiet)
    load_experiment(state.file)
    text = plan_for(state, list(targets or ()), [], {}).graph(fmt.value)
    if fmt is GraphFormat.ascii and is_terminal():
        from rich.console import Console
        from rich.text import Text

        shown = Text(text.rstrip("\n"))
        for match in re.finditer(r"\[(\w+)\]", text):
            shown.stylize(STATUS_STYLES.get(match[1], ""), match.start(), match.end())
        Console(highlight=False).print(shown)
    else:
        print(text, end="")  # noqa: T201 - the command's output
