"""Code fingerprints: the source sliced by the code object's positions agrees with inspect."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import pytest

from expkit._fingerprint import _function_tree, code_fingerprint

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from types import ModuleType

# Functions of the shapes experiment files hold; each must slice to what inspect reads.
SHAPES = '''
import functools


def plain():
    return 1


@functools.lru_cache
def decorated_docstring_only():
    """Only a docstring, under a decorator."""


def one_liner(): return 2


@functools.lru_cache(
    maxsize=None,
)
def decorated_over_lines(x):
    return x


def black_signature(
    a: int,
    b: int = 2,
) -> int:
    """Docstring."""
    return (
        a
        + b
    )


def docstring_only():
    """A docstring
    over lines.
    """


def nested():
    def inner(y):
        return [z * 2 for z in range(y)]

    return inner(3), (lambda q: q + 1)(4)


def trailing_comment():
    x = 1
    # a comment after the last statement
    return x
    # and another


async def coroutine():
    return 3


class Holder:
    def method(self):
        return {
            "k": 1,
        }


def try_finally():
    try:
        return 1
    finally:
        print("done")


def ends_in_string():
    return """
text at column zero
"""


def dead_code_after_return():
    return 1
    print("never")
'''


def _load(path: Path, source: str, name: str) -> ModuleType:
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _functions(module: ModuleType) -> dict[str, Callable[..., Any]]:
    found: dict[str, Callable[..., Any]] = {
        name: value
        for name, value in vars(module).items()
        if inspect.isfunction(value) and value.__module__ == module.__name__
    }
    found["method"] = module.Holder.method
    found["decorated_over_lines"] = module.decorated_over_lines.__wrapped__
    found["decorated_docstring_only"] = module.decorated_docstring_only.__wrapped__
    return found


def _dump(tree: ast.AST) -> str:
    return ast.dump(tree, include_attributes=False)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="co_positions is new in Python 3.11")
def test_slices_agree_with_inspect(tmp_path: Path) -> None:
    """Every shape parses to inspect's tree without inspect."""
    module = _load(tmp_path / "shapes.py", SHAPES, "expkit_test_shapes")
    functions = _functions(module)
    assert len(functions) == 13
    sliced = []
    for name, fn in functions.items():
        tree = _function_tree(fn)
        expected = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        if tree is None:
            continue
        assert _dump(tree) == _dump(expected), name
        sliced.append(name)
    # Every shape takes the fast path (a docstring-only body and dead code by indentation).
    assert sorted(sliced) == sorted(functions)


def test_fallback_shapes_still_fingerprint(tmp_path: Path) -> None:
    """A lambda, and dead code holding a line at column 0, get inspect's print."""
    source = "def dead():\n    return 1\n    x = (\n1)\n\n\nsquare = lambda v: v * v\n"
    module = _load(tmp_path / "shapes2.py", source, "shapes2")
    for fn in (module.square, module.dead):
        assert _function_tree(fn) is None
        assert len(code_fingerprint(fn)) == 16
    assert code_fingerprint(module.dead) != code_fingerprint(module.square)


def test_comments_docstrings_and_decorators_do_not_count(tmp_path: Path) -> None:
    """Formatting aside, the same body gives the same print; another body another one."""
    first = _load(tmp_path / "a.py", "def step(x):\n    return x + 1\n", "fp_a")
    second = _load(
        tmp_path / "b.py",
        'import functools\n\n\n@functools.cache\ndef step(x):  # why\n    """Doc."""\n'
        "    return (x +\n            1)\n",
        "fp_b",
    )
    third = _load(tmp_path / "c.py", "def step(x):\n    return x + 2\n", "fp_c")
    assert code_fingerprint(first.step) == code_fingerprint(second.step.__wrapped__)
    assert code_fingerprint(first.step) != code_fingerprint(third.step)


def test_file_edited_and_reloaded(tmp_path: Path) -> None:
    """A module edited on disk and loaded again is read afresh, not from a stale line cache."""
    path = tmp_path / "edited.py"
    before = code_fingerprint(_load(path, "def step():\n    return 1\n", "fp_edit").step)
    # A different size, so the line cache sees the change even within one mtime tick.
    after = code_fingerprint(_load(path, "def step():\n    return 1000\n", "fp_edit").step)
    assert before != after
