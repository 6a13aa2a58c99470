"""HTML representations for notebooks."""

from __future__ import annotations

import html
import reprlib
from typing import TYPE_CHECKING

from ._errors import ExpkitError

if TYPE_CHECKING:
    from ._environment import Environment

__all__ = ["environment_html"]

_SHORT = reprlib.Repr()
_SHORT.maxstring = 60
_SHORT.maxother = 60


def _short(env: Environment, key: str) -> str:
    try:
        return _SHORT.repr(env[key])
    except ExpkitError as error:
        return f"<unreadable: {error}>"


def environment_html(env: Environment) -> str:
    """A table of data keys with short reprs, then one of step statuses."""
    where = html.escape(repr(env))
    rows = "".join(
        f"<tr><td><code>{html.escape(key)}</code></td>"
        f"<td><code>{html.escape(_short(env, key))}</code></td></tr>"
        for key in sorted(env)
    )
    steps = "".join(
        f"<tr><td><code>{html.escape(name)}</code></td><td>{record.status.value}</td>"
        f"<td>{record.attempts}</td>"
        f"<td>{'' if record.duration is None else f'{record.duration:.3f} s'}</td>"
        f"<td>{html.escape(record.error.summary()) if record.error else ''}</td></tr>"
        for name, record in sorted(env.steps.items())
    )
    return (
        f"<div><p>{where}</p>"
        f"<table><thead><tr><th>key</th><th>value</th></tr></thead><tbody>{rows}</tbody></table>"
        "<table><thead><tr><th>step</th><th>status</th><th>attempts</th><th>duration</th>"
        f"<th>error</th></tr></thead><tbody>{steps}</tbody></table></div>"
    )
