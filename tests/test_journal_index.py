"""The journal's in-memory index and its cache on disk.

What a handle keeps between commits must follow what other handles (other
processes) commit meanwhile.
"""

from __future__ import annotations

import gc
import inspect
import os
import pickle
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from expkit import (
    CorruptEnvironmentError,
    Environment,
    NoEnvironmentError,
    Owner,
    Status,
    StepRecord,
    task,
)
from expkit import _journal as journal
from expkit._journal import BLOB_THRESHOLD, INDEX_EVERY, Stored, as_stored
from expkit._records import ErrorInfo, StoredResult, finished_state, running_state
from expkit._runner import _bind, bound_params
from expkit._steps import StepRecords

from .helpers import run_python


class Name(str):
    """A str subclass, as a key (marshal, which writes the index cache, refuses it)."""

    __slots__ = ()


def _index(path: Path) -> Path:
    return path / "env.index"


def _data(env: Environment) -> dict[str, Any]:
    return {key: env[key] for key in env}


class TestEntries:
    """A key's stored form reads the same whatever form the index keeps it in."""

    def test_compact_and_tuple_forms_agree(self) -> None:
        """Inline and blob entries convert to and from the index's form losslessly."""
        inline = Stored(b"d" * 16, b"pickled")
        blob = Stored(b"e" * 16, None, 1234, 99, 7)
        for stored in (inline, blob):
            assert as_stored(stored.to_entry()) == stored
            assert as_stored(stored.to_tuple()) == stored
            assert as_stored(stored) is stored


class TestOtherHandles:
    """Two handles on one environment stand for two processes: each has its own journal."""

    def test_commit_made_between_two_commits_is_seen(self) -> None:
        """A handle's next commit reads what another committed since its last one."""
        first = Environment.create(".", "e", symlink=False, durable=False)
        first["a"] = 1
        first.dump()
        second = Environment.load("e")
        second["b"] = 2
        second.dump()
        del second["a"]
        second.dump()
        first["c"] = 3
        first.dump()
        assert _data(first) == {"b": 2, "c": 3}
        assert _data(Environment.load("e")) == {"b": 2, "c": 3}

    def test_index_written_by_one_handle_holds_the_others_commits(self) -> None:
        """The index cache a handle writes covers what other handles committed."""
        first = Environment.create(".", "e", symlink=False, durable=False)
        second = Environment.load("e")
        for i in range(INDEX_EVERY * 3):
            (first if i % 2 else second)[f"k{i}"] = i
            (first if i % 2 else second).dump()
        assert _index(Path("e")).exists()
        expected = {f"k{i}": i for i in range(INDEX_EVERY * 3)}
        first.refresh()
        assert _data(first) == expected
        assert _data(Environment.load("e")) == expected
        assert run_python(
            "from expkit import Environment\n"
            "env = Environment.load('e')\n"
            "print(sorted((k, env[k]) for k in env))\n"
        ).stdout.strip() == str(sorted(expected.items()))

    def test_compaction_keeps_what_other_handles_committed(self) -> None:
        """A compaction writes the journal's whole state, including others' latest commits."""
        first = Environment.create(".", "e", symlink=False, durable=False)
        second = Environment.load("e")
        second["theirs"] = "x" * (BLOB_THRESHOLD + 1)
        second.set_done("their-step")
        second.dump()
        inode = os.stat("e/env").st_ino
        for i in range(300):
            first["churn"] = "y" * 2000 + str(i)
            first.dump()
            if i == 10:
                second["late"] = [1, 2]
                second.dump()
        assert os.stat("e/env").st_ino != inode  # compacted
        fresh = Environment.load("e")
        assert fresh["theirs"] == "x" * (BLOB_THRESHOLD + 1)
        assert fresh["late"] == [1, 2]
        assert fresh["churn"].endswith("299")
        assert fresh.is_done("their-step")
        # And the handle that did not compact reopens the new journal and loses nothing.
        second["after"] = True
        second.dump()
        assert _data(Environment.load("e")) == {**_data(fresh), "after": True}

    def test_deletion_by_another_handle_reaches_the_index(self) -> None:
        """A key another handle deleted stays deleted in the index this one writes."""
        first = Environment.create(".", "e", symlink=False, durable=False)
        first.update({"a": 1, "b": 2})
        first.dump()
        second = Environment.load("e")
        del second["a"]
        second.dump()
        for i in range(INDEX_EVERY + 1):
            first[f"k{i}"] = i
            first.dump()
        assert "a" not in Environment.load("e")


