"""expkit: experiments that survive crashes."""

from __future__ import annotations

from typing import Any as _Any

from ._environment import Environment
from ._errors import (
    ConfigError,
    CorruptEnvironmentError,
    CorruptValueError,
    CycleError,
    EnvironmentExistsError,
    ExpkitError,
    NoEnvironmentError,
    PrerequisiteError,
    RunFailedError,
    StepRunningError,
    StepTimeoutError,
    UnknownStepError,
    UnpicklableValueError,
    UntrustedEnvironmentError,
)
from ._records import ErrorInfo, Owner, StepRecord
from ._status import Status
from ._task import Task, TaskOptions, get_or_create_env, task


def __getattr__(name: str) -> _Any:
    # importlib.metadata costs tens of milliseconds: read the version only when asked.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("expkit")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            return "0+unknown"
    msg = f"module 'expkit' has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = [
    "ConfigError",
    "CorruptEnvironmentError",
    "CorruptValueError",
    "CycleError",
    "Environment",
    "EnvironmentExistsError",
    "ErrorInfo",
    "ExpkitError",
    "NoEnvironmentError",
    "Owner",
    "PrerequisiteError",
    "RunFailedError",
    "Status",
    "StepRecord",
    "StepRunningError",
    "StepTimeoutError",
    "Task",
    "TaskOptions",
    "UnknownStepError",
    "UnpicklableValueError",
    "UntrustedEnvironmentError",
    "__version__",
    "get_or_create_env",
    "task",
]
