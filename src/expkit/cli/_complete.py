"""Shell completion of step names (typer's ``--install-completion`` sets the shell up)."""

import contextlib
import io
from typing import Any

__all__ = ["complete_step"]


def complete_step(ctx: Any, incomplete: str) -> list[str]:
    """The experiment's step names that start with ``incomplete``."""
    given = None
    context = ctx
    while context is not None and given is None:
        given = context.params.get("file")
        context = context.parent
    # Completion must never print or fail: a broken experiment completes nothing.
    with contextlib.suppress(Exception), contextlib.redirect_stdout(io.StringIO()):
        from expkit._task import registry

        from ._experiment import load_experiment

        load_experiment(given, required=False)
        return sorted(name for name in registry if name.startswith(incomplete))
    return []
