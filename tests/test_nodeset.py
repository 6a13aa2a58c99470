"""Tests of ``expkit.shell.NodeSet``: parsing, folding, natural order and set operations."""

from __future__ import annotations

import functools
import operator
import pickle
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from expkit import ExpkitError
from expkit.shell import NodeSet, NodeSetError, expand, fold
from expkit.shell._nodeset import natural_key

# -- strategies ------------------------------------------------------------------------

PREFIXES = ("node", "n", "gw", "rack", "c-", "x.y_")


def _digits(value: int, width: int) -> str:
    return str(value).zfill(width)


#: A digit run: unpadded, or zero-padded to 2 or 3 (``7``, ``07``, ``007``).
DIGITS = st.builds(_digits, st.integers(0, 30), st.sampled_from([0, 0, 2, 3]))
#: Node names of zero, one or two digit runs, sharing few skeletons so that they fold.
NAMES = st.one_of(
    st.sampled_from(PREFIXES),
    st.builds(operator.add, st.sampled_from(PREFIXES), DIGITS),
    st.builds("{}{}-ib{}".format, st.sampled_from(PREFIXES), DIGITS, DIGITS),
)
NAME_SETS = st.frozensets(NAMES, max_size=40)
NODESETS = NAME_SETS.map(NodeSet)


@st.composite
def patterns(draw: st.DrawFn) -> tuple[str, frozenset[str]]:
    """One pattern with brackets, such as ``n[1-3,07]x[2]``, and the names it stands for."""
    prefix = draw(st.sampled_from(PREFIXES))
    ranges = draw(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 5)), min_size=1))
    width = draw(st.sampled_from([0, 2]))
    items, values = [], set()
    for start, length in ranges:
        first, last = _digits(start, width), _digits(start + length, width)
        items.append(first if length == 0 else f"{first}-{last}")
        values |= {_digits(value, width) for value in range(start, start + length + 1)}
    return f"{prefix}[{','.join(items)}]", frozenset(prefix + value for value in values)


OPERATIONS: dict[str, Callable[[frozenset[str], frozenset[str]], frozenset[str]]] = {
    ",": operator.or_,
    "!": operator.sub,
    "&": operator.and_,
    "^": operator.xor,
}


# -- properties ----------------------------------------------------------------------------


class TestFoldingProperties:
    """Folding is canonical and round-trips through parsing."""

    @given(NAME_SETS)
    def test_fold_of_expansion_is_the_canonical_form(self, names: frozenset[str]) -> None:
        """Folding the names a set expands to gives that set's ``str()``."""
        nodes = NodeSet(names)
        assert fold(list(nodes)) == str(nodes)

    @given(NAME_SETS)
    def test_parse_of_str_round_trips(self, names: frozenset[str]) -> None:
        """Parsing the folded form gives back exactly the same names."""
        assert set(NodeSet(str(NodeSet(names)))) == names

    @given(NAME_SETS)
    def test_folded_form_is_a_fixed_point(self, names: frozenset[str]) -> None:
        """Folding a parsed folded form changes nothing."""
        text = str(NodeSet(names))
        assert str(NodeSet(text)) == text

    @given(st.lists(NAMES, max_size=30), st.randoms(use_true_random=False))
    def test_fold_ignores_order_and_duplicates(self, names: list[str], rnd: object) -> None:
        """The folded form depends on the set of names only."""
        shuffled = list(names)
        rnd.shuffle(shuffled)  # type: ignore[attr-defined]
        assert fold(names) == fold(shuffled + names)

    @given(NAME_SETS)
    def test_iteration_is_natural_order(self, names: frozenset[str]) -> None:
        """Iteration sorts digit runs as numbers, and ``len`` counts the names."""
        nodes = NodeSet(names)
        assert list(nodes) == sorted(names, key=natural_key)
        assert len(nodes) == len(names)

    @given(patterns())
    def test_pattern_expands_to_its_names(self, pattern: tuple[str, frozenset[str]]) -> None:
        """A bracket pattern expands to the names its ranges describe."""
        text, names = pattern
        assert set(expand(text)) == names


