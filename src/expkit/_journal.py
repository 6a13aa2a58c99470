r"""The environment's store: an append-only journal of checksummed frames.

Layout of the file ``env``::

    header   b"EXPKIT\0J" + format version (u16)
    frame*   magic (4) | kind (1) | length (u64) | payload crc32 (u32)
             | header crc32 (u32) | payload

A *blob* frame holds one large pickled value; its payload checksum is verified
when the value is first read, so loading never reads a 256 MB array nobody
asked for. A *commit* frame holds a pickle of builtins only: the small values
(each pickled on its own, so one bad value fails only its key), references to
the blob frames written just before it, deletions and step records. A commit
is one append and, when durable, one ``fdatasync``: a crash mid-append leaves
a torn tail that fails its checksum and is ignored, then cut off by the next
writer (under the lock, so never while another process appends).

The journal keeps the whole index in memory — each key's stored form, each
step's stored record — as of the last commit it read or wrote, so that
writing the index cache or compacting never has to ask anyone for the state.

``env.index`` is a cache: that index as of some commit, rewritten now and
then so that loading scans only the frames after it. It is validated against
the journal and ignored when stale. When the journal grows past twice its live
data, it is compacted into a fresh file: write, fsync, rename, fsync the
directory.

A process keeps two things between loads, so that a script calling step
after step does not decode again what it just wrote: the last index cache it
wrote or read for each journal (its bytes and what they hold), and where the
last journal it closed on an environment stopped (a snapshot: the index
cache that vouched for it and the journal's bytes after that cache). A load
uses them only when the files hold those very bytes, compared in full: what
it takes is then exactly what reading the bytes would give.
"""

from __future__ import annotations

import contextlib
import fcntl
import marshal
import os
import pickle
import struct
import threading
import zlib
from collections.abc import Callable, Iterator

from ._errors import (
    CorruptEnvironmentError,
    EnvironmentExistsError,
    NoEnvironmentError,
    UntrustedEnvironmentError,
)
from ._paths import untrusted_reason
from ._typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "FORMAT_VERSION",
    "Entry",
    "Journal",
    "PackedState",
    "Stored",
    "Update",
    "as_stored",
    "unpacked",
]

FORMAT_VERSION = 1
JOURNAL_NAME = "env"
INDEX_NAME = "env.index"
LOCK_NAME = "lock"

_HEADER = b"EXPKIT\x00J" + struct.pack("<H", FORMAT_VERSION)
_HEADER_PREFIX = _HEADER[:8]
_FRAME = struct.Struct("<4sBQI")  # magic, kind, payload length, payload crc
_CRC = struct.Struct("<I")
_FRAME_SIZE = _FRAME.size + _CRC.size
_FRAME_MAGIC = b"\xe5Xj\x01"
_BLOB, _COMMIT = 1, 2
_KINDS = (_BLOB, _COMMIT)
#: The index cache: this magic, the body's length and crc32, then the body, a
#: marshal (version 4, the same in every Python 3.4 on) of builtins only:
#: faster to write and read than a pickle. A cache in another form fails its
#: magic or its checksum and is ignored. It is rewritten in place, never
#: truncated: what lies after its body is the tail of a longer former one.
_INDEX_MAGIC = b"EXPKITI6"  # 6: packed records carry what a plan reads
_INDEX_HEAD = struct.Struct("<8sQI")
_MARSHAL_VERSION = 4
_ANCHOR = 64
_flock, _LOCK_EX, _LOCK_UN = fcntl.flock, fcntl.LOCK_EX, fcntl.LOCK_UN
_getuid: Callable[[], int] | None = getattr(os, "getuid", None)
_COMPACTION = "compaction"

#: Values larger than this go to a blob frame of their own.
BLOB_THRESHOLD = 64 * 1024
#: Rewrite the index cache after this many commits past it. A process reads
#: back its own commits from a snapshot (see _Snapshot), so the cache mostly
#: serves other processes: they scan at most this many commits after it.
INDEX_EVERY = 16
#: ... or after this many, when no snapshot can be left (blobs, or much data).
INDEX_SOON = 4
_CHUNK = 64 * 1024
_COMPACT_SLACK = 256 * 1024
#: A compaction writes the new journal under this prefix, then renames it.
_COMPACT_PREFIX = f"{JOURNAL_NAME}.compact-"
#: A creation writes the empty journal under this prefix, then links it as the journal.
_NEW_PREFIX = f"{JOURNAL_NAME}.new-"
#: Replaced journals kept open for the views that still read them.
_RETIRED_KEEP = 4
#: What a step record is guessed to take in the journal, for compaction's planning.
_RECORD_GUESS = 512

_DIGEST_SIZE = 16


class Stored(NamedTuple):
    """Where a committed value lives: inline bytes, or a blob frame.

    A named tuple: loading builds one per key, and tuples build fastest.
    """

    digest: bytes
    inline: bytes | None = None
    offset: int = 0
    length: int = 0
    crc: int = 0

    @property
    def size(self) -> int:
        """Bytes of pickled data."""
        return len(self.inline) if self.inline is not None else self.length

    def to_tuple(self) -> tuple[bytes, bytes | None, int, int, int]:
        """Builtins-only form, for the commit frame."""
        return (self.digest, self.inline, self.offset, self.length, self.crc)

    def to_entry(self) -> Entry:
        """The compact form the journal's index keeps (see :data:`Entry`)."""
        if self.inline is not None:
            return self.digest + self.inline
        return (self.digest, None, self.offset, self.length, self.crc)


