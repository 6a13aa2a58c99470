"""The ``@task`` decorator: a step that loads its environment, runs, and records."""

from __future__ import annotations

import functools
import os
import types
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence

from ._environment import Environment
from ._errors import CycleError, UnknownStepError
from ._fingerprint import code_fingerprint, params_fingerprint
from ._graph import check_acyclic
from ._paths import default_root
from ._records import Frozen
from ._typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

if TYPE_CHECKING:
    import inspect

__all__ = ["Task", "TaskOptions", "get_or_create_env", "registry", "task"]

P = ParamSpec("P")
R = TypeVar("R")

Grid = Mapping[str, Iterable[Any]] | Callable[[Environment], Iterable[Mapping[str, Any]]]


class TaskOptions(Frozen):
    """The options given to ``@task``."""

    __slots__ = (
        "grid",
        "name",
        "new",
        "priority",
        "requires",
        "rerun_on_change",
        "retries",
        "retry_delay",
        "symlink",
        "timeout",
    )
    _fields = (
        "new",
        "symlink",
        "requires",
        "name",
        "retries",
        "retry_delay",
        "timeout",
        "grid",
        "priority",
        "rerun_on_change",
    )

    new: bool
    symlink: bool | str | os.PathLike[str]
    requires: tuple[str, ...]
    name: str
    retries: int
    retry_delay: float
    timeout: float | None
    grid: Grid | None
    priority: int
    rerun_on_change: bool

    # Not a dataclass: `dataclasses` alone costs ~15 ms of `import expkit`.
    def __init__(
        self,
        *,
        new: bool = False,
        symlink: bool | str | os.PathLike[str] = True,
        requires: tuple[str, ...] = (),
        name: str = "",
        retries: int = 0,
        retry_delay: float = 0.0,
        timeout: float | None = None,
        grid: Grid | None = None,
        priority: int = 0,
        rerun_on_change: bool = False,
    ) -> None:
        # One assignment a field, unrolled: a file may declare thousands of steps.
        _set(self, "new", new)
        _set(self, "symlink", symlink)
        _set(self, "requires", requires)
        _set(self, "name", name)
        _set(self, "retries", retries)
        _set(self, "retry_delay", retry_delay)
        _set(self, "timeout", timeout)
        _set(self, "grid", grid)
        _set(self, "priority", priority)
        _set(self, "rerun_on_change", rerun_on_change)


_set = object.__setattr__


_T = TypeVar("_T")


