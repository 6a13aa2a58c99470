"""Tables as plain text (terminals, logs) and HTML (notebooks)."""

from __future__ import annotations

import html
from collections.abc import Sequence

from ._status import Status

__all__ = ["STATUS_COLOURS", "html_table", "text_table"]

#: One colour per status, shared by the HTML tables and the graph exports.
STATUS_COLOURS = {
    Status.PENDING: "#d9d9d9",
    Status.WAITING: "#d9d9d9",
    Status.RUNNING: "#9ecae1",
    Status.DONE: "#a1d99b",
    Status.FAILED: "#fc9272",
    Status.SKIPPED: "#fdd0a2",
    Status.CANCELLED: "#bcbddc",
    Status.INTERRUPTED: "#fdae6b",
}


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the last column is not padded."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]

    def line(cells: Sequence[str]) -> str:
        padded = [str(cell).ljust(width) for cell, width in zip(cells, widths, strict=False)]
        return "  ".join([*padded, str(cells[-1])]).rstrip()

    rule = "  ".join(["-" * w for w in widths] + ["-" * len(header[-1])])
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def html_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, status: Sequence[Status] = ()
) -> str:
    """An HTML table; rows tinted by ``status`` when given."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        tint = f' style="background:{STATUS_COLOURS[status[i]]}"' if i < len(status) else ""
        cells = "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row)
        body.append(f"<tr{tint}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
