"""Tables as plain text (terminals, logs) and HTML (notebooks)."""

from __future__ import annotations

import html
from collections.abc import Sequence

from ._status import Status

__all__ = [
    "MAX_ROWS",
    "STATUS_COLOURS",
    "html_frame",
    "html_more",
    "html_row",
    "html_table",
    "text_table",
]

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


#: Rows an HTML table shows; the rest are counted in its last row ("… and 9,950 more").
#: A notebook output of ten thousand rows freezes the browser that shows it.
MAX_ROWS = 50


def html_row(cells: Sequence[str], status: Status | None = None) -> str:
    """A row of cells that are HTML already (escape text first), tinted by ``status``."""
    tint = "" if status is None else f' style="background:{STATUS_COLOURS[status]};color:#000"'
    return f"<tr{tint}>{''.join(f'<td>{cell}</td>' for cell in cells)}</tr>"


def html_more(hidden: int, columns: int, counts: str = "") -> str:
    """The last row of a truncated table: how many rows it does not show, and what they are."""
    what = f" ({html.escape(counts)})" if counts else ""
    return f'<tr><td colspan="{columns}"><i>… and {hidden:,} more{what}</i></td></tr>'


def html_frame(header: Sequence[str], body: str) -> str:
    """A table of ``header`` around rows made already."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    status: Sequence[Status] = (),
    limit: int = MAX_ROWS,
) -> str:
    """An HTML table of text cells (escaped here); rows tinted by ``status`` when given.

    The first ``limit`` rows are shown, and a last row counts the others.
    """
    body = [
        html_row([html.escape(str(cell)) for cell in row], status[i] if i < len(status) else None)
        for i, row in enumerate(rows[:limit])
    ]
    if len(rows) > limit:
        body.append(html_more(len(rows) - limit, len(header)))
    return html_frame(header, "".join(body))
