"""HTML representations for notebooks: environments, plans and run reports.

Each renders as a small page that stays small however big the experiment:

- a sweep is one row (its name, how many instances, their counts by action
  or status), its instances in a collapsed ``<details>`` under it;
- a table shows at most :data:`~expkit._tables.MAX_ROWS` rows, then a last
  row "… and 9,950 more (9,950 skip)"; what needs attention (steps that run,
  steps not done) is shown first among those, in the table's order;
- rows are tinted by status, text is escaped, and the only style is a small
  ``<style>`` scoped by the ``expkit-html`` class: no script is needed.

Rendering reads the few records and values it shows: an environment of ten
thousand steps decodes at most a table's worth of them.
"""

from __future__ import annotations

import dataclasses
import html
import itertools
import re
import reprlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from ._errors import ExpkitError
from ._status import Status
from ._tables import MAX_ROWS, html_frame, html_more, html_row

if TYPE_CHECKING:
    from ._environment import Environment
    from ._plan import Plan
    from ._report import RunReport

__all__ = ["environment_html", "natural_key", "plan_html", "report_html"]

_SHORT = reprlib.Repr()
_SHORT.maxstring = 60
_SHORT.maxother = 60

#: Scoped by the wrapper's class: a notebook's own tables keep their style. Selectors
#: outweigh the frontend's (JupyterLab right-aligns cells and shades ``code``).
_STYLE = (
    "<style>"
    ".expkit-html table{border-collapse:collapse;margin:0.3em 0}"
    ".expkit-html table th,.expkit-html table td"
    "{text-align:left;vertical-align:top;padding:0.15em 0.6em}"
    ".expkit-html tr[style] code{background:transparent;color:inherit}"
    ".expkit-html details table{margin-left:1.5em}"
    ".expkit-html summary{cursor:pointer}"
    "</style>"
)

#: A sweep's tint: running while any instance runs, else its worst outcome.
_WORST_FIRST = (
    Status.RUNNING,
    Status.WAITING,
    Status.FAILED,
    Status.INTERRUPTED,
    Status.CANCELLED,
    Status.SKIPPED,
    Status.PENDING,
    Status.DONE,
)
_STATUS_ORDER = tuple(status.value for status in Status)
_ACTION_ORDER = ("run", "skip")
#: Distinct reasons a sweep's row names; the others are counted.
_REASONS = 3

# A number in a name: ``-`` is a sign only right after ``=`` (``x=-1``, not ``run-2``).
_NUMBER = re.compile(r"((?:(?<==)-)?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)")


def natural_key(name: str) -> tuple[list[str | float], str]:
    """A sort key comparing the numbers in names as numbers: ``fit[epochs=50]`` before ``=200``.

    Text and numbers alternate in the same places of every key, so any two
    keys compare; the name itself breaks ties (``7`` and ``07``).
    """
    parts: list[str | float] = _NUMBER.split(name)
    for i in range(1, len(parts), 2):
        parts[i] = float(parts[i])
    return parts, name


def _code(text: str) -> str:
    return f"<code>{html.escape(text)}</code>"


def _step_of(name: str) -> str:
    """The step an instance name ``step[k=v]`` belongs to (a plain name is its own step)."""
    cut = name.find("[")
    return name[:cut] if cut > 0 and name[-1] == "]" else name


def _counted(counts: Counter[str], order: Sequence[str]) -> str:
    """``198 run, 2 skip``: in ``order``, then any other labels."""
    rank = {label: i for i, label in enumerate(order)}
    labels = sorted(counts, key=lambda label: (rank.get(label, len(rank)), label))
    return ", ".join(f"{counts[label]:,} {label}" for label in labels)


def _reasons(reasons: Iterable[str]) -> str:
    """``198 never run; 2 up to date``: the most frequent reasons, the rarer ones counted."""
    counts = Counter(reasons)
    common = counts.most_common(_REASONS)
    text = "; ".join(f"{n:,} {reason}" for reason, n in common)
    if len(counts) > len(common):
        text += f"; {len(counts) - len(common):,} other reasons"
    return text


def _seconds(total: float | None) -> str:
    return "" if total is None else f"{total:.3f} s"


