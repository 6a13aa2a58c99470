"""What a command left on each node: output, error output, return code or timeout."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import TypeVar

from ._nodeset import NodeSet, from_names, natural_key

__all__ = ["ShellResult"]

# The summary shows this many lines of each output, then says how many it left out.
_SUMMARY_LINES = 10

_V = TypeVar("_V", bound=Hashable)


class ShellResult:
    """The outcome of :func:`run`, :func:`copy` or :func:`rcopy` on every node.

    Output is kept as the bytes received and decoded on access (UTF-8, with
    replacement characters for invalid bytes). A node that timed out has no
    return code, but keeps the output it sent before the timeout. Results
    pickle, so a step can store them in its environment.
    """

    __slots__ = ("_errors", "_outputs", "_retcodes", "_timeouts")

    _timeouts: frozenset[str]

    def __init__(
        self,
        outputs: Mapping[str, bytes],
        errors: Mapping[str, bytes],
        retcodes: Mapping[str, int],
        timeouts: Iterable[str] = (),
    ) -> None:
        self._outputs = dict(outputs)
        self._errors = dict(errors)
        self._retcodes = dict(retcodes)
        self._timeouts = frozenset(timeouts)

    def __reduce__(
        self,
    ) -> tuple[
        Callable[..., ShellResult],
        tuple[dict[str, bytes], dict[str, bytes], dict[str, int], frozenset[str]],
    ]:
        return (
            ShellResult,
            (self._outputs, self._errors, self._retcodes, self._timeouts),
        )

    @property
    def nodes(self) -> NodeSet:
        """Every node the command was run on."""
        return from_names(self._outputs)

    @property
    def timeouts(self) -> NodeSet:
        """The nodes whose command was stopped by the timeout."""
        return from_names(self._timeouts)

    @property
    def max_retcode(self) -> int | None:
        """The largest return code; ``None`` when no node has one (every node timed out)."""
        return max(self._retcodes.values(), default=None)

    def buffer(self, node: str) -> str:
        """The standard output of ``node`` (merged with its error output if ``stderr=False``)."""
        return _decode(self._outputs[self._known(node)])

    def error(self, node: str) -> str:
        """The error output of ``node`` (empty when it was merged into the output)."""
        return _decode(self._errors[self._known(node)])

    def retcode(self, node: str) -> int:
        """The return code of ``node``: exit status, 128 + signal, or 255 for an ssh failure.

        Raises ``KeyError`` for a node that timed out (it has no return code).
        """
        name = self._known(node)
        if name in self._timeouts:
            msg = f"{name} timed out and has no return code; its partial output is in buffer()"
            raise KeyError(msg)
        return self._retcodes[name]

    def iter_buffers(self) -> Iterator[tuple[str, NodeSet]]:
        """``(output, nodes)`` for each distinct output, with the nodes that gave it."""
        return ((_decode(out), nodes) for out, nodes in _grouped(self._outputs))

    def iter_errors(self) -> Iterator[tuple[str, NodeSet]]:
        """``(error output, nodes)`` for each distinct error output."""
        return ((_decode(err), nodes) for err, nodes in _grouped(self._errors))

    def iter_retcodes(self) -> Iterator[tuple[int, NodeSet]]:
        """``(code, nodes)`` for each return code, smallest first; timed-out nodes are left out."""
        return iter(sorted(_grouped(self._retcodes), key=lambda group: group[0]))

    def _known(self, node: str) -> str:
        if node not in self._outputs:
            msg = f"{node!r} is not one of the nodes the command ran on ({self.nodes})"
            raise KeyError(msg)
        return node

    def __len__(self) -> int:
        return len(self._outputs)

    def __repr__(self) -> str:
        timeouts = f", timeouts={str(self.timeouts)!r}" if self._timeouts else ""
        return f"<ShellResult {self.nodes} max_retcode={self.max_retcode}{timeouts}>"

    def __str__(self) -> str:
        """A summary: counts, then each group of nodes that ended alike, with its output."""
        groups: dict[tuple[int | None, bytes, bytes], list[str]] = {}
        for node in self._outputs:
            outcome = None if node in self._timeouts else self._retcodes[node]
            key = (outcome, self._outputs[node], self._errors[node])
            groups.setdefault(key, []).append(node)
        failed = sum(1 for code in self._retcodes.values() if code != 0)
        counts = (
            f"{len(self)} node(s): {len(self._retcodes) - failed} ok, {failed} failed, "
            f"{len(self._timeouts)} timed out"
        )
        lines = [counts]
        ordered = sorted(groups.items(), key=lambda item: min(map(natural_key, item[1])))
        for (code, out, err), nodes in ordered:
            ending = "timed out" if code is None else f"exit {code}"
            lines.append(f"{from_names(nodes)}: {ending}")
            lines += _excerpt(_decode(out), "  ")
            lines += _excerpt(_decode(err), "  stderr: ")
        return "\n".join(lines)


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _grouped(values: Mapping[str, _V]) -> list[tuple[_V, NodeSet]]:
    """Nodes grouped by equal value, groups in the natural order of their first node."""
    groups: dict[_V, list[str]] = {}
    for node, value in values.items():
        groups.setdefault(value, []).append(node)
    ordered = sorted(groups.items(), key=lambda item: min(map(natural_key, item[1])))
    return [(value, from_names(nodes)) for value, nodes in ordered]


def _excerpt(text: str, prefix: str) -> list[str]:
    lines = text.splitlines()
    shown = [prefix + line for line in lines[:_SUMMARY_LINES]]
    if len(lines) > _SUMMARY_LINES:
        shown.append(f"{prefix}... ({len(lines) - _SUMMARY_LINES} more lines)")
    return shown