class TestSetLaws:
    """Set operations agree with Python sets of the expanded names."""

    @given(NODESETS, NODESETS)
    def test_operators_match_python_sets(self, a: NodeSet, b: NodeSet) -> None:
        """``|``, ``&``, ``-`` and ``^`` give what they give on sets of names."""
        for name, op in OPERATIONS.items():
            python_op = getattr(operator, {",": "or_", "!": "sub", "&": "and_", "^": "xor"}[name])
            assert set(python_op(a, b)) == op(frozenset(a), frozenset(b))

    @given(NODESETS, NODESETS)
    def test_commutativity(self, a: NodeSet, b: NodeSet) -> None:
        """Union, intersection and symmetric difference commute."""
        assert a | b == b | a
        assert a & b == b & a
        assert a ^ b == b ^ a

    @given(NODESETS, NODESETS, NODESETS)
    def test_associativity(self, a: NodeSet, b: NodeSet, c: NodeSet) -> None:
        """Union, intersection and symmetric difference associate."""
        assert (a | b) | c == a | (b | c)
        assert (a & b) & c == a & (b & c)
        assert (a ^ b) ^ c == a ^ (b ^ c)

    @given(NODESETS, NODESETS, NODESETS)
    def test_difference_identities(self, a: NodeSet, b: NodeSet, c: NodeSet) -> None:
        """De Morgan's laws for differences, and xor as two differences."""
        assert a - (b | c) == (a - b) & (a - c)
        assert a - (b & c) == (a - b) | (a - c)
        assert a ^ b == (a - b) | (b - a)
        assert (a - b) & b == NodeSet()
        assert (a & b) | (a - b) == a

    @given(NODESETS, NODESETS)
    def test_operands_may_be_patterns(self, a: NodeSet, b: NodeSet) -> None:
        """An operand given as its folded text, on either side, acts as the node set."""
        assert a | str(b) == a | b
        assert str(a) - b == a - b
        assert a.union(str(b)) == a | b

    @given(st.lists(st.tuples(st.sampled_from(",!&^"), patterns()), min_size=1, max_size=5))
    def test_string_operators_apply_left_to_right(
        self, terms: list[tuple[str, tuple[str, frozenset[str]]]]
    ) -> None:
        """``a,b!c&d^e`` is evaluated left to right, like ClusterShell."""
        text = "".join(op + pattern for op, (pattern, _names) in terms)[1:]
        expected = functools.reduce(
            lambda acc, term: OPERATIONS[term[0]](acc, term[1][1]), terms[1:], terms[0][1][1]
        )
        assert set(NodeSet(text)) == expected

    @given(NAME_SETS, NAME_SETS)
    def test_equal_sets_hash_alike(self, a: frozenset[str], b: frozenset[str]) -> None:
        """Node sets are equal exactly when their names are, and equal ones hash alike."""
        assert (NodeSet(a) == NodeSet(b)) == (a == b)
        if a == b:
            assert hash(NodeSet(a)) == hash(NodeSet(b))

    @given(NODESETS)
    def test_pickles(self, nodes: NodeSet) -> None:
        """A node set survives pickling, at every protocol."""
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            assert pickle.loads(pickle.dumps(nodes, protocol)) == nodes


# -- examples ------------------------------------------------------------------------------


class TestParsing:
    """Exact examples of the pattern syntax."""

    @pytest.mark.parametrize(
        ("pattern", "names"),
        [
            ("node[1-3]", ["node1", "node2", "node3"]),
            ("node[1-3,5]", ["node1", "node2", "node3", "node5"]),
            ("n[01-03]", ["n01", "n02", "n03"]),
            ("n[08-11]", ["n08", "n09", "n10", "n11"]),
            ("node[1-2],gw", ["gw", "node1", "node2"]),
            ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
            ("x[1-10/3]", ["x1", "x4", "x7", "x10"]),
            ("node[1-10]!node[2-9]", ["node1", "node10"]),
            ("node[1-5]&node[4-9]", ["node4", "node5"]),
            ("node[1-3]^node[3-4]", ["node1", "node2", "node4"]),
            ("node[1-3],node[5-6]!node[2-5]", ["node1", "node6"]),
            (" a , b ", ["a", "b"]),
            ("a,,b,", ["a", "b"]),
            ("", []),
            ("10.0.0.[1-2]", ["10.0.0.1", "10.0.0.2"]),
        ],
    )
    def test_expands(self, pattern: str, names: list[str]) -> None:
        """The pattern expands to these names, in natural order."""
        assert expand(pattern) == names

    def test_natural_order(self) -> None:
        """``node2`` comes before ``node10``, and names without digits sort as text."""
        assert list(NodeSet("node10,node2,node1,gw,a10b2,a2b10")) == [
            "a2b10",
            "a10b2",
            "gw",
            "node1",
            "node2",
            "node10",
        ]

    def test_design_example(self) -> None:
        """DESIGN.md's example: twenty-one nodes and a gateway."""
        nodes = NodeSet("node[1-20,25],gw")
        assert len(nodes) == 22
        assert "node25" in nodes
        assert "node21" not in nodes

    def test_built_from_names_patterns_and_node_sets(self) -> None:
        """An iterable may mix names, patterns and node sets."""
        nodes = NodeSet(["gw", "node[1-2]", NodeSet("node3")])
        assert nodes == NodeSet("gw,node[1-3]")
        assert NodeSet(nodes) == nodes
        assert NodeSet() == NodeSet("") == NodeSet([])

    def test_refuses_non_strings(self) -> None:
        """An iterable of something other than strings is a TypeError."""
        with pytest.raises(TypeError, match="not int"):
            NodeSet([1])  # type: ignore[list-item]