def _pick(notable: Sequence[bool], limit: int) -> list[int]:
    """The indices a table of ``limit`` rows shows, in order: notable ones first, then the rest."""
    if len(notable) <= limit:
        return list(range(len(notable)))
    chosen = list(itertools.islice((i for i, flag in enumerate(notable) if flag), limit))
    if len(chosen) < limit:
        taken = set(chosen)
        chosen += itertools.islice(
            (i for i in range(len(notable)) if i not in taken), limit - len(chosen)
        )
        chosen.sort()
    return chosen


@dataclasses.dataclass
class _Rows:
    """One table's items (plan entries, outcomes or records), told apart by index."""

    header: tuple[str, ...]
    names: list[str]
    #: The step each item is (an instance of).
    steps: list[str]
    statuses: list[Status]
    #: What a sweep's row and the "more" row count: an action, or a status.
    labels: list[str]
    label_order: Sequence[str]
    #: Shown first when the table is truncated.
    notable: list[bool]
    #: The cells (HTML) of one item's row.
    cells: Callable[[int], Sequence[str]]
    #: The cells (HTML) after the name and counts of a sweep's row.
    sweep_cells: Callable[[list[int]], Sequence[str]]
    limit: int = MAX_ROWS

    def table(self) -> str:
        """One row per plain step and per sweep, each sweep's instances under it."""
        groups: dict[str, list[int]] = {}
        for i, step in enumerate(self.steps):
            groups.setdefault(step, []).append(i)
        # A group is a sweep when one of its names is an instance's.
        rows = list(groups.items())
        sweeps = [len(members) > 1 or self.names[members[0]] != step for step, members in rows]
        notable = [
            self.notable[members[0]] if len(members) == 1 else any(self.notable[i] for i in members)
            for _, members in rows
        ]
        shown = _pick(notable, self.limit)
        body = []
        for k in shown:
            step, members = rows[k]
            if sweeps[k]:
                body.append(self._sweep(step, members))
            else:
                body.append(html_row(self.cells(members[0]), self.statuses[members[0]]))
        if len(shown) < len(rows):
            taken = set(shown)
            # A hidden row counts as its first notable item: "run", "failed"...
            labels = Counter(
                self.labels[
                    members[0]
                    if len(members) == 1
                    else next((i for i in members if self.notable[i]), members[0])
                ]
                for k, (_, members) in enumerate(rows)
                if k not in taken
            )
            body.append(
                html_more(
                    len(rows) - len(shown), len(self.header), _counted(labels, self.label_order)
                )
            )
        return html_frame(self.header, "".join(body))

    def _sweep(self, step: str, members: list[int]) -> str:
        """A sweep's row, then a row holding its instances, collapsed."""
        tint = min((self.statuses[i] for i in members), key=_WORST_FIRST.index)
        counts = _counted(Counter(self.labels[i] for i in members), self.label_order)
        cells = [f"{_code(step)} ({len(members):,} instances)", html.escape(counts)]
        row = html_row([*cells, *self.sweep_cells(members)], tint)
        shown = _pick([self.notable[i] for i in members], self.limit)
        inner = [html_row(self.cells(members[j]), self.statuses[members[j]]) for j in shown]
        if len(shown) < len(members):
            taken = set(shown)
            rest = Counter(self.labels[i] for j, i in enumerate(members) if j not in taken)
            inner.append(
                html_more(
                    len(members) - len(shown), len(self.header), _counted(rest, self.label_order)
                )
            )
        details = (
            f'<tr><td colspan="{len(self.header)}"><details>'
            f"<summary>{html.escape(step)}: {len(members):,} instances</summary>"
            f"{html_frame(self.header, ''.join(inner))}</details></td></tr>"
        )
        return row + details


def _page(*parts: str) -> str:
    return f'<div class="expkit-html">{_STYLE}{"".join(parts)}</div>'


# --------------------------------------------------------------------------- plan


def plan_html(plan: Plan) -> str:
    """A plan: what runs and why, a row per step and per sweep."""
    entries = list(plan)
    runs = sum(entry.runs for entry in entries)
    summary = f"<p><b>Plan</b>: {runs} to run, {len(entries) - runs} to skip</p>"
    if not entries:
        return _page(summary)

    def cells(i: int) -> tuple[str, str, str]:
        entry = entries[i]
        return _code(entry.name), entry.action, html.escape(entry.reason)

    def sweep_cells(members: list[int]) -> tuple[str]:
        return (html.escape(_reasons(entries[i].reason for i in members)),)

    rows = _Rows(
        header=("step", "action", "reason"),
        names=[entry.name for entry in entries],
        steps=[entry.step for entry in entries],
        statuses=[entry.status for entry in entries],
        labels=[entry.action for entry in entries],
        label_order=_ACTION_ORDER,
        notable=[entry.runs for entry in entries],
        cells=cells,
        sweep_cells=sweep_cells,
    )
    return _page(summary, rows.table())