#: A key's stored form as the index keeps it: for a value stored inline, its
#: digest and pickled bytes run together (one object instead of six, so the
#: index cache loads fast); for a blob, the fields of :class:`Stored`.
Entry = bytes | tuple[Any, ...]

#: A step record's stored form as the index cache keeps it: what a plan reads
#: of it (status, start and end timestamps, fingerprint), and the marshal of
#: its dict (see ``StepRecord.to_state``), read only when the record is used.
#: In a commit frame, a record is the dict itself.
PackedState = tuple[str, float | None, float | None, str | None, bytes]


def as_stored(entry: Entry) -> Stored:
    """A key's :class:`Stored` from any of its forms (a commit frame's, the index's)."""
    if isinstance(entry, bytes):
        return _new_stored(Stored, (entry[:_DIGEST_SIZE], entry[_DIGEST_SIZE:], 0, 0, 0))
    if isinstance(entry, Stored):
        return entry
    return Stored._make(entry)


def _frame_item(entry: Entry) -> tuple[Any, ...]:
    """A commit frame's form of an index entry."""
    if isinstance(entry, bytes):
        return (entry[:_DIGEST_SIZE], entry[_DIGEST_SIZE:], 0, 0, 0)
    return entry


class Update:
    """What the commits read since the last look changed (later commits win)."""

    # A plain slotted class: a dataclass costs a millisecond at import.
    __slots__ = ("data", "full", "steps")

    def __init__(
        self,
        data: dict[str, Entry | None] | None = None,
        steps: dict[str, dict[str, Any] | PackedState | None] | None = None,
        *,
        full: bool = False,
    ) -> None:
        #: Stored forms (see Entry and as_stored); ``None``: deleted.
        self.data: dict[str, Entry | None] = {} if data is None else data
        #: Step records in their stored forms (a dict, or a PackedState); ``None``: deleted.
        self.steps: dict[str, dict[str, Any] | PackedState | None] = {} if steps is None else steps
        #: The whole state, read afresh (a first load, or the journal was
        #: replaced by another process's compaction): ``data`` and ``steps`` hold
        #: everything, without deletions, and what they lack was deleted.
        self.full = full


_blake2b: Any = None


def blake2b(data: bytes, digest_size: int) -> Any:
    """``hashlib.blake2b(data, digest_size=...)``, loaded on first use."""
    global _blake2b  # noqa: PLW0603 - loaded on first use, to keep import expkit light
    if _blake2b is None:
        try:
            # hashlib's own blake2b, without hashlib's load of OpenSSL (~5 ms).
            from _blake2 import blake2b as found
        except ImportError:  # pragma: no cover - a Python built without it
            from hashlib import blake2b as found
        _blake2b = found
    return _blake2b(data, digest_size=digest_size)


def digest_of(data: bytes) -> bytes:
    """A 128-bit digest: tells whether a re-pickled value changed."""
    digest: bytes = blake2b(data, 16).digest()
    return digest


_new_stored = tuple.__new__  # Stored's own __new__ is a Python function: skipped when hot


def _blob(digest: bytes, raw: bytes, pos: int, chunks: list[bytes]) -> Stored:
    """Add a blob frame for ``raw`` at journal offset ``pos`` to ``chunks``; where it lies."""
    crc = zlib.crc32(raw)
    head = _FRAME.pack(_FRAME_MAGIC, _BLOB, len(raw), crc)
    chunks += [head + _CRC.pack(zlib.crc32(head)), raw]
    return Stored(digest, None, pos + _FRAME_SIZE, len(raw), crc)


def _frame(kind: int, payload: bytes) -> bytes:
    head = _FRAME.pack(_FRAME_MAGIC, kind, len(payload), zlib.crc32(payload))
    return head + _CRC.pack(zlib.crc32(head)) + payload


def _write_all(fd: int, chunks: list[bytes]) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            written = os.write(fd, view)
            view = view[written:]


def _pwrite_all(fd: int, chunks: list[bytes], offset: int) -> None:
    for chunk in chunks:
        written = os.pwrite(fd, chunk, offset)
        if written < len(chunk):  # rare: a short write
            view = memoryview(chunk)[written:]
            offset += written
            while view:
                written = os.pwrite(fd, view, offset)
                view = view[written:]
                offset += written
        else:
            offset += written


def _read_to_end(fd: int, hint: int = _CHUNK) -> bytes:
    """A whole small file's bytes (a short read ends it; the caller checks a checksum).

    ``hint``: the size expected, so that one read of a buffer that size does.
    """
    chunks = []
    size = hint + 1
    while True:
        chunk = os.read(fd, size)
        chunks.append(chunk)
        if len(chunk) < size:
            return chunk if len(chunks) == 1 else b"".join(chunks)
        size = _CHUNK


