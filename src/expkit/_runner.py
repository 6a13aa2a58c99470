"""Running one step on an environment and recording what happened."""

from __future__ import annotations

import inspect
import pickle
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._errors import PrerequisiteError, StepRunningError, UnpicklableValueError
from ._fingerprint import params_fingerprint
from ._instances import instance_name, step_done
from ._process import current_owner_state, is_alive
from ._records import (
    ErrorInfo,
    StoredResult,
    as_datetime,
    clock,
    finished_state,
    running_state,
)
from ._status import Status
from ._timeout import deadline
from ._tracking import Tracker, tracking

if TYPE_CHECKING:
    from ._environment import Environment
    from ._task import Task

__all__ = ["run_direct"]


#: The stored result of a step that returns None (most do): pickled once.
_NONE_RESULT = StoredResult.of(None)


#: A step whose parameters all may be given by keyword: their names (``env``
#: aside) and, in order, each name with its default. Kept in the step's own
#: ``__dict__``, beside its cached signature.
_KeywordPlan = tuple[frozenset[str], tuple[tuple[str, Any], ...]]
_PLAN_ATTRIBUTE = "_expkit_keyword_plan"
_NO_PLAN: Any = object()
_BY_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def _keyword_plan(step: Task[Any, Any]) -> _KeywordPlan | None:
    cached = step.__dict__.get(_PLAN_ATTRIBUTE, _NO_PLAN)
    if cached is not _NO_PLAN:
        plan: _KeywordPlan | None = cached
        return plan
    parameters = step.signature.parameters.values()
    plan = None
    if all(parameter.kind in _BY_KEYWORD for parameter in parameters):
        order = tuple((p.name, p.default) for p in parameters if p.name != "env")
        plan = (frozenset(name for name, _ in order), order)
    step.__dict__[_PLAN_ATTRIBUTE] = plan
    return plan


