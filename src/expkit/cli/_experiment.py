"""Finding and loading the experiment: ``-f PATH|MODULE``, else ``$EXP_FILE``, else ``expfile.py``.

A ``.py`` file is executed as a module named after the file (``__name__`` is
not ``"__main__"``, so its ``if __name__ == "__main__":`` block does not
run), with its directory first on ``sys.path`` as ``python FILE`` would do.
Its functions are pickled by value, so the processes executor can ship steps
defined in a file that its workers cannot import by name. A module name is
imported with the working directory first on ``sys.path``, as ``python -m``
does. Either way, the decorated steps are the experiment.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from expkit._errors import ExpkitError

__all__ = ["DEFAULT_FILE", "ExperimentError", "find_experiment", "load_experiment"]

DEFAULT_FILE = "expfile.py"


class ExperimentError(ExpkitError):
    """The experiment file is missing, or fails to load (exit status 2)."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


def find_experiment(given: str | None) -> str | None:
    """The experiment to load: ``given`` (``-f`` or ``$EXP_FILE``), else ``expfile.py`` if here."""
    if given:
        return given
    return DEFAULT_FILE if Path(DEFAULT_FILE).is_file() else None


def load_experiment(given: str | None, *, required: bool = True) -> ModuleType | None:
    """Load the experiment and return its module; ``None`` if there is none and not ``required``."""
    source = find_experiment(given)
    if source is None:
        if not required:
            return None
        raise ExperimentError(
            DEFAULT_FILE,
            "no experiment here — pass -f FILE (a .py file or a module name), "
            "set $EXP_FILE, or write an expfile.py",
        )
    module = _load_file(Path(source)) if _is_path(source) else _import(source)
    from expkit._task import registry

    if not registry:
        raise ExperimentError(source, "declares no steps — decorate its step functions with @task")
    return module


def _is_path(source: str) -> bool:
    return source.endswith(".py") or os.sep in source or "/" in source or Path(source).is_file()


def _load_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise ExperimentError(str(path), "no such experiment file")
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ExperimentError(str(path), "cannot be loaded as Python (is it a .py file?)")
    module = importlib.util.module_from_spec(spec)
    # `python FILE` puts the file's directory first: its helper modules import.
    sys.path.insert(0, str(path.parent.absolute()))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as error:
        del sys.modules[name]
        if isinstance(error, Exception):
            raise _explained(str(path), error) from error
        raise
    from expkit._executors import pickle_by_value

    # Its functions travel by value: a worker process cannot import this file by name.
    pickle_by_value(module)
    return module


def _module_name(path: Path) -> str:
    """The file's stem, so that what it pickles by reference loads again the same way."""
    stem = path.stem
    if stem.isidentifier() and stem not in sys.modules:
        return stem
    import zlib

    return f"_expfile_{zlib.crc32(str(path.absolute()).encode()):08x}"


def _import(name: str) -> ModuleType:
    # As `python -m`: the working directory first.
    sys.path.insert(0, str(Path.cwd()))
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is not None and (name == error.name or name.startswith(error.name + ".")):
            raise ExperimentError(
                name,
                "no such experiment file, nor a module importable from here — "
                "pass -f with a .py file or a module name",
            ) from error
        raise _explained(name, error) from error
    except Exception as error:
        raise _explained(name, error) from error


def _explained(source: str, error: Exception) -> ExperimentError:
    """An error raised while loading, placed at its line in the experiment."""
    if isinstance(error, SyntaxError):
        where = f"line {error.lineno}: " if error.lineno else ""
        return ExperimentError(source, f"syntax error: {where}{error.msg}")
    what = str(error) if isinstance(error, ExpkitError) else f"{type(error).__name__}: {error}"
    # The deepest frame in the experiment's own file says where it went wrong.
    import traceback  # only for an experiment that fails to load

    frames = traceback.extract_tb(error.__traceback__)
    origin = Path(source).name if source.endswith(".py") else source.replace(".", "/") + ".py"
    mine = [f for f in frames if f.filename.endswith(origin)]
    where = f"line {mine[-1].lineno}: " if mine else ""
    return ExperimentError(source, f"failed to load: {where}{what}")
