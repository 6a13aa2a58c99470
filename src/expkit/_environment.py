"""The Environment: a persistent, thread-safe mapping of a step's data and records."""

from __future__ import annotations

import contextlib
import os
import pickle
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, MutableMapping

from ._errors import (
    CorruptEnvironmentError,
    CorruptValueError,
    NoEnvironmentError,
    UnpicklableValueError,
)
from ._journal import Entry, Journal, Stored, Update, as_stored, digest_of
from ._paths import (
    CURRENT_LINK,
    durable_default,
    repoint,
    timestamp_name,
)
from ._process import is_alive
from ._records import StepRecord
from ._status import Status
from ._steps import StepRecords, StepsMixin
from ._tracking import current_tracker
from ._typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:
    from pathlib import Path

    from ._steps import StoredState

__all__ = ["Environment"]

_T = TypeVar("_T")
_UNLOADED: Any = object()
_EXPORT_TAG = "expkit-environment"
_EXPORT_VERSION = 1
# Values of these types cannot change in place, so reading one never makes
# its key a candidate for re-pickling at the next commit.
_IMMUTABLE = (str, bytes, int, float, bool, complex, type(None), frozenset)
_RESULTDIR = "resultdir"


class _Slot:
    """One data key: its live value (maybe not unpickled yet) and its stored form."""

    __slots__ = ("raw", "stored", "value")

    def __init__(
        self, value: Any = _UNLOADED, stored: Stored | None = None, raw: bytes | None = None
    ) -> None:
        self.value = value
        self.stored = stored
        #: Pickled bytes not yet committed (imported without unpickling).
        self.raw = raw


def _stored_form(found: _Slot | Entry | None) -> Stored | None:
    """What the journal holds for a key, whatever shape its entry has now."""
    if isinstance(found, _Slot):
        return found.stored
    return None if found is None else as_stored(found)


