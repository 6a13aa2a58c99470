"""The worker side of the Dask executor: what a task carries and how it runs.

A task carries its step (the function cloudpickled, params, timeout,
attempt) and the batch's :class:`Shipment`: the committed state as a
content-addressed *base* and a small *delta*. Values small enough travel
inside them; a large value is a reference to a blob that the driver
scattered under ``expkit-blob-<digest>``, fetched through this process's
cache the first time a step reads it (so a version reaches a worker at most
once). The step runs with :func:`~expkit._work.execute` on a view of that
state; its outcome goes back to the driver, which alone writes.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import pickle
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from ._environment import Environment
from ._journal import Stored, digest_of
from ._records import ErrorInfo
from ._status import Status
from ._steps import StepRecords
from ._work import Job, Outcome, execute

if TYPE_CHECKING:
    from ._journal import Journal

__all__ = [
    "EMPTY_PART",
    "OUTCOME_TOPIC",
    "SHIPPED_TOPIC",
    "Lost",
    "Part",
    "Ref",
    "Shipment",
    "Task",
    "blob_key",
    "ignore_sigint_plugin",
    "interrupt_steps",
    "run_step",
    "running_steps",
    "steps_left_running",
]

#: Worker-side cache of fetched blobs: this share of the worker's memory limit.
CACHE_SHARE = 0.25
#: An outcome pickled to at most this size comes back as an event pushed to
#: the driver (no round trip to fetch it); a larger one as the task's result.
EVENT_LIMIT = 16 * 1024
#: Event topics on the scheduler: steps' outcomes, blobs scattered and fetched.
OUTCOME_TOPIC = "expkit-outcome"
SHIPPED_TOPIC = "expkit-shipped"
_KEY_PREFIX = "expkit-blob-"


def blob_key(digest: bytes) -> str:
    """The Dask key of a scattered blob."""
    return _KEY_PREFIX + digest.hex()


@dataclasses.dataclass(frozen=True, slots=True)
class Ref:
    """A blob scattered on the cluster under ``expkit-blob-<digest>``."""

    digest: bytes
    size: int


#: A part of a snapshot: pickled ``(values, records)`` inline, or scattered.
Part = bytes | Ref
EMPTY_PART = pickle.dumps(({}, {}), protocol=pickle.HIGHEST_PROTOCOL)


@dataclasses.dataclass(frozen=True, slots=True)
class Shipment:
    """What every task of a batch needs besides its step: the committed state."""

    run: str
    resultdir: str
    durable: bool
    base: Part
    delta: Part


@dataclasses.dataclass(frozen=True, slots=True)
class Lost:
    """A task's answer when a blob it needed was lost with a worker."""

    digest: bytes


class LostBlobError(Exception):
    def __init__(self, digest: bytes) -> None:
        super().__init__(f"blob {digest.hex()} was lost with its worker")
        self.digest = digest


# -- the worker side ------------------------------------------------------------------


class _Cache:
    """Blobs this worker process fetched, by digest; least recently used leave first."""

    def __init__(self) -> None:
        self._items: OrderedDict[bytes, bytes] = OrderedDict()
        self._size = 0
        self._guard = threading.Lock()
        self._fetching: dict[bytes, threading.Lock] = {}
        #: Decoded snapshot parts, by digest (small: a few versions).
        self.tables: OrderedDict[bytes, tuple[dict[str, Any], dict[str, Any]]] = OrderedDict()

    def get(self, digest: bytes) -> bytes | None:
        with self._guard:
            data = self._items.get(digest)
            if data is not None:
                self._items.move_to_end(digest)
            return data

    def put(self, digest: bytes, data: bytes, limit: int) -> None:
        if len(data) > limit:
            return
        with self._guard:
            if digest in self._items:
                return
            self._items[digest] = data
            self._size += len(data)
            while self._size > limit:
                _, old = self._items.popitem(last=False)
                self._size -= len(old)

    @contextlib.contextmanager
    def fetching(self, digest: bytes) -> Iterator[None]:
        """One thread fetches a blob; the others wait and find it cached."""
        with self._guard:
            lock = self._fetching.setdefault(digest, threading.Lock())
        with lock:
            yield
        with self._guard:
            self._fetching.pop(digest, None)


