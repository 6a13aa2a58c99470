"""Tests of the error classes: bases, context, pickling, exit codes and messages."""

from __future__ import annotations

import ast
import inspect
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import expkit
from expkit import (
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
from tests.helpers import run_python


@dataclass(frozen=True)
class Case:
    """One error class with sample arguments and what the error must show."""

    cls: type[ExpkitError]
    args: tuple[Any, ...]
    builtin: type[BaseException]
    exit_code: int
    #: Context attributes and their expected values.
    attrs: dict[str, Any] = field(default_factory=dict)
    #: Text the message must contain (the what and the where).
    fragments: tuple[str, ...] = ()


CASES = [
    Case(
        NoEnvironmentError,
        (Path("/srv/exp/current"),),
        FileNotFoundError,
        2,
        {"path": Path("/srv/exp/current")},
        ("/srv/exp/current", "new=True"),
    ),
    Case(
        EnvironmentExistsError,
        (Path("/srv/exp/results/run1"),),
        FileExistsError,
        2,
        {"path": Path("/srv/exp/results/run1")},
        ("/srv/exp/results/run1",),
    ),
    Case(
        UntrustedEnvironmentError,
        ("/srv/exp/results/run1", "it is writable by group or others"),
        PermissionError,
        2,
        {"path": Path("/srv/exp/results/run1"), "reason": "it is writable by group or others"},
        ("/srv/exp/results/run1", "writable by group", "trust=True"),
    ),
    Case(
        CorruptEnvironmentError,
        ("/srv/exp/results/run1/env", "bad header", 10),
        ValueError,
        2,
        {"path": Path("/srv/exp/results/run1/env"), "reason": "bad header", "offset": 10},
        ("/srv/exp/results/run1/env", "bad header"),
    ),
    Case(
        CorruptValueError,
        ("thing", "/srv/exp/results/run1/env", "ModuleNotFoundError: No module named 'mymod'"),
        ValueError,
        2,
        {"key": "thing", "path": Path("/srv/exp/results/run1/env")},
        ("'thing'", "/srv/exp/results/run1/env", "mymod"),
    ),
    Case(
        UnpicklableValueError,
        ("bad", "TypeError: cannot pickle '_thread.lock' object"),
        TypeError,
        2,
        {"key": "bad"},
        ("'bad'", "_thread.lock"),
    ),
    Case(
        ConfigError,
        ("/srv/exp/conf.yaml", "invalid YAML: mapping values are not allowed here", 3),
        ValueError,
        2,
        {"path": Path("/srv/exp/conf.yaml"), "line": 3},
        ("/srv/exp/conf.yaml", "3", "invalid YAML"),
    ),
    Case(
        CycleError,
        (["deploy", "bench", "deploy"],),
        ValueError,
        2,
        {"cycle": ("deploy", "bench", "deploy")},
        ("deploy", "bench"),
    ),
    Case(
        UnknownStepError,
        ("deplyo", ["deploy", "bench"]),
        KeyError,
        2,
        {"name": "deplyo", "suggestions": ("deploy",)},
        ("deplyo", "deploy"),
    ),
    Case(
        PrerequisiteError,
        ("bench", ["deploy", "provision"]),
        RuntimeError,
        1,
        {"step": "bench", "missing": ("deploy", "provision")},
        ("bench", "deploy", "provision"),
    ),
    Case(
        StepRunningError,
        ("bench", "node-7", 4242),
        RuntimeError,
        1,
        {"step": "bench", "host": "node-7", "pid": 4242},
        ("bench", "node-7", "4242"),
    ),
    Case(
        StepTimeoutError,
        ("bench", 2.5),
        TimeoutError,
        1,
        {"step": "bench", "timeout": 2.5},
        ("bench", "2.5"),
    ),
    Case(
        RunFailedError,
        ({"failed": ["bench"]}, "1 step failed: bench"),
        RuntimeError,
        1,
        {"report": {"failed": ["bench"]}},
        ("1 step failed: bench",),
    ),
    Case(
        SchedulerUnreachableError,
        ("tcp://10.0.0.1:8786", "timed out after 10 s"),
        ConnectionError,
        2,
        {"address": "tcp://10.0.0.1:8786", "reason": "timed out after 10 s"},
        ("tcp://10.0.0.1:8786", "timed out", "dask scheduler"),
    ),
    Case(
        DaskUnavailableError,
        ("No module named 'distributed'",),
        ImportError,
        2,
        {"reason": "No module named 'distributed'"},
        ("pip install 'expkit[dask]'",),
    ),
]

PARAMS = [pytest.param(case, id=case.cls.__name__) for case in CASES]


def _make(case: Case) -> ExpkitError:
    return case.cls(*case.args)


class TestCoverage:
    """The cases below cover every error expkit exports."""

    def test_every_exported_error_has_a_case(self) -> None:
        """Each ExpkitError subclass in expkit's namespace is tested here."""
        exported = {
            obj
            for name in expkit.__all__
            if inspect.isclass(obj := getattr(expkit, name)) and issubclass(obj, ExpkitError)
        }
        assert exported - {ExpkitError} == {case.cls for case in CASES}

    def test_design_names_are_exported(self) -> None:
        """The errors DESIGN section 9 requires at least are all public."""
        required = {
            "NoEnvironmentError",
            "EnvironmentExistsError",
            "UntrustedEnvironmentError",
            "CorruptEnvironmentError",
            "CorruptValueError",
            "ConfigError",
            "UnknownStepError",
            "CycleError",
            "PrerequisiteError",
            "StepRunningError",
            "StepTimeoutError",
            "RunFailedError",
        }
        assert required <= set(expkit.__all__)


class TestBases:
    """Each error derives from ExpkitError and from the builtin it resembles."""

    @pytest.mark.parametrize("case", PARAMS)
    def test_subclasses_base_and_builtin(self, case: Case) -> None:
        """The class inherits both ExpkitError and its builtin."""
        assert issubclass(case.cls, ExpkitError)
        assert issubclass(case.cls, case.builtin)

    @pytest.mark.parametrize("case", PARAMS)
    def test_caught_by_builtin_except_clause(self, case: Case) -> None:
        """An existing ``except Builtin`` clause catches the error."""
        with pytest.raises(case.builtin):
            raise _make(case)

    def test_base_is_an_exception(self) -> None:
        """ExpkitError is an ordinary Exception (not a BaseException only)."""
        assert issubclass(ExpkitError, Exception)


class TestContext:
    """Errors carry their context in attributes and say what and where."""

    @pytest.mark.parametrize("case", PARAMS)
    def test_context_attributes(self, case: Case) -> None:
        """The constructor's context is kept in the documented attributes."""
        error = _make(case)
        for name, expected in case.attrs.items():
            assert getattr(error, name) == expected, name

    @pytest.mark.parametrize("case", PARAMS)
    def test_message_names_what_and_where(self, case: Case) -> None:
        """str() of the error holds the step, key or path it is about."""
        message = str(_make(case))
        for fragment in case.fragments:
            assert fragment in message

    @pytest.mark.parametrize("case", PARAMS)
    def test_str_is_the_plain_message(self, case: Case) -> None:
        """str() is the message itself, not a quoted repr (KeyError's default)."""
        error = _make(case)
        assert str(error) == error.message
        assert not str(error).startswith(("'", '"'))

    def test_no_environment_message_names_the_path(self) -> None:
        """NoEnvironmentError's message contains the path it looked at."""
        error = NoEnvironmentError("/some/where/current")
        assert "/some/where/current" in str(error)


class TestExitCodes:
    """Each error carries the exit code of the ``exp`` command."""

    @pytest.mark.parametrize("case", PARAMS)
    def test_exit_code(self, case: Case) -> None:
        """Run failures give 1, every other error 2."""
        assert case.cls.exit_code == case.exit_code
        assert _make(case).exit_code == case.exit_code

    def test_base_exit_code_is_two(self) -> None:
        """The base error's exit code is 2."""
        assert ExpkitError.exit_code == 2


class TestPickling:
    """Errors cross process boundaries intact."""

    @pytest.mark.parametrize("case", PARAMS)
    @pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL])
    def test_round_trip_keeps_type_message_and_context(self, case: Case, protocol: int) -> None:
        """A pickled error comes back with its type, message and attributes."""
        error = _make(case)
        copy = pickle.loads(pickle.dumps(error, protocol=protocol))
        assert type(copy) is case.cls
        assert str(copy) == str(error)
        assert isinstance(copy, case.builtin)
        assert copy.exit_code == case.exit_code
        for name, expected in case.attrs.items():
            assert getattr(copy, name) == expected, name

    def test_round_trip_across_processes(self) -> None:
        """Errors pickled in another interpreter unpickle here with their context."""
        calls = ", ".join(f"expkit.{case.cls.__name__}(*{case.args!r})" for case in CASES)
        code = f"""
            import pickle
            from pathlib import PosixPath
            import expkit
            print(repr([pickle.dumps(e) for e in [{calls}]]))
        """
        blobs = ast.literal_eval(run_python(code).stdout)
        for case, blob in zip(CASES, blobs, strict=True):
            copy = pickle.loads(blob)
            assert type(copy) is case.cls
            assert str(copy) == str(_make(case))
            for name, expected in case.attrs.items():
                assert getattr(copy, name) == expected, (case.cls.__name__, name)


class TestUnknownStepSuggestions:
    """UnknownStepError suggests the close names."""

    def test_suggests_close_name(self) -> None:
        """A typo of a known step suggests that step."""
        error = UnknownStepError("deplyo", ["deploy", "bench"])
        assert error.suggestions == ("deploy",)
        assert "deploy" in str(error)
        assert "bench" not in error.suggestions

    def test_no_suggestion_when_nothing_is_close(self) -> None:
        """A name close to nothing suggests nothing, and says no 'did you mean'."""
        error = UnknownStepError("zzzz", ["deploy", "bench"])
        assert error.suggestions == ()
        assert "did you mean" not in str(error)

    def test_accepts_any_iterable_of_names(self) -> None:
        """Known names may come from a mapping (the registry) or a generator."""
        from_mapping = UnknownStepError("benhc", {"bench": 1, "deploy": 2})
        from_generator = UnknownStepError("benhc", (name for name in ["bench", "deploy"]))
        assert from_mapping.suggestions == ("bench",)
        assert from_generator.suggestions == ("bench",)
