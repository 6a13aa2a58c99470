"""Node sets: ``node[1-20,25],gw`` parsed, expanded and folded, with set operations.

The string syntax is ClusterShell's: a pattern expands the ranges between
brackets (several bracket groups give their cartesian product), and patterns
are combined left to right by the operators ``,`` (union), ``!``
(difference), ``&`` (intersection) and ``^`` (symmetric difference). Commas
inside brackets separate ranges, not patterns.

A set is held as the frozenset of its expanded names; its text form is a
fold computed from that set alone, so equal sets print the same way.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator

from expkit._errors import ExpkitError

__all__ = ["NodeSet", "NodeSetError", "expand", "fold", "from_names", "natural_key"]

# ASCII only: a hostname is ASCII (IDNA), and int() of a non-ASCII digit would
# not print back as the same text.
_DIGITS = re.compile(r"([0-9]+)")
_NAME = re.compile(r"[A-Za-z0-9_.:@-]+\Z")
_RANGE = re.compile(r"([0-9]+)(?:-([0-9]+)(?:/([0-9]+))?)?\Z")
_OPERATORS = ",!&^"
_SYNTAX = re.compile(r"[\[\],!&^]")


class NodeSetError(ExpkitError, ValueError):
    """A node set pattern or a node name is not valid."""

    def __init__(self, pattern: str, reason: str) -> None:
        self.pattern = pattern
        self.reason = reason
        super().__init__(f"invalid node set {pattern!r}: {reason}")


class NodeSet:
    """An immutable set of node names, written in the folded form ``node[1-3,7],gw``.

    Build one from a pattern string, from another node set, or from an
    iterable of patterns. Iteration is in natural order (``node2`` before
    ``node10``), ``str()`` gives the canonical folded form, and the operators
    ``|``, ``-``, ``&`` and ``^`` take a node set or a pattern. Like a
    frozenset, a node set is hashable and compares equal to one with the same
    names.

    >>> ns = NodeSet("node[1-3],gw") - NodeSet("node2")
    >>> str(ns), list(ns)
    ('gw,node[1,3]', ['gw', 'node1', 'node3'])
    """

    __slots__ = ("_folded", "_names", "_ordered")

    _names: frozenset[str]
    _folded: str | None
    _ordered: tuple[str, ...] | None

    def __init__(self, nodes: str | Iterable[str | NodeSet] | None = None) -> None:
        if nodes is None:
            names: frozenset[str] = frozenset()
        elif isinstance(nodes, NodeSet):
            names = _names_of(nodes)
        elif isinstance(nodes, str):
            names = _parse(nodes)
        else:
            names = frozenset().union(*(_names_of(_pattern(item)) for item in nodes))
        self._names = names
        self._folded = None
        self._ordered = None

    # -- the collection --------------------------------------------------------

    def __len__(self) -> int:
        return len(self._names)

    def __bool__(self) -> bool:
        return bool(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._sorted())

    def __contains__(self, item: object) -> bool:
        """A name is in the set; a pattern or node set is contained when all its names are."""
        if isinstance(item, NodeSet):
            return _names_of(item) <= self._names
        if not isinstance(item, str):
            return False
        if item in self._names:
            return True
        return bool(_SYNTAX.search(item)) and _parse(item) <= self._names

    def _sorted(self) -> tuple[str, ...]:
        if self._ordered is None:
            self._ordered = tuple(sorted(self._names, key=natural_key))
        return self._ordered

    # -- text --------------------------------------------------------------------

    def __str__(self) -> str:
        if self._folded is None:
            self._folded = fold(self._names)
        return self._folded

    def __repr__(self) -> str:
        return f"NodeSet({str(self)!r})"

    def __reduce__(self) -> tuple[Callable[[Iterable[str]], NodeSet], tuple[list[str]]]:
        return (from_names, (sorted(self._names),))

    # -- comparisons ---------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if isinstance(other, NodeSet):
            return self._names == _names_of(other)
        if isinstance(other, (set, frozenset)):
            return self._names == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._names)

    def __le__(self, other: str | Iterable[str]) -> bool:
        return self._names <= _names_of(other)

    def __lt__(self, other: str | Iterable[str]) -> bool:
        return self._names < _names_of(other)

    def __ge__(self, other: str | Iterable[str]) -> bool:
        return self._names >= _names_of(other)

    def __gt__(self, other: str | Iterable[str]) -> bool:
        return self._names > _names_of(other)

    def issubset(self, other: str | Iterable[str]) -> bool:
        """Every name of this set is in ``other``."""
        return self._names <= _names_of(other)

    def issuperset(self, other: str | Iterable[str]) -> bool:
        """Every name of ``other`` is in this set."""
        return self._names >= _names_of(other)

    def isdisjoint(self, other: str | Iterable[str]) -> bool:
        """No name is in both sets."""
        return self._names.isdisjoint(_names_of(other))

    # -- set operations: each takes a NodeSet, a pattern or an iterable of patterns --

    def __or__(self, other: str | Iterable[str]) -> NodeSet:
        return from_names(self._names | _names_of(other))

    def __and__(self, other: str | Iterable[str]) -> NodeSet:
        return from_names(self._names & _names_of(other))

    def __sub__(self, other: str | Iterable[str]) -> NodeSet:
        return from_names(self._names - _names_of(other))

    def __xor__(self, other: str | Iterable[str]) -> NodeSet:
        return from_names(self._names ^ _names_of(other))

    def __ror__(self, other: str | Iterable[str]) -> NodeSet:
        return from_names(_names_of(other) | self._names)

    def __rand__(self, other: str | Iterable[str]) -> NodeSet:
        return from_names(_names_of(other) & self._names)

    def __rsub__(self, other: str | Iterable[str]) -> NodeSet:
        return from_names(_names_of(other) - self._names)

    def __rxor__(self, other: str | Iterable[str]) -> NodeSet:
        return from_names(_names_of(other) ^ self._names)

    union = __or__
    intersection = __and__
    difference = __sub__
    symmetric_difference = __xor__


def expand(pattern: str) -> list[str]:
    """The node names of a pattern, in natural order: ``expand("n[9-10]") == ["n9", "n10"]``."""
    return list(NodeSet(pattern))


def fold(names: Iterable[str]) -> str:
    """The canonical folded form of node names: ``fold(["n1", "n2", "n3"]) == "n[1-3]"``.

    The result depends on the set of names only. Names are grouped by what
    surrounds their digits; a group folds one axis at a time, from the last
    digit run to the first, into cartesian products such as ``r[1-2]n[1-4]``.
    """
    by_skeleton: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for name in set(names):
        parts = _DIGITS.split(name)
        by_skeleton.setdefault(tuple(parts[0::2]), []).append(tuple(parts[1::2]))
    pieces: list[tuple[tuple[tuple[int, str], ...], str]] = []
    for skeleton, vectors in by_skeleton.items():
        for axes in _fold_axes(vectors):
            first = "".join(_interleave(skeleton, [axis.first for axis in axes]))
            text = "".join(_interleave(skeleton, [axis.text for axis in axes]))
            pieces.append((natural_key(first), text))
    return ",".join(text for _key, text in sorted(pieces))


def natural_key(name: str) -> tuple[tuple[int, str], ...]:
    """A sort key putting ``node2`` before ``node10`` (digit runs compare as numbers)."""
    parts = _DIGITS.split(name)
    # Text parts and digit runs alternate, so two keys compare like with like.
    return tuple((int(part), part) if i % 2 else (-1, part) for i, part in enumerate(parts))


# -- folding ------------------------------------------------------------------------


class _Axis:
    """One folded digit run: its bracket text and its smallest value's text."""

    __slots__ = ("first", "text")

    def __init__(self, texts: Iterable[str]) -> None:
        items = _fold_runs(texts)
        self.first = items[0][2]
        if len(items) == 1 and items[0][3] == self.first:
            self.text = self.first  # one value needs no brackets
        else:
            self.text = "[" + ",".join(item[3] for item in items) + "]"


