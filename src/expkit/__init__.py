"""expkit: experiments that survive crashes."""

from __future__ import annotations

from ._environment import Environment
from ._errors import (
    ConfigError,
    CorruptEnvironmentError,
    CorruptValueError,
    CycleError,
    DaskUnavailableError,
    EnvironmentExistsError,
    ExpkitError,
    NoEnvironmentError,
    PrerequisiteError,
    RunFailedError,
    SchedulerUnreachableError,
    StepRunningError,
    StepTimeoutError,
    UnknownStepError,
    UnpicklableValueError,
    UntrustedEnvironmentError,
)
from ._records import ErrorInfo, Owner, StepRecord
from ._status import Status
from ._task import Task, TaskOptions, get_or_create_env, task
from ._typing import TYPE_CHECKING as _TYPE_CHECKING
from ._typing import Any as _Any

if _TYPE_CHECKING:
    from ._executors import Executor
    from ._make import make
    from ._plan import Plan, PlanEntry, plan
    from ._report import RunReport, StepOutcome


# The planner and executors load on first use: `import expkit` stays cheap.
_LAZY = {
    "Executor": "._executors",
    "Plan": "._plan",
    "PlanEntry": "._plan",
    "RunReport": "._report",
    "StepOutcome": "._report",
    "make": "._make",
    "plan": "._plan",
}


def __getattr__(name: str) -> _Any:
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
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
    "DaskUnavailableError",
    "Environment",
    "EnvironmentExistsError",
    "ErrorInfo",
    "Executor",
    "ExpkitError",
    "NoEnvironmentError",
    "Owner",
    "Plan",
    "PlanEntry",
    "PrerequisiteError",
    "RunFailedError",
    "RunReport",
    "SchedulerUnreachableError",
    "Status",
    "StepOutcome",
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
    "make",
    "plan",
    "task",
]
