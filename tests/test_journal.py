"""Properties of the journal: commits round-trip, and damage never costs a good commit."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expkit import CorruptEnvironmentError, CorruptValueError, Environment, ExpkitError
from expkit._journal import BLOB_THRESHOLD, INDEX_EVERY

from .helpers import run_python

KEYS = st.sampled_from([f"k{i}" for i in range(6)])
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)
# An operation: (handle, verb, key, value); two handles stand for two processes.
OPS = st.lists(
    st.tuples(
        st.integers(0, 1),
        st.sampled_from(["set", "set", "delete", "commit", "mutate"]),
        KEYS,
        VALUES,
    ),
    max_size=30,
)


def _read_elsewhere(path: Path) -> dict[str, Any]:
    """The environment's data as a separate, fresh interpreter loads it."""
    out = run_python(
        f"""
        import json
        from expkit import Environment
        env = Environment.load({str(path)!r})
        print(json.dumps({{key: env[key] for key in env}}, sort_keys=True))
        """
    ).stdout
    result: dict[str, Any] = json.loads(out)
    return result


class TestRoundTrip:
    """Whatever sequence of changes and commits, a fresh process loads the last committed state."""

    @settings(
        max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(ops=OPS)
    def test_random_operations_then_fresh_process(
        self, ops: list[tuple[int, str, str, Any]], tmp_path: Path
    ) -> None:
        """Two handles set, delete, mutate and commit at random; the model of committed data matches."""
        path = tmp_path / f"env-{os.urandom(8).hex()}"
        Environment.create(path.parent, path.name, symlink=False, durable=False)
        handles = [Environment.load(path), Environment.load(path)]
        committed: dict[str, Any] = {}
        views: list[dict[str, Any]] = [{}, {}]
        pending: list[dict[str, Any]] = [{}, {}]
        deleted = object()
        for who, verb, key, value in ops:
            env, view = handles[who], views[who]
            if verb == "set":
                env[key] = value
                view[key] = json.loads(
                    json.dumps(value)
                )  # the model must not alias the env's objects
                pending[who][key] = view[key]
            elif verb == "delete" and key in view:
                del env[key]
                del view[key]
                pending[who][key] = deleted
            elif verb == "mutate" and isinstance(view.get(key), list):
                env[key].append(value)
                view[key] = [*view[key], value]
                pending[who][key] = view[key]
            elif verb == "commit":
                env.dump()
                for changed, new in pending[who].items():
                    if new is deleted:
                        committed.pop(changed, None)
                    else:
                        committed[changed] = new
                pending[who] = {}
                views[who] = json.loads(json.dumps(committed))
        assert _read_elsewhere(path) == json.loads(json.dumps(committed))


def _build(
    path: Path, commits: int, *, blob_at: int | None = None
) -> tuple[list[dict[str, Any]], list[int]]:
    """Make ``commits`` commits; returns each committed state and the journal size after each."""
    env = Environment.create(path.parent, path.name, symlink=False, durable=False)
    journal = path / "env"
    states: list[dict[str, Any]] = [{}]
    ends = [journal.stat().st_size]
    rng = random.Random(commits)
    for i in range(commits):
        env[f"k{rng.randrange(4)}"] = [i, "x" * rng.randrange(50)]
        if i == blob_at:
            env["blob"] = b"b" * (BLOB_THRESHOLD + 10)
        env.dump()
        states.append({key: env[key] for key in env})
        ends.append(journal.stat().st_size)
    # These tests judge the journal alone: drop the index cache, which would
    # otherwise vouch for the damaged prefix.
    (path / "env.index").unlink(missing_ok=True)
    return states, ends


def _load_all(path: Path) -> dict[str, Any]:
    env = Environment.load(path)
    return {key: env[key] for key in env}


class TestDamage:
    """Truncations, bit flips and random bytes raise only ExpkitError and keep every good commit."""

    COMMITS = 12

    @settings(
        max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(cut=st.integers(0, 10_000))
    def test_truncation_gives_the_last_whole_commit(self, cut: int, tmp_path: Path) -> None:
        """A journal cut anywhere loads as exactly the last commit that ends before the cut."""
        path = tmp_path / os.urandom(8).hex()
        states, ends = _build(path, self.COMMITS)
        size = min(cut, ends[-1])
        os.truncate(path / "env", size)
        if size < ends[0]:
            with pytest.raises(CorruptEnvironmentError):
                Environment.load(path)
            return
        whole = max(i for i, end in enumerate(ends) if end <= size)
        assert _load_all(path) == states[whole]

    @settings(
        max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(position=st.integers(0, 2**31), bit=st.integers(0, 7))
    def test_bit_flip(self, position: int, bit: int, tmp_path: Path) -> None:
        """A flipped bit in the last commit drops only it; earlier damage is reported, never hidden."""
        path = tmp_path / os.urandom(8).hex()
        states, ends = _build(path, self.COMMITS)
        at = position % ends[-1]
        data = bytearray((path / "env").read_bytes())
        data[at] ^= 1 << bit
        (path / "env").write_bytes(bytes(data))
        if at < ends[0]:
            with pytest.raises(CorruptEnvironmentError):
                Environment.load(path)
        elif at >= ends[-2]:
            assert _load_all(path) == states[-2]
        else:
            with pytest.raises(CorruptEnvironmentError) as caught:
                Environment.load(path)
            assert caught.value.offset is not None
            assert caught.value.offset <= at

    @settings(
        max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(position=st.integers(0, 2**31))
    def test_flip_in_a_blob_fails_only_its_key(self, position: int, tmp_path: Path) -> None:
        """Damage inside a large value's bytes fails that key on access; the rest loads."""
        path = tmp_path / os.urandom(8).hex()
        states, ends = _build(path, 3, blob_at=1)
        blob_start = ends[1] + 21
        at = blob_start + position % BLOB_THRESHOLD
        data = bytearray((path / "env").read_bytes())
        data[at] ^= 0xFF
        (path / "env").write_bytes(bytes(data))
        env = Environment.load(path)
        with pytest.raises(CorruptValueError) as caught:
            env["blob"]
        assert caught.value.key == "blob"
        assert {key: env[key] for key in env if key != "blob"} == {
            key: value for key, value in states[-1].items() if key != "blob"
        }

    @settings(
        max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(garbage=st.binary(max_size=300), where=st.integers(0, 2**31), tail=st.booleans())
    def test_random_bytes_raise_only_expkit_errors(
        self, garbage: bytes, where: int, tail: bool, tmp_path: Path
    ) -> None:
        """Random bytes written over or after the journal: an ExpkitError, or a committed state."""
        path = tmp_path / os.urandom(8).hex()
        states, _ = _build(path, self.COMMITS)
        data = bytearray((path / "env").read_bytes())
        if tail:
            data += garbage
        else:
            at = where % len(data)
            data[at : at + len(garbage)] = garbage
        (path / "env").write_bytes(bytes(data))
        try:
            loaded = _load_all(path)
        except ExpkitError:
            assert not tail, "garbage after the last commit must be ignored"
            return
        assert loaded in states
        if tail:
            assert loaded == states[-1]

    def test_whole_file_of_random_bytes(self) -> None:
        """A file that never was a journal is a CorruptEnvironmentError, not a crash."""
        path = Path("junk")
        Environment.create(".", "junk", symlink=False)
        (path / "env").write_bytes(os.urandom(4096))
        with pytest.raises(CorruptEnvironmentError, match="junk"):
            Environment.load(path)

    def test_writer_cuts_a_torn_tail(self) -> None:
        """After a torn append, the next commit follows the last good one and all reload."""
        path = Path("torn")
        states, _ = _build(path, 3)
        with (path / "env").open("ab") as journal:
            journal.write(b"\xe5Xj\x01 half a frame")
        env = Environment.load(path)
        env["after"] = 1
        env.dump()
        assert _load_all(path) == {**states[-1], "after": 1}

    def test_newer_format_is_refused(self) -> None:
        """A journal from a newer expkit names its version instead of misreading it."""
        path = Path("newer")
        Environment.create(".", "newer", symlink=False)
        data = bytearray((path / "env").read_bytes())
        data[8] = 99
        (path / "env").write_bytes(bytes(data))
        with pytest.raises(CorruptEnvironmentError, match="version 99"):
            Environment.load(path)


class TestUpkeep:
    """The index cache and compaction keep loads fast without changing what loads."""

    def test_index_cache_is_used_and_stale_one_ignored(self) -> None:
        """Past the index period a cache appears; deleting or damaging it changes nothing."""
        path = Path("idx")
        env = Environment.create(".", "idx", symlink=False, durable=False)
        for i in range(INDEX_EVERY * 2 + 3):
            env[f"k{i % 3}"] = i
            env.dump()
        states = [{key: env[key] for key in env}]
        assert (path / "env.index").exists()
        expected = states[-1]
        assert _load_all(path) == expected
        index = path / "env.index"
        index.write_bytes(index.read_bytes()[:-5])
        assert _load_all(path) == expected
        index.unlink()
        assert _load_all(path) == expected

    def test_compaction_keeps_everything_and_shrinks(self) -> None:
        """Rewriting one key many times compacts the journal; all data and records survive."""
        path = Path("compact")
        env = Environment.create(".", "compact", symlink=False, durable=False)
        env["keep"] = b"k" * (BLOB_THRESHOLD * 2)
        env.set_done("step")
        for i in range(400):
            env["churn"] = "x" * 2000 + str(i)
            env.dump()
        size = (path / "env").stat().st_size
        assert size < 400 * 2000  # compacted at least once
        other = Environment.load(path)
        assert other["churn"].endswith("399")
        assert other["keep"] == b"k" * (BLOB_THRESHOLD * 2)
        assert other.is_done("step")

    def test_compaction_by_another_handle(self) -> None:
        """A handle whose journal was compacted by another one re-reads it and loses nothing."""
        path = Path("two")
        first = Environment.create(".", "two", symlink=False, durable=False)
        first["mine"] = [1]
        first.dump()
        second = Environment.load(path)
        inode = (path / "env").stat().st_ino
        for i in range(400):
            second["churn"] = "y" * 2000 + str(i)
            second.dump()
        assert (path / "env").stat().st_ino != inode
        first["mine"].append(2)
        first["late"] = True
        first.dump()
        assert _load_all(path) == {"mine": [1, 2], "late": True, "churn": "y" * 2000 + "399"}


def test_copy_of_environment_loads(tmp_path: Path) -> None:
    """An environment directory copied elsewhere (cp -r) is a whole environment."""
    states, _ = _build(tmp_path / "orig", 5)
    shutil.copytree(tmp_path / "orig", tmp_path / "copy")
    assert _load_all(tmp_path / "copy") == states[-1]
