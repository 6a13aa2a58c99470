"""Tests of ``expkit.Environment``: creating, loading, the mapping, persistence and step records."""

from __future__ import annotations

import ast
import contextlib
import os
import pickle
import re
import shutil
import stat
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import expkit
from expkit import (
    ConfigError,
    CorruptEnvironmentError,
    CorruptValueError,
    Environment,
    EnvironmentExistsError,
    ExpkitError,
    NoEnvironmentError,
    Status,
    UnknownStepError,
    UnpicklableValueError,
    UntrustedEnvironmentError,
    get_or_create_env,
    make,
    task,
)
from expkit import _environment as environment_module
from tests.helpers import run_python

if TYPE_CHECKING:
    from collections.abc import Callable

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(-\d+)?$")


@pytest.fixture
def env() -> Environment:
    """Make a fresh environment at ``./results/env``, with ``./current`` pointing to it."""
    return Environment.create(name="env")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


class Counted(list[int]):
    """A list that counts how many times it is pickled."""

    pickled = 0

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as a plain list of its items, and counted."""
        type(self).pickled += 1
        return (Counted, (list(self),))


def _read_in_child(path: Path, key: str) -> Any:
    """``key``'s value as another process loading ``path`` sees it (a literal)."""
    code = f"""
        import expkit
        env = expkit.Environment.load({str(path)!r})
        print(repr(env[{key!r}]) if {key!r} in env else "<missing>")
    """
    out = run_python(code).stdout.strip()
    return out if out == "<missing>" else ast.literal_eval(out)


def _listing(directory: str | Path) -> list[str]:
    return sorted(path.name for path in Path(directory).iterdir())


def _current_target() -> Path:
    return Path("current").resolve(strict=True)


# --------------------------------------------------------------------------- create


