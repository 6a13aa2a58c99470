"""``exp show``: the environment's data, as short reprs, or one key in full."""

import difflib
import reprlib
from typing import Annotated, Any

import typer

from ._common import (
    EnvOption,
    FileOption,
    JsonOption,
    QuietOption,
    ResultsOption,
    UsageError,
    VerboseOption,
    open_env,
    print_json,
    print_table,
    settle,
    shown_path,
)

__all__ = ["show"]

_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60
_short.maxlist = _short.maxtuple = _short.maxset = _short.maxdict = 6
_short.maxlevel = 3
#: The widest value shown in the table.
_WIDTH = 80


def show(
    ctx: typer.Context,
    *,
    key: Annotated[
        str | None,
        typer.Argument(help="Show this key's value in full.", show_default=False),
    ] = None,
    as_json: JsonOption = False,
    file: FileOption = None,
    env: EnvOption = None,
    results: ResultsOption = None,
    verbose: VerboseOption = 0,
    quiet: QuietOption = False,
) -> None:
    """Show the environment's data: every key with a short repr, or one KEY in full."""
    from ._experiment import load_experiment

    state = settle(ctx, file=file, env=env, results=results, verbose=verbose, quiet=quiet)
    environment = open_env(state)
    assert environment is not None  # noqa: S101 - required=True
    # Values of classes defined in the experiment unpickle once it is loaded.
    load_experiment(state.file, required=False)
    if key is not None:
        if key not in environment:
            close = difflib.get_close_matches(key, list(environment), n=3)
            hint = f" — did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UsageError(f"no key {key!r} in {shown_path(environment.resultdir)}{hint}")
        value = environment[key]
        if as_json:
            print_json(value)
        else:
            import pprint

            print(pprint.pformat(value, width=100, sort_dicts=False))  # noqa: T201
        return
    values = {name: _read(environment, name) for name in environment}
    if as_json:
        print_json(values)
        return
    rows = [(name, type(value).__name__, _brief(value)) for name, value in values.items()]
    print_table(("key", "type", "value"), rows, title=shown_path(environment.resultdir))


def _brief(value: Any) -> str:
    """A repr that fits on one line of a table."""
    text = _short.repr(value).replace("\n", " ")
    return text if len(text) <= _WIDTH else text[: _WIDTH - 3] + "..."


def _read(environment: Any, name: str) -> Any:
    from expkit import CorruptValueError

    try:
        return environment[name]
    except CorruptValueError as error:
        return _Unreadable(error.reason)


class _Unreadable:
    """A value that does not unpickle: shown, not fatal."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"<unreadable: {self.reason}>"