class Journal:
    """One environment directory's journal, lock and index.

    Reading and writing happen with the lock held (:meth:`lock`, or
    :meth:`locked`); within one hold, :meth:`read_new` comes before
    :meth:`append`.
    """

    __slots__ = (
        "_commits_since_index",
        "_compacted",
        "_data",
        "_dir_fd",
        "_end",
        "_fd",
        "_index_anchor",
        "_index_end",
        "_index_raw",
        "_ino",
        "_live",
        "_loaded",
        "_lock_fd",
        "_retired",
        "_since",
        "_size",
        "_states",
        "_trust",
        "_uid",
        "_unsynced",
        "_where",
        "durable",
    )

    def __init__(
        self,
        dir_fd: int,
        where: str,
        *,
        durable: bool,
        lock_fd: int | None = None,
        trust: bool = True,
    ) -> None:
        self._dir_fd = dir_fd
        self._where = where
        self.durable = durable
        #: Whether the journal file may be read without checking who can write it.
        self._trust = trust
        #: This process's user id (if the platform has one), for those checks.
        self._uid = None if trust or _getuid is None else _getuid()
        self._fd = -1
        self._ino = -1
        #: Descriptors of journals replaced by a compaction, newest last: views
        #: made before it still read values by their places in those files.
        self._retired: list[int] = []
        self._lock_fd = (
            os.open(LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
            if lock_fd is None
            else lock_fd
        )
        #: End of the last valid commit we have read (or written).
        self._end = 0
        #: The file's size as seen in this lock hold (-1: not seen yet).
        self._size = -1
        #: Whether the index below reflects the journal up to ``_end``.
        self._loaded = False
        #: The index: each live key's stored form, each step's stored record.
        self._data: dict[str, Entry] = {}
        self._states: dict[str, dict[str, Any] | PackedState] = {}
        #: Bytes of pickled data of the live keys.
        self._live = 0
        #: Where the journal's compaction commit ends, if it starts with one:
        #: what a compaction leaves, whatever the step records weigh.
        self._compacted = 0
        #: The index cache that vouches for the journal up to ``_index_end``
        #: (its bytes, as read or written), and the journal's bytes from there
        #: to ``_end`` (None once unknown): what a later load in this process
        #: compares to take up where this journal stopped (see _Snapshot).
        self._index_raw: bytes | None = None
        self._index_anchor = b""
        self._index_end = 0
        self._since: bytes | None = None
        self._commits_since_index = 0
        self._unsynced = False

    # -- opening ---------------------------------------------------------

    @classmethod
    def create(cls, path: Path, *, durable: bool) -> Journal:
        """Make ``path`` and an empty journal in it; refuses an existing one."""
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        dir_fd = _open_dir(path)
        tmp = f"{_NEW_PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            _write_all(fd, [_HEADER])
            if durable:
                os.fsync(fd)  # the header must be on disk before the name exists
            # link() fails if "env" exists: two creators cannot both win, and
            # an existing environment is never replaced.
            os.link(tmp, JOURNAL_NAME, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except FileExistsError:
            exists = True
        else:
            exists = False
        finally:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
        if exists:
            os.close(dir_fd)
            raise EnvironmentExistsError(path)
        journal = cls(dir_fd, os.path.abspath(path), durable=durable)
        if durable:
            os.fsync(dir_fd)
        journal._open_journal()
        return journal

    @classmethod
    def open(cls, where: str, *, durable: bool, trust: bool = True) -> Journal:
        """Open the journal of directory ``where`` (or of the journal file ``where``).

        Unless ``trust``, refuse a directory (now) or a journal file (when
        first read) that another user owns or others may write.
        """
        try:
            try:
                dir_fd = os.open(where, _DIR_FLAGS)
            except NotADirectoryError:  # the journal file itself, or a link to it
                where = os.path.dirname(os.path.realpath(where))
                dir_fd = os.open(where, _DIR_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            raise NoEnvironmentError(where) from None
        where = where if where.startswith("/") else os.path.abspath(where)
        try:
            try:
                lock_fd = os.open(LOCK_NAME, os.O_RDWR | os.O_CLOEXEC, dir_fd=dir_fd)
            except FileNotFoundError:
                # A journal without its lock file (copied alone) gets one; a
                # directory without a journal is no environment (and gets nothing).
                try:
                    os.stat(JOURNAL_NAME, dir_fd=dir_fd)
                except FileNotFoundError:
                    raise NoEnvironmentError(where) from None
                lock_fd = os.open(
                    LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
                )
        except BaseException:
            os.close(dir_fd)
            raise
        journal = cls(dir_fd, where, durable=durable, lock_fd=lock_fd, trust=trust)
        if not trust:
            reason = untrusted_reason(os.fstat(dir_fd), journal._uid)
            if reason is not None:
                journal.close()
                raise UntrustedEnvironmentError(where, reason)
        # The journal file itself is opened at the first read, under the lock.
        return journal

    def _open_journal(self) -> None:
        """Open the file named ``env`` now (replacing our descriptor of an older one)."""
        try:
            fd = os.open(JOURNAL_NAME, os.O_RDWR | os.O_CLOEXEC, dir_fd=self._dir_fd)
        except FileNotFoundError:
            raise NoEnvironmentError(self._where) from None
        try:
            info = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        reason = None if self._trust else untrusted_reason(info, self._uid)
        if reason is not None:
            os.close(fd)
            raise UntrustedEnvironmentError(os.path.join(self._where, JOURNAL_NAME), reason)
        if self._fd >= 0:
            self._retire(self._fd)
        self._fd = fd
        self._ino = info.st_ino
        self._size = info.st_size
        self._loaded = False

    def _retire(self, fd: int) -> None:
        """Keep ``fd`` (a replaced journal) readable for the values placed in it."""
        self._retired.append(fd)
        if len(self._retired) > _RETIRED_KEEP:
            # An older file only serves views older than several compactions.
            os.close(self._retired.pop(0))

    def close(self) -> None:
        """Release the file descriptors (and leave a snapshot for the next load)."""
        snapshot = None
        if self._loaded and self._since is not None and self._index_raw is not None:
            snapshot = _Snapshot(
                self._index_raw,
                self._index_anchor,
                self._index_end,
                self._since,
                self._end,
                self._live,
                self._compacted,
                self._commits_since_index,
                self._data,  # no longer ours: the journal is closed
                self._states,
            )
        self._loaded = False
        fds = (self._fd, self._lock_fd, self._dir_fd, *self._retired)
        self._fd = self._lock_fd = self._dir_fd = -1
        self._retired = []
        for fd in fds:
            if fd >= 0:
                try:  # noqa: SIM105 - no context manager per descriptor: every direct call closes three
                    os.close(fd)
                except OSError:
                    pass
        if snapshot is not None:
            _remember_snapshot(self._ino, snapshot)

    def __del__(self) -> None:
        # The environment holding this journal is gone: give back its descriptors.
        try:  # noqa: SIM105 - as in close()
            self.close()
        except Exception:  # noqa: BLE001, S110 - at interpreter exit os may be gone already
            pass

    # -- where -----------------------------------------------------------

    @property
    def directory(self) -> Path:
        """Where the directory is now, even if it was moved since it was opened."""
        from pathlib import Path  # built when asked: `import expkit` does not load pathlib

        try:
            live = os.readlink(f"/proc/self/fd/{self._dir_fd}")
        except OSError:
            return Path(self._where)
        return Path(self._where if live.endswith(" (deleted)") else live)

    @property
    def path(self) -> Path:
        """The journal file."""
        return self.directory / JOURNAL_NAME

    @property
    def size(self) -> int:
        """Bytes of valid journal."""
        return self._end

    # -- locking ---------------------------------------------------------

    def lock(self) -> None:
        """Take the environment's file lock (see :meth:`locked`)."""
        _flock(self._lock_fd, _LOCK_EX)

    def unlock(self) -> None:
        """Release the lock taken by :meth:`lock`."""
        self._size = -1  # others may write as soon as it is released
        _flock(self._lock_fd, _LOCK_UN)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the environment's file lock.

        The lock is a kernel lock (``flock``): it is released when its holder
        dies, however it dies, so a killed process never leaves a stale lock.
        """
        self.lock()
        try:
            yield
        finally:
            self.unlock()

    # -- reading ---------------------------------------------------------

    def read_new(self) -> Update | None:
        """What the commits made since the last call changed, or ``None`` (lock held)."""
        if self._fd < 0:
            # The first look: the file named env now (no one replaces it while we hold the lock).
            self._open_journal()
            return self._read_all()
        info = os.stat(JOURNAL_NAME, dir_fd=self._dir_fd)
        if info.st_ino != self._ino:
            # Replaced by another process's compaction: read it afresh.
            self._open_journal()
            return self._read_all()
        size = self._size = info.st_size  # the same file: its size
        if not self._loaded:
            return self._read_all()
        if size == self._end:
            return None
        if size < self._end:
            raise CorruptEnvironmentError(self.path, f"the journal shrank to {size} bytes", size)
        update = Update()
        try:
            self._scan(update, self._end, size)
        except BaseException:
            # The index may hold part of what this update was to report: the
            # next look reads everything again rather than trust it.
            self._loaded = False
            raise
        return update if update.data or update.steps else None

    def _read_all(self) -> Update:
        """The whole state: from the index cache when it is valid, else from the start."""
        head = os.pread(self._fd, len(_HEADER), 0)
        if head != _HEADER:
            self._bad_header(head)
        self._loaded = False
        self._data, self._states, self._live, self._compacted = {}, {}, 0, 0
        self._end = len(_HEADER)
        self._commits_since_index = 0
        self._index_raw, self._since = None, None
        tail = self._read_index()
        if self._size > self._end:
            self._scan(Update(), self._end, self._size, tail or b"")
        self._loaded = True
        data: dict[str, Entry | None] = dict(self._data)
        steps: dict[str, dict[str, Any] | PackedState | None] = dict(self._states)
        return Update(data, steps, full=True)

    def _bad_header(self, head: bytes) -> None:
        if head[:8] != _HEADER_PREFIX:
            raise CorruptEnvironmentError(self.path, "not an expkit journal (bad header)", 0)
        if len(head) < len(_HEADER):
            raise CorruptEnvironmentError(self.path, "truncated header", len(head))
        version = struct.unpack("<H", head[8:10])[0]
        if version != FORMAT_VERSION:
            raise CorruptEnvironmentError(
                self.path,
                f"format version {version}; this expkit reads version {FORMAT_VERSION} "
                "— use the expkit version that wrote it",
            )

    def _scan(self, update: Update, start: int, end: int, buf: bytes = b"") -> None:
        """Apply the commits in ``[start, end)`` to the index and to ``update``.

        ``buf``, if given, holds the journal's bytes from ``start`` on.
        """
        buf_at = start
        pos = start
        while pos < end:
            if not (buf_at <= pos and pos + _FRAME_SIZE <= buf_at + len(buf)):
                buf, buf_at = os.pread(self._fd, min(_CHUNK, end - pos), pos), pos
            frame = _parse_header(buf, pos - buf_at)
            if frame is None or pos + _FRAME_SIZE + frame[1] > end:
                self._check_torn(pos, end)
                break
            kind, length, crc = frame
            body = pos + _FRAME_SIZE
            if kind == _COMMIT:
                head = buf[pos - buf_at : body - buf_at]
                if body + length > buf_at + len(buf):
                    buf, buf_at = os.pread(self._fd, max(_CHUNK, length), body), body
                payload = buf[body - buf_at : body - buf_at + length]
                if zlib.crc32(payload) != crc:
                    self._check_torn(pos, end)
                    break
                self._apply_commit(update, payload, pos)
                self._end = body + length
                self._commits_since_index += 1
                self._extend_since(head, payload)
            else:
                self._since = None  # a blob: too big to keep
            pos = body + length

    def _extend_since(self, head: bytes, payload: bytes, *, blobs: bool = False) -> None:
        since = self._since
        if since is not None:
            if blobs or len(since) + len(head) + len(payload) > _SINCE_AT_MOST:
                self._since = None  # too much to keep
            else:
                self._since = since + head + payload  # a few frames: copies stay small

    def _apply_commit(self, update: Update, payload: bytes, offset: int) -> None:
        try:
            entries, steps, label = pickle.loads(payload)  # builtins only, checksummed
            if label == _COMPACTION and self._end == len(_HEADER):
                # The file's first commit: it was made by a compaction.
                self._compacted = offset + _FRAME_SIZE + len(payload)
            self._put_entries(entries, update.data)
            self._put_states(steps)
            update.steps.update(steps)
        except Exception as error:  # a checksummed frame that still fails is corruption
            raise CorruptEnvironmentError(
                self.path, f"unreadable commit ({error!r})", offset
            ) from error

    def _put_entries(
        self, entries: dict[str, tuple[Any, ...] | None], changes: dict[str, Entry | None] | None
    ) -> None:
        """Take a commit frame's entries into the index (and into ``changes``)."""
        index, live = self._data, self._live
        for key, item in entries.items():
            old = index.get(key)
            if old is not None:
                live -= len(old) - _DIGEST_SIZE if isinstance(old, bytes) else old[3]
            entry: Entry | None
            if item is None:
                entry = None
                if old is not None:
                    del index[key]
            elif item[1] is not None:
                entry = index[key] = item[0] + item[1]
                live += len(item[1])
            else:
                entry = index[key] = item
                live += item[3]
            if changes is not None:
                changes[key] = entry
        self._live = live

    def _put_states(self, steps: dict[str, dict[str, Any] | None]) -> None:
        # A frame's records are dicts; they are packed when the index is written.
        states = self._states
        for name, state in steps.items():
            if state is None:
                states.pop(name, None)
            else:
                states[name] = state

    def _check_torn(self, bad: int, end: int) -> None:
        """A bad frame is a torn tail unless a valid commit follows it."""
        rest = os.pread(self._fd, end - bad, bad)
        at = rest.find(_FRAME_MAGIC, 1)
        while at >= 0:
            frame = _parse_header(rest, at)
            if frame is not None and frame[0] == _COMMIT:
                payload = rest[at + _FRAME_SIZE : at + _FRAME_SIZE + frame[1]]
                if len(payload) == frame[1] and zlib.crc32(payload) == frame[2]:
                    raise CorruptEnvironmentError(
                        self.path, "a damaged frame lies before later commits", bad
                    )
            at = rest.find(_FRAME_MAGIC, at + 1)

    def fetch(self, stored: Stored, key: str) -> bytes:
        """The pickled bytes of a value, checked against their checksum."""
        if stored.inline is not None:
            return stored.inline
        # Not in the journal as it is now? Placed by one another process has
        # compacted since: a view made before then reads the file it was written to.
        for fd in (self._fd, *reversed(self._retired)):
            data = os.pread(fd, stored.length, stored.offset)
            if len(data) == stored.length and zlib.crc32(data) == stored.crc:
                return data
        from ._errors import CorruptValueError  # rare path

        raise CorruptValueError(key, self.path, "its bytes fail their checksum")

    # -- writing ---------------------------------------------------------

    def append(
        self,
        data: dict[str, bytes | None],
        steps: dict[str, dict[str, Any] | None],
        label: str | None,
        digests: dict[str, bytes],
        *,
        sync: bool,
    ) -> dict[str, Stored]:
        """Append one commit (lock held, after :meth:`read_new`); the values' stored forms."""
        end = self._end
        if (self._size if self._size >= 0 else os.fstat(self._fd).st_size) != end:
            # A torn tail left by a writer that died: cut it so our frames
            # follow the last valid commit directly.
            os.ftruncate(self._fd, end)
        chunks: list[bytes] = []
        pos = end
        entries: dict[str, Any] = {}
        stored: dict[str, Stored] = {}
        for key, raw in data.items():
            if raw is None:
                entries[key] = None
            elif len(raw) > BLOB_THRESHOLD:
                item = stored[key] = _blob(digests[key], raw, pos, chunks)
                entries[key] = item.to_tuple()
                pos += _FRAME_SIZE + len(raw)
            else:
                fields = (digests[key], raw, 0, 0, 0)
                stored[key] = _new_stored(Stored, fields)
                entries[key] = fields
        payload = pickle.dumps((entries, steps, label), protocol=pickle.HIGHEST_PROTOCOL)
        head = _FRAME.pack(_FRAME_MAGIC, _COMMIT, len(payload), zlib.crc32(payload))
        frame = head + _CRC.pack(zlib.crc32(head)) + payload
        self._size = -1  # unknown until the write is whole
        try:
            if chunks or os.pwrite(self._fd, frame, end) != len(frame):
                chunks.append(frame)
                _pwrite_all(self._fd, chunks, end)  # blobs, or a short write: all again
        except OSError as error:  # a full disk, a quota: say where, and that nothing is lost
            # The bytes written are a torn tail: loads ignore it, the next append cuts it.
            message = f"{error.strerror}; nothing was committed"
            raise OSError(error.errno, message, str(self.path)) from error
        self._end = self._size = end = pos + len(frame)
        self._extend_since(frame, b"", blobs=bool(chunks))
        self._commits_since_index += 1
        self._unsynced = True
        # The index follows the file only once the write succeeded.
        if entries:
            self._put_entries(entries, None)
        if steps:
            self._put_states(steps)
        if sync:
            self.sync()
        return stored

    def sync(self) -> None:
        """Make every appended commit durable (no-op when not durable)."""
        if self._unsynced and self.durable:
            os.fdatasync(self._fd)
        self._unsynced = False

    def sync_point(self) -> tuple[int, int, int] | None:
        """What to ``fdatasync`` for the commits appended so far, or ``None`` if nothing is due.

        For a sync made outside the environment's lock, so that commits go on
        meanwhile: call :meth:`synced` with the same point once it is done.
        """
        if not self._unsynced:
            return None
        if not self.durable:
            self._unsynced = False
            return None
        return self._fd, self._ino, self._end

    def synced(self, point: tuple[int, int, int]) -> None:
        """``point``'s descriptor was fdatasynced: done, unless more was appended since."""
        # A commit appended during the fdatasync may not be in it: it stays due.
        if point == (self._fd, self._ino, self._end):
            self._unsynced = False

    # -- upkeep ----------------------------------------------------------

    def upkeep(self) -> dict[str, Stored] | None:
        """Compact, or refresh the index cache, when due (lock held, all synced).

        Returns the blobs' new places after a compaction, else ``None``.
        """
        live = len(_HEADER) + self._live + _RECORD_GUESS * len(self._states)
        if self._end > 2 * max(live, self._compacted) + _COMPACT_SLACK:
            return self._compact()
        commits = self._commits_since_index
        if commits >= INDEX_EVERY or (commits >= INDEX_SOON and self._since is None):
            self._write_index()
        return None

    def _compact(self) -> dict[str, Stored]:
        self._remove_abandoned_files()
        tmp = f"{_COMPACT_PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=self._dir_fd
        )
        try:
            chunks = [_HEADER]
            pos = len(_HEADER)
            index: dict[str, Entry] = {}
            items: dict[str, tuple[Any, ...]] = {}
            moved: dict[str, Stored] = {}
            for key, entry in self._data.items():
                if isinstance(entry, bytes):
                    index[key], items[key] = entry, _frame_item(entry)
                    continue
                # Blobs are copied as they are: never unpickled, never re-checked here.
                digest, _, offset, length, crc = entry
                raw = os.pread(self._fd, length, offset)
                head = _FRAME.pack(_FRAME_MAGIC, _BLOB, length, crc)
                chunks += [head + _CRC.pack(zlib.crc32(head)), raw]
                blob = moved[key] = Stored(digest, None, pos + _FRAME_SIZE, length, crc)
                index[key] = items[key] = blob.to_tuple()
                pos += _FRAME_SIZE + length
            states = {name: unpacked(state) for name, state in self._states.items()}
            payload = pickle.dumps((items, states, _COMPACTION), protocol=pickle.HIGHEST_PROTOCOL)
            chunks.append(_frame(_COMMIT, payload))
            _write_all(fd, chunks)
            # fsync before rename, or a crash could leave an empty file under the final name.
            if self.durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, JOURNAL_NAME, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        if self.durable:
            os.fsync(self._dir_fd)  # make the rename itself durable
        with contextlib.suppress(FileNotFoundError):
            os.unlink(INDEX_NAME, dir_fd=self._dir_fd)
        self._open_journal()
        self._data, self._loaded = index, True
        self._index_raw, self._since = None, None  # the index cache was removed
        self._end = self._size = self._compacted = pos + _FRAME_SIZE + len(payload)
        self._commits_since_index = 0
        return moved

    def _remove_abandoned_files(self) -> None:
        """Delete what killed processes left beside the journal (lock held, before compacting).

        - A compaction's file, killed before its rename: a compaction runs
          under the lock, so none runs now; the file is as big as the live data.
        - A creator's file, killed after linking it as the journal and before
          removing its own name: a second name of this journal, which would
          keep the old journal's space once the compaction replaces it. Only
          a name of this very file goes: another process's creation may
          still be under way.
        """
        for name in os.listdir(self._dir_fd):
            with contextlib.suppress(FileNotFoundError):
                if name.startswith(_COMPACT_PREFIX) or (
                    name.startswith(_NEW_PREFIX)
                    and os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False).st_ino
                    == self._ino
                ):
                    os.unlink(name, dir_fd=self._dir_fd)

    def _write_index(self) -> None:
        # The index is a cache, rewritten in place and never fsynced: it is only
        # read and written under the lock, and one torn by a crash fails its
        # checksum, so loading falls back to scanning the journal.
        since = self._since
        anchor = (
            since[-_ANCHOR:]  # the journal's last bytes, as read or written
            if since is not None and len(since) >= _ANCHOR
            else _anchor(self._fd, self._end)
        )
        states = self._states
        self._commits_since_index = 0
        try:
            for name, state in states.items():
                if isinstance(state, dict):  # packed once, kept packed
                    states[name] = _pack(state)
            body = marshal.dumps(
                (self._ino, self._end, self._live, self._compacted, anchor, self._data, states),
                _MARSHAL_VERSION,
            )
        except ValueError:  # a str subclass (as a key): no cache, loads scan the journal
            return
        blob = _INDEX_HEAD.pack(_INDEX_MAGIC, len(body), zlib.crc32(body)) + body
        fd = os.open(
            INDEX_NAME, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=self._dir_fd
        )
        try:
            _write_all(fd, [blob])
        finally:
            os.close(fd)
        self._index_raw, self._index_anchor, self._index_end = blob, anchor, self._end
        self._since = b""
        _remember_index(
            self._ino,
            blob,
            (self._ino, self._end, self._live, self._compacted, anchor, self._data, states),
        )

    def _read_index(self) -> bytes | None:
        """Take the index cache if it fits the journal; the journal's bytes after it."""
        try:
            fd = os.open(INDEX_NAME, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._dir_fd)
        except FileNotFoundError:
            return None
        snapshot = _snapshots.pop(self._ino, None)
        known = _indexes.get(self._ino)
        hint = (
            len(snapshot.index_raw)
            if snapshot is not None
            else len(known[0])
            if known is not None
            else _CHUNK
        )
        try:
            raw = _read_to_end(fd, hint)
        finally:
            os.close(fd)
        size = _index_size(raw)
        if size is None:
            return None
        if (
            snapshot is not None
            and len(snapshot.index_raw) == size
            and raw.startswith(snapshot.index_raw)
        ):
            after = self._take_snapshot(snapshot)
            if after is not None:
                return after
        return self._use_index(raw[:size])

    def _use_index(self, raw: bytes) -> bytes | None:
        """Take the index cache ``raw`` if it fits the journal; the journal's bytes after it."""
        index = _decode_index(raw, self._ino)
        if index is None:
            return None
        ino, end, live, compacted, anchor, entries, steps = index
        if ino != self._ino or not len(_HEADER) <= end <= self._size:
            return None
        # One read: the anchor (the bytes just before the index's end) and what follows.
        start = max(0, end - _ANCHOR)
        tail = os.pread(self._fd, min(self._size - start, end - start + _CHUNK), start)
        if tail[: end - start] != anchor:
            return None
        self._data, self._states, self._live, self._end = entries, steps, live, end
        self._compacted = compacted
        self._index_raw, self._index_anchor, self._index_end = raw, anchor, end
        self._since = b""
        return tail[end - start :]

    def _take_snapshot(self, snapshot: _Snapshot) -> bytes | None:
        """Start from where a closed journal of this process stopped, if the journal agrees.

        The index cache is the one it had; the journal's bytes from the index's
        anchor to where it stopped are compared with the ones it had read or
        written: scanning them again would give its state, which it left.
        Returns the journal's bytes after that point, or ``None`` if anything differs.
        """
        start = snapshot.index_end - len(snapshot.anchor)
        if snapshot.end > self._size:
            return None
        known = len(snapshot.anchor) + len(snapshot.since)
        tail = os.pread(self._fd, min(self._size - start, known + _CHUNK), start)
        if not (
            tail.startswith(snapshot.anchor)
            and tail[len(snapshot.anchor) : known] == snapshot.since
        ):
            return None
        self._data, self._states = snapshot.data, snapshot.states
        self._live, self._compacted = snapshot.live, snapshot.compacted
        self._end, self._commits_since_index = snapshot.end, snapshot.commits
        self._index_raw, self._index_anchor = snapshot.index_raw, snapshot.anchor
        self._index_end, self._since = snapshot.index_end, snapshot.since
        return tail[known:]


#: The index caches this process last wrote or read, by journal inode: their
#: bytes, and what they unpickle to (the dicts copied, as the journal changes
#: its own). A load that finds these very bytes in ``env.index`` takes them
#: without unpickling; what it takes is then checked against the journal as usual.
_indexes: dict[int, tuple[bytes, tuple[Any, ...]]] = {}
_INDEXES_KEEP = 8
_REMEMBER_AT_MOST = 16 << 20
_indexes_guard = threading.Lock()


def _decode_index(raw: bytes, ino: int) -> tuple[Any, ...] | None:
    """What the bytes of the index cache of journal ``ino`` hold, or ``None`` if damaged."""
    size = _index_size(raw)
    if size is None:
        return None
    known = _indexes.get(ino)
    if known is not None and len(known[0]) == size and raw.startswith(known[0]):
        # The very bytes this process last wrote or read: what they unmarshal to.
        index_ino, end, live, compacted, anchor, entries, steps = known[1]
        return (index_ino, end, live, compacted, anchor, dict(entries), dict(steps))
    blob = raw[:size]
    body = blob[_INDEX_HEAD.size :]
    if zlib.crc32(body) != _INDEX_HEAD.unpack_from(blob)[2]:
        return None
    try:
        index: tuple[Any, ...] = marshal.loads(body)  # noqa: S302 - ours, checksummed, trusted dir
        _, _, _, _, _, entries, steps = index
    except Exception:  # noqa: BLE001 - a bad cache is ignored, never trusted
        return None
    if not isinstance(entries, dict) or not isinstance(steps, dict):
        return None
    _remember_index(ino, blob, index)
    return index


def _index_size(raw: bytes) -> int | None:
    """Bytes of the index cache at the start of ``raw``, or ``None`` if it is not one."""
    if len(raw) < _INDEX_HEAD.size:
        return None
    magic, length, _ = _INDEX_HEAD.unpack_from(raw)
    size: int = _INDEX_HEAD.size + length
    return size if magic == _INDEX_MAGIC and size <= len(raw) else None


def _remember_index(ino: int, raw: bytes, index: tuple[Any, ...]) -> None:
    index_ino, end, live, compacted, anchor, entries, steps = index
    copy = (index_ino, end, live, compacted, anchor, dict(entries), dict(steps))
    with _indexes_guard:
        _indexes.pop(ino, None)
        if len(raw) <= _REMEMBER_AT_MOST:
            _indexes[ino] = (raw, copy)
        while len(_indexes) > _INDEXES_KEEP:
            del _indexes[next(iter(_indexes))]


class _Snapshot(NamedTuple):
    """Where a closed journal stopped: enough for a load to take up from there.

    ``index_raw`` (the index cache's bytes) vouches for the journal up to
    ``index_end``, whose last bytes are ``anchor``; ``since`` are the journal's
    bytes from ``index_end`` to ``end``; the rest is the index as of ``end``.
    """

    index_raw: bytes
    anchor: bytes
    index_end: int
    since: bytes
    end: int
    live: int
    compacted: int
    commits: int
    data: dict[str, Entry]
    states: dict[str, dict[str, Any] | PackedState]


#: By journal inode, where the last journal of this process closed on it
#: stopped; taken (and removed) by the next load of that journal.
_snapshots: dict[int, _Snapshot] = {}
_SNAPSHOTS_KEEP = 8
_SINCE_AT_MOST = 64 * 1024


def _remember_snapshot(ino: int, snapshot: _Snapshot) -> None:
    # No lock here: this runs from __del__, which the garbage collector may
    # call at any allocation, even one made while a lock of ours is held.
    snapshots = _snapshots
    snapshots.pop(ino, None)
    snapshots[ino] = snapshot
    with contextlib.suppress(StopIteration, KeyError, RuntimeError):  # another thread's eviction
        while len(snapshots) > _SNAPSHOTS_KEEP:
            del snapshots[next(iter(snapshots))]


def _pack(state: dict[str, Any]) -> PackedState:
    return (
        state["status"],
        state["started"],
        state["ended"],
        state["fingerprint"],
        marshal.dumps(state, _MARSHAL_VERSION),
    )


def unpacked(state: dict[str, Any] | PackedState) -> dict[str, Any]:
    """A step record's stored form as a dict (unpickled from the index's packed form)."""
    if isinstance(state, tuple):
        unpacked: dict[str, Any] = marshal.loads(state[4])  # noqa: S302 - ours, as the index
        return unpacked
    return state


def _anchor(fd: int, end: int) -> bytes:
    """The bytes just before ``end``: ties an index cache to one journal state."""
    start = max(0, end - _ANCHOR)
    return os.pread(fd, end - start, start)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _open_dir(path: str | Path) -> int:
    return os.open(path, _DIR_FLAGS)


def _parse_header(buf: bytes, at: int) -> tuple[int, int, int] | None:
    """``(kind, length, crc)`` of the frame at ``buf[at:]``, or ``None`` if damaged."""
    if len(buf) - at < _FRAME_SIZE:
        return None
    magic, kind, length, crc = _FRAME.unpack_from(buf, at)
    if magic != _FRAME_MAGIC or kind not in _KINDS:
        return None
    if _CRC.unpack_from(buf, at + _FRAME.size)[0] != zlib.crc32(buf[at : at + _FRAME.size]):
        return None
    return kind, length, crc