class TestCreate:
    """``Environment.create`` makes a new environment directory."""

    def test_default_name_is_a_timestamp_under_results(self) -> None:
        """Without a name, the directory is ``./results/<YYYY-MM-DDTHH-MM-SS>``."""
        env = Environment.create()
        assert env.resultdir.parent == (Path.cwd() / "results").resolve()
        assert TIMESTAMP.match(env.resultdir.name), env.resultdir.name
        assert (env.resultdir / "env").is_file()

    def test_taken_timestamp_gets_numbered_suffixes(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Environments made within one second are named ``T``, ``T-2``, ``T-3``."""
        monkeypatch.setattr(environment_module, "timestamp_name", lambda: "2024-05-06T07-08-09")
        names = [Environment.create(symlink=False).resultdir.name for _ in range(3)]
        assert names == ["2024-05-06T07-08-09", "2024-05-06T07-08-09-2", "2024-05-06T07-08-09-3"]

    def test_taken_timestamp_keeps_the_older_data(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A second environment in the same second never touches the first one's data."""
        monkeypatch.setattr(environment_module, "timestamp_name", lambda: "2024-05-06T07-08-09")
        first = Environment.create()
        first["k"] = "first"
        first.dump()
        second = Environment.create()
        assert second.resultdir != first.resultdir
        assert len(second) == 0
        assert Environment.load(first.resultdir)["k"] == "first"

    def test_explicit_root_and_name(self, tmp_path: Path) -> None:
        """``root`` and ``name`` place the directory at ``root/name``."""
        env = Environment.create(tmp_path / "deep" / "root", "run1")
        assert env.resultdir == (tmp_path / "deep" / "root" / "run1").resolve()
        assert (env.resultdir / "env").is_file()

    def test_existing_environment_is_refused(self) -> None:
        """Creating over an existing environment raises EnvironmentExistsError."""
        first = Environment.create(name="run1")
        first["k"] = [1, 2, 3]
        first.dump()
        with pytest.raises(EnvironmentExistsError) as info:
            Environment.create(name="run1")
        assert info.value.path.name == "run1"
        assert Environment.load("results/run1")["k"] == [1, 2, 3]

    def test_refused_create_leaves_no_stray_files(self) -> None:
        """A refused create leaves the directory holding exactly what it held."""
        Environment.create(name="run1").dump()
        before = _listing("results/run1")
        with pytest.raises(EnvironmentExistsError):
            Environment.create(name="run1")
        assert _listing("results/run1") == before

    def test_refused_create_does_not_move_current(self) -> None:
        """A refused create leaves ``./current`` where it was."""
        Environment.create(name="run1")
        Environment.create(name="run2")
        with pytest.raises(EnvironmentExistsError):
            Environment.create(name="run1")
        assert _current_target() == Path("results/run2").resolve()

    def test_current_points_to_the_new_environment(self) -> None:
        """``./current`` is a symlink to the environment just made."""
        env = Environment.create(name="run1")
        assert Path("current").is_symlink()
        assert _current_target() == env.resultdir
        second = Environment.create(name="run2")
        assert _current_target() == second.resultdir

    def test_dangling_current_is_repointed(self) -> None:
        """A ``./current`` whose target was deleted is re-pointed to the new environment."""
        old = Environment.create(name="old")
        shutil.rmtree(old.resultdir)
        assert Path("current").is_symlink()
        assert not Path("current").exists()
        new = Environment.create(name="new")
        assert _current_target() == new.resultdir

    def test_symlink_false_makes_no_link(self) -> None:
        """``symlink=False`` leaves no ``./current``."""
        Environment.create(name="run1", symlink=False)
        assert not os.path.lexists("current")

    def test_symlink_false_leaves_existing_current_alone(self) -> None:
        """``symlink=False`` does not re-point an existing ``./current``."""
        first = Environment.create(name="run1")
        Environment.create(name="run2", symlink=False)
        assert _current_target() == first.resultdir

    def test_symlink_path_names_the_link(self) -> None:
        """``symlink="other"`` makes that link instead of ``./current``."""
        env = Environment.create(name="run1", symlink="other")
        assert Path("other").is_symlink()
        assert Path("other").resolve() == env.resultdir
        assert not os.path.lexists("current")

    def test_directories_are_private(self) -> None:
        """The results root and the environment directory are created 0700."""
        env = Environment.create(name="run1")
        assert _mode(Path("results")) == 0o700
        assert _mode(env.resultdir) == 0o700

    def test_files_are_private(self) -> None:
        """Every file expkit makes in the environment directory is 0600."""
        env = Environment.create(name="run1")
        for i in range(40):  # enough commits for any index cache to be written too
            env[f"k{i}"] = i
            env.dump()
        files = [path for path in env.resultdir.iterdir() if path.is_file()]
        assert env.resultdir / "env" in files
        for path in files:
            assert _mode(path) == 0o600, path.name

    def test_created_environment_loads_trusted(self) -> None:
        """What create makes passes load's trust check without trust=True."""
        env = Environment.create(name="run1")
        env["k"] = 1
        env.dump()
        assert Environment.load("results/run1")["k"] == 1


# --------------------------------------------------------------------------- load


class TestLoad:
    """``Environment.load`` finds an environment by directory, file or link."""

    @pytest.fixture
    def saved(self) -> Path:
        """Make an environment at ./results/run1 holding ``k = "v"``, with ./current to it."""
        env = Environment.create(name="run1")
        env["k"] = "v"
        env.dump()
        return env.resultdir

    @pytest.mark.parametrize(
        "form", ["current", "directory", "env file", "link to directory", "link to env file"]
    )
    def test_path_forms(self, saved: Path, form: str) -> None:
        """None (./current), the directory, its ``env`` file and links to either all load."""
        Path("dirlink").symlink_to(saved)
        Path("filelink").symlink_to(saved / "env")
        path: str | Path | None = {
            "current": None,
            "directory": saved,
            "env file": saved / "env",
            "link to directory": "dirlink",
            "link to env file": "filelink",
        }[form]
        env = Environment.load(path)
        assert env["k"] == "v"
        assert env.resultdir == saved

    @pytest.mark.usefixtures("saved")
    def test_relative_directory(self) -> None:
        """A relative path is taken from the working directory."""
        assert Environment.load("results/run1")["k"] == "v"

    def test_no_current_raises(self) -> None:
        """Without ./current, load() raises NoEnvironmentError naming ./current."""
        with pytest.raises(NoEnvironmentError) as info:
            Environment.load()
        assert "current" in str(info.value)
        assert info.value.path.name == "current"
        assert "new=True" in str(info.value)

    def test_dangling_current_raises(self) -> None:
        """A ./current whose target is gone raises NoEnvironmentError."""
        env = Environment.create(name="gone")
        shutil.rmtree(env.resultdir)
        with pytest.raises(NoEnvironmentError):
            Environment.load()

    def test_missing_directory_raises_naming_it(self) -> None:
        """A path that does not exist raises NoEnvironmentError whose message names it."""
        with pytest.raises(NoEnvironmentError) as info:
            Environment.load("nowhere/run9")
        assert "run9" in str(info.value)
        assert info.value.path.name == "run9"

    def test_directory_without_env_file_raises(self) -> None:
        """A plain directory that holds no ``env`` file is not an environment."""
        Path("plain").mkdir()
        with pytest.raises(NoEnvironmentError) as info:
            Environment.load("plain")
        assert "plain" in str(info.value)

    def test_load_never_moves_current(self) -> None:
        """Loading another environment leaves ./current where it was."""
        first = Environment.create(name="run1")
        second = Environment.create(name="run2", symlink=False)
        Environment.load(second.resultdir)
        Environment.load("results/run2/env")
        assert _current_target() == first.resultdir

    def test_moved_directory_loads_with_its_new_resultdir(
        self, saved: Path, tmp_path: Path
    ) -> None:
        """An environment moved elsewhere loads there, and knows where it is now."""
        (tmp_path / "archive").mkdir()
        moved = tmp_path / "archive" / "run1"
        shutil.move(str(saved), str(moved))
        env = Environment.load(moved)
        assert env.resultdir == moved.resolve()
        assert env["resultdir"] == env.resultdir
        assert env["k"] == "v"

    @pytest.mark.skipif(sys.platform != "linux", reason="follows the directory through /proc")
    def test_resultdir_follows_a_move_while_loaded(self, saved: Path, tmp_path: Path) -> None:
        """A directory renamed while loaded: resultdir and env["resultdir"] give the new place."""
        env = Environment.load(saved)
        moved = tmp_path / "renamed"
        saved.rename(moved)
        assert env.resultdir == moved.resolve()
        assert env["resultdir"] == moved.resolve()

    @pytest.mark.skipif(sys.platform != "linux", reason="follows the directory through /proc")
    def test_commits_follow_a_move_while_loaded(self, saved: Path, tmp_path: Path) -> None:
        """After a rename, dump() still commits into the moved environment."""
        env = Environment.load(saved)
        moved = tmp_path / "renamed"
        saved.rename(moved)
        env["after"] = 2
        env.dump()
        reloaded = Environment.load(moved)
        assert reloaded["after"] == 2
        assert reloaded["k"] == "v"

    def test_running_record_of_a_dead_process_loads_interrupted(self, saved: Path) -> None:
        """A step left RUNNING with no live owner is INTERRUPTED on the next load."""
        env = Environment.load(saved)
        env.set_running("train")
        env.dump()
        assert Environment.load(saved).get_status("train") is Status.INTERRUPTED

    def test_load_from_file_is_load(self, saved: Path) -> None:
        """``load_from_file`` (EnOSlib's name) loads like ``load``."""
        assert Environment.load_from_file(saved)["k"] == "v"


# --------------------------------------------------------------------------- trust


class TestTrust:
    """Loading refuses environments others could have written."""

    @pytest.mark.parametrize(
        ("target", "mode"),
        [("directory", 0o770), ("directory", 0o702), ("env file", 0o660), ("env file", 0o602)],
    )
    def test_writable_by_others_is_refused(self, env: Environment, target: str, mode: int) -> None:
        """A directory or journal writable by group or others raises UntrustedEnvironmentError."""
        env["k"] = 1
        env.dump()
        path = env.resultdir if target == "directory" else env.resultdir / "env"
        path.chmod(mode)
        with pytest.raises(UntrustedEnvironmentError):
            Environment.load(env.resultdir)

    def test_error_names_the_path(self, env: Environment) -> None:
        """The refusal's message and ``.path`` name the environment directory."""
        env.resultdir.chmod(0o770)
        with pytest.raises(UntrustedEnvironmentError) as info:
            Environment.load("results/env")
        assert info.value.path == env.resultdir
        assert str(env.resultdir) in str(info.value)
        assert "trust=True" in str(info.value)

    def test_trust_true_loads_anyway(self, env: Environment) -> None:
        """``trust=True`` loads a group-writable environment."""
        env["k"] = "kept"
        env.dump()
        env.resultdir.chmod(0o770)
        assert Environment.load(env.resultdir, trust=True)["k"] == "kept"

    def test_current_link_is_checked_too(self, env: Environment) -> None:
        """Loading through ./current applies the same trust check."""
        env.resultdir.chmod(0o770)
        with pytest.raises(UntrustedEnvironmentError):
            Environment.load()

    @pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown needs root")
    def test_owned_by_another_user_is_refused(self, env: Environment) -> None:
        """An environment owned by another uid is refused unless trusted."""
        env["k"] = 1
        env.dump()
        os.chown(env.resultdir, 4321, 4321)
        with pytest.raises(UntrustedEnvironmentError) as info:
            Environment.load(env.resultdir)
        assert "4321" in str(info.value)
        assert Environment.load(env.resultdir, trust=True)["k"] == 1


# --------------------------------------------------------------------------- mapping


class TestMapping:
    """The environment is a mutable mapping of str keys to user data."""

    def test_set_get_del_len_iter_contains(self, env: Environment) -> None:
        """The MutableMapping protocol works on user data."""
        env["a"] = 1
        env["b"] = {"x": [1, 2]}
        assert env["a"] == 1
        assert env["b"] == {"x": [1, 2]}
        assert len(env) == 2
        assert sorted(env) == ["a", "b"]
        assert "a" in env
        assert "zzz" not in env
        del env["a"]
        assert "a" not in env
        assert len(env) == 1
        assert env.get("a", "default") == "default"
        with pytest.raises(KeyError):
            env["a"]
        with pytest.raises(KeyError):
            del env["a"]

    def test_overwrite(self, env: Environment) -> None:
        """Assigning an existing key replaces its value."""
        env["a"] = 1
        env["a"] = 2
        assert env["a"] == 2
        assert len(env) == 1

    @pytest.mark.parametrize("key", [1, None, b"bytes", ("t",)])
    def test_non_str_key_raises_type_error(self, env: Environment, key: Any) -> None:
        """Keys are strings; anything else raises TypeError and stores nothing."""
        with pytest.raises(TypeError):
            env[key] = 1
        assert len(env) == 0

    def test_dump_persists_for_another_process(self, env: Environment) -> None:
        """Values committed by dump() are seen by a fresh process loading the environment."""
        env["nodes"] = ["n1", "n2"]
        env["count"] = 3
        env.dump()
        assert _read_in_child(env.resultdir, "nodes") == ["n1", "n2"]
        assert _read_in_child(env.resultdir, "count") == 3

    def test_deletion_is_persisted(self, env: Environment) -> None:
        """A deleted key is gone after dump() and reload."""
        env["a"] = 1
        env["b"] = 2
        env.dump()
        del env["a"]
        env.dump()
        reloaded = Environment.load(env.resultdir)
        assert "a" not in reloaded
        assert reloaded["b"] == 2

    def test_undumped_changes_are_not_visible_elsewhere(self, env: Environment) -> None:
        """Changes not committed stay private to this process."""
        env["committed"] = 1
        env.dump()
        env["committed"] = 2
        env["pending"] = "p"
        assert _read_in_child(env.resultdir, "committed") == 1
        assert _read_in_child(env.resultdir, "pending") == "<missing>"

    def test_refresh_takes_in_other_processes_commits(self, env: Environment) -> None:
        """refresh() shows what another process committed since load."""
        env["mine"] = 1
        env.dump()
        run_python(
            f"""
            import expkit
            env = expkit.Environment.load({str(env.resultdir)!r})
            env["theirs"] = {{"from": "child"}}
            env.dump()
            """
        )
        assert "theirs" not in env
        env.refresh()
        assert env["theirs"] == {"from": "child"}
        assert env["mine"] == 1

    def test_dump_merges_other_processes_commits(self, env: Environment) -> None:
        """Committing here keeps what another process committed to other keys."""
        env.dump()
        run_python(
            f"""
            import expkit
            env = expkit.Environment.load({str(env.resultdir)!r})
            env["theirs"] = 1
            env.dump()
            """
        )
        env["mine"] = 2
        env.dump()
        reloaded = Environment.load(env.resultdir)
        assert reloaded["theirs"] == 1
        assert reloaded["mine"] == 2

    def test_in_place_mutation_is_committed(self, env: Environment) -> None:
        """Appending to a list read from the environment is committed by dump()."""
        env["items"] = [1]
        env["info"] = {"a": 1}
        env.dump()
        loaded = Environment.load(env.resultdir)
        loaded["items"].append(2)
        loaded["info"]["b"] = 2
        loaded.dump()
        assert _read_in_child(env.resultdir, "items") == [1, 2]
        assert _read_in_child(env.resultdir, "info") == {"a": 1, "b": 2}

    def test_a_value_kept_and_changed_after_a_dump_is_committed_again(
        self, env: Environment
    ) -> None:
        """A list read once, appended to, dumped, appended to again: both appends are kept."""
        env["history"] = []
        env.dump()
        history = env["history"]  # kept across commits, as a training loop does
        for epoch in range(3):
            history.append(epoch)
            env.dump()
            assert _read_in_child(env.resultdir, "history") == list(range(epoch + 1))

    def test_a_step_that_dumps_midway_keeps_its_later_changes(self, env: Environment) -> None:
        """A direct call's final commit sees what the step changed after its own dump()."""
        env["history"] = []
        env["log"] = []
        env.dump()

        @task
        def train(env: Environment) -> None:
            env["log"].append("started")  # changed in place only before the dump()
            history = env["history"]
            history.append("first")
            env.dump()
            history.append("second")

        train(env=env.resultdir)
        assert _read_in_child(env.resultdir, "history") == ["first", "second"]
        assert _read_in_child(env.resultdir, "log") == ["started"]
        assert Environment.load(env.resultdir).steps["train"].writes == {"history", "log"}

    def test_commits_of_a_run_do_not_pickle_again_what_was_read_before(
        self, env: Environment
    ) -> None:
        """Values read before a run are checked by the next dump(), not by each step's commit."""
        env["kept"] = Counted([1])
        env.dump()
        kept = env["kept"]
        env.dump()  # commits what was read since the last commit: kept, once
        Counted.pickled = 0

        @task
        def first(env: Environment) -> None:
            env["a"] = 1

        @task(requires=[first])
        def second(env: Environment) -> None:
            env["b"] = 2

        assert make(second, env=env).ok
        assert Counted.pickled == 0  # a commit's cost follows what changed
        kept.append(2)
        env.dump()
        assert Counted.pickled == 1
        assert Environment.load(env.resultdir)["kept"] == [1, 2]  # a fresh handle reads the file

    def test_reload_sees_equal_data(self, env: Environment) -> None:
        """A committed environment loads equal to what was committed."""
        data = {
            "int": 1,
            "str": "s",
            "nested": {"l": [1, (2, 3)], "f": 1.5},
            "none": None,
            "big": b"x" * 200_000,
        }
        env.update(data)
        env.dump()
        assert dict(Environment.load(env.resultdir)) == data

    def test_resultdir_key(self, env: Environment) -> None:
        """``env["resultdir"]`` is the same Path as ``env.resultdir`` (EnOSlib code)."""
        assert env["resultdir"] == env.resultdir
        assert isinstance(env["resultdir"], Path)


# --------------------------------------------------------------------------- lazy values


class TestCorruptValueIsolation:
    """A value that no longer unpickles fails only its own key."""

    def test_missing_class_fails_only_its_key(self, tmp_path: Path) -> None:
        """With the module of a stored class gone, the other keys still load."""
        (tmp_path / "mymod.py").write_text("class Thing:\n    size = 3\n", encoding="utf-8")
        run_python(
            """
            import expkit, mymod
            env = expkit.Environment.create(name="lazy")
            env["thing"] = mymod.Thing()
            env["ok"] = "fine"
            env.dump()
            """
        )
        (tmp_path / "mymod.py").rename(tmp_path / "renamed_mod.py")
        out = run_python(
            """
            import expkit
            env = expkit.Environment.load("results/lazy")
            print(sorted(env))
            print(env["ok"])
            try:
                env["thing"]
            except expkit.CorruptValueError as error:
                print(type(error).__name__, error.key, "'thing'" in str(error))
            else:
                print("no error")
            """
        ).stdout.splitlines()
        assert out == ["['ok', 'thing']", "fine", "CorruptValueError thing True"]

    def test_corrupt_value_keeps_the_rest_writable(self, tmp_path: Path) -> None:
        """A key that fails to unpickle can be replaced, and the environment commits."""
        (tmp_path / "mymod.py").write_text("class Thing:\n    pass\n", encoding="utf-8")
        run_python(
            """
            import expkit, mymod
            env = expkit.Environment.create(name="lazy")
            env["thing"] = mymod.Thing()
            env["ok"] = 1
            env.dump()
            """
        )
        (tmp_path / "mymod.py").unlink()
        sys.modules.pop("mymod", None)
        env = Environment.load("results/lazy")
        with pytest.raises(CorruptValueError) as info:
            env["thing"]
        assert info.value.key == "thing"
        env["ok"] = 2
        env["thing"] = "replaced"
        env.dump()
        reloaded = Environment.load("results/lazy")
        assert reloaded["thing"] == "replaced"
        assert reloaded["ok"] == 2


class TestUnpicklableValue:
    """A value that does not pickle is refused at commit, losing nothing."""

    @pytest.mark.parametrize(
        "make_bad", [lambda: lambda x: x, threading.Lock], ids=["lambda", "lock"]
    )
    def test_dump_raises_naming_the_key(
        self, env: Environment, make_bad: Callable[[], object]
    ) -> None:
        """dump() raises UnpicklableValueError naming the key; committed data is intact."""
        env["good"] = [1, 2]
        env.dump()
        env["good"] = [3]
        env["bad"] = make_bad()
        with pytest.raises(UnpicklableValueError) as info:
            env.dump()
        assert info.value.key == "bad"
        assert "'bad'" in str(info.value)
        reloaded = Environment.load(env.resultdir)
        assert reloaded["good"] == [1, 2]
        assert "bad" not in reloaded

    def test_environment_still_commits_once_the_value_is_removed(self, env: Environment) -> None:
        """After a refused commit, removing the bad value lets the other changes commit."""
        env["bad"] = threading.Lock()
        env["good"] = 1
        with pytest.raises(UnpicklableValueError):
            env.dump()
        del env["bad"]
        env.dump()
        reloaded = Environment.load(env.resultdir)
        assert reloaded["good"] == 1
        assert "bad" not in reloaded


# --------------------------------------------------------------------------- durability


class TestDurability:
    """``durable=False`` and ``EXPKIT_DURABLE=0`` skip fsync but still persist."""

    def test_durable_by_default(self, env: Environment) -> None:
        """An environment is durable unless told otherwise."""
        assert env.durable is True
        assert Environment.load(env.resultdir).durable is True

    def test_durable_false_persists(self) -> None:
        """Commits with ``durable=False`` are loaded back."""
        env = Environment.create(name="fast", durable=False)
        assert env.durable is False
        env["k"] = 1
        env.dump()
        loaded = Environment.load("results/fast", durable=False)
        assert loaded.durable is False
        assert loaded["k"] == 1
        loaded["k"] = 2
        loaded.dump()
        assert Environment.load("results/fast")["k"] == 2

    @pytest.mark.parametrize("value", ["0", "false", "no", "off"])
    def test_env_var_sets_the_default(self, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
        """``EXPKIT_DURABLE=0`` makes environments non-durable, and they still persist."""
        monkeypatch.setenv("EXPKIT_DURABLE", value)
        env = Environment.create(name="fast")
        assert env.durable is False
        env["k"] = "v"
        env.dump()
        loaded = Environment.load("results/fast")
        assert loaded.durable is False
        assert loaded["k"] == "v"

    def test_explicit_argument_wins_over_env_var(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """``durable=True`` wins over ``EXPKIT_DURABLE=0``, and ``durable=False`` over ``=1``."""
        monkeypatch.setenv("EXPKIT_DURABLE", "0")
        assert Environment.create(name="a", durable=True).durable is True
        assert Environment.load("results/a", durable=True).durable is True
        monkeypatch.setenv("EXPKIT_DURABLE", "1")
        assert Environment.create(name="b", durable=False).durable is False
        assert get_or_create_env(new=False, env_name="results/b", durable=False).durable is False


# --------------------------------------------------------------------------- export


class TestDumpsLoads:
    """``dumps`` and ``loads`` export and import a whole environment."""

    def test_round_trip(self, env: Environment) -> None:
        """Data and step records survive dumps/loads."""
        env["a"] = {"nested": [1, 2]}
        env["b"] = "text"
        env.set_done("deploy")
        env.set_failed("bench")
        copy = Environment.loads(env.dumps())
        assert dict(copy) == {"a": {"nested": [1, 2]}, "b": "text"}
        assert copy.get_status("deploy") is Status.DONE
        assert copy.get_status("bench") is Status.FAILED
        assert set(copy.steps) == {"deploy", "bench"}

    def test_round_trip_of_in_memory_environment(self) -> None:
        """An in-memory environment exports and imports too."""
        env = Environment()
        env["k"] = [1]
        env.set_skipped("s")
        copy = Environment.loads(env.dumps())
        assert copy["k"] == [1]
        assert copy.is_skipped("s")

    def test_loaded_copy_is_independent(self, env: Environment) -> None:
        """Changing the imported copy does not change the original."""
        env["k"] = [1]
        copy = Environment.loads(env.dumps())
        copy["k"].append(2)
        copy["new"] = 1
        assert env["k"] == [1]
        assert "new" not in env

    @pytest.mark.parametrize(
        "data",
        [
            b"",
            b"garbage bytes",
            pickle.dumps({"a": 1}),
            pickle.dumps(("expkit-environment", 999, {}, {})),
        ],
        ids=["empty", "garbage", "foreign pickle", "future version"],
    )
    def test_garbage_raises_corrupt_environment(self, data: bytes) -> None:
        """Bytes that are not an export raise CorruptEnvironmentError."""
        with pytest.raises(CorruptEnvironmentError):
            Environment.loads(data)

    def test_truncated_export_raises_corrupt_environment(self, env: Environment) -> None:
        """A cut export raises CorruptEnvironmentError."""
        env["k"] = "v" * 100
        data = env.dumps()
        with pytest.raises(CorruptEnvironmentError):
            Environment.loads(data[: len(data) // 2])

    @settings(
        max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(data=st.binary(max_size=300))
    def test_random_bytes_raise_only_expkit_errors(self, data: bytes) -> None:
        """Random bytes fed to loads either load or raise an ExpkitError, nothing else."""
        with contextlib.suppress(ExpkitError):
            Environment.loads(data)


class TestFiles:
    """``to_file`` and ``from_file`` export and import one file."""

    def test_round_trip(self, env: Environment, tmp_path: Path) -> None:
        """A whole environment survives to_file/from_file."""
        env["a"] = 1
        env["b"] = [2]
        env.set_done("deploy")
        env.to_file(tmp_path / "export.pkl")
        copy = Environment.from_file(tmp_path / "export.pkl")
        assert dict(copy) == {"a": 1, "b": [2]}
        assert copy.is_done("deploy")

    def test_file_is_private(self, env: Environment, tmp_path: Path) -> None:
        """The exported file is created 0600."""
        env.to_file(tmp_path / "export.pkl")
        assert _mode(tmp_path / "export.pkl") == 0o600

    def test_to_file_replaces_an_existing_file_and_leaves_no_temp(
        self, env: Environment, tmp_path: Path
    ) -> None:
        """Exporting over a file replaces it, and no temporary file remains."""
        (tmp_path / "out").mkdir()
        target = tmp_path / "out" / "export.pkl"
        target.write_bytes(b"old")
        env["k"] = "new"
        env.to_file(target)
        assert _listing(tmp_path / "out") == ["export.pkl"]
        assert Environment.from_file(target)["k"] == "new"

    def test_task_name_keeps_only_that_record(self, env: Environment, tmp_path: Path) -> None:
        """With ``task_name`` the file holds only that step's record and no data."""
        env["payload"] = "data"
        env.set_done("deploy")
        env.set_failed("bench")
        env.set_start_end_clock("deploy", start=100.0, end=105.0)
        env.to_file(tmp_path / "one.pkl", task_name="deploy")
        copy = Environment.from_file(tmp_path / "one.pkl")
        assert len(copy) == 0
        assert set(copy.steps) == {"deploy"}
        assert copy.is_done("deploy")
        assert copy.steps["deploy"].duration == 5.0

    def test_unknown_task_name_raises_and_leaves_no_file(
        self, env: Environment, tmp_path: Path
    ) -> None:
        """An unknown ``task_name`` raises UnknownStepError and writes nothing."""
        env.set_done("deploy")
        (tmp_path / "out").mkdir()
        with pytest.raises(UnknownStepError) as info:
            env.to_file(tmp_path / "out" / "one.pkl", task_name="deplyo")
        assert info.value.suggestions == ("deploy",)
        assert _listing(tmp_path / "out") == []

    def test_unknown_task_name_keeps_an_existing_file(
        self, env: Environment, tmp_path: Path
    ) -> None:
        """A refused export leaves a previous export untouched."""
        env["k"] = 1
        env.to_file(tmp_path / "export.pkl")
        before = (tmp_path / "export.pkl").read_bytes()
        with pytest.raises(UnknownStepError):
            env.to_file(tmp_path / "export.pkl", task_name="nope")
        assert (tmp_path / "export.pkl").read_bytes() == before

    def test_truncated_file_raises_naming_the_path(self, env: Environment, tmp_path: Path) -> None:
        """A truncated export raises CorruptEnvironmentError whose message names the file."""
        env["k"] = "v" * 1000
        path = tmp_path / "export.pkl"
        env.to_file(path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(CorruptEnvironmentError) as info:
            Environment.from_file(path)
        assert str(path) in str(info.value)
        assert info.value.path == path

    def test_missing_file_raises_no_environment(self, tmp_path: Path) -> None:
        """from_file of a missing file raises NoEnvironmentError naming it."""
        with pytest.raises(NoEnvironmentError) as info:
            Environment.from_file(tmp_path / "absent.pkl")
        assert "absent.pkl" in str(info.value)


# --------------------------------------------------------------------------- config


class TestReloadConfig:
    """``reload_config`` reads ``env["config_file"]`` into ``env["config"]``."""

    def test_loads_yaml_and_stores_absolute_path(self, env: Environment) -> None:
        """The YAML mapping lands in env["config"]; the stored path becomes absolute."""
        Path("conf.yaml").write_text(
            "nodes: 4\nsite: {name: lyon, queue: default}\n", encoding="utf-8"
        )
        env["config_file"] = "conf.yaml"
        env.reload_config()
        assert env["config"] == {"nodes": 4, "site": {"name": "lyon", "queue": "default"}}
        assert Path(env["config_file"]).is_absolute()
        assert Path(env["config_file"]) == Path.cwd() / "conf.yaml"

    def test_second_call_replaces(self, env: Environment) -> None:
        """Reloading after an edit replaces the config: removed keys disappear, nested too."""
        path = Path("conf.yaml")
        path.write_text("a: 1\nb: 2\nsite: {name: lyon, queue: default}\n", encoding="utf-8")
        env["config_file"] = str(path)
        env.reload_config()
        path.write_text("a: 10\nsite: {name: nancy}\n", encoding="utf-8")
        env.reload_config()
        assert env["config"] == {"a": 10, "site": {"name": "nancy"}}

    def test_config_is_persisted(self, env: Environment) -> None:
        """The loaded config is committed by dump() like any data."""
        Path("conf.yaml").write_text("a: 1\n", encoding="utf-8")
        env["config_file"] = "conf.yaml"
        env.reload_config()
        env.dump()
        assert _read_in_child(env.resultdir, "config") == {"a": 1}

    def test_empty_file_gives_empty_mapping(self, env: Environment) -> None:
        """An empty YAML file gives ``{}``."""
        Path("empty.yaml").write_text("", encoding="utf-8")
        env["config_file"] = "empty.yaml"
        env.reload_config()
        assert env["config"] == {}

    def test_missing_file_raises_config_error(self, env: Environment) -> None:
        """A missing file raises ConfigError naming it."""
        env["config_file"] = "missing.yaml"
        with pytest.raises(ConfigError) as info:
            env.reload_config()
        assert info.value.path == Path.cwd() / "missing.yaml"
        assert "missing.yaml" in str(info.value)

    def test_invalid_yaml_raises_with_line(self, env: Environment) -> None:
        """Invalid YAML on line 3 raises ConfigError with ``.line == 3`` and the file named."""
        Path("bad.yaml").write_text("a: 1\nb: 2\nc: d: e\n", encoding="utf-8")
        env["config_file"] = "bad.yaml"
        with pytest.raises(ConfigError) as info:
            env.reload_config()
        assert info.value.line == 3
        assert info.value.path == Path.cwd() / "bad.yaml"
        assert "bad.yaml" in str(info.value)
        assert ":3" in str(info.value)

    def test_error_keeps_the_previous_config(self, env: Environment) -> None:
        """A failed reload leaves env["config"] as it was."""
        path = Path("conf.yaml")
        path.write_text("a: 1\n", encoding="utf-8")
        env["config_file"] = "conf.yaml"
        env.reload_config()
        path.write_text("a: [1\n", encoding="utf-8")
        with pytest.raises(ConfigError):
            env.reload_config()
        assert env["config"] == {"a": 1}


# --------------------------------------------------------------------------- step records


class TestStatus:
    """The valjean step-record API on the environment."""

    def test_unknown_step_is_pending_and_unrecorded(self, env: Environment) -> None:
        """get_status of a step never recorded is PENDING and records nothing."""
        assert env.get_status("never") is Status.PENDING
        assert env.is_pending("never") is True
        assert env.get_start_clock("never") is None
        assert dict(env.steps) == {}
        env.dump()
        assert dict(Environment.load(env.resultdir).steps) == {}

    @pytest.mark.parametrize("status", list(Status), ids=lambda s: s.name)
    def test_set_and_is_for_every_member(self, env: Environment, status: Status) -> None:
        """``set_<member>`` records that status, and only ``is_<member>`` is true."""
        getattr(env, f"set_{status.name.lower()}")("step")
        assert env.get_status("step") is status
        assert env.steps["step"].status is status
        for other in Status:
            assert getattr(env, f"is_{other.name.lower()}")("step") is (other is status), other.name

    @pytest.mark.parametrize("status", list(Status), ids=lambda s: s.name)
    def test_set_status(self, env: Environment, status: Status) -> None:
        """set_status records any member."""
        env.set_status("step", status)
        assert env.get_status("step") is status

    def test_accepts_a_task_or_its_name(self, env: Environment) -> None:
        """A decorated step and its name address the same record."""

        @task
        def deploy(env: Environment) -> None:
            """Deploy."""

        env.set_done(deploy)
        assert env.is_done("deploy")
        assert env.get_status(deploy) is Status.DONE
        env.set_failed("deploy")
        assert env.is_failed(deploy)
        assert set(env.steps) == {"deploy"}

    def test_steps_is_read_only(self, env: Environment) -> None:
        """``env.steps`` cannot be assigned through."""
        env.set_done("a")
        with pytest.raises(TypeError):
            env.steps["a"] = env.steps["a"]  # type: ignore[index]

    def test_clocks_from_datetimes(self, env: Environment) -> None:
        """Aware datetimes set by set_start_end_clock read back equal, with the duration."""
        start = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone(timedelta(hours=2)))
        end = start + timedelta(seconds=90.5)
        env.set_start_end_clock("step", start=start, end=end)
        assert env.get_start_clock("step") == start
        assert env.get_end_clock("step") == end
        assert env.steps["step"].started == start
        assert env.steps["step"].duration == 90.5

    def test_clocks_from_floats(self, env: Environment) -> None:
        """POSIX timestamps give aware datetimes at those instants."""
        env.set_start_end_clock("step", start=1_700_000_000.0, end=1_700_000_012.25)
        started = env.get_start_clock("step")
        ended = env.get_end_clock("step")
        assert started is not None
        assert ended is not None
        assert started.tzinfo is not None
        assert ended.tzinfo is not None
        assert started.timestamp() == 1_700_000_000.0
        assert ended.timestamp() == 1_700_000_012.25
        assert env.steps["step"].duration == 12.25

    def test_clocks_are_aware_before_and_after_commit(self, env: Environment) -> None:
        """Clocks are aware datetimes, the same before a commit and after a reload."""
        naive = datetime(2024, 1, 2, 3, 4, 5)  # noqa: DTZ001 - a user's naive datetime is the input
        env.set_start_end_clock("step", start=naive, end=naive + timedelta(seconds=1))
        before = env.get_start_clock("step")
        env.dump()
        after = Environment.load(env.resultdir).get_start_clock("step")
        assert after is not None
        assert after.tzinfo is not None
        assert before is not None
        assert before.tzinfo is not None
        assert before == after

    def test_clocks_keep_the_status(self, env: Environment) -> None:
        """Setting clocks does not change the recorded status."""
        env.set_done("step")
        env.set_start_end_clock("step", start=1.0, end=2.0)
        assert env.is_done("step")

    def test_records_persist(self, env: Environment) -> None:
        """Statuses and clocks come back after dump() and load, in another process too."""
        settled = [s for s in Status if s not in (Status.RUNNING, Status.WAITING)]
        for status in settled:
            env.set_status(status.value, status)
        env.set_start_end_clock("done", start=1_000.0, end=1_003.0)
        env.dump()
        loaded = Environment.load(env.resultdir)
        for status in settled:
            assert loaded.get_status(status.value) is status
        assert loaded.steps["done"].duration == 3.0
        assert loaded.get_start_clock("done") == datetime.fromtimestamp(1_000.0, tz=timezone.utc)
        code = f"""
            import expkit
            env = expkit.Environment.load({str(env.resultdir)!r})
            print(repr(sorted((n, r.status.value) for n, r in env.steps.items())))
        """
        assert ast.literal_eval(run_python(code).stdout) == sorted(
            (s.value, s.value) for s in settled
        )

    def test_undumped_record_is_not_persisted(self, env: Environment) -> None:
        """A status set but not committed is not seen by a fresh load."""
        env.set_done("step")
        assert Environment.load(env.resultdir).get_status("step") is Status.PENDING


class TestAtomically:
    """``atomically(fn)`` runs ``fn(env)`` holding the environment's lock."""

    def test_returns_the_result(self, env: Environment) -> None:
        """Return what fn returns; fn gets the environment."""
        assert env.atomically(lambda e: (e is env, 42)) == (True, 42)

    def test_other_threads_wait(self, env: Environment) -> None:
        """Another thread's assignment blocks until fn returns, then completes."""
        seen: dict[str, Any] = {}
        writer = threading.Thread(target=env.__setitem__, args=("x", 1))

        def body(e: Environment) -> str:
            writer.start()
            writer.join(timeout=0.2)
            seen["blocked"] = writer.is_alive()
            seen["x_inside"] = "x" in e
            return "done"

        assert env.atomically(body) == "done"
        writer.join(timeout=10)
        assert seen == {"blocked": True, "x_inside": False}
        assert not writer.is_alive()
        assert env["x"] == 1

    def test_lock_released_after_an_exception(self, env: Environment) -> None:
        """An exception in fn propagates and releases the lock."""

        def body(e: Environment) -> None:
            e["partial"] = 1
            message = "boom"
            raise RuntimeError(message)

        with pytest.raises(RuntimeError, match="boom"):
            env.atomically(body)
        writer = threading.Thread(target=env.__setitem__, args=("after", 2))
        writer.start()
        writer.join(timeout=10)
        assert not writer.is_alive()
        assert env["after"] == 2


class TestApply:
    """``apply`` merges a nested mapping into the data."""

    def test_nested_merge(self, env: Environment) -> None:
        """Nested mappings merge recursively; leaves are replaced; new keys are added."""
        env["a"] = {"b": 1, "c": 2, "deep": {"x": 1}}
        env["keep"] = "k"
        env.apply({"a": {"c": 3, "d": 4, "deep": {"y": 2}}, "new": 5})
        assert env["a"] == {"b": 1, "c": 3, "d": 4, "deep": {"x": 1, "y": 2}}
        assert env["keep"] == "k"
        assert env["new"] == 5

    def test_non_mapping_replaces(self, env: Environment) -> None:
        """A non-mapping value replaces a mapping, and a mapping replaces a non-mapping."""
        env["a"] = {"b": 1}
        env["s"] = "scalar"
        env.apply({"a": 5, "s": {"now": "mapping"}})
        assert env["a"] == 5
        assert env["s"] == {"now": "mapping"}

    def test_applied_values_are_committed(self, env: Environment) -> None:
        """What apply changed is committed by dump()."""
        env["a"] = {"b": 1}
        env.dump()
        env.apply({"a": {"c": 2}})
        env.dump()
        assert Environment.load(env.resultdir)["a"] == {"b": 1, "c": 2}


class TestMergeDoneTasks:
    """``merge_done_tasks`` takes DONE records of another run with the data they wrote."""

    @pytest.fixture
    def other(self) -> Environment:
        """Make an environment where real steps left ``prepare`` DONE and ``bench`` FAILED."""
        other = Environment.create(name="other", symlink=False)

        @task
        def prepare(env: Environment) -> str:
            env["nodes"] = ["n1", "n2"]
            env["shared"] = "from prepare"
            return "prepared"

        @task
        def bench(env: Environment) -> None:
            env["partial"] = "half"
            message = "bench broke"
            raise RuntimeError(message)

        prepare(env=other)
        with pytest.raises(RuntimeError):
            bench(env=other)
        other["untracked"] = "no step wrote this"
        return other

    def test_takes_done_records_and_their_writes(self, other: Environment) -> None:
        """DONE records and the keys they wrote are taken; FAILED ones and their keys are not."""
        assert other.steps["prepare"].writes == frozenset({"nodes", "shared"})
        assert other.steps["bench"].status is Status.FAILED
        mine = Environment.create(name="mine", symlink=False)
        mine["own"] = 1
        mine.merge_done_tasks(other)
        assert set(mine.steps) == {"prepare"}
        assert mine.is_done("prepare")
        assert mine.steps["prepare"].result == "prepared"
        assert dict(mine) == {"own": 1, "nodes": ["n1", "n2"], "shared": "from prepare"}

    def test_other_records_untouched(self, other: Environment) -> None:
        """Records of this environment that ``other`` has no DONE record for are kept."""
        mine = Environment.create(name="mine", symlink=False)
        mine.set_done("bench")
        mine.set_failed("analyse")
        mine.merge_done_tasks(other)
        assert mine.is_done("bench")
        assert mine.is_failed("analyse")
        assert mine.is_done("prepare")

    def test_merge_is_committed(self, other: Environment) -> None:
        """The merged records and data are committed by dump()."""
        mine = Environment.create(name="mine", symlink=False)
        mine.merge_done_tasks(other)
        mine.dump()
        loaded = Environment.load(mine.resultdir)
        assert loaded.is_done("prepare")
        assert loaded["nodes"] == ["n1", "n2"]
        assert "partial" not in loaded

    def test_step_deletion_is_taken(self) -> None:
        """A key a DONE step deleted in ``other`` is deleted here too."""
        other = Environment.create(name="other", symlink=False)
        other["stale"] = 1
        other.dump()

        @task
        def cleanup(env: Environment) -> None:
            del env["stale"]

        cleanup(env=other)
        mine = Environment.create(name="mine", symlink=False)
        mine["stale"] = 1
        mine.merge_done_tasks(other)
        assert "stale" not in mine

    def test_record_only_export_keeps_data(self, other: Environment, tmp_path: Path) -> None:
        """Merging a ``to_file(task_name=...)`` import (no data) deletes none of our keys."""
        other.to_file(tmp_path / "prepare.pkl", task_name="prepare")
        imported = Environment.from_file(tmp_path / "prepare.pkl")
        mine = Environment.create(name="mine", symlink=False)
        mine["nodes"] = ["mine"]
        mine["shared"] = "mine"
        mine.merge_done_tasks(imported)
        assert mine.is_done("prepare")
        assert dict(mine) == {"nodes": ["mine"], "shared": "mine"}

    def test_other_is_unchanged(self, other: Environment) -> None:
        """The source environment keeps its data and records."""
        before = (dict(other), {n: r.status for n, r in other.steps.items()})
        Environment.create(name="mine", symlink=False).merge_done_tasks(other)
        assert (dict(other), {n: r.status for n, r in other.steps.items()}) == before


# --------------------------------------------------------------------------- threads


class TestThreadSafety:
    """Every method is safe to call from many threads at once."""

    def test_concurrent_assignments_and_reads(self, env: Environment) -> None:
        """8 threads x 200 assignments with concurrent reads: all 1600 keys committed."""
        threads_count, per_thread = 8, 200
        barrier = threading.Barrier(threads_count)
        errors: list[BaseException] = []

        def work(t: int) -> None:
            try:
                barrier.wait()
                for i in range(per_thread):
                    env[f"t{t}-{i}"] = [t, i]
                    assert env[f"t{t}-{i}"] == [t, i]
                    len(env)
                    list(env)
                    "t0-0" in env  # noqa: B015 - a concurrent read is the point
                    if i % 50 == 0:
                        env.dump()
            except BaseException as error:  # noqa: BLE001 - reported by the main thread
                errors.append(error)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(env) == threads_count * per_thread
        env.dump()
        loaded = Environment.load(env.resultdir)
        assert len(loaded) == threads_count * per_thread
        for t in range(threads_count):
            for i in range(per_thread):
                assert loaded[f"t{t}-{i}"] == [t, i]


# --------------------------------------------------------------------------- notebooks


class TestHtml:
    """In Jupyter, an environment renders as an HTML table."""

    def test_shows_keys_and_statuses(self, env: Environment) -> None:
        """The HTML names the data keys and each step's status."""
        env["nodes"] = ["n1"]
        env["learning_rate"] = 0.1
        env.set_done("deploy")
        env.set_failed("bench")
        page = env._repr_html_()
        for text in ("nodes", "learning_rate", "deploy", "bench", "done", "failed"):
            assert text in page

    def test_escapes_markup(self, env: Environment) -> None:
        """Keys, values and step names containing ``<`` are escaped."""
        env["<script>alert(1)</script>"] = "<b>bold</b>"
        env.set_done("<img>")
        page = env._repr_html_()
        assert "<script>" not in page
        assert "<b>bold" not in page
        assert "<img>" not in page
        assert "&lt;script&gt;" in page
        assert "&lt;img&gt;" in page

    @pytest.mark.usefixtures("env")
    def test_unreadable_value_does_not_break_rendering(self, tmp_path: Path) -> None:
        """A key whose value no longer unpickles still renders, marked unreadable."""
        (tmp_path / "gonemod.py").write_text("class Gone:\n    pass\n", encoding="utf-8")
        run_python(
            """
            import expkit, gonemod
            env = expkit.Environment.load("results/env")
            env["gone"] = gonemod.Gone()
            env["fine"] = 1
            env.dump()
            """
        )
        (tmp_path / "gonemod.py").unlink()
        sys.modules.pop("gonemod", None)
        page = Environment.load("results/env")._repr_html_()
        assert "gone" in page
        assert "fine" in page


# --------------------------------------------------------------------------- in memory


class TestInMemory:
    """``Environment()`` lives in memory only."""

    def test_is_a_mapping(self) -> None:
        """An in-memory environment stores, reads, deletes and records statuses."""
        env = Environment()
        env["a"] = 1
        env["b"] = [2]
        del env["a"]
        assert dict(env) == {"b": [2]}
        env.set_done("s")
        assert env.is_done("s")

    def test_dump_raises_no_environment(self) -> None:
        """dump() has nowhere to commit: NoEnvironmentError."""
        env = Environment()
        env["a"] = 1
        with pytest.raises(NoEnvironmentError):
            env.dump()
        assert env["a"] == 1

    def test_resultdir_raises_no_environment(self) -> None:
        """The resultdir property raises NoEnvironmentError."""
        with pytest.raises(NoEnvironmentError):
            _ = Environment().resultdir

    def test_not_durable(self) -> None:
        """An in-memory environment reports durable False."""
        assert Environment().durable is False


# --------------------------------------------------------------------------- get_or_create_env


class TestGetOrCreateEnv:
    """``get_or_create_env``: EnOSlib's helper."""

    def test_environment_passes_through(self) -> None:
        """An Environment is returned as is, even with new=True, and nothing is created."""
        env = Environment()
        assert get_or_create_env(new=True, env_name=env) is env
        assert get_or_create_env(new=False, env_name=env) is env
        assert not Path("results").exists()
        assert not os.path.lexists("current")

    def test_none_new_creates_timestamped_and_repoints_current(self) -> None:
        """None with new=True makes a timestamped env under ./results and re-points ./current."""
        older = Environment.create(name="older")
        env = get_or_create_env(new=True)
        assert env.resultdir != older.resultdir
        assert env.resultdir.parent == (Path.cwd() / "results").resolve()
        assert TIMESTAMP.match(env.resultdir.name)
        assert _current_target() == env.resultdir

    def test_none_loads_current(self) -> None:
        """None with new=False loads ./current."""
        env = Environment.create(name="run1")
        env["k"] = "v"
        env.dump()
        loaded = get_or_create_env(new=False)
        assert loaded["k"] == "v"
        assert loaded.resultdir == env.resultdir

    def test_none_without_current_raises(self) -> None:
        """None with new=False and no ./current raises NoEnvironmentError."""
        with pytest.raises(NoEnvironmentError):
            get_or_create_env(new=False)

    def test_path_new_creates_there(self) -> None:
        """A path with new=True creates the environment there."""
        env = get_or_create_env(new=True, env_name="runs/first")
        assert env.resultdir == (Path.cwd() / "runs" / "first").resolve()
        assert _current_target() == env.resultdir

    def test_path_new_on_existing_raises_and_keeps_data(self) -> None:
        """A path with new=True on an existing environment raises; no data is lost."""
        env = Environment.create(name="run1")
        env["k"] = [1, 2]
        env.dump()
        with pytest.raises(EnvironmentExistsError):
            get_or_create_env(new=True, env_name="results/run1")
        assert Environment.load("results/run1")["k"] == [1, 2]

    def test_path_loads_existing(self) -> None:
        """A path with new=False loads that environment."""
        env = Environment.create(name="run1", symlink=False)
        env["k"] = 1
        env.dump()
        assert get_or_create_env(new=False, env_name=Path("results/run1"))["k"] == 1

    def test_path_missing_raises(self) -> None:
        """A path with new=False where there is no environment raises NoEnvironmentError."""
        with pytest.raises(NoEnvironmentError) as info:
            get_or_create_env(new=False, env_name="results/absent")
        assert "absent" in str(info.value)

    def test_exp_results_moves_the_default_root(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """``$EXP_RESULTS`` is where new timestamped environments go."""
        monkeypatch.setenv("EXP_RESULTS", str(tmp_path / "elsewhere"))
        env = get_or_create_env(new=True)
        assert env.resultdir.parent == (tmp_path / "elsewhere").resolve()
        assert not Path("results").exists()
        assert _current_target() == env.resultdir

    def test_symlink_false(self) -> None:
        """``symlink=False`` creates without touching ./current."""
        get_or_create_env(True, None, False)  # noqa: FBT003 - EnOSlib's positional call
        assert not os.path.lexists("current")

    def test_exported(self) -> None:
        """get_or_create_env is public."""
        assert expkit.get_or_create_env is get_or_create_env


@pytest.mark.parametrize("read_first", [False, True])
def test_a_stored_result_pickles_as_its_value(read_first: bool) -> None:
    """A record shipped to a worker or a snapshot keeps its result, read or not."""
    from expkit._records import StoredResult

    stored = StoredResult.of({"x": 42})
    if read_first:
        assert stored.value("s") == {"x": 42}
    copy = pickle.loads(pickle.dumps(stored))
    assert copy.value("s") == {"x": 42}
    assert StoredResult(pickle.dumps(7)).value("s") == pickle.loads(
        pickle.dumps(StoredResult(pickle.dumps(7)))
    ).value("s")
