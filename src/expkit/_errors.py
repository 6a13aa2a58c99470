"""The errors expkit raises.

Every error derives from :class:`ExpkitError` and from the builtin it
resembles, so existing ``except`` clauses keep working. Each carries its
context in attributes, pickles (errors cross process boundaries) and knows the
exit code the ``exp`` command gives for it::

    ExpkitError
    ├── NoEnvironmentError (FileNotFoundError)
    ├── EnvironmentExistsError (FileExistsError)
    ├── UntrustedEnvironmentError (PermissionError)
    ├── CorruptEnvironmentError (ValueError)
    ├── CorruptValueError (ValueError)
    ├── UnpicklableValueError (TypeError)
    ├── ConfigError (ValueError)
    ├── CycleError (ValueError)
    ├── UnknownStepError (KeyError)
    ├── PrerequisiteError (RuntimeError)
    ├── StepRunningError (RuntimeError)
    ├── RunFailedError (RuntimeError)
    └── StepTimeoutError (TimeoutError)
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from ._typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from pathlib import Path

    from ._report import RunReport

__all__ = [
    "ConfigError",
    "CorruptEnvironmentError",
    "CorruptValueError",
    "CycleError",
    "DaskUnavailableError",
    "EnvironmentExistsError",
    "ExpkitError",
    "NoEnvironmentError",
    "PrerequisiteError",
    "RunFailedError",
    "SchedulerUnreachableError",
    "StepRunningError",
    "StepTimeoutError",
    "UnknownStepError",
    "UnpicklableValueError",
    "UntrustedEnvironmentError",
]


def _path(path: str | os.PathLike[str]) -> Path:
    from pathlib import Path  # errors are rare: `import expkit` does not load pathlib

    return Path(path)


class ExpkitError(Exception):
    """Base of every error expkit raises."""

    #: The exit code of the ``exp`` command when this error stops it.
    exit_code: ClassVar[int] = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take their context as keyword arguments; rebuild from the
        # instance dict so every error survives a trip through pickle.
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[ExpkitError], state: dict[str, Any]) -> ExpkitError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error


class NoEnvironmentError(ExpkitError, FileNotFoundError):
    """No environment exists where one was expected."""

    def __init__(self, path: str | os.PathLike[str], hint: str | None = None) -> None:
        self.path = _path(path)
        hint = hint or "run a step declared with new=True, or pass env= / --env"
        super().__init__(f"no environment at {self.path} — {hint}")


class EnvironmentExistsError(ExpkitError, FileExistsError):
    """An environment already exists where a new one was requested."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = _path(path)
        super().__init__(
            f"an environment already exists at {self.path} — load it instead, "
            "or choose another name; expkit never overwrites one"
        )


class UntrustedEnvironmentError(ExpkitError, PermissionError):
    """The environment is owned by someone else or writable by others."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = _path(path)
        self.reason = reason
        super().__init__(
            f"refusing to load {self.path}: {reason}; loading unpickles code, so check "
            "who can write there, then fix the permissions or pass trust=True"
        )


class CorruptEnvironmentError(ExpkitError, ValueError):
    """The environment's store cannot be read."""

    def __init__(
        self, path: str | os.PathLike[str], reason: str, offset: int | None = None
    ) -> None:
        self.path = _path(path)
        self.reason = reason
        self.offset = offset
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(
            f"corrupt environment store {self.path}{where}: {reason} — nothing was changed "
            "on disk; keep a copy of the file before trying to repair it"
        )


class CorruptValueError(ExpkitError, ValueError):
    """One stored value cannot be unpickled; the rest of the environment is fine."""

    def __init__(self, key: str, path: str | os.PathLike[str], reason: str) -> None:
        self.key = key
        self.path = _path(path)
        self.reason = reason
        super().__init__(
            f"the value of {key!r} in {self.path} cannot be read: {reason} — other keys are "
            "unaffected; assign a new value or delete the key"
        )