class _cached(Generic[_T]):  # noqa: N801 - a decorator, named like the one it replaces
    """``functools.cached_property`` without the lock Python 3.11 takes on each first read.

    That lock is one for the whole class: a run of a thousand steps took it
    thousands of times, for values computed once per step.
    """

    def __init__(self, compute: Callable[[Any], _T]) -> None:
        self._compute = compute
        self._name = compute.__name__
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> _cached[_T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> _T: ...

    def __get__(self, instance: object, owner: type | None = None) -> _T | _cached[_T]:
        if instance is None:
            return self
        # Stored in the instance: later reads find it there, not here.
        value = instance.__dict__[self._name] = self._compute(instance)
        return value


#: Every decorated step by name, for ``requires=["name"]`` and the planner.
registry: dict[str, Task[Any, Any]] = {}
#: Names some decorated step requires (never pruned: a stale name costs one check).
_REQUIRED: set[str] = set()


class Task(Generic[P, R]):
    """A decorated step: call it to run it once, ``.make()`` to resume."""

    def __init__(self, fn: Callable[P, R], options: TaskOptions) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.options = options
        self.name = options.name
        self.priority = options.priority
        self._requires = options.requires

    @_cached
    def signature(self) -> inspect.Signature:
        """The function's signature."""
        import inspect

        return inspect.signature(self.fn)

    @_cached
    def _facts(self) -> tuple[_Parameters, bool]:
        """``_parameters`` and ``takes_env``, read once."""
        plain = _plain_facts(self.fn)
        if plain is not None:
            return plain
        defaults: dict[str, Any] = {}
        required: set[str] = set()
        names: set[str] = set()
        var_keyword = False
        for name, parameter in self.signature.parameters.items():
            if parameter.kind is parameter.VAR_KEYWORD:
                var_keyword = True
            elif parameter.kind is parameter.VAR_POSITIONAL or name == "env":
                continue
            elif parameter.default is parameter.empty:
                required.add(name)
                names.add(name)
            else:
                defaults[name] = parameter.default
                names.add(name)
        takes_env = "env" in self.signature.parameters or var_keyword
        return (defaults, frozenset(required), frozenset(names), var_keyword), takes_env

    @property
    def takes_env(self) -> bool:
        """Whether the function accepts ``env`` (by name, or through ``**kwargs``)."""
        return self._facts[1]

    @property
    def _parameters(self) -> _Parameters:
        """Defaults, required names, all names, and whether ``**kwargs`` is taken."""
        return self._facts[0]

    def params_for(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments a run passes: defaults, then ``given``, checked."""
        defaults, required, names, var_keyword = self._parameters
        if not given and not required:
            return dict(defaults)
        params = {**defaults, **given}
        unknown = sorted(set(given) - names) if not var_keyword else []
        if unknown:
            takes = ", ".join(sorted(names)) or "none"
            msg = f"step {self.name!r} takes no parameter {unknown[0]!r} (it takes: {takes})"
            raise TypeError(msg)
        missing = sorted(required - params.keys())
        if missing:
            msg = (
                f"step {self.name!r} needs a value for {missing[0]!r}: "
                f"make(..., params={{{self.name!r}: {{{missing[0]!r}: ...}}}}) "
                f"or exp run -p {self.name}.{missing[0]}=..."
            )
            raise TypeError(msg)
        return params

    @_cached
    def defaults_fingerprint(self) -> str | None:
        """The params fingerprint of a run given no params; ``None`` if some are required."""
        defaults, required, _, _ = self._parameters
        return None if required else params_fingerprint(defaults)

    @property
    def defaults(self) -> Mapping[str, Any]:
        """The parameters' default values."""
        return self._parameters[0]

    def make(self, **kwargs: Any) -> Any:
        """Same as ``make(step, **kwargs)``: run what this step misses, skip what is done."""
        from ._make import make  # the planner loads only when used

        return make(self, **kwargs)

    @property
    def requires(self) -> tuple[Task[Any, Any], ...]:
        """The prerequisite steps (names resolved when first needed)."""
        found = []
        for name in self._requires:
            if name not in registry:
                raise UnknownStepError(name, registry)
            found.append(registry[name])
        return tuple(found)

    @_cached
    def code_fingerprint(self) -> str:
        """Changes when the function's source changes (formatting and docstrings aside)."""
        return code_fingerprint(self.fn)

    # Typed loosely on purpose: ``env`` may be omitted, or given as a path,
    # whatever the function's own signature says.
    def __call__(self, *args: Any, **kwargs: Any) -> R:
        """Run this step only: refuses if a prerequisite is not DONE."""
        from ._runner import run_direct  # avoid an import cycle

        env = kwargs.pop("env", None)
        environment = resolve_env(env, new=self.options.new, symlink=self.options.symlink)
        result: R = run_direct(self, environment, args, kwargs)
        return result

    def __repr__(self) -> str:
        return f"<Task {self.name}>"


def resolve_env(
    env: Environment | str | os.PathLike[str] | None,
    *,
    new: bool,
    symlink: bool | str | os.PathLike[str],
) -> Environment:
    """The environment a direct call uses: given, fresh if ``new``, else ``./current``."""
    if isinstance(env, Environment):
        return env
    if env is None:
        if new:
            return Environment.create(default_root(), symlink=symlink)
        return Environment.load()
    if not new:
        return Environment.load(env)  # no Path built: this is each direct call's path
    from pathlib import Path  # loaded when first used: `import expkit` stays light

    path = Path(env)
    if not path.is_file() and not (path / "env").exists():
        return Environment.create(path.parent, path.name, symlink=symlink)
    return Environment.load(path)


def get_or_create_env(
    new: bool,  # noqa: FBT001 - EnOSlib's positional signature
    env_name: Environment | str | os.PathLike[str] | None = None,
    symlink: bool | str | os.PathLike[str] = True,  # noqa: FBT001, FBT002 - EnOSlib's positional signature
    *,
    durable: bool | None = None,
) -> Environment:
    """EnOSlib's helper: pass an Environment through, load one, or create one.

    Unlike EnOSlib, ``new=True`` on a directory that holds an environment
    raises :class:`EnvironmentExistsError` instead of wiping it.
    """
    if isinstance(env_name, Environment):
        return env_name
    if env_name is None:
        if new:
            return Environment.create(default_root(), symlink=symlink, durable=durable)
        return Environment.load(durable=durable)
    from pathlib import Path

    path = Path(env_name)
    if new:
        return Environment.create(path.parent, path.name, symlink=symlink, durable=durable)
    return Environment.load(path, durable=durable)


def _check_grid(step: Task[Any, Any]) -> None:
    """A grid mapping's keys must be parameters of the function."""
    grid = step.options.grid
    if grid is None or callable(grid):
        return
    if not isinstance(grid, Mapping) or not grid:  # type: ignore[redundant-expr] # untyped callers
        msg = (
            f"step {step.name!r}: grid must be a non-empty mapping of parameter -> values, "
            "or a callable"
        )
        raise TypeError(msg)
    _, _, names, var_keyword = step._parameters  # noqa: SLF001 - same module
    unknown = [key for key in grid if key not in names]
    if unknown and not var_keyword:
        function = step.fn.__name__
        msg = f"step {step.name!r}: grid key {unknown[0]!r} is not a parameter of {function}()"
        raise TypeError(msg)


def _names(requires: Sequence[str | Task[Any, Any]] | str | Task[Any, Any]) -> tuple[str, ...]:
    items = [requires] if isinstance(requires, (str, Task)) else list(requires)
    return tuple(item if isinstance(item, str) else item.name for item in items)


_VARKEYWORDS = 0x08  # inspect.CO_VARKEYWORDS, without importing inspect

#: Defaults, required names, all names, and whether ``**kwargs`` is taken.
_Parameters = tuple[dict[str, Any], frozenset[str], frozenset[str], bool]

# By function: the steps a loop makes from one function read its code once.
_FACTS: weakref.WeakKeyDictionary[Callable[..., Any], tuple[_Parameters, bool]] = (
    weakref.WeakKeyDictionary()
)


def _plain_facts(fn: Callable[..., Any]) -> tuple[_Parameters, bool] | None:
    """``Task._facts`` of a plain function, read from its code object; else ``None``.

    ``inspect.signature`` costs tens of microseconds a function: a plan of
    thousands of steps reads a plain function's code object instead.
    ``None`` for anything else (wrapped, partial, a callable object...).
    """
    if type(fn) is not types.FunctionType:
        return None
    if "__wrapped__" in fn.__dict__ or "__signature__" in fn.__dict__:
        return None
    found = _FACTS.get(fn)
    if found is not None:
        return found
    code = fn.__code__
    positional = code.co_varnames[: code.co_argcount]
    keyword_only = code.co_varnames[code.co_argcount : code.co_argcount + code.co_kwonlyargcount]
    given = fn.__defaults__ or ()
    defaults = dict(zip(positional[len(positional) - len(given) :], given, strict=True))
    defaults.update(fn.__kwdefaults__ or {})
    names = [*positional, *keyword_only]
    var_keyword = bool(code.co_flags & _VARKEYWORDS)
    takes_env = "env" in names or var_keyword
    defaults.pop("env", None)
    named = frozenset(name for name in names if name != "env")
    required = frozenset(name for name in named if name not in defaults)
    found = _FACTS[fn] = ((defaults, required, named, var_keyword), takes_env)
    return found


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    *,
    new: bool = False,
    symlink: bool | str | os.PathLike[str] = True,
    requires: Sequence[str | Task[Any, Any]] | str | Task[Any, Any] = (),
    name: str | None = None,
    retries: int = 0,
    retry_delay: float = 0.0,
    timeout: float | None = None,
    grid: Grid | None = None,
    priority: int = 0,
    rerun_on_change: bool = False,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None,
    /,
    *,
    new: bool = False,
    symlink: bool | str | os.PathLike[str] = True,
    requires: Sequence[str | Task[Any, Any]] | str | Task[Any, Any] = (),
    name: str | None = None,
    retries: int = 0,
    retry_delay: float = 0.0,
    timeout: float | None = None,
    grid: Grid | None = None,
    priority: int = 0,
    rerun_on_change: bool = False,
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Declare an experiment step.

    Works bare (``@task``) and with options. Calling the step runs it once on
    its environment, recording RUNNING before the body and DONE, FAILED or
    CANCELLED after it; ``make(step)`` resumes instead.
    """
    if retries < 0:
        msg = f"retries must be >= 0, not {retries}"
        raise ValueError(msg)
    if retry_delay < 0:
        msg = f"retry_delay must be >= 0 seconds, not {retry_delay}"
        raise ValueError(msg)
    if timeout is not None and timeout <= 0:
        msg = f"timeout must be > 0 seconds, not {timeout}"
        raise ValueError(msg)

    def decorate(function: Callable[P, R]) -> Task[P, R]:
        options = TaskOptions(
            new=new,
            symlink=symlink,
            requires=_names(requires),
            name=name or function.__name__,
            retries=retries,
            retry_delay=retry_delay,
            timeout=timeout,
            grid=grid,
            priority=priority,
            rerun_on_change=rerun_on_change,
        )
        step = Task(function, options)
        _check_grid(step)
        previous = registry.get(step.name)
        registry[step.name] = step
        # The declared graph is acyclic. Only a step some declared step
        # requires can close a cycle, and only if its own prerequisites
        # changed: checking the others would make declaring n steps (or
        # running a notebook cell that declares them again) cost n^2.
        same_edges = previous is not None and previous.options.requires == options.requires
        try:
            if not same_edges and (step.name in _REQUIRED or step.name in options.requires):
                check_acyclic(step, registry)
        except CycleError:
            # Leave the registry as it was: a notebook cell fixed and re-run works.
            if previous is None:
                del registry[step.name]
            else:
                registry[step.name] = previous
            raise
        _REQUIRED.update(options.requires)
        return step

    return decorate if fn is None else decorate(fn)