def _fold_axes(vectors: list[tuple[str, ...]]) -> list[list[_Axis]]:
    """Fold digit vectors (one text per digit run) into cartesian products of axes."""
    if not vectors[0]:
        return [[]]
    # Group by everything but the last run, fold the last run, then fold the
    # prefixes that share the same folded last run, recursively.
    lasts: dict[tuple[str, ...], set[str]] = {}
    for vector in vectors:
        lasts.setdefault(vector[:-1], set()).add(vector[-1])
    by_last: dict[str, tuple[_Axis, list[tuple[str, ...]]]] = {}
    for prefix, texts in lasts.items():
        axis = _Axis(texts)
        by_last.setdefault(axis.text, (axis, []))[1].append(prefix)
    return [[*axes, axis] for axis, prefixes in by_last.values() for axes in _fold_axes(prefixes)]


def _fold_runs(texts: Iterable[str]) -> list[tuple[int, int, str, str]]:
    """Digit texts as ranges: ``(start, width, first text, range text)``, sorted.

    A text with a leading zero has a fixed width (``07``); another text joins
    the ranges of that width when it is as wide (``10`` with ``08``, ``09``),
    else the unpadded ones. Each range then prints back to the same texts.
    """
    texts = set(texts)
    widths = {len(text) for text in texts if _padded(text)}
    groups: dict[int, list[int]] = {}
    for text in texts:
        width = len(text) if _padded(text) or len(text) in widths else 0
        groups.setdefault(width, []).append(int(text))
    items = []
    for width, values in groups.items():
        values.sort()
        start = prev = values[0]
        for value in [*values[1:], None]:
            if value is not None and value == prev + 1:
                prev = value
                continue
            first = str(start).zfill(width)
            text = first if start == prev else f"{first}-{str(prev).zfill(width)}"
            items.append((start, width, first, text))
            if value is not None:
                start = prev = value
    return sorted(items)


