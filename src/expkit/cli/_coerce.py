"""Plain option values converted without pydantic, so that a command starts fast.

typer (0.2x and later) converts every option value with a pydantic
``TypeAdapter`` built on first use: importing pydantic and building the
adapters of one command costs more than the rest of ``exp``'s start-up. The
options of ``exp`` are plain (strings, lists of strings, counts and numbers,
booleans, enums, paths without checks), so :func:`install` gives each a
converter that handles the values it is sure about in a few lines and hands
anything else to typer's own conversion, built only then: a value typer would
reject reaches typer, which rejects it with its own message.

With a typer that converts values otherwise (older releases, through click's
types), :func:`install` does nothing.
"""

from __future__ import annotations

import enum
import os
from pathlib import Path
from typing import Any, get_args, get_origin

__all__ = ["install"]

#: Path options whose checks the quick path does not make (exists=..., resolve_path=...).
_PATH_DEFAULTS = {
    "exists": False,
    "file_okay": True,
    "dir_okay": True,
    "writable": False,
    "readable": True,
    "resolve_path": False,
    "allow_dash": False,
    "path_type": None,
}


class _Quick:
    """A typer runtime parameter for a plain type; typer's own one for what it cannot decide."""

    __slots__ = ("annotation", "convert", "full", "info")

    def __init__(self, annotation: Any, info: Any, convert: Any) -> None:
        self.annotation = annotation
        self.info = info
        self.convert = convert  # value -> converted value, or _UNSURE
        self.full: Any = None

    def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
        """Convert ``value`` as typer would; what is not plain goes to typer."""
        multi = param.multiple or param.nargs == -1
        if value is None:
            return () if multi else None
        plain = getattr(ctx, "token_normalize_func", None) is None
        if plain and not (multi and isinstance(value, str)):
            converted = self.convert(value)
            if converted is not _UNSURE:
                return converted
        if self.full is None:
            from typer._coercion import build_runtime_param

            self.full = build_runtime_param(param.type_descriptor)
        return self.full.coerce(value, param=param, ctx=ctx)


_UNSURE = object()


def _as_str(value: Any) -> Any:
    return value if isinstance(value, str) else _UNSURE


def _as_bool(value: Any) -> Any:
    return value if isinstance(value, bool) else _UNSURE


def _as_int(low: float | None, high: float | None) -> Any:
    def convert(value: Any) -> Any:
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)
        if type(value) is not int:
            return _UNSURE
        if (low is not None and value < low) or (high is not None and value > high):
            return _UNSURE  # typer says what the bounds are
        return value

    return convert


def _as_member(kind: type[enum.Enum]) -> Any:
    by_value = {str(member.value): member for member in kind}

    def convert(value: Any) -> Any:
        if isinstance(value, kind):
            return value
        if isinstance(value, str):
            return by_value.get(value, _UNSURE)
        return _UNSURE

    return convert


def _as_path(value: Any) -> Any:
    if isinstance(value, str) and value:
        value = Path(value)
    elif not isinstance(value, Path):
        return _UNSURE
    try:
        os.stat(value)
    except OSError:
        return value  # typer's check (readable=True) is for paths that exist
    return value if os.access(value, os.R_OK) else _UNSURE


def _as_list(item: Any) -> Any:
    def convert(value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return _UNSURE
        converted = [item(one) for one in value]
        return _UNSURE if any(one is _UNSURE for one in converted) else converted

    return convert


def _converter(annotation: Any, info: Any) -> Any:
    """The quick conversion for ``annotation``, or ``None`` when it is not plain."""
    if getattr(info, "parser", None) is not None or getattr(info, "click_type", None) is not None:
        return None
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        inner = _converter(item, info)
        return None if inner is None else _as_list(inner)
    convert = {str: _as_str, bool: _as_bool}.get(annotation)
    if annotation is int and not getattr(info, "clamp", False):
        convert = _as_int(getattr(info, "min", None), getattr(info, "max", None))
    elif isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        # A case-insensitive choice: typer decides.
        convert = _as_member(annotation) if getattr(info, "case_sensitive", True) else None
    elif annotation is Path and all(getattr(info, k, v) == v for k, v in _PATH_DEFAULTS.items()):
        convert = _as_path
    return convert


def install(params: list[Any]) -> None:
    """Give each plain typer parameter of a command the quick conversion."""
    for param in params:
        if getattr(param, "_runtime_param", 1) is not None:
            continue  # not a typer parameter of this kind, or already set
        descriptor = getattr(param, "type_descriptor", None)
        info = getattr(descriptor, "parameter_info", None)
        if descriptor is None or info is None or descriptor.file_annotation is not None:
            continue
        convert = _converter(descriptor.annotation, info)
        if convert is not None:
            param._runtime_param = _Quick(descriptor.annotation, info, convert)  # noqa: SLF001
