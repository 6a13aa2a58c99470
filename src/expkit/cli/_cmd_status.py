"""``exp status``: every step of the environment, with its status, attempts, time and error."""

from collections import Counter
from datetime import datetime
from typing import TYPE_CHECKING, Any

import typer

from ._common import (
    EnvOption,
    FileOption,
    JsonOption,
    QuietOption,
    ResultsOption,
    VerboseOption,
    open_env,
    print_json,
    print_table,
    settle,
    shown_path,
)

if TYPE_CHECKING:
    from expkit import StepRecord

__all__ = ["status"]


def status(
    ctx: typer.Context,
    *,
    as_json: JsonOption = False,
    file: FileOption = None,
    env: EnvOption = None,
    results: ResultsOption = None,
    verbose: VerboseOption = 0,
    quiet: QuietOption = False,
) -> None:
    """Show every step: status, attempts, start, duration and error.

    Steps of the experiment (when one is found) that never ran are listed as pending.
    """
    from expkit import StepRecord

    from ._experiment import load_experiment

    state = settle(ctx, file=file, env=env, results=results, verbose=verbose, quiet=quiet)
    environment = open_env(state)
    assert environment is not None  # noqa: S101 - required=True
    records = dict(environment.steps)
    if load_experiment(state.file, required=False) is not None:
        from expkit._task import registry

        for name in registry:
            prefix = f"{name}["
            if name not in records and not any(r.startswith(prefix) for r in records):
                records[name] = StepRecord(name)
    if as_json:
        print_json(
            {
                "env": str(environment.resultdir),
                "steps": [_as_json(record) for record in records.values()],
            }
        )
        return
    counts = Counter(record.status.value for record in records.values())
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no steps yet"
    rows = [_row(record) for record in records.values()]
    print_table(
        ("step", "status", "attempts", "started", "duration", "error"),
        rows,
        styled=1,
        title=f"{shown_path(environment.resultdir)}: {summary}",
    )


def _when(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _row(record: "StepRecord") -> tuple[str, str, str, str, str, str]:
    from ._progress import seconds

    return (
        record.name,
        record.status.value,
        str(record.attempts) if record.attempts else "",
        _when(record.started),
        ""
        if record.duration is None or record.status.value == "running"
        else seconds(record.duration),
        record.error.summary() if record.error is not None else "",
    )


def _as_json(record: "StepRecord") -> dict[str, Any]:
    error = record.error
    return {
        "name": record.name,
        "status": record.status.value,
        "attempts": record.attempts,
        "started": record.started.isoformat() if record.started else None,
        "ended": record.ended.isoformat() if record.ended else None,
        "duration": record.duration,
        "error": None if error is None else {"type": error.type, "message": error.message},
        "params": record.params,
    }
