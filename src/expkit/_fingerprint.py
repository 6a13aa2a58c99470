"""Fingerprints of a step's code and parameters.

The code fingerprint hashes the function's source after parsing it, so it is
the same in every process, on every machine and after a restart, and ignores
formatting, comments, docstrings and decorators. In a notebook the source
comes from the kernel's cell cache; the cell's temporary file name and number
are not part of it, so a restarted kernel gives the same print.

Where the source cannot be read (a lambda typed at a prompt, a cell run under
a cell magic such as ``%%time``), the compiled code is hashed instead: its
bytecode, names and constants, nested code included, but never a file name,
a line number or a ``repr`` holding a memory address, which would change
from one process to the next.
"""

from __future__ import annotations

import pickle
import types
from collections.abc import Callable, Mapping

from ._journal import blake2b
from ._typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ast

# `ast`, `linecache` and `textwrap` are imported where a function's source is
# read, once per code object: every step imports this module, few parse code.

__all__ = ["code_fingerprint", "params_fingerprint"]


def _hash(data: bytes) -> str:
    hexdigest: str = blake2b(data, 8).hexdigest()
    return hexdigest


def _strip(tree: ast.AST) -> ast.AST:
    import ast

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            node.decorator_list = []
            body = node.body
            first = body[0] if body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                is_docstring = isinstance(first.value.value, str)
                node.body = (body[1:] or [ast.Pass()]) if is_docstring else body
    return tree


# By code object: steps made in a loop from one function share their print,
# and a function redefined (a notebook cell run again) gets a new code object.
_BY_CODE: dict[object, str] = {}


def code_fingerprint(fn: Callable[..., Any]) -> str:
    """16 hex digits that change when the function's code changes."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return _source_fingerprint(fn)
    found = _BY_CODE.get(code)
    if found is None:
        found = _BY_CODE[code] = _source_fingerprint(fn)
    return found


def _source_fingerprint(fn: Callable[..., Any]) -> str:
    import ast
    import textwrap

    try:
        tree = _function_tree(fn)
        if tree is None:
            import inspect  # the tokenizer's regexes cost ~12 ms a process

            tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        normal = ast.dump(_strip(tree), annotate_fields=False, include_attributes=False)
        return _hash(normal.encode())
    except (OSError, TypeError, SyntaxError):
        code = getattr(fn, "__code__", None)
        if code is None:
            return _hash(repr(fn).encode())
        return _hash(_code_bytes(code))


def _function_tree(fn: Callable[..., Any]) -> ast.Module | None:
    """The parsed source of a plain function, sliced by its code's positions; else ``None``.

    ``inspect.getsource`` finds a function's end with the tokenizer. The
    code object knows it: its decorators start at ``co_firstlineno`` and
    its last instruction ends on the last line of its body (Python 3.11+
    records where each instruction ends); lines indented deeper after it
    belong to it too. A slice that does not parse to this one function (a
    lambda, a string whose lines start at column 0) is left to ``inspect``.
    """
    code = getattr(fn, "__code__", None)
    if not isinstance(code, types.CodeType) or not hasattr(code, "co_positions"):
        return None
    if code.co_name == "<lambda>":
        return None  # an expression inside a line: no block of its own
    import ast
    import linecache
    import textwrap

    filename = code.co_filename
    linecache.checkcache(filename)  # as inspect does: a file edited since is read again
    lines = linecache.getlines(filename, getattr(fn, "__globals__", None))
    first = code.co_firstlineno
    last = _last_line(code)
    if not lines or last < first or last > len(lines):
        return None
    last = _block_end(lines, first, last)
    try:
        tree = ast.parse(textwrap.dedent("".join(lines[first - 1 : last])))
    except SyntaxError:
        return None
    body = tree.body
    if (
        len(body) != 1
        or not isinstance(body[0], (ast.FunctionDef, ast.AsyncFunctionDef))
        or body[0].name != code.co_name
    ):
        return None
    return tree


def _block_end(lines: list[str], first: int, last: int) -> int:
    """The last line of the block begun on line ``first``, from line ``last`` on.

    What has no instruction of its own (a docstring-only body, code the
    compiler dropped after a ``return``) follows the last instruction (or
    the ``def`` line), indented deeper than the block's first line.
    """
    head = lines[first - 1]
    indent = len(head) - len(head.lstrip())
    # A decorated function's code starts at its first decorator: look past them.
    for number in range(first - 1, len(lines)):
        text = lines[number].lstrip()
        if text.startswith(("def ", "async def ")):
            last = max(last, number + 1)
            break
    end = last
    for number in range(last, len(lines)):
        line = lines[number]
        text = line.lstrip()
        if not text or text.startswith("#"):
            continue
        if len(line) - len(text) <= indent:
            break
        end = number + 1
    return end


def _last_line(code: types.CodeType) -> int:
    """The last source line any instruction of ``code`` (nested code included) ends on."""
    positions = code.co_positions()  # type: ignore[attr-defined,unused-ignore] # 3.11+, checked
    last = max((end for _, end, _, _ in positions if end is not None), default=0)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            last = max(last, _last_line(const))
    return last


def _code_bytes(code: types.CodeType) -> bytes:
    """What a code object does, as bytes that are the same in every process."""
    parts = [code.co_code, repr((code.co_names, code.co_varnames, code.co_freevars)).encode()]
    parts.extend(_const_bytes(const) for const in code.co_consts)
    return b"\0".join(parts)


def _const_bytes(const: object) -> bytes:
    # A nested code object's repr holds its address and file name; a
    # frozenset's repr follows the process's string hash seed.
    if isinstance(const, types.CodeType):
        return b"code(" + _code_bytes(const) + b")"
    if isinstance(const, tuple):
        return b"(" + b",".join(_const_bytes(item) for item in const) + b")"
    if isinstance(const, frozenset):
        return b"{" + b",".join(sorted(_const_bytes(item) for item in const)) + b"}"
    return repr(const).encode()


def params_fingerprint(params: Mapping[str, Any]) -> str:
    """16 hex digits that change when the parameters change."""
    if not params:  # most steps: a thousand of them pay one pickle and hash
        return _NO_PARAMS
    items = sorted(params.items())
    try:
        return _hash(pickle.dumps(items, protocol=4))
    except Exception:  # noqa: BLE001 - unpicklable params still get a stable-enough print
        return _hash(repr(items).encode())


_NO_PARAMS = _hash(pickle.dumps([], protocol=4))
