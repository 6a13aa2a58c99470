"""The Dask executor: steps and sweep instances as tasks of a Dask cluster.

Without an address, :class:`DaskExecutor` starts a ``distributed.LocalCluster``
of worker processes on this machine (and stops it at the end of the run).
With ``address=``, it connects to a running scheduler whose workers may be
on other machines: they share nothing with the driver but the network, so
they cannot read the journal. What reaches them:

- **Steps**, as one ``client.map`` per batch of ready steps (a sweep's
  thousand instances in one round trip): each task carries the step's
  function (cloudpickled once per function: functions of ``__main__`` or a
  notebook travel by value), its params, timeout and attempt number.
- **A snapshot of the committed state**: every data key with the digest of
  its pickled value, the value itself when it is small (at most
  ``INLINE_LIMIT`` bytes pickled), and the step records. The snapshot is a
  *base*, content addressed (scattered once under ``expkit-blob-<digest>``
  and fetched once by each worker that runs a step), plus a small *delta*
  of what was committed since, inline with the batch's tasks. The base is
  rebuilt when the delta grows past ``REBASE_ENTRIES`` entries, so a batch
  costs the same whatever the size of the environment.
- **Large values** (more than ``INLINE_LIMIT`` bytes pickled) are scattered
  once per version, also under ``expkit-blob-<digest>``, when a batch first
  needs them. A worker fetches one when a step first *reads* the key, and
  keeps it in a per-process cache: a version reaches a worker at most once,
  and never a worker whose steps do not read it.

Workers (see :mod:`expkit._dask_worker`) run the step on a view built from
the snapshot and return the :class:`~expkit._work.Outcome`; the driver
applies and commits it: workers never write the environment. Each fetch and
scatter of a blob is logged on the scheduler under the event topic
``expkit-shipped``.

Faults: a worker that dies while it runs a step (SIGKILL, the OOM killer)
surfaces as dask's ``KilledWorker`` and makes the step INTERRUPTED, retried
per its ``retries`` by the driver. A task whose worker died before it
started (it was queued there) is sent again without counting an attempt.
Ctrl-C raises ``KeyboardInterrupt`` in the running steps (they report
CANCELLED with what they wrote) and cancels the queued ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import queue
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from ._dask_worker import (
    EMPTY_PART,
    OUTCOME_TOPIC,
    SHIPPED_TOPIC,
    Lost,
    Part,
    Ref,
    Shipment,
    blob_key,
    ignore_sigint_plugin,
    interrupt_steps,
    run_step,
    running_steps,
    steps_left_running,
)
from ._errors import (
    DaskUnavailableError,
    SchedulerUnreachableError,
    StepRunningError,
    StepTimeoutError,
)
from ._executors import SLICE, Executor
from ._journal import Stored, as_stored, digest_of
from ._records import ErrorInfo
from ._status import Status
from ._work import Job, Outcome

if TYPE_CHECKING:
    from ._environment import Environment
    from ._journal import Entry, Journal

__all__ = ["DaskExecutor", "DaskUnavailableError", "SchedulerUnreachableError"]

#: Values whose pickle is at most this size travel in the snapshot itself;
#: larger ones are scattered once and fetched by a worker on first read.
INLINE_LIMIT = 64 * 1024
#: A delta at most this size rides inline with every task of a batch; a
#: larger one is scattered once for the batch.
DELTA_INLINE = 16 * 1024
#: Entries changed since the base after which the next batch ships a new base.
REBASE_ENTRIES = 128
#: Seconds to wait for a scheduler given by address.
CONNECT_TIMEOUT = 10.0
#: Seconds past a step's timeout after which the driver gives up on it (its
#: worker thread could not be stopped: it was blocked in C code).
KILL_GRACE = 5.0
#: Times a task is sent again, without counting an attempt, when what it
#: needed was lost with a worker before the step started.
RESENDS = 3
#: Seconds a finished task waits for others to share its commit.
COALESCE = 0.005
#: Seconds between two looks at which steps run, while steps with a timeout are pending.
POLL = 1.0


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as error:
        raise DaskUnavailableError(str(error)) from None
    return distributed


# -- the driver side -------------------------------------------------------------------


class _Snapshots:
    """Builds each batch's snapshot: a content-addressed base and a small delta."""

    def __init__(self, client: Any) -> None:
        self._client = client
        #: Scattered blobs by digest (values and snapshot parts), kept while needed.
        self.scattered: dict[bytes, Any] = {}
        self._base: Part = EMPTY_PART
        self._base_refs: frozenset[bytes] = frozenset()
        self._base_values: dict[str, bytes] = {}
        self._base_records: dict[str, object] = {}

    def ship(self, env: Environment, run: str) -> tuple[Shipment, frozenset[bytes]]:
        """The shipment for a batch, and the digests of the blobs it refers to."""
        view = env._view()  # noqa: SLF001 - the committed state, as every executor reads it
        journal = view._journal  # noqa: SLF001
        slots = view._slots  # noqa: SLF001
        items = view._steps._items  # noqa: SLF001
        if isinstance(self._base, Ref) and not self._alive(self._base.digest):
            self._base_values, self._base_records = {}, {}  # lost with a worker: rebuild
        values: dict[str, Stored | None] = {}
        for key, entry in slots.items():
            stored = as_stored(cast("Entry", entry))  # a view holds stored forms only
            if self._base_values.get(key) != stored.digest:
                values[key] = stored
        values.update((key, None) for key in self._base_values if key not in slots)
        records: dict[str, object] = {
            name: item for name, item in items.items() if self._base_records.get(name) is not item
        }
        records.update((name, None) for name in self._base_records if name not in items)
        refs: set[bytes] = set()
        if len(values) + len(records) > REBASE_ENTRIES or not self._base_values_alive():
            self._rebase(journal, slots, items)
            delta: Part = EMPTY_PART
        else:
            shipped = self._shippable(journal, values, refs)
            delta = self._part((shipped, records), DELTA_INLINE, refs)
        refs |= self._base_refs
        where = str(env.resultdir)
        return Shipment(run, where, env.durable, self._base, delta), frozenset(refs)

    def _rebase(
        self, journal: Journal | None, slots: Mapping[str, Any], items: Mapping[str, object]
    ) -> None:
        refs: set[bytes] = set()
        stored = {key: as_stored(cast("Entry", entry)) for key, entry in slots.items()}
        shipped = self._shippable(journal, stored, refs)
        records = dict(items)
        self._base = self._part((shipped, records), DELTA_INLINE, refs)
        self._base_refs = frozenset(refs)
        self._base_values = {key: s.digest for key, s in stored.items()}
        self._base_records = records

    def _base_values_alive(self) -> bool:
        return all(self._alive(digest) for digest in self._base_refs)

    def _alive(self, digest: bytes) -> bool:
        future = self.scattered.get(digest)
        return future is not None and future.status == "finished"

    def _shippable(
        self, journal: Journal | None, values: Mapping[str, Stored | None], refs: set[bytes]
    ) -> dict[str, Stored | None]:
        """Stored forms a worker can read: small values inline, large ones by reference."""
        shipped: dict[str, Stored | None] = {}
        for key, stored in values.items():
            if stored is None or stored.inline is not None:
                shipped[key] = stored
                continue
            if journal is None:  # pragma: no cover - a view of a journal-less env has no blobs
                continue
            if stored.size <= INLINE_LIMIT:
                shipped[key] = Stored(stored.digest, journal.fetch(stored, key))
                continue
            if not self._alive(stored.digest):
                self._scatter(stored.digest, journal.fetch(stored, key))
            refs.add(stored.digest)
            shipped[key] = Stored(stored.digest, None, 0, stored.size, 0)
        return shipped

    def _part(self, table: object, inline: int, refs: set[bytes]) -> Part:
        data = pickle.dumps(table, protocol=pickle.HIGHEST_PROTOCOL)
        if len(data) <= inline:
            return data
        digest = digest_of(data)
        if not self._alive(digest):
            self._scatter(digest, data)
        refs.add(digest)
        return Ref(digest, len(data))

    def _scatter(self, digest: bytes, data: bytes) -> None:
        key = blob_key(digest)
        self.scattered[digest] = self._client.scatter({key: data})[key]
        self._client.log_event(
            SHIPPED_TOPIC, {"op": "scattered", "digest": digest.hex(), "bytes": len(data)}
        )

    def forget(self, digest: bytes) -> None:
        """A blob was lost with a worker: scatter it again when next needed."""
        self.scattered.pop(digest, None)

    def prune(self, live: set[bytes]) -> None:
        """Release blobs that no pending task and no current snapshot refers to."""
        keep = live | self._base_refs
        if isinstance(self._base, Ref):
            keep.add(self._base.digest)
        for digest in [d for d in self.scattered if d not in keep]:
            del self.scattered[digest]