_CACHE = _Cache()
#: Steps running in this worker process: task key -> (thread ident, run,
#: environment directory, step name).
_RUNNING: dict[str, tuple[int, str, str, str]] = {}
_RUNNING_GUARD = threading.Lock()


def _cache_limit(worker: Any) -> int:
    limit = getattr(worker, "memory_manager", None)
    memory = getattr(limit, "memory_limit", None) if limit is not None else None
    return int(memory * CACHE_SHARE) if memory else 1 << 30


def _resolve(ref: Ref) -> bytes:
    """A blob's bytes: from this process's cache, else from the cluster (once)."""
    data = _CACHE.get(ref.digest)
    if data is not None:
        return data
    with _CACHE.fetching(ref.digest):
        data = _CACHE.get(ref.digest)
        if data is None:
            from distributed import get_worker

            worker = get_worker()
            data = _fetch(worker, ref)
            _CACHE.put(ref.digest, data, _cache_limit(worker))
        return data


def _fetch(worker: Any, ref: Ref) -> bytes:
    from distributed import Future

    key = blob_key(ref.digest)
    if key in worker.data:  # scattered to this very worker
        data = worker.data[key]
    else:
        client = worker._get_client()  # noqa: SLF001 - distributed.get_client() without the lookup
        future: Any = Future(key, client)
        try:
            held = client.who_has([future]).get(key)
            if held:
                # A Future made from a key is not known to the scheduler as
                # wanted by this client until told (as fire_and_forget does);
                # then its state arrives, and the data comes straight from the
                # worker that holds it. Generous timeout: large blob, slow network.
                client._send_to_scheduler({"op": "client-desires-keys", "keys": [key]})  # noqa: SLF001
                data = future.result(timeout=60 + ref.size / 1e6)
        except Exception as error:  # lost, cancelled, timed out: all mean "send again"
            raise LostBlobError(ref.digest) from error
        finally:
            future.release()
        if not held:
            raise LostBlobError(ref.digest)
    if not isinstance(data, bytes) or digest_of(data) != ref.digest:
        raise LostBlobError(ref.digest)
    worker.log_event(
        SHIPPED_TOPIC,
        {"op": "fetched", "digest": ref.digest.hex(), "bytes": len(data), "worker": worker.address},
    )
    return data


def _table(part: Part) -> tuple[dict[str, Any], dict[str, Any]]:
    """A snapshot part's values and records (shared: copy before changing)."""
    if isinstance(part, bytes):
        if part == EMPTY_PART:
            return {}, {}
        table: tuple[dict[str, Any], dict[str, Any]] = pickle.loads(part)  # from our driver
        return table
    with _CACHE._guard:  # noqa: SLF001 - the cache's own module
        found = _CACHE.tables.get(part.digest)
    if found is not None:
        return found
    table = pickle.loads(_resolve(part))  # from our driver, checked against its digest
    with _CACHE._guard:  # noqa: SLF001
        _CACHE.tables[part.digest] = table
        while len(_CACHE.tables) > 4:  # noqa: PLR2004 - a few versions in flight at once
            _CACHE.tables.popitem(last=False)
    return table


class _RemoteJournal:
    """What a worker's view needs of a journal: its place, and values by digest.

    Small values are inline in their stored form; a large one is resolved
    on first read through the worker's cache. Nothing is ever written.
    """

    def __init__(self, directory: str, durable: bool) -> None:  # noqa: FBT001
        self.directory = Path(directory)
        self.path = self.directory
        self.durable = durable
        #: A blob that could not be fetched during the step: the task is sent again.
        self.lost: bytes | None = None

    def fetch(self, stored: Stored, key: str) -> bytes:  # noqa: ARG002 - Journal's signature
        if stored.inline is not None:
            return stored.inline
        try:
            return _resolve(Ref(stored.digest, stored.length))
        except LostBlobError as error:
            self.lost = error.digest
            raise

    def lock(self) -> None:
        """Nothing to lock: the driver is the only writer."""

    def unlock(self) -> None:
        """Nothing to unlock."""

    def read_new(self) -> None:
        """No other commits reach a worker during a step."""