def bound_params(
    step: Task[Any, Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """The step's arguments by name, defaults applied, ``env`` left out."""
    return _bound(step, args, kwargs)[0]


def _bound(
    step: Task[Any, Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> tuple[dict[str, Any], bytes]:
    """:func:`bound_params`, and their pickle as a record stores it."""
    plan = None if args else _keyword_plan(step)
    if plan is not None and plan[0].issuperset(kwargs):
        # Keywords only, all known: what bind_partial and apply_defaults give, faster.
        empty = inspect.Parameter.empty
        params = {
            name: kwargs.get(name, default)
            for name, default in plan[1]
            if name in kwargs or default is not empty
        }
    else:
        params = _bind(step, args, kwargs)
    try:
        blob = pickle.dumps(params, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # noqa: BLE001 - params are recorded; unpicklable ones as their repr
        params = {key: repr(value) for key, value in params.items()}
        blob = pickle.dumps(params, protocol=pickle.HIGHEST_PROTOCOL)
    return params, blob


def _bind(step: Task[Any, Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    try:
        bound = step.signature.bind_partial(*args, **kwargs)
    except TypeError as error:
        msg = f"step {step.name!r}: {error}"
        raise TypeError(msg) from None
    bound.apply_defaults()
    params: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        kind = step.signature.parameters[name].kind
        if name == "env":
            continue
        if kind is inspect.Parameter.VAR_KEYWORD:
            params.update({k: v for k, v in value.items() if k != "env"})
        else:
            params[name] = value
    return params


def run_direct(
    step: Task[Any, Any], env: Environment, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Run ``step`` once on ``env``: claim, run with retries and timeout, record, commit."""
    params, params_blob = _bound(step, args, kwargs)
    name = step.name if step.options.grid is None else _direct_instance(step, args, kwargs)
    fingerprint = f"{step.code_fingerprint}{params_fingerprint(params)}"
    # The record is kept in its stored form: no record object is built for it
    # unless someone reads it.
    running = running_state(name, clock(), params_blob, fingerprint, current_owner_state())

    def claim(_changed: set[str]) -> None:
        # Under the environment's file lock with every other commit read: two
        # processes cannot both find the step free.
        if step.options.requires:
            _check_requires(step, env, name)
        records = env._steps  # noqa: SLF001 - the runner is the environment's partner
        if records.status(name) is Status.RUNNING:
            owner = records[name].owner
            if owner is not None and is_alive(owner):
                raise StepRunningError(name, owner.host, owner.pid)
        env._put_state(name, running)  # noqa: SLF001

    # RUNNING is evidence for a crash, not a result: no fsync needed.
    env._commit(before=claim, sync=False, label=name)  # noqa: SLF001
    if step.takes_env:
        kwargs = {**kwargs, "env": env}
    attempts = [1]
    with tracking(id(env)) as tracker:
        run = _Run(env, name, running, tracker)
        try:
            result = _attempt(step, args, kwargs, attempts)
        except KeyboardInterrupt as error:
            run.finish(Status.CANCELLED, attempts[0], error=error)
            raise
        except BaseException as error:  # SystemExit too: recorded, then re-raised
            run.finish(Status.FAILED, attempts[0], error=error)
            raise
        try:
            stored = _NONE_RESULT if result is None else StoredResult.of(result)
        except Exception as error:  # any pickling failure
            failure = UnpicklableValueError(f"result of {name}", f"{type(error).__name__}: {error}")
            run.finish(Status.FAILED, attempts[0], error=failure)
            raise failure from error
        try:
            run.finish(Status.DONE, attempts[0], result=stored)
        except UnpicklableValueError as failure:
            run.finish(Status.FAILED, attempts[0], error=failure)
            raise
    return result


def _check_requires(step: Task[Any, Any], env: Environment, name: str) -> None:
    missing = [req.name for req in step.requires if not step_done(env, req)]
    if missing:
        raise PrerequisiteError(name, missing)


def _attempt(
    step: Task[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any], attempts: list[int]
) -> Any:
    """Call the step's function, retrying on exceptions; ``attempts[0]`` counts the calls."""
    timeout = step.options.timeout
    while True:
        try:
            if timeout is None:
                return step.fn(*args, **kwargs)
            with deadline(timeout, step.name):
                return step.fn(*args, **kwargs)
        except Exception:
            if attempts[0] > step.options.retries:
                raise
        time.sleep(step.options.retry_delay * 2 ** (attempts[0] - 1))
        attempts[0] += 1


def _direct_instance(step: Task[Any, Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    """The instance a direct call of a sweep step runs: named by its grid keys' values."""
    given = step.signature.bind_partial(*args, **kwargs).arguments
    grid = step.options.grid
    keys = list(given) if callable(grid) or grid is None else list(grid)
    return instance_name(step.name, {key: given[key] for key in keys if key in given})


class _Run:
    """One direct call's step, between its claim and its end."""

    __slots__ = ("env", "name", "running", "tracker")

    def __init__(
        self, env: Environment, name: str, running: dict[str, Any], tracker: Tracker
    ) -> None:
        self.env = env
        self.name = name
        #: The RUNNING record as claimed, in its stored form.
        self.running = running
        self.tracker = tracker

    def finish(
        self,
        status: Status,
        attempts: int,
        *,
        error: BaseException | None = None,
        result: StoredResult | None = None,
    ) -> None:
        """Record the outcome with the data the step wrote, in one durable commit."""
        env, name, running, tracker = self.env, self.name, self.running, self.tracker
        ended = clock()

        def record(changed: set[str]) -> None:
            reads = tracker.reads
            writes = tracker.written(changed)
            info = None if error is None else ErrorInfo.from_exception(error)
            if env._steps.stored(name) is running:  # noqa: SLF001
                # As claimed: end it in its stored form.
                data = None if result is None else result.data
                state = finished_state(
                    running,
                    status=status,
                    attempts=attempts,
                    ended=ended,
                    error=info,
                    result=data,
                    reads=reads,
                    writes=writes,
                )
                env._put_state(name, state)  # noqa: SLF001
                return
            # Changed since the claim (by the step itself, say): end what is there now.
            current = env._steps[name]  # noqa: SLF001
            env._put_record(  # noqa: SLF001
                current.replace(
                    status=status,
                    attempts=attempts,
                    ended=as_datetime(ended),
                    error=info,
                    stored_result=current.stored_result if result is None else result,
                    reads=frozenset(reads),
                    writes=frozenset(writes),
                )
            )

        # A failed step keeps what it could store: its writes may name resources to clean up.
        skip = status is not Status.DONE
        # What the step read may have changed in place after a dump() of its own.
        env._commit(before=record, label=name, skip_unpicklable=skip, recheck=tracker.reads)  # noqa: SLF001