class TestRememberedIndex:
    """A process remembers the last index cache it wrote or read, by its bytes."""

    def test_index_rewritten_by_another_process_is_read_afresh(self) -> None:
        """Another process's index replaces the one this process remembers."""
        env = Environment.create(".", "e", symlink=False, durable=False)
        for i in range(INDEX_EVERY):
            env[f"k{i}"] = i
            env.dump()
        before = _index(Path("e")).read_bytes()
        assert journal._indexes[os.stat("e/env").st_ino][0] == before
        run_python(
            f"""
            from expkit import Environment
            env = Environment.load("e")
            for i in range({INDEX_EVERY}):
                env[f"k{{i}}"] = -i
                env["child"] = i
                env.dump()
            """
        )
        after = _index(Path("e")).read_bytes()
        assert after != before
        expected = {**{f"k{i}": -i for i in range(INDEX_EVERY)}, "child": INDEX_EVERY - 1}
        assert _data(Environment.load("e")) == expected
        env.refresh()
        assert _data(env) == expected

    def test_remembered_index_gives_what_the_file_holds(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Loading from the remembered index equals loading it from its bytes."""
        env = Environment.create(".", "e", symlink=False, durable=False)
        env.set_done("step")
        for i in range(INDEX_EVERY):
            env[f"k{i}"] = [i]
            env.dump()
        remembered = Environment.load("e")
        monkeypatch.setattr(journal, "_indexes", {})
        monkeypatch.setattr(journal, "_snapshots", {})
        unpickled = Environment.load("e")
        assert _data(remembered) == _data(unpickled) == {f"k{i}": [i] for i in range(INDEX_EVERY)}
        assert remembered.steps == unpickled.steps
        remembered["k0"] = "changed"
        remembered.dump()
        assert Environment.load("e")["k0"] == "changed"
        assert unpickled["k0"] == [0]

    def test_shorter_index_over_a_longer_one(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An index rewritten shorter leaves the former one's tail, which readers ignore."""
        env = Environment.create(".", "e", symlink=False, durable=False)
        env.update({f"k{i}": "x" * 100 for i in range(50)})
        for _ in range(INDEX_EVERY):
            env.dump()
            env["n"] = env.get("n", 0) + 1
        longer = _index(Path("e")).stat().st_size
        for i in range(50):
            del env[f"k{i}"]
        for _ in range(INDEX_EVERY):
            env["n"] += 1
            env.dump()
        assert _index(Path("e")).stat().st_size == longer  # rewritten in place
        expected = {"n": env["n"]}
        assert _data(Environment.load("e")) == expected
        monkeypatch.setattr(journal, "_indexes", {})
        monkeypatch.setattr(journal, "_snapshots", {})
        assert _data(Environment.load("e")) == expected
        assert journal._indexes  # the shorter index was read, not ignored
        assert run_python(
            "from expkit import Environment\nprint(dict(Environment.load('e')))\n"
        ).stdout.strip() == str(expected)

    def test_two_environments_in_turn(self) -> None:
        """Alternating between environments never takes one's index for the other's."""
        first = Environment.create(".", "a", symlink=False, durable=False)
        second = Environment.create(".", "b", symlink=False, durable=False)
        for i in range(INDEX_EVERY * 2):
            first["who"] = f"a{i}"
            first.dump()
            second["who"] = f"b{i}"
            second.dump()
            assert Environment.load("a")["who"] == f"a{i}"
            assert Environment.load("b")["who"] == f"b{i}"


class TestSnapshots:
    """A load takes up where the last closed journal of this process stopped.

    Only when the journal's bytes say nothing changed there; otherwise it
    reads the journal as any load would.
    """

    def _env_with_frames_after_index(self) -> dict[str, Any]:
        env = Environment.create(".", "e", symlink=False, durable=False)
        for i in range(INDEX_EVERY):
            env[f"k{i}"] = i
            env.dump()
        env["after"] = "a"
        env.dump()
        env["last"] = "l"
        env.dump()
        assert Path("e/env").stat().st_size > 0
        state = _data(env)
        del env  # closed: its journal leaves a snapshot
        assert journal._snapshots
        return state

    def test_taken_when_nothing_changed(self) -> None:
        """The next load gives the same state, and takes (removes) the snapshot."""
        state = self._env_with_frames_after_index()
        ino = os.stat("e/env").st_ino
        assert ino in journal._snapshots
        loaded = Environment.load("e")
        assert ino not in journal._snapshots
        assert _data(loaded) == state

    def test_commits_of_another_process_after_it(self) -> None:
        """What another process appended after the snapshot is read on top of it."""
        state = self._env_with_frames_after_index()
        run_python(
            """
            from expkit import Environment
            env = Environment.load("e")
            env["other"] = "o"
            env.dump()
            """
        )
        assert _data(Environment.load("e")) == {**state, "other": "o"}

    def test_damage_after_the_index_is_seen(self) -> None:
        """A bit flipped in a commit after the index: the load judges the journal, as a fresh one."""
        state = self._env_with_frames_after_index()
        data = bytearray(Path("e/env").read_bytes())
        data[-3] ^= 0x10  # inside the last commit
        Path("e/env").write_bytes(bytes(data))
        expected = {key: value for key, value in state.items() if key != "last"}
        assert _data(Environment.load("e")) == expected
        fresh = run_python(
            "from expkit import Environment\nprint(sorted(dict(Environment.load('e'))))\n"
        ).stdout.strip()
        assert fresh == str(sorted(expected))

    def test_damage_before_later_commits_is_reported(self) -> None:
        """Damage in a commit that later commits follow raises, as for a fresh load."""
        self._env_with_frames_after_index()
        data = bytearray(Path("e/env").read_bytes())
        index_end = journal._snapshots[os.stat("e/env").st_ino].index_end
        data[index_end + 30] ^= 0x10  # inside the first commit after the index
        Path("e/env").write_bytes(bytes(data))
        with pytest.raises(CorruptEnvironmentError):
            Environment.load("e")

    def test_index_rewritten_elsewhere(self) -> None:
        """Another process's index (after more commits) replaces what the snapshot knew."""
        state = self._env_with_frames_after_index()
        run_python(
            f"""
            from expkit import Environment
            env = Environment.load("e")
            for i in range({INDEX_EVERY}):
                env["other"] = i
                env.dump()
            """
        )
        assert _data(Environment.load("e")) == {**state, "other": INDEX_EVERY - 1}

    def test_torn_tail_after_it(self) -> None:
        """Half a frame after the snapshot's end is a torn tail, cut by the next writer."""
        state = self._env_with_frames_after_index()
        with Path("e/env").open("ab") as file:
            file.write(b"\xe5Xj\x01 half a frame")
        env = Environment.load("e")
        assert _data(env) == state
        env["next"] = 1
        env.dump()
        assert _data(Environment.load("e")) == {**state, "next": 1}

    def test_left_by_the_cycle_collector(self) -> None:
        """Environments in reference cycles close when collected; snapshots stay bounded."""
        for n in range(journal._SNAPSHOTS_KEEP + 4):
            env = Environment.create(".", f"c{n}", symlink=False, durable=False)
            for i in range(journal.INDEX_SOON):
                env["k"] = i
                env.dump()
            env.itself = env  # type: ignore[attr-defined] # a cycle: only gc frees it
        del env
        gc.collect()
        assert 0 < len(journal._snapshots) <= journal._SNAPSHOTS_KEEP
        last = journal._SNAPSHOTS_KEEP + 3
        assert Environment.load(f"c{last}")["k"] == journal.INDEX_SOON - 1

    def test_two_loads_in_turn(self) -> None:
        """Two handles open at once: one takes the snapshot, the other reads the journal."""
        state = self._env_with_frames_after_index()
        first, second = Environment.load("e"), Environment.load("e")
        assert _data(first) == _data(second) == state
        first["x"] = 1
        first.dump()
        second["y"] = 2
        second.dump()
        del first, second
        assert _data(Environment.load("e")) == {**state, "x": 1, "y": 2}


class TestOpening:
    """Loading opens the journal under the lock, and leaves nothing behind where it finds none."""

    def test_directory_without_journal_gets_no_lock_file(self, tmp_path: Path) -> None:
        """A directory that holds no environment raises, and no lock file appears in it."""
        (tmp_path / "plain").mkdir()
        with pytest.raises(NoEnvironmentError):
            Environment.load(tmp_path / "plain")
        assert list((tmp_path / "plain").iterdir()) == []

    def test_journal_copied_without_its_lock_file_loads(self, tmp_path: Path) -> None:
        """A journal copied alone into a directory is an environment; it gets a lock file."""
        env = Environment.create(".", "e", symlink=False, durable=False)
        env["k"] = [1, 2]
        env.dump()
        (tmp_path / "copy").mkdir(mode=0o700)
        (tmp_path / "copy" / "env").write_bytes(Path("e/env").read_bytes())
        (tmp_path / "copy" / "env").chmod(0o600)
        copy = Environment.load(tmp_path / "copy")
        assert copy["k"] == [1, 2]
        copy["k"] = "again"
        copy.dump()
        assert (tmp_path / "copy" / "lock").exists()
        assert Environment.load(tmp_path / "copy")["k"] == "again"

    def test_journal_replaced_between_open_and_first_read(self) -> None:
        """The journal read is the one named env under the lock, not an older one."""
        first = Environment.create(".", "e", symlink=False, durable=False)
        first["v"] = 1
        first.dump()
        opened = journal.Journal.open("e", durable=False)
        for i in range(300):  # another handle compacts: env is a new file
            first["churn"] = "c" * 2000 + str(i)
            first.dump()
        opened.lock()
        try:
            update = opened.read_new()
        finally:
            opened.unlock()
        assert update is not None
        assert update.full
        assert {"v", "churn"} <= set(update.data)
        opened.close()


class TestIndexForms:
    """The index cache holds builtins only; what it cannot hold, it leaves to the journal."""

    def test_key_of_a_str_subclass(self) -> None:
        """A key of a str subclass is committed and reloaded, with or without an index cache."""
        env = Environment.create(".", "e", symlink=False, durable=False)
        for i in range(INDEX_EVERY * 2):
            env[Name(f"k{i % 2}")] = i
            env.dump()
        assert _data(Environment.load("e")) == {
            "k0": INDEX_EVERY * 2 - 2,
            "k1": INDEX_EVERY * 2 - 1,
        }


class TestCompactionPlanning:
    """Compaction plans from what it last left behind.

    So heavy step records do not make it run at every commit of every fresh process.
    """

    def test_heavy_records_do_not_compact_at_each_load(self) -> None:
        """Fresh handles committing to an environment of heavy records compact at most once."""
        env = Environment.create(".", "e", symlink=False, durable=False)
        for i in range(40):
            # A record with a large result, as a step would leave.
            record = StepRecord(f"s{i}", Status.DONE, stored_result=StoredResult(b"r" * 20_000))
            env._put_record(record)
        env.dump()
        for i in range(30):
            env["churn"] = "z" * 1000 + str(i)
            env.dump()
        inodes = set()
        for i in range(20):  # each commit from a fresh handle, as a direct call makes
            other = Environment.load("e")
            other["churn"] = str(i)
            other.dump()
            inodes.add(os.stat("e/env").st_ino)
            del other
        assert len(inodes) <= 2, "compacted again and again"
        assert Environment.load("e").steps["s39"].stored_result.data == b"r" * 20_000


class TestRecordsFromTheIndex:
    """Records kept packed by the index cache decode to what was committed."""

    def _env_with_index(self) -> Environment:
        env = Environment.create(".", "e", symlink=False, durable=False)
        env._put_record(
            StepRecord(
                "running",
                Status.RUNNING,
                params={"p": 1},
                owner=Owner("no-such-host-but-alive", 1, None),
            )
        )
        env._put_record(StepRecord("dead", Status.RUNNING, owner=None))
        env.set_done("done")
        for i in range(INDEX_EVERY):
            env[f"k{i}"] = i
            env.dump()
        assert _index(Path("e")).exists()
        return env

    def test_records_and_statuses_round_trip(self) -> None:
        """Statuses, owners and params come back; a dead RUNNING owner becomes INTERRUPTED."""
        original = self._env_with_index()
        loaded = Environment.load("e")
        assert loaded.get_status("done") is Status.DONE
        assert loaded.get_status("running") is Status.RUNNING
        # A RUNNING record without an owner is taken for a dead process's.
        assert loaded.get_status("dead") is Status.INTERRUPTED
        assert loaded.steps["running"] == original.steps["running"]
        assert loaded.steps["running"].params == {"p": 1}

    def test_packed_record_is_decoded_only_when_used(self) -> None:
        """A record stays packed through a status query, and decodes when read."""
        self._env_with_index()
        loaded = Environment.load("e")
        items = loaded._steps._items
        assert not isinstance(items["done"], StepRecord)
        assert loaded.is_done("done")
        assert not isinstance(items["done"], StepRecord)  # a status needs no decoding
        assert isinstance(loaded.steps["done"], StepRecord)

    def test_export_of_packed_records(self, tmp_path: Path) -> None:
        """Exports (``dumps``, ``to_file``) carry records still in their packed form."""
        self._env_with_index()
        loaded = Environment.load("e")
        copy = Environment.loads(loaded.dumps())
        assert copy.steps == loaded.steps
        loaded.to_file(tmp_path / "one", task_name="done")
        assert Environment.from_file(tmp_path / "one").is_done("done")


class TestStepRecords:
    """The lazy mapping of step records."""

    def test_mapping_protocol_decodes(self) -> None:
        """Every way in decodes to the same records; copies are independent."""
        record = StepRecord("a", Status.FAILED, attempts=2)
        records = StepRecords({"a": record.to_state(), "b": StepRecord("b")})
        assert records.status("a") is Status.FAILED
        assert records.status("missing") is None
        assert records["a"] == record
        assert dict(records) == {"a": record, "b": StepRecord("b")}
        copy = records.copy()
        del copy["a"]
        assert "a" in records
        assert "a" not in copy
        assert records.state("a") == record.to_state()


class TestBoundParams:
    """The keyword fast path gives what ``inspect.Signature.bind_partial`` gives."""

    @pytest.mark.parametrize(
        ("args", "kwargs"),
        [((), {}), ((), {"a": 1}), ((), {"a": 1, "b": 3, "c": 4}), ((1,), {"c": 5}), ((1, 2), {})],
    )
    def test_same_as_bind_partial(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Same names, values and order, positional or keyword calls."""

        @task
        def step(env: Environment, a: int, b: int = 2, *, c: int = 3) -> None:
            pass

        assert bound_params(step, args, kwargs) == _bind(step, args, kwargs)
        assert list(bound_params(step, args, kwargs)) == list(_bind(step, args, kwargs))

    def test_unknown_keyword_still_raises(self) -> None:
        """A keyword the step does not take is refused, naming the step."""

        @task
        def step(env: Environment, a: int = 1) -> None:
            pass

        with pytest.raises(TypeError, match="step 'step'"):
            bound_params(step, (), {"nope": 1})

    def test_var_keyword_takes_the_slow_path(self) -> None:
        """``**kwargs`` steps record each extra keyword as a parameter."""

        @task
        def step(env: Environment, a: int = 1, **more: Any) -> None:
            pass

        assert bound_params(step, (), {"x": 2}) == {"a": 1, "x": 2}
        assert "more" not in inspect.signature(step.fn).bind_partial().arguments


class TestRecordsInStoredForm:
    """A direct call keeps its step's record in its stored form; it reads as the record would."""

    def test_states_match_to_state(self) -> None:
        """running_state and finished_state give what StepRecord.to_state gives."""
        owner = Owner("host", 42, datetime(2026, 1, 2, tzinfo=timezone.utc))
        started = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
        ended = datetime(2026, 1, 2, 3, 4, 6, 5, tzinfo=timezone.utc)
        params = {"i": 5, "s": "x"}
        running = StepRecord(
            "s",
            Status.RUNNING,
            attempts=1,
            started=started,
            params=params,
            fingerprint="f",
            owner=owner,
        )
        owner_state = ("host", 42, owner.started.timestamp() if owner.started else None)
        params_blob = pickle.dumps(params, protocol=pickle.HIGHEST_PROTOCOL)
        state = running_state("s", started.timestamp(), params_blob, "f", owner_state)
        assert state == running.to_state()
        error = ErrorInfo("ValueError", "bad", "Traceback...")
        done = running.replace(
            status=Status.FAILED,
            attempts=2,
            ended=ended,
            error=error,
            stored_result=StoredResult(b"r"),
            reads=frozenset({"b", "a"}),
            writes=frozenset({"c"}),
        )
        finished = finished_state(
            state,
            status=Status.FAILED,
            attempts=2,
            ended=ended.timestamp(),
            error=error,
            result=b"r",
            reads={"b", "a"},
            writes={"c"},
        )
        assert finished == done.to_state()
        assert StepRecord.from_state(finished) == done
        assert state["status"] == "running"  # the running state is left as it was

    def test_step_that_changes_its_own_record(self) -> None:
        """A step that sets its own clocks keeps them; its end is recorded over them."""
        start = datetime(2020, 5, 6, 7, 8, 9, tzinfo=timezone.utc)

        @task
        def clocked(env: Environment) -> int:
            env.set_start_end_clock("clocked", start=start, end=None)
            return 7

        env = Environment.create(".", "e", symlink=False, durable=False)
        assert clocked(env=env) == 7
        record = env.steps["clocked"]
        assert record.status is Status.DONE
        assert record.started == start
        assert record.ended is not None
        assert record.result == 7
        loaded = Environment.load("e").steps["clocked"]
        assert loaded == record

    def test_record_read_during_the_step(self) -> None:
        """Reading the step's record inside the step decodes it; the end is still recorded."""
        seen: list[Status] = []

        @task
        def looks(env: Environment, x: int = 1) -> None:
            seen.append(env.steps["looks"].status)
            env["x"] = x

        env = Environment.create(".", "e", symlink=False, durable=False)
        looks(env=env, x=3)
        assert seen == [Status.RUNNING]
        record = Environment.load("e").steps["looks"]
        assert record.status is Status.DONE
        assert record.params == {"x": 3}
        assert record.writes == frozenset({"x"})
        assert env.steps["looks"] == record


class TestIndexPeriod:
    """The index cache is rewritten every INDEX_EVERY commits, or INDEX_SOON without snapshots."""

    def test_sooner_after_a_blob(self) -> None:
        """After a blob, which no snapshot keeps, the cache is rewritten within INDEX_SOON commits."""
        env = Environment.create(".", "e", symlink=False, durable=False)
        env["blob"] = b"b" * (BLOB_THRESHOLD + 1)
        env.dump()
        for i in range(journal.INDEX_SOON):
            env["k"] = i
            env.dump()
        assert _index(Path("e")).exists()
        fresh = Environment.load("e")
        assert fresh["blob"] == b"b" * (BLOB_THRESHOLD + 1)
        assert fresh["k"] == journal.INDEX_SOON - 1

    def test_every_index_every_commits_otherwise(self) -> None:
        """A new journal gets its first cache soon; then one every INDEX_EVERY commits."""
        env = Environment.create(".", "e", symlink=False, durable=False)
        for i in range(journal.INDEX_SOON):
            env["k"] = i
            env.dump()
        first = _index(Path("e")).read_bytes()
        for i in range(INDEX_EVERY - 1):
            env["k"] = i
            env.dump()
        assert _index(Path("e")).read_bytes() == first
        env["k"] = "last"
        env.dump()
        assert _index(Path("e")).read_bytes() != first
        assert Environment.load("e")["k"] == "last"