class UnpicklableValueError(ExpkitError, TypeError):
    """A value cannot be stored because it does not pickle."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(
            f"cannot store {key!r}: {reason} — store something picklable (plain data, "
            "a path, an id) instead; nothing committed was lost"
        )


class ConfigError(ExpkitError, ValueError):
    """The configuration file is missing or is not valid YAML."""

    def __init__(self, path: str | os.PathLike[str], reason: str, line: int | None = None) -> None:
        self.path = _path(path)
        self.reason = reason
        self.line = line
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"configuration {where}: {reason}")


class CycleError(ExpkitError, ValueError):
    """The steps' prerequisites form a cycle."""

    def __init__(self, cycle: Iterable[str]) -> None:
        self.cycle = tuple(cycle)
        super().__init__(
            "the prerequisites form a cycle: "
            + " -> ".join(self.cycle)
            + " — remove one of these requires= links"
        )


class UnknownStepError(ExpkitError, KeyError):
    """A step name that no decorated step has."""

    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        self.name = name
        import difflib  # only when a name is unknown: `import expkit` stays light

        self.suggestions = tuple(difflib.get_close_matches(name, list(known), n=3))
        hint = (
            f" — did you mean {', '.join(map(repr, self.suggestions))}?" if self.suggestions else ""
        )
        super().__init__(f"unknown step {name!r}{hint}")


class PrerequisiteError(ExpkitError, RuntimeError):
    """A step was called directly before its prerequisites were done."""

    exit_code = 1

    def __init__(self, step: str, missing: Iterable[str]) -> None:
        self.step = step
        self.missing = tuple(missing)
        names = ", ".join(map(repr, self.missing))
        super().__init__(
            f"step {step!r} needs {names} done first — make({step!r}) (or exp run {step}) "
            "runs the missing prerequisites"
        )


class StepRunningError(ExpkitError, RuntimeError):
    """The same step is already running in a live process."""

    exit_code = 1

    def __init__(self, step: str, host: str, pid: int, *, worker: str | None = None) -> None:
        self.step = step
        self.host = host
        self.pid = pid
        #: The Dask worker still running it, when a run that died left it there.
        self.worker = worker
        if worker is None:
            message = (
                f"step {step!r} is already running (pid {pid} on host {host}) — wait for it, "
                "or stop that process; a dead owner is detected automatically"
            )
        else:
            message = (
                f"step {step!r} is still running on Dask worker {worker} (pid {pid} on host "
                f"{host}), left there by a run that died — wait for it to end, or restart "
                "that worker, then run again"
            )
        super().__init__(message)


class StepTimeoutError(ExpkitError, TimeoutError):
    """A step ran longer than its timeout."""

    exit_code = 1

    def __init__(self, step: str, timeout: float) -> None:
        self.step = step
        self.timeout = timeout
        super().__init__(f"step {step!r} exceeded its timeout of {timeout:g} s")


class RunFailedError(ExpkitError, RuntimeError):
    """A run finished with failed steps; ``report`` says which."""

    exit_code = 1

    def __init__(self, report: RunReport, summary: str = "") -> None:
        self.report = report
        super().__init__(summary or f"the run failed:\n{report}")


class DaskUnavailableError(ExpkitError, ImportError):
    """Dask distributed is not installed."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(
            f"the dask executor needs Dask distributed ({reason}) — "
            "install it with: pip install 'expkit[dask]'"
        )


class SchedulerUnreachableError(ExpkitError, ConnectionError):
    """The Dask scheduler given by address cannot be reached."""

    def __init__(self, address: str, reason: str) -> None:
        self.address = address
        self.reason = reason
        super().__init__(
            f"cannot reach the Dask scheduler at {address}: {reason} — check the address "
            f"and the network, or start one (`dask scheduler`, then `dask worker {address}` "
            "on each machine)"
        )
