"""The ``typing`` names expkit's modules use, without importing ``typing``.

``typing`` and ``pathlib`` (with the ``urllib.parse`` and ``fnmatch`` it
loads) were nearly a third of ``import expkit``, whose budget is 50 ms (DESIGN.md
section 12). Type checkers take ``TYPE_CHECKING`` as true and see the real names.
At run time annotations are strings (``from __future__ import annotations``)
and these stand-ins do the little the modules ask of them: base classes,
type variables, ``overload`` and ``cast``.
"""

from __future__ import annotations

import collections
import types

TYPE_CHECKING = False  # as typing.TYPE_CHECKING: type checkers read it as True

if TYPE_CHECKING:
    from typing import (
        Any,
        ClassVar,
        Generic,
        NamedTuple,
        ParamSpec,
        Protocol,
        TypeVar,
        cast,
        overload,
    )
else:
    # Only ever subscripted or named in annotations at run time.
    Any = ClassVar = object

    class TypeVar:
        """A type variable's name; nothing is checked at run time."""

        def __init__(self, name: str, *_constraints: object, **_options: object) -> None:
            self.__name__ = name

        def __repr__(self) -> str:
            return f"~{self.__name__}"

    ParamSpec = TypeVar

    class Generic:
        """``class C(Generic[T])``, and ``C[int]`` in a run-time annotation."""

        __slots__ = ()

        def __class_getitem__(cls, params: object) -> object:
            return cls if cls is Generic else types.GenericAlias(cls, params)

    class Protocol:
        """A structural type: a plain base class at run time."""

        __slots__ = ()

    def overload(fn: object) -> object:
        """The implementation defined after the overloads replaces them."""
        return fn

    def cast(_type: object, value: object) -> object:
        return value

    class _NamedTupleMeta(type):
        def __new__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, object]) -> type:
            if not bases:  # NamedTuple itself
                return super().__new__(cls, name, bases, namespace)
            fields = tuple(namespace.get("__annotations__", {}))
            made = collections.namedtuple(  # noqa: PYI024 - this is typing.NamedTuple
                name,
                fields,
                defaults=[namespace[field] for field in fields if field in namespace],
                module=namespace["__module__"],
            )
            for key, value in namespace.items():  # docstring, annotations, methods
                if key not in fields:
                    setattr(made, key, value)
            return made

    class NamedTuple(metaclass=_NamedTupleMeta):
        """``class C(NamedTuple)`` with annotated fields, as in typing."""


__all__ = [
    "TYPE_CHECKING",
    "Any",
    "ClassVar",
    "Generic",
    "NamedTuple",
    "ParamSpec",
    "Protocol",
    "TypeVar",
    "cast",
    "overload",
]