@dataclasses.dataclass(slots=True)
class _Pending:
    """A task of ours on the cluster."""

    job: Job
    future: Any
    refs: frozenset[bytes]
    resends: int = 0


class DaskExecutor(Executor):
    """Steps as tasks of a Dask distributed cluster (see the module docstring).

    ``address`` is a scheduler's (``tcp://host:8786``); without one, a local
    cluster of worker processes is started for the run and closed after it.
    ``jobs`` sizes that local cluster; expkit itself sets no bound (the
    cluster's worker threads bound what runs at once).
    """

    name = "dask"

    def __init__(
        self,
        jobs: int | None = None,
        address: str | None = None,
        *,
        connect_timeout: float | None = None,
    ) -> None:
        distributed = _distributed()
        self.address = address
        self._cluster: Any = None
        if address is None:
            self._cluster = _local_cluster(distributed, jobs)
            client = distributed.Client(self._cluster, set_as_default=False)
            client.register_plugin(ignore_sigint_plugin(distributed))
        else:
            try:
                client = distributed.Client(
                    address,
                    timeout=CONNECT_TIMEOUT if connect_timeout is None else connect_timeout,
                    set_as_default=False,
                )
            except (OSError, TimeoutError, ValueError) as error:
                raise SchedulerUnreachableError(
                    address, str(error) or type(error).__name__
                ) from None
        self._client: Any = client
        self._distributed = distributed
        self._run = uuid.uuid4().hex
        self._snapshots = _Snapshots(client)
        self._functions: dict[int, tuple[Callable[..., Any], bytes]] = {}
        self._pending: dict[str, _Pending] = {}
        #: Tickets seen running, and since when (watched only for steps with a timeout).
        self._started: dict[str, float] = {}
        self._polled = 0.0
        # Results are fetched by the client's event loop as tasks finish
        # (concurrent fetches share round trips); wait() takes them from here.
        self._done: Any = distributed.as_completed(loop=client.loop)
        #: Outcomes pushed by workers as events, by ticket (set from the client's loop).
        self._arrived: dict[str, bytes] = {}
        self._ready: list[Outcome] = []
        #: Pending tasks with a timeout (the driver watches those only).
        self._timed = 0
        self._env: Environment | None = None
        self._closed = False
        client.subscribe_topic(OUTCOME_TOPIC, self._on_outcome)

    def width(self) -> int | None:
        return None

    def left_running(self, where: str) -> dict[str, str]:
        if self._cluster is not None:
            return {}  # this run's own cluster: no other run's steps on it
        try:
            answers = self._client.run(steps_left_running, where, self._run)
        except Exception:  # noqa: BLE001 - a worker gone meanwhile: nothing known, nothing refused
            return {}
        found: dict[str, str] = {}
        for worker, (host, pid, names) in answers.items():
            for name in names:
                found.setdefault(name, str(StepRunningError(name, host, pid, worker=worker)))
        return found

    # -- submitting ---------------------------------------------------------------

    def submit(self, jobs: Sequence[Job], env: Environment) -> None:
        self._env = env
        self._send([(job, 0) for job in jobs])

    def _send(self, jobs: Sequence[tuple[Job, int]]) -> None:
        env = self._env
        assert env is not None  # noqa: S101 - submit() came first
        shipment, refs = self._snapshots.ship(env, self._run)
        live = set(refs)
        for pending in self._pending.values():
            live |= pending.refs
        self._snapshots.prune(live)
        tasks, tickets, sent = [], [], []
        for job, resends in jobs:
            try:
                function = self._pickled(job.fn)
            except Exception as error:  # noqa: BLE001 - the step cannot travel: it fails, the run goes on
                self._ready.append(Outcome.failed(job, error))
                continue
            # One task group per step (the key's prefix): a sweep's instances
            # are one group to the scheduler, as a client.map would be.
            ticket = f"{job.name.split('[', 1)[0]}-{uuid.uuid4().hex}"
            tasks.append(
                (ticket, function, job.name, job.params, job.takes_env, job.timeout, job.attempt)
            )
            tickets.append(ticket)
            sent.append((job, resends))
        if not tasks:
            return
        # One burst for the whole batch: a sweep reaches the scheduler at once.
        futures = self._client.map(run_step, tasks, shipment=shipment, key=tickets, pure=False)
        for ticket, future, (job, resends) in zip(tickets, futures, sent, strict=True):
            self._pending[ticket] = _Pending(job, future, refs, resends)
            self._timed += job.timeout is not None
        self._done.update(futures)

    def _pickled(self, fn: Callable[..., Any]) -> bytes:
        found = self._functions.get(id(fn))
        if found is None or found[0] is not fn:
            import cloudpickle

            found = self._functions[id(fn)] = (
                fn,
                cloudpickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL),
            )
        return found[1]

    # -- callbacks, from the client's threads ----------------------------------------

    def _on_outcome(self, event: tuple[float, Any]) -> None:
        msg = event[1]
        if isinstance(msg, dict) and msg.get("run") == self._run:
            self._arrived[msg["ticket"]] = msg["outcome"]

    # -- waiting ---------------------------------------------------------------------

    def wait(self, timeout: float | None) -> list[Outcome]:
        limit = None if timeout is None else time.monotonic() + timeout
        arrived: list[Any] = []
        while True:
            found, self._ready = self._ready, []
            with contextlib.suppress(queue.Empty):
                while True:
                    arrived.append(self._done.queue.get_nowait())
            found += self._outcomes(arrived)
            arrived = []
            self._watch()
            found += self._overdue()
            if found or not self._pending:
                return found
            wait_for = self._next_overdue()
            if limit is not None:
                left = limit - time.monotonic()
                if left <= 0:
                    return found
                wait_for = left if wait_for is None else min(wait_for, left)
            # In short slices: a Ctrl-C the kernel hands to one of the client's
            # threads does not wake a blocked main thread, only its next check.
            wait_for = SLICE if wait_for is None else min(wait_for, SLICE)
            with contextlib.suppress(queue.Empty):
                arrived.append(self._done.queue.get(timeout=wait_for))
                # Tasks finishing close together share one commit: take what
                # else arrives within a few milliseconds.
                until = time.monotonic() + COALESCE
                while len(arrived) < len(self._pending):
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    arrived.append(self._done.queue.get(timeout=left))

    def _outcomes(self, futures: list[Any]) -> list[Outcome]:
        found: list[Outcome] = []
        again: list[tuple[Job, int]] = []
        fetch: list[_Pending] = []
        for future in futures:
            ticket = future.key
            pending = self._pending.get(ticket)
            if pending is None or pending.future is not future:
                continue  # reported already (cancelled, given up on)
            pushed = self._arrived.get(ticket)
            if future.status == "finished" and pushed is None:
                fetch.append(pending)  # a large outcome, or a lost blob: the task's result
                continue
            started = ticket in self._started
            self._forget(ticket)
            if pushed is not None and future.status == "finished":
                found.append(pickle.loads(pushed))  # our worker's Outcome, via the scheduler
            elif (outcome := self._failure(pending, started=started)) is not None:
                found.append(outcome)
            else:
                again.append((pending.job, pending.resends))
        results = self._client.gather([p.future for p in fetch]) if fetch else []
        for pending, result in zip(fetch, results, strict=True):
            self._forget(pending.future.key)
            if isinstance(result, Lost):
                self._snapshots.forget(result.digest)
                again.append((pending.job, pending.resends))
            else:
                found.append(cast("Outcome", result))
        found += self._send_again(again)
        return found

    def _send_again(self, again: list[tuple[Job, int]]) -> list[Outcome]:
        """Send tasks again that never ran; those sent too often are INTERRUPTED."""
        given_up = [
            _interrupted(job, "what it needed was lost with Dask workers")
            for job, resends in again
            if resends >= RESENDS
        ]
        retry = [(job, resends + 1) for job, resends in again if resends < RESENDS]
        if retry:
            self._send(retry)
        return given_up

    def _failure(self, pending: _Pending, *, started: bool) -> Outcome | None:
        """The outcome of a task that did not finish; ``None`` to send it again."""
        job, future = pending.job, pending.future
        if future.status != "error":
            # Cancelled by the cluster, or its result lost with a worker.
            with contextlib.suppress(Exception):
                future.cancel()
            if not started:
                return None
            return _interrupted(job, f"its Dask task was {future.status} by the cluster")
        try:
            error = future.exception(timeout=10)
        except Exception as raised:  # noqa: BLE001 - lost contact with the cluster
            error = raised
        if isinstance(error, self._distributed.KilledWorker):
            # Which tasks were executing there, as of the worker's last
            # heartbeat (twice a second): the others were only queued.
            started |= future.key in getattr(error.last_worker, "executing", {})
            if not started:
                return None  # queued on a worker that died: it never ran
            worker = getattr(error.last_worker, "address", "?")
            return _interrupted(job, f"its Dask worker {worker} died (KilledWorker)")
        info = (
            ErrorInfo.from_exception(error)
            if isinstance(error, BaseException)
            else ErrorInfo("DaskError", str(error), "")
        )
        return Outcome(job.name, Status.FAILED, error=info, attempt=job.attempt)

    def _forget(self, ticket: str) -> None:
        pending = self._pending.pop(ticket, None)
        self._started.pop(ticket, None)
        self._arrived.pop(ticket, None)
        if pending is not None and pending.job.timeout is not None:
            self._timed -= 1

    def _watch(self) -> None:
        """Note which of our timed steps run now (at most once per POLL seconds)."""
        now = time.monotonic()
        if not self._timed or now < self._polled + POLL:
            return
        self._polled = now
        try:
            answers = self._client.run(running_steps)
        except Exception:  # noqa: BLE001 - a worker gone meanwhile: look again later
            return
        for tickets in answers.values():
            for ticket in tickets:
                if ticket in self._pending:
                    self._started.setdefault(ticket, now)

    def _next_overdue(self) -> float | None:
        if not self._timed:
            return None
        now = time.monotonic()
        limits = [
            started + p.job.timeout + KILL_GRACE - now
            for ticket, p in self._pending.items()
            if p.job.timeout is not None and (started := self._started.get(ticket)) is not None
        ]
        return max(0.0, min([*limits, self._polled + POLL - now]))

    def _overdue(self) -> list[Outcome]:
        """Steps past their timeout whose thread could not be stopped: given up on."""
        if not self._timed:
            return []
        now = time.monotonic()
        found = []
        for ticket, pending in list(self._pending.items()):
            job = pending.job
            started = self._started.get(ticket)
            if job.timeout is None or started is None or now < started + job.timeout + KILL_GRACE:
                continue
            self._forget(ticket)
            pending.future.cancel()
            error = StepTimeoutError(job.name, job.timeout)
            found.append(
                Outcome(
                    job.name,
                    Status.FAILED,
                    error=ErrorInfo(
                        "expkit.StepTimeoutError",
                        f"{error} (its Dask worker thread could not be stopped; given up on)",
                        "",
                    ),
                    attempt=job.attempt,
                )
            )
        return found

    def busy(self) -> bool:
        return bool(self._pending or self._ready)

    # -- stopping ------------------------------------------------------------------------

    def interrupt(self) -> None:
        # Ask every worker: a step may have started before its event reached us.
        hit: set[str] = set()
        if self._pending:
            try:
                answers = self._client.run(interrupt_steps, list(self._pending))
                hit = {ticket for found in answers.values() for ticket in found}
            except Exception:  # noqa: BLE001 - no answer (a busy or dying worker)
                # Without an answer any step may be running: cancel none and let
                # the driver wait for them (its grace period bounds the wait).
                hit = set(self._pending)
        # The others have not started: they will not.
        queued = [t for t in self._pending if t not in hit]
        if queued:
            self._client.cancel([self._pending[t].future for t in queued])
        for ticket in queued:
            job = self._pending[ticket].job
            self._forget(ticket)
            self._ready.append(
                Outcome(
                    job.name,
                    Status.CANCELLED,
                    error=ErrorInfo("KeyboardInterrupt", "the run was interrupted", ""),
                    attempt=job.attempt,
                )
            )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        client = self._client
        try:
            if self._pending:
                with contextlib.suppress(Exception):
                    client.cancel([p.future for p in self._pending.values()])
            self._pending.clear()
            self._snapshots.scattered.clear()
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(OUTCOME_TOPIC)
        finally:
            client.close()
            if self._cluster is not None:
                self._cluster.close()


def _interrupted(job: Job, why: str) -> Outcome:
    return Outcome(
        job.name,
        Status.INTERRUPTED,
        error=ErrorInfo("WorkerDied", why, ""),
        attempt=job.attempt,
    )


def _local_cluster(distributed: Any, jobs: int | None) -> Any:
    """Worker processes on this machine, one thread each (as many as jobs, up to the CPUs)."""
    cpus = os.cpu_count() or 1
    workers = max(1, min(jobs or cpus, cpus))
    threads = max(1, -(-(jobs or workers) // workers))
    return distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=threads,
        processes=True,
        scheduler_kwargs={
            # A worker death fails its task at once (KilledWorker): expkit, not
            # the scheduler, decides whether the step runs again (`retries`).
            "allowed_failures": 0,
            # No dashboard, and the scheduler's own HTTP endpoints on a free
            # loopback port: nothing collides with another run's cluster.
            "dashboard": False,
            "dashboard_address": "127.0.0.1:0",
        },
    )
