"""expkit: experiments that survive crashes."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

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

try:
    __version__ = version("expkit")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

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