def _view(shipment: Shipment) -> tuple[Environment, _RemoteJournal]:
    base_values, base_records = _table(shipment.base)
    delta_values, delta_records = _table(shipment.delta)
    slots = dict(base_values)
    records = dict(base_records)
    for mapping, delta in ((slots, delta_values), (records, delta_records)):
        for name, item in delta.items():
            if item is None:
                mapping.pop(name, None)
            else:
                mapping[name] = item
    journal = _RemoteJournal(shipment.resultdir, shipment.durable)
    view = Environment._bind(cast("Journal", journal))  # noqa: SLF001 - a view, as _view() makes
    view._is_view = True  # noqa: SLF001
    view._slots = slots  # noqa: SLF001
    view._steps = StepRecords(records)  # noqa: SLF001
    return view, journal


#: What a task carries besides the shipment: ticket, pickled function, step
#: name, params, whether it takes env, timeout, attempt.
Task = tuple[str, bytes, str, Mapping[str, Any], bool, float | None, int]


def run_step(task: Task, shipment: Shipment) -> Outcome | Lost | None:
    """A Dask task: run one step on a view of the shipped snapshot; never raises for the step.

    A small outcome is pushed to the driver as an event, in the same stream
    as the task's completion and before it, and the task returns ``None``:
    the driver needs no round trip to fetch it. A large one is the result.
    """
    from distributed import get_worker

    worker = get_worker()
    outcome = _attempt(task, shipment)
    if isinstance(outcome, Outcome):
        data = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) <= EVENT_LIMIT:
            worker.log_event(
                OUTCOME_TOPIC, {"run": shipment.run, "ticket": task[0], "outcome": data}
            )
            return None
    return outcome


def _attempt(task: Task, shipment: Shipment) -> Outcome | Lost:
    ticket, function, name, params, takes_env, timeout, attempt = task
    try:
        fn = pickle.loads(function)  # cloudpickle's output, from our driver
    except BaseException as error:  # noqa: BLE001 - e.g. a module missing on this worker
        return Outcome(name, Status.FAILED, error=ErrorInfo.from_exception(error), attempt=attempt)
    try:
        view, journal = _view(shipment)
    except LostBlobError as lost:
        return Lost(lost.digest)
    job = Job(name, fn, params, takes_env, timeout, attempt)
    outcome: Outcome | None = None
    try:
        try:
            with _RUNNING_GUARD:
                _RUNNING[ticket] = (threading.get_ident(), shipment.run, shipment.resultdir, name)
            outcome = execute(job, view)
        finally:
            with _RUNNING_GUARD:
                _RUNNING.pop(ticket, None)
    except KeyboardInterrupt:
        # Injected just outside the step's own handler: still a cancelled step.
        outcome = outcome or Outcome(name, Status.CANCELLED, attempt=attempt)
    if journal.lost is not None:
        return Lost(journal.lost)
    return outcome


def running_steps() -> list[str]:
    """Run on each worker by ``client.run``: the tasks whose steps run there now."""
    with _RUNNING_GUARD:
        return list(_RUNNING)


def interrupt_steps(tickets: list[str]) -> list[str]:
    """Run on each worker by ``client.run``: raise KeyboardInterrupt in these steps."""
    hit = []
    with _RUNNING_GUARD:
        for ticket in tickets:
            running = _RUNNING.get(ticket)
            if running is not None:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(running[0]), ctypes.py_object(KeyboardInterrupt)
                )
                hit.append(ticket)
    return hit


def steps_left_running(resultdir: str, run: str) -> tuple[str, int, list[str]]:
    """Run on each worker by ``client.run``: steps of this environment that other runs left here.

    A run whose driver died leaves its running steps to go on to their end:
    a Python thread cannot be stopped from outside, and their outcomes are
    lost. Returns this worker's host, its pid, and those steps' names.
    """
    import socket  # only here: the worker's name, for the driver's message

    with _RUNNING_GUARD:
        names = [
            name
            for _, other, directory, name in _RUNNING.values()
            if directory == resultdir and other != run
        ]
    return socket.gethostname(), os.getpid(), names


def ignore_sigint_plugin(distributed: Any) -> Any:
    """A worker plugin: Ctrl-C at the terminal reaches the driver only, which decides."""

    class IgnoreSigint(distributed.WorkerPlugin):  # type: ignore[misc]
        name = "expkit-ignore-sigint"

        def setup(self, worker: Any) -> None:  # noqa: ARG002
            import signal

            with contextlib.suppress(ValueError):  # not the main thread: nothing to do
                signal.signal(signal.SIGINT, signal.SIG_IGN)

    return IgnoreSigint()