# --------------------------------------------------------------------------- report


def report_html(report: RunReport) -> str:
    """A run's outcomes: a row per step and per sweep, with the counts by status."""
    outcomes = list(report.steps.values())
    summary = f"<p>{html.escape(report.summary())}</p>"
    if not outcomes:
        return _page(summary)

    def cells(i: int) -> tuple[str, ...]:
        o = outcomes[i]
        note = o.error.summary() if o.error is not None else ("" if o.ran else o.reason)
        return (
            _code(o.name),
            o.status.value,
            str(o.attempts) if o.ran else "",
            _seconds(o.duration),
            html.escape(note),
        )

    def sweep_cells(members: list[int]) -> tuple[str, ...]:
        ran = [outcomes[i] for i in members if outcomes[i].ran]
        durations = [o.duration for o in ran if o.duration is not None]
        bad = [outcomes[i].name for i in members if outcomes[i].status is not Status.DONE]
        if bad:
            note = "not done: " + ", ".join(bad[:_REASONS]) + (", …" if len(bad) > _REASONS else "")
        else:
            note = _reasons(outcomes[i].reason for i in members if not outcomes[i].ran)
        return (
            f"{sum(o.attempts for o in ran):,}" if ran else "",
            _seconds(sum(durations) if durations else None),
            html.escape(note),
        )

    rows = _Rows(
        header=("step", "status", "attempts", "duration", "note"),
        names=[o.name for o in outcomes],
        steps=[_step_of(o.name) for o in outcomes],
        statuses=[o.status for o in outcomes],
        labels=[o.status.value for o in outcomes],
        label_order=_STATUS_ORDER,
        notable=[o.status is not Status.DONE for o in outcomes],
        cells=cells,
        sweep_cells=sweep_cells,
    )
    return _page(summary, rows.table())


# --------------------------------------------------------------------------- environment


def _short(env: Environment, key: str) -> str:
    try:
        return _SHORT.repr(env[key])
    except ExpkitError as error:
        return f"<unreadable: {error}>"
    except KeyError:  # deleted by another thread since the keys were listed
        return "<deleted>"


def environment_html(env: Environment) -> str:
    """A table of data keys with short reprs, then one of step statuses."""
    keys = sorted(env, key=natural_key)
    data = [html_row([_code(key), _code(_short(env, key))]) for key in keys[:MAX_ROWS]]
    if len(keys) > MAX_ROWS:
        data.append(html_more(len(keys) - MAX_ROWS, 2))
    parts = [f"<p>{html.escape(repr(env))}</p>", html_frame(("key", "value"), "".join(data))]
    records = env._records_snapshot()  # noqa: SLF001 - read without decoding every record
    names = sorted(records, key=natural_key)
    if names:
        statuses = [records.status(name) or Status.PENDING for name in names]

        def cells(i: int) -> tuple[str, ...]:
            record = records[names[i]]
            return (
                _code(record.name),
                record.status.value,
                str(record.attempts),
                _seconds(record.duration),
                html.escape(record.error.summary()) if record.error else "",
            )

        def sweep_cells(members: list[int]) -> tuple[str, ...]:
            briefs = records.briefs(names[i] for i in members)
            spans = [
                b.ended - b.started
                for b in briefs.values()
                if b.started is not None and b.ended is not None
            ]
            failed = [names[i] for i in members if statuses[i] is Status.FAILED]
            error = records[failed[0]].error if failed else None
            note = f"{failed[0]}: {error.summary()}" if error is not None else ""
            if len(failed) > 1:
                note += f" (and {len(failed) - 1:,} more failed)"
            return "", _seconds(sum(spans) if spans else None), html.escape(note)

        steps = _Rows(
            header=("step", "status", "attempts", "duration", "error"),
            names=names,
            steps=[_step_of(name) for name in names],
            statuses=statuses,
            labels=[status.value for status in statuses],
            label_order=_STATUS_ORDER,
            notable=[status is not Status.DONE for status in statuses],
            cells=cells,
            sweep_cells=sweep_cells,
        )
        parts.append(steps.table())
    return _page(*parts)