def _padded(text: str) -> bool:
    return len(text) > 1 and text[0] == "0"


def _interleave(skeleton: tuple[str, ...], runs: list[str]) -> Iterator[str]:
    for text, run in itertools.zip_longest(skeleton, runs, fillvalue=""):
        yield text
        yield run


# -- parsing --------------------------------------------------------------------------


def _parse(text: str) -> frozenset[str]:
    """The names of a whole expression: patterns joined by operators, left to right."""
    if not _SYNTAX.search(text):  # a plain name, the common case of a list of names
        return _expand_pattern(text, text.strip())
    result: frozenset[str] = frozenset()
    operator = ","
    depth = 0
    start = 0
    for i, char in enumerate([*text, ","]):
        if char == "[":
            depth += 1
            if depth > 1:
                raise NodeSetError(text, f"nested '[' at position {i}")
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise NodeSetError(text, f"unmatched ']' at position {i}")
        elif depth == 0 and char in _OPERATORS:
            operand = _expand_pattern(text, text[start:i].strip())
            result = _apply(operator, result, operand)
            operator, start = char, i + 1
    if depth:
        raise NodeSetError(text, "unmatched '['")
    return result


def _apply(operator: str, left: frozenset[str], right: frozenset[str]) -> frozenset[str]:
    if operator == ",":
        return left | right
    if operator == "!":
        return left - right
    if operator == "&":
        return left & right
    return left ^ right


def _expand_pattern(whole: str, pattern: str) -> frozenset[str]:
    """The names of one pattern such as ``rack[1-2]-n[01-04]`` (empty: no names)."""
    if not pattern:
        return frozenset()
    pieces = re.split(r"\[([^\]]*)\]", pattern)
    # Even pieces are literal text, odd ones the contents of a bracket.
    choices = [
        [piece] if i % 2 == 0 else _expand_ranges(whole, piece) for i, piece in enumerate(pieces)
    ]
    names = frozenset("".join(parts) for parts in itertools.product(*choices))
    for name in names:
        _check_name(whole, name)
    return names


def _expand_ranges(whole: str, ranges: str) -> list[str]:
    """The digit texts of a bracket's contents, such as ``1-3,08-10,20-30/5``."""
    texts: list[str] = []
    for item in ranges.split(","):
        match = _RANGE.match(item.strip())
        if match is None:
            raise NodeSetError(whole, f"bad range {item.strip()!r} in [{ranges}]")
        first, last, step = match.groups()
        if last is None:
            texts.append(first)
            continue
        width = len(first) if _padded(first) else 0
        if _padded(last) and len(last) != width:
            raise NodeSetError(whole, f"padding differs between {first!r} and {last!r}")
        if int(last) < int(first):
            raise NodeSetError(whole, f"range {item.strip()!r} ends before it starts")
        if step is not None and int(step) == 0:
            raise NodeSetError(whole, f"zero step in range {item.strip()!r}")
        texts += [
            str(value).zfill(width) for value in range(int(first), int(last) + 1, int(step or 1))
        ]
    return texts


def _check_name(whole: str, name: str) -> None:
    # A name starting with "-" would be read by ssh or scp as an option.
    if name.startswith("-"):
        raise NodeSetError(whole, f"node name {name!r} starts with '-'")
    if name.startswith("@"):
        raise NodeSetError(whole, f"node groups ({name!r}) are not supported")
    if not _NAME.match(name):
        raise NodeSetError(
            whole,
            f"node name {name!r} has a character other than letters, digits and '_.:@-'",
        )


def _pattern(item: object) -> str | NodeSet:
    if not isinstance(item, (str, NodeSet)):
        msg = f"a node set is built from strings, not {type(item).__name__}: {item!r}"
        raise TypeError(msg)
    return item


def _names_of(other: str | Iterable[str]) -> frozenset[str]:
    nodes = other if isinstance(other, NodeSet) else NodeSet(other)
    return nodes._names  # noqa: SLF001 - NodeSet's own module


def from_names(names: Iterable[str]) -> NodeSet:
    """A node set of names known to be valid (results of set operations, unpickling)."""
    new = NodeSet.__new__(NodeSet)
    # Fills the slots __init__ would, without parsing each name again.
    new._names = frozenset(names)  # noqa: SLF001 - NodeSet's own module
    new._folded = None  # noqa: SLF001
    new._ordered = None  # noqa: SLF001
    return new