def _pickle(key: str, value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:  # pickle raises many types; all mean "cannot store"
        raise UnpicklableValueError(key, f"{type(error).__name__}: {error}") from error


class Environment(StepsMixin, MutableMapping[str, Any]):
    """A persistent, thread-safe mapping bound to a result directory.

    Values are pickled one key at a time and unpickled on first access.
    Changes are kept in memory until committed: by :meth:`dump`, and by every
    decorated step when it starts and ends. ``Environment()`` makes one that
    lives in memory only.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._journal: Journal | None = None
        # A key not touched since loading maps to its stored form (an Entry)
        # and becomes a _Slot on first use: loading builds no object per key.
        self._slots: dict[str, _Slot | Entry] = {}
        self._assigned: set[str] = set()
        self._deleted: set[str] = set()
        #: Mutable values read since the last commit: each may have been changed in place.
        self._touched: set[str] = set()
        #: Every mutable value read through this object: ``dump()`` checks them all,
        #: as code may keep one and change it again after a commit.
        self._kept: set[str] = set()
        self._steps = StepRecords()
        self._steps_dirty: set[str] = set()
        #: Made from a one-step export: holds a record and no data at all.
        self._records_only = False
        #: A step's private copy during a run (see _view): commits stay in memory.
        self._is_view = False
        #: The environment a view was made from: its ``dump()`` commits through it.
        self._source: Environment | None = None
        #: Runs hold compaction off while steps read stored values by position.
        self._upkeep_held = 0

    # -- creating and loading -------------------------------------------

    @classmethod
    def create(
        cls,
        root: str | os.PathLike[str] = "results",
        name: str | None = None,
        *,
        symlink: bool | str | os.PathLike[str] = True,
        durable: bool | None = None,
    ) -> Environment:
        """Make a new environment in ``root/name`` (default name: a timestamp).

        With ``symlink`` (``True`` means ``./current``) the link is re-pointed
        to it atomically. An existing environment is never overwritten:
        :class:`EnvironmentExistsError`.
        """
        from pathlib import Path  # loaded when first used: `import expkit` stays light

        root_path = Path(root)
        root_path.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = _fresh_directory(root_path) if name is None else root_path / name
        journal = Journal.create(path, durable=durable_default(durable))
        env = cls._bind(journal)
        if symlink:
            repoint(CURRENT_LINK if symlink is True else Path(symlink), path)
        return env

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        durable: bool | None = None,
        trust: bool = False,
    ) -> Environment:
        """Load the environment at ``path``: a directory, its ``env`` file, or a link to either.

        ``None`` means ``./current``. Loading never moves ``current``. A step
        left RUNNING by a process that died is marked INTERRUPTED.
        """
        if path is None and not os.path.lexists(CURRENT_LINK):
            raise NoEnvironmentError(
                os.path.abspath(CURRENT_LINK),
                "no ./current link here; run a step with new=True, or pass env=",
            )
        where = os.fspath(path) if path is not None else CURRENT_LINK
        # Unless trusted, the journal refuses a directory or a journal file
        # others could write, before anything is unpickled.
        journal = Journal.open(where, durable=durable_default(durable), trust=trust)
        env = cls._bind(journal)
        try:
            journal.lock()
            try:
                update = journal.read_new()
            finally:
                journal.unlock()
        except BaseException:
            journal.close()
            raise
        if update is not None:
            env._absorb(update)  # noqa: SLF001 - our own class
        env._mark_interrupted()  # noqa: SLF001
        return env

    @classmethod
    def load_from_file(cls, path: str | os.PathLike[str]) -> Environment:
        """EnOSlib's name for :meth:`load`."""
        return cls.load(path)

    @classmethod
    def _bind(cls, journal: Journal) -> Environment:
        # The journal closes its descriptors when the last environment (or
        # view) using it is gone.
        env = cls()
        env._journal = journal
        return env

    def _mark_interrupted(self) -> None:
        """RUNNING records whose owner died become INTERRUPTED (and are committed)."""
        with self._lock:
            running = self._steps.running()
            if not running:
                return
            dead = [
                record for record in running if record.owner is None or not is_alive(record.owner)
            ]
            if not dead:
                return

            def still_dead(_changed: set[str]) -> None:
                for record in dead:
                    current = self._steps.get(record.name)
                    if (
                        current is not None
                        and current.status is Status.RUNNING
                        and current.owner == record.owner
                    ):
                        self._put_record(current.replace(status=Status.INTERRUPTED))

            self._commit(before=still_dead, label="interrupted")

    # -- where ------------------------------------------------------------

    @property
    def resultdir(self) -> Path:
        """The environment's directory, where it is now (also after a move)."""
        if self._journal is None:
            raise NoEnvironmentError(
                "<memory>", "this environment lives in memory only (loads/from_file)"
            )
        return self._journal.directory

    @property
    def durable(self) -> bool:
        """Whether commits are fsynced."""
        return self._journal is not None and self._journal.durable

    # -- the mapping --------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        with self._lock:
            found = self._slots.get(key)
            if found is None:
                if key == _RESULTDIR and self._journal is not None:
                    return self._journal.directory
                raise KeyError(key)
            slot = found if isinstance(found, _Slot) else self._promote(key, found)
            value = slot.value
            if value is _UNLOADED:
                value = slot.value = self._unpickle(key, slot)
            if not isinstance(value, _IMMUTABLE):
                self._touched.add(key)  # may be mutated in place: re-check at commit
                self._kept.add(key)
            tracker = current_tracker()
            if tracker is not None and tracker.env_id == id(self):
                tracker.reads.add(key)
            return value

    def __setitem__(self, key: str, value: Any) -> None:
        if not isinstance(cast("object", key), str):  # callers without type checking
            msg = f"environment keys are strings, not {type(key).__name__}"
            raise TypeError(msg)
        with self._lock:
            slot = self._slots.get(key)
            if isinstance(slot, _Slot):
                slot.value, slot.raw = value, None
            else:
                self._slots[key] = _Slot(value, _stored_form(slot))
            self._assigned.add(key)
            self._deleted.discard(key)
            tracker = current_tracker()
            if tracker is not None and tracker.env_id == id(self):
                tracker.assigned.add(key)

    def __delitem__(self, key: str) -> None:
        with self._lock:
            del self._slots[key]
            self._assigned.discard(key)
            self._touched.discard(key)
            self._kept.discard(key)
            self._deleted.add(key)
            tracker = current_tracker()
            if tracker is not None and tracker.env_id == id(self):
                tracker.deleted.add(key)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._slots or (key == _RESULTDIR and self._journal is not None)

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._slots))

    def __len__(self) -> int:
        with self._lock:
            return len(self._slots)

    def __repr__(self) -> str:
        where = "memory" if self._journal is None else str(self._journal.directory)
        return f"<Environment {where}: {len(self)} keys, {len(self._steps)} steps>"

    def _repr_html_(self) -> str:
        from ._html import environment_html  # only notebooks need it

        return environment_html(self)

    def _promote(self, key: str, stored: Entry) -> _Slot:
        slot = self._slots[key] = _Slot(stored=as_stored(stored))
        return slot

    def _slot(self, key: str) -> _Slot:
        found = self._slots[key]
        return found if isinstance(found, _Slot) else self._promote(key, found)

    def _unpickle(self, key: str, slot: _Slot) -> Any:
        if slot.raw is not None:
            data, where = slot.raw, "<memory>"
        elif slot.stored is not None and self._journal is not None:
            data, where = self._journal.fetch(slot.stored, key), str(self._journal.path)
        else:  # pragma: no cover - a slot always has a value or a stored form
            raise CorruptValueError(key, "<memory>", "no stored form")
        try:
            return pickle.loads(data)  # the environment's owner was checked at load
        except Exception as error:  # any unpickling failure fails only this key
            raise CorruptValueError(key, where, f"{type(error).__name__}: {error}") from error

    def pickled(self, key: str) -> bytes:
        """The pickled bytes of ``key``'s value, without unpickling it when stored."""
        with self._lock:
            slot = self._slot(key)
            if slot.raw is not None:
                return slot.raw
            if slot.value is _UNLOADED and slot.stored is not None and self._journal is not None:
                return self._journal.fetch(slot.stored, key)
            return _pickle(key, slot.value)

    def _set_pickled(self, key: str, data: bytes) -> None:
        with self._lock:
            self._slots[key] = _Slot(raw=data, stored=_stored_form(self._slots.get(key)))
            self._assigned.add(key)
            self._deleted.discard(key)

    # -- committing -------------------------------------------------------

    def dump(self) -> None:
        """Commit every change now (atomic; durable unless ``durable=False``).

        In a step that ``make`` runs, this commits the step's changes so far
        (its record stays RUNNING): a crash later in the step keeps them.
        """
        if self._is_view:
            self._checkpoint()
        else:
            self._commit(label="dump", recheck=self._kept)

    def _checkpoint(self) -> None:
        """A view's ``dump()``: commit its changes so far through the environment it came from.

        The step's outcome then carries only what changed after. A view
        without a source (a Dask worker's, far from the journal) commits with
        its step's end, as before.
        """
        if self._source is None:
            return
        source: Environment = self._source
        with self._lock:
            data, _, _ = self._collect(skip_unpicklable=False)
            if not data:
                return
            with source._lock:
                for key, raw in data.items():
                    if raw is not None:
                        source._set_pickled(key, raw)
                    elif key in source._slots:
                        del source[key]
                # No compaction now: the run's other views read values by place.
                source._upkeep_held += 1
                try:
                    source._commit(label="checkpoint")
                finally:
                    source._upkeep_held -= 1
                for key, raw in data.items():
                    slot = self._slots.get(key)
                    if raw is not None and isinstance(slot, _Slot):
                        slot.stored, slot.raw = _stored_form(source._slots.get(key)), None
            self._tell_tracker(data)  # the step's record names them
            self._assigned.clear()
            self._deleted.clear()

    def _commit(
        self,
        *,
        sync: bool = True,
        label: str | None = None,
        before: Callable[[set[str]], None] | None = None,
        skip_unpicklable: bool = False,
        recheck: Collection[str] = (),
    ) -> set[str]:
        """Merge other processes' commits, then append ours; returns the keys written.

        ``before(changed)`` runs under the lock once the changed keys are
        known and may raise to abort, or update step records to commit with
        the data. ``recheck``: keys read before the last commit that may have
        changed in place since (a commit re-checks only those read since the
        last one: its cost follows what changed, not what was ever read).
        """
        with self._lock:
            if self._is_view:
                # A step's view during a run: its changes go back to the run's
                # driver, the only writer, which commits them with the record.
                data, _, _ = self._collect(skip_unpicklable=True)
                if before is not None:
                    before(set(data))
                return set(data)
            journal = self._journal
            if journal is None:
                raise NoEnvironmentError(
                    "<memory>", "this environment lives in memory only; nothing to commit to"
                )
            journal.lock()
            try:
                update = journal.read_new()
                if update is not None:
                    self._absorb(update)
                if self._assigned or self._touched or self._deleted or recheck:
                    data, digests, failed = self._collect(
                        skip_unpicklable=skip_unpicklable, recheck=recheck
                    )
                else:
                    data, digests, failed = {}, {}, []
                changed = set(data)
                if before is not None:
                    before(changed)
                steps = self._steps.states(self._steps_dirty) if self._steps_dirty else {}
                if data or steps:
                    stored = journal.append(data, steps, label, digests, sync=sync)
                    for key, item in stored.items():
                        slot = self._slot(key)
                        slot.stored, slot.raw = item, None
                    self._tell_tracker(data)
                # Unpicklable values skipped on request stay pending: nothing is dropped.
                self._assigned = set(failed)
                self._touched.clear()
                self._deleted.clear()
                self._steps_dirty.clear()
                # Upkeep waits for a synced commit: a RUNNING claim is soon
                # followed by its step's record, and a run's group commit by a sync.
                if sync and not self._upkeep_held:
                    self._upkeep(journal)
            finally:
                journal.unlock()
            return changed

    def _tell_tracker(self, committed: Collection[str]) -> None:
        """Tell the step running here which keys a commit of its own wrote (for its record)."""
        tracker = current_tracker()
        if committed and tracker is not None and tracker.env_id == id(self):
            tracker.committed.update(committed)

    def _upkeep(self, journal: Journal) -> None:
        """Let the journal compact or write its index cache (lock held, all synced)."""
        moved = journal.upkeep()
        if moved:
            for key, item in moved.items():
                current = self._slots.get(key)
                if isinstance(current, _Slot):
                    current.stored = item
                elif current is not None:
                    self._slots[key] = item

    def _view(self, *, share_records: bool = False) -> Environment:
        """A private copy of the committed state for one step of a run.

        It reads stored values through this environment's journal, lazily:
        what the step changes is taken from it by the run's driver, or
        committed through this environment when the step calls ``dump()``.
        Commit before making views: uncommitted changes are not in them.
        With ``share_records``, the view reads this environment's table of
        step records until it changes its own (no copy of the table): only for
        a step that runs while this environment commits no record.
        """
        with self._lock:
            view = Environment()
            view._journal = self._journal
            view._is_view = True
            view._source = self
            view._slots = {
                key: stored
                for key, found in self._slots.items()
                if (stored := _stored_form(found)) is not None
            }
            view._steps = self._steps.shared() if share_records else self._steps.copy()
            return view

    def _collect(
        self, *, skip_unpicklable: bool, recheck: Collection[str] = ()
    ) -> tuple[dict[str, bytes | None], dict[str, bytes], list[str]]:
        """The keys whose pickled form changed since the last commit, pickled."""
        data: dict[str, bytes | None] = {}
        digests: dict[str, bytes] = {}
        failed: list[str] = []
        for key in self._deleted:
            if key not in self._slots:
                data[key] = None
        for key in self._assigned.union(self._touched, recheck):
            slot = self._slots.get(key)
            if not isinstance(slot, _Slot) or (slot.value is _UNLOADED and slot.raw is None):
                continue
            try:
                raw = slot.raw if slot.raw is not None else _pickle(key, slot.value)
            except UnpicklableValueError:
                if not skip_unpicklable:
                    raise
                failed.append(key)
                continue
            digest = digest_of(raw)
            if slot.stored is not None and slot.stored.digest == digest:
                continue
            data[key] = raw
            digests[key] = digest
        return data, digests, failed

    def _absorb(self, update: Update) -> None:  # noqa: C901, PLR0912 - one case per kind of change
        """Take in other processes' commits; our uncommitted changes win."""
        if update.full and not self._slots and not self._steps:
            # A first load: nothing of ours to reconcile. (A full update holds
            # no deletions, and its dicts are ours to keep.)
            self._slots = cast("dict[str, _Slot | Entry]", update.data)
            # Records stay in their stored form until used.
            self._steps = StepRecords(cast("dict[str, StepRecord | StoredState]", update.steps))
            return
        mine = self._assigned | self._deleted
        if update.full:
            for key in [
                k
                for k, s in self._slots.items()
                if not (isinstance(s, _Slot) and s.stored is None) and k not in update.data
            ]:
                if key not in mine:
                    del self._slots[key]
            for name in [
                n for n in self._steps if n not in update.steps and n not in self._steps_dirty
            ]:
                del self._steps[name]
        for key, item in update.data.items():
            slot = self._slots.get(key)
            stored = None if item is None else as_stored(item)
            if key in mine:
                # Our change wins, but compare it with the latest stored form:
                # assigning back the value another process replaced is a change.
                if isinstance(slot, _Slot):
                    slot.stored = stored
                continue
            if stored is None:
                self._slots.pop(key, None)
                self._touched.discard(key)
                self._kept.discard(key)
            elif not isinstance(slot, _Slot):
                self._slots[key] = stored  # not in use here: take the new stored form
            elif slot.stored is not None and slot.stored.digest == stored.digest:
                slot.stored = stored  # same value, maybe at a new place (compaction)
            elif key in self._kept and self._mutated(key, slot):
                self._assigned.add(key)  # changed here and there: ours is the later write
                slot.stored = stored
            else:
                slot.value, slot.stored, slot.raw = _UNLOADED, stored, None
                self._touched.discard(key)
                self._kept.discard(key)
        for name, state in update.steps.items():
            if name in self._steps_dirty:
                continue
            if state is None:
                self._steps.pop(name, None)
            else:
                self._steps.put_state(name, state)

    def _mutated(self, key: str, slot: _Slot) -> bool:
        try:
            raw = _pickle(key, slot.value)
        except UnpicklableValueError:
            return True
        return slot.stored is None or digest_of(raw) != slot.stored.digest

    def refresh(self) -> None:
        """Take in what other processes committed since this environment was loaded."""
        with self._lock:
            journal = self._journal
            if journal is not None:
                journal.lock()
                try:
                    update = journal.read_new()
                    if update is not None:
                        self._absorb(update)
                finally:
                    journal.unlock()

    # -- whole-environment operations -------------------------------------

    def atomically(self, fn: Callable[[Environment], _T]) -> _T:
        """Run ``fn(env)`` holding the environment's lock; returns what it returns."""
        with self._lock:
            return fn(self)

    def apply(self, update: Mapping[str, Any]) -> None:
        """Merge a nested mapping into the data, recursively (mappings merge, others replace)."""
        with self._lock:
            for key, value in update.items():
                current = self.get(key)
                if isinstance(value, Mapping) and isinstance(current, Mapping):
                    self[key] = _merged(current, value)
                else:
                    self[key] = value

    def results(self, step: str | Any) -> dict[str, Any]:
        """The results of a step's DONE runs by name: every instance of a sweep, in name order.

        For a plain step the mapping has one entry (when it is DONE). Given
        the step itself rather than its name, a sweep's results are those of
        its grid as declared now: instances of an earlier, wider grid are
        left out, so an analysis never mixes in points it no longer asks for
        (a callable grid, whose points may depend on data, keeps them all).
        """
        from ._instances import grid_points, instance_name

        current: set[str] | None = None  # the instance names to keep; None: all
        if isinstance(step, str):
            name = step
        else:
            name = step.name
            grid = step.options.grid
            # A callable grid's points may depend on data: its instances on record count.
            if grid is not None and not callable(grid):
                current = {instance_name(name, point) for point in grid_points(step, None)}
        prefix = f"{name}["
        with self._lock:
            found = sorted(
                (n, r)
                for n, r in self._steps.items()
                if (n == name or n.startswith(prefix))
                and r.status is Status.DONE
                and (current is None or n in current)
            )
        return {n: record.result for n, record in found}

    def merge_done_tasks(self, other: Environment) -> None:
        """Take every DONE step record of ``other``, with the data keys those steps wrote."""
        with self._lock, other._lock:
            for record in other._steps.values():
                if record.status is not Status.DONE:
                    continue
                self._put_record(record)
                for key in record.writes:
                    if key in other._slots:
                        self._set_pickled(key, other.pickled(key))
                    elif key in self._slots and not other._records_only:
                        # The step deleted it. (A record-only export, from
                        # to_file(task_name=...), carries no data to judge by.)
                        del self[key]

    def dumps(self) -> bytes:
        """One self-contained pickle of the whole environment (data and step records)."""
        with self._lock:
            data = {key: self.pickled(key) for key in self._slots}
            steps = {name: self._steps.state(name) for name in self._steps}
        return pickle.dumps(
            (_EXPORT_TAG, _EXPORT_VERSION, data, steps), protocol=pickle.HIGHEST_PROTOCOL
        )

    @classmethod
    def loads(cls, data: bytes, *, source: str = "<bytes>") -> Environment:
        """An in-memory environment from :meth:`dumps` output."""
        try:
            tag, version, values, steps = pickle.loads(data)  # the caller chose to load it
            if tag != _EXPORT_TAG or version != _EXPORT_VERSION:
                raise ValueError(f"not an expkit export (tag {tag!r}, version {version!r})")  # noqa: TRY301
            env = cls()
            env._records_only = values is None
            for key, raw in (values or {}).items():
                env._slots[key] = _Slot(raw=raw)
            env._assigned = set(env._slots)
            for name, state in steps.items():
                env._steps[name] = StepRecord.from_state(state)
            env._steps_dirty = set(steps)
        except Exception as error:  # truncated or foreign data: one clear error
            raise CorruptEnvironmentError(
                source, f"cannot read an exported environment ({error!r})"
            ) from error
        return env

    def to_file(self, path: str | os.PathLike[str], task_name: str | None = None) -> None:
        """Export to one file (only step ``task_name``'s record when given); atomic."""
        if task_name is None:
            data = self.dumps()
        else:
            with self._lock:
                if task_name not in self._steps:
                    from ._errors import UnknownStepError

                    raise UnknownStepError(task_name, self._steps)
                state = self._steps.state(task_name)
            data = pickle.dumps((_EXPORT_TAG, _EXPORT_VERSION, None, {task_name: state}))
        _write_file_atomically(os.fspath(path), data)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Environment:
        """Import a file written by :meth:`to_file` (an in-memory environment)."""
        try:
            with open(path, "rb") as exported:
                data = exported.read()
        except FileNotFoundError:
            raise NoEnvironmentError(path, "no exported environment there") from None
        return cls.loads(data, source=str(path))

    def reload_config(self) -> None:
        """Re-read ``env["config_file"]`` (YAML) into ``env["config"]``, replacing it."""
        from pathlib import Path

        from ._config import load_config  # YAML is imported only when used

        with self._lock:
            path = Path(self["config_file"]).absolute()
            self["config"] = load_config(path)
            self["config_file"] = str(path)


def _merged(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in update.items():
        current = result.get(key)
        result[key] = (
            _merged(current, value)
            if isinstance(value, Mapping) and isinstance(current, Mapping)
            else value
        )
    return result


def _fresh_directory(root: Path) -> Path:
    """``root/<timestamp>``, with ``-2``, ``-3``... if taken; made now so no one else takes it."""
    base = timestamp_name()
    for attempt in range(1, 10_000):
        path = root / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return path
    msg = f"no free environment name under {root}"
    raise FileExistsError(msg)


def _write_file_atomically(path: str, data: bytes) -> None:
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())  # before the rename, or a crash can leave an empty file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
