"""A plan's graph as text: Graphviz DOT, Mermaid, or an indented tree.

Output depends only on the plan (graph order, names, statuses), so the same
experiment in the same state always gives the same text.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ._tables import STATUS_COLOURS

if TYPE_CHECKING:
    from ._plan import Plan, PlanEntry

__all__ = ["FORMATS", "export"]

FORMATS = ("dot", "mermaid", "ascii")


def export(plan: Plan, fmt: str) -> str:
    """The graph of ``plan`` in ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "dot":
        return _dot(plan)
    if fmt == "mermaid":
        return _mermaid(plan)
    if fmt == "ascii":
        return _ascii(plan)
    msg = f"unknown graph format {fmt!r}: use one of {', '.join(FORMATS)}"
    raise ValueError(msg)


def _label(entry: PlanEntry) -> str:
    return f"{entry.name}\n{entry.status.value}"


def _dot(plan: Plan) -> str:
    lines = ["digraph expkit {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled"];']
    for entry in plan:
        label, fill = json.dumps(_label(entry)), json.dumps(STATUS_COLOURS[entry.status])
        lines.append(f"  {json.dumps(entry.name)} [label={label}, fillcolor={fill}];")
    lines += [
        f"  {json.dumps(upstream)} -> {json.dumps(entry.name)};"
        for entry in plan
        for upstream in entry.requires
    ]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid(plan: Plan) -> str:
    ids = {entry.name: f"s{i}" for i, entry in enumerate(plan)}
    lines = ["flowchart LR"]
    for entry in plan:
        text = f"{entry.name}<br/>{entry.status.value}".replace('"', "#quot;")
        lines.append(f'  {ids[entry.name]}["{text}"]:::{entry.status.value.lower()}')
    lines += [
        f"  {ids[upstream]} --> {ids[entry.name]}" for entry in plan for upstream in entry.requires
    ]
    used = sorted({entry.status for entry in plan}, key=lambda s: s.value)
    lines += [f"  classDef {s.value.lower()} fill:{STATUS_COLOURS[s]}" for s in used]
    return "\n".join(lines) + "\n"


def _ascii(plan: Plan) -> str:
    """Each step under the steps that require it; a step met again is marked ``(see above)``."""
    children: dict[str, list[str]] = {name: [] for name in plan.entries}
    for entry in plan:
        for upstream in entry.requires:
            children[upstream].append(entry.name)
    roots = [entry.name for entry in plan if not entry.requires]
    lines: list[str] = []
    shown: set[str] = set()

    def walk(name: str, prefix: str, *, last: bool, depth: int) -> None:
        entry = plan[name]
        branch = "" if depth == 0 else ("`-- " if last else "|-- ")
        again = name in shown
        lines.append(
            f"{prefix}{branch}{name} [{entry.status.value}]" + (" (see above)" if again else "")
        )
        if again:
            return
        shown.add(name)
        inner = prefix + ("" if depth == 0 else ("    " if last else "|   "))
        kids = children[name]
        for i, child in enumerate(kids):
            walk(child, inner, last=i == len(kids) - 1, depth=depth + 1)

    for root in roots:
        walk(root, "", last=True, depth=0)
    return "\n".join(lines) + "\n"