class TestFolding:
    """Exact examples of the folded form."""

    @pytest.mark.parametrize(
        ("names", "folded"),
        [
            (["node1", "node2", "node3", "node5"], "node[1-3,5]"),
            (["n01", "n02", "n03"], "n[01-03]"),
            (["n08", "n09", "n10"], "n[08-10]"),
            (["n9", "n10", "n010"], "n[9-10,010]"),
            (["n1", "n01"], "n[1,01]"),
            (["node1"], "node1"),
            (["gw", "node2", "node1"], "gw,node[1-2]"),
            (["r1n1", "r1n2", "r2n1", "r2n2"], "r[1-2]n[1-2]"),
            (["r1n1", "r1n2", "r2n1"], "r1n[1-2],r2n1"),
            (["node10", "node9", "node100"], "node[9-10,100]"),
            ([], ""),
        ],
    )
    def test_folds(self, names: list[str], folded: str) -> None:
        """These names fold to this text."""
        assert fold(names) == folded
        assert str(NodeSet(names)) == folded

    def test_repr(self) -> None:
        """The repr shows the folded form."""
        assert repr(NodeSet("n[1-3]")) == "NodeSet('n[1-3]')"


class TestSetInterface:
    """Membership, comparison and hashing, as for a frozenset."""

    def test_membership(self) -> None:
        """``in`` takes a name, a pattern or a node set."""
        nodes = NodeSet("node[1-10]")
        assert "node3" in nodes
        assert "node11" not in nodes
        assert "node[2-4]" in nodes
        assert "node[9-11]" not in nodes
        assert NodeSet("node1") in nodes
        assert 3 not in nodes

    def test_comparisons(self) -> None:
        """Subset and superset comparisons, and disjointness."""
        small, big = NodeSet("n[1-2]"), NodeSet("n[1-3]")
        assert small < big
        assert small <= big
        assert big > small
        assert big >= "n[2-3]"
        assert small.issubset("n[1-5]")
        assert big.issuperset(["n1", "n3"])
        assert small.isdisjoint("n[3-4]")

    def test_equality_and_hash(self) -> None:
        """Node sets are hashable values: usable as keys and in sets."""
        assert NodeSet("n[1-2]") == NodeSet("n2,n1")
        assert NodeSet("n[1-2]") == frozenset({"n1", "n2"})
        assert NodeSet("n1") != "n1"
        assert {NodeSet("n[1-2]"): 1}[NodeSet("n1,n2")] == 1

    def test_reflected_operators(self) -> None:
        """A pattern on the left of an operator works too."""
        assert "n[1-3]" - NodeSet("n2") == NodeSet("n[1,3]")
        assert "n1" | NodeSet("n2") == NodeSet("n[1-2]")
        assert "n[1-3]" & NodeSet("n[2-5]") == NodeSet("n[2-3]")
        assert "n[1-2]" ^ NodeSet("n[2-3]") == NodeSet("n[1,3]")

    def test_immutable(self) -> None:
        """Operators return new node sets and leave their operands alone."""
        nodes = NodeSet("n[1-2]")
        union = nodes | "n3"
        assert nodes == NodeSet("n[1-2]")
        assert union == NodeSet("n[1-3]")
        with pytest.raises(AttributeError):
            nodes.extra = 1  # type: ignore[attr-defined]


class TestErrors:
    """Invalid patterns and node names are refused with a message that names them."""

    @pytest.mark.parametrize(
        ("pattern", "fragment"),
        [
            ("-oProxyCommand=sh", "'-oProxyCommand=sh' starts with '-'"),
            ("node[1-2],-x", "'-x' starts with '-'"),
            ("[-1]", "bad range '-1'"),
            ("n[3-1]", "ends before it starts"),
            ("n[1-", "unmatched '['"),
            ("n1]", "unmatched ']'"),
            ("n[[1]]", "nested '['"),
            ("n[a]", "bad range 'a'"),
            ("n[]", "bad range ''"),
            ("n[1-010]", "padding differs"),
            ("n[1-5/0]", "zero step"),
            ("a b", "'a b' has a character"),
            ("host;reboot", "'host;reboot' has a character"),
            ("@rack1", "node groups"),
        ],
    )
    def test_invalid(self, pattern: str, fragment: str) -> None:
        """The error is a ValueError and an ExpkitError naming the pattern and the fault."""
        with pytest.raises(NodeSetError) as caught:
            NodeSet(pattern)
        assert isinstance(caught.value, ValueError)
        assert isinstance(caught.value, ExpkitError)
        assert fragment in str(caught.value)
        assert caught.value.pattern == pattern

    def test_operand_is_checked(self) -> None:
        """A pattern given to an operator is validated as well."""
        with pytest.raises(NodeSetError, match="starts with '-'"):
            NodeSet("n1") | "-n2"

    def test_error_pickles(self) -> None:
        """The error survives pickling with its message and context."""
        error = NodeSetError("-x", "node name '-x' starts with '-'")
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is NodeSetError
        assert str(copy) == str(error)
        assert (copy.pattern, copy.reason) == (error.pattern, error.reason)
