"""expkit._typing's run-time stand-ins behave as the typing names they replace."""

from __future__ import annotations

import pickle
import typing

import pytest

import expkit
from expkit import _typing
from expkit._graph import Node
from expkit._journal import Stored


class Real(typing.NamedTuple):
    """A record."""

    name: str
    size: int = 0
    tags: tuple[str, ...] = ()

    def described(self) -> str:
        """A method, copied onto the class."""
        return f"{self.name}:{self.size}"


class Standin(_typing.NamedTuple):
    """A record."""

    name: str
    size: int = 0
    tags: tuple[str, ...] = ()

    def described(self) -> str:
        """A method, copied onto the class."""
        return f"{self.name}:{self.size}"


def test_named_tuple_matches_typing() -> None:
    """Fields, defaults, docstring, methods and tuple behaviour are those of typing's."""
    assert Standin._fields == Real._fields
    assert Standin._field_defaults == Real._field_defaults
    assert Standin.__doc__ == Real.__doc__
    assert Standin.__module__ == Real.__module__ == __name__
    assert Standin.__qualname__ == "Standin"
    assert list(Standin.__annotations__) == list(Real.__annotations__)
    made = Standin("a", 2)
    assert made.described() == "a:2"
    assert made._replace(size=3).size == 3
    assert tuple(made) == ("a", 2, ()) == tuple(Real("a", 2))
    assert isinstance(made, tuple)
    assert vars(_typing)["NamedTuple"].__module__ == "expkit._typing"  # the stand-in was tested


def test_named_tuple_pickles_by_name() -> None:
    """Instances pickle and come back as the same class (journals store them)."""
    made = Standin("b", 1, ("x",))
    again = pickle.loads(pickle.dumps(made))
    assert type(again) is Standin
    assert again == made


def test_expkit_named_tuples_keep_their_fields() -> None:
    """The modules' own records are namedtuples with their declared fields."""
    assert Node._fields == tuple(Node.__annotations__)
    assert "name" in Node._fields
    assert issubclass(Stored, tuple)
    assert Stored.__module__ == "expkit._journal"


def test_generic_subscripts_like_typing() -> None:
    """``Task[...]`` works in a run-time annotation, as ``typing.Generic`` allows."""
    alias = expkit.Task[[int], str]
    assert typing.get_origin(alias) is expkit.Task
    assert typing.get_args(alias) == ([int], str)


def test_overload_and_cast_are_identities() -> None:
    """The implementation after overloads is what runs; ``cast`` returns its value."""

    def implementation() -> int:
        return 7

    assert _typing.overload(implementation) is implementation
    value = object()
    assert _typing.cast("int", value) is value
    assert repr(_typing.TypeVar("T")) == "~T"


@pytest.mark.parametrize("name", ["Any", "ClassVar", "Protocol"])
def test_annotation_only_names_exist(name: str) -> None:
    """Names only met in annotations still import at run time."""
    assert getattr(_typing, name) is not None
