"""``exp envs`` lists the environments under the results directory; ``exp use`` picks one."""

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from ._common import (
    EnvOption,
    FileOption,
    QuietOption,
    ResultsOption,
    VerboseOption,
    env_exists,
    print_table,
    settle,
    shown_path,
)

__all__ = ["envs", "use"]


def envs(
    ctx: typer.Context,
    *,
    file: FileOption = None,
    env: EnvOption = None,
    results: ResultsOption = None,
    verbose: VerboseOption = 0,
    quiet: QuietOption = False,
) -> None:
    """List the environments under the results directory; `*` marks ./current."""
    from expkit import Environment, ExpkitError
    from expkit._paths import CURRENT_LINK, default_root

    settle(ctx, file=file, env=env, results=results, verbose=verbose, quiet=quiet)
    root = default_root()
    found = sorted(p for p in root.iterdir() if env_exists(p)) if root.is_dir() else []
    if not found:
        print(f"no environments under {shown_path(root)}/ — `exp run` makes one")  # noqa: T201
        return
    link = Path(CURRENT_LINK)
    current = link.resolve() if link.exists() else None
    rows = []
    for path in found:
        try:
            steps = Environment.load(path).steps
            counts = Counter(record.status.value for record in steps.values())
            summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no steps yet"
        except (ExpkitError, OSError) as error:
            summary = f"unreadable: {error}"
        mark = "*" if current is not None and path.resolve() == current else ""
        rows.append((mark, path.name, summary))
    print_table(("", "environment", "steps"), rows, title=f"{shown_path(root)}/")


def use(
    ctx: typer.Context,
    *,
    target: Annotated[
        str,
        typer.Argument(
            metavar="ENV", help="An environment: a name under the results directory, or a path."
        ),
    ],
    file: FileOption = None,
    env: EnvOption = None,
    results: ResultsOption = None,
    verbose: VerboseOption = 0,
    quiet: QuietOption = False,
) -> None:
    """Point ./current at another environment (atomically)."""
    from expkit import NoEnvironmentError
    from expkit._paths import CURRENT_LINK, default_root, repoint

    settle(ctx, file=file, env=env, results=results, verbose=verbose, quiet=quiet)
    root = default_root()
    for candidate in (Path(target), root / target):
        if env_exists(candidate):
            path = candidate.parent if candidate.is_file() else candidate
            repoint(CURRENT_LINK, path)
            print(f"current -> {shown_path(path)}")  # noqa: T201
            return
    raise NoEnvironmentError(
        target, f"not an environment, nor the name of one under {shown_path(root)}/ (see exp envs)"
    )
