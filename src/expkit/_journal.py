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

``env.index`` is a cache: the whole index as of some commit, rewritten now and
then so that loading scans only the frames after it. It is validated against
the journal and ignored when stale. When the journal grows past twice its live
data, it is compacted into a fresh file: write, fsync, rename, fsync the
directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import pickle
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ._errors import CorruptEnvironmentError, EnvironmentExistsError, NoEnvironmentError

__all__ = ["FORMAT_VERSION", "Journal", "Stored", "Update"]

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
_INDEX_MAGIC = b"EXPKITIX"

#: Values larger than this go to a blob frame of their own.
BLOB_THRESHOLD = 64 * 1024
#: Rewrite the index cache after this many commits past it.
INDEX_EVERY = 4
_CHUNK = 64 * 1024
_COMPACT_SLACK = 256 * 1024


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


@dataclasses.dataclass(slots=True)
class Update:
    """What the commits read since the last look changed (later commits win)."""

    #: Stored forms; from the index cache they are bare tuples (see Stored).
    data: dict[str, tuple[Any, ...] | None] = dataclasses.field(default_factory=dict)
    steps: dict[str, dict[str, Any] | None] = dataclasses.field(default_factory=dict)
    #: The journal was replaced (compacted by another process): ``data`` and
    #: ``steps`` hold the whole state, and what they lack was deleted.
    full: bool = False

    def merge(self, other: Update) -> None:
        """Apply a later update on top of this one."""
        if other.full:
            self.data.clear()
            self.steps.clear()
            self.full = True
        self.data.update(other.data)
        self.steps.update(other.steps)


def digest_of(data: bytes) -> bytes:
    """A 128-bit digest: tells whether a re-pickled value changed."""
    import hashlib  # keep import expkit light

    return hashlib.blake2b(data, digest_size=16).digest()


def _frame(kind: int, payload: bytes) -> bytes:
    head = _FRAME.pack(_FRAME_MAGIC, kind, len(payload), zlib.crc32(payload))
    return head + _CRC.pack(zlib.crc32(head)) + payload


def _write_all(fd: int, chunks: list[bytes]) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            written = os.write(fd, view)
            view = view[written:]


class Journal:
    """One environment directory's journal, lock and index cache."""

    def __init__(self, dir_fd: int, path: Path, *, durable: bool) -> None:
        self._dir_fd = dir_fd
        self._path = path
        self.durable = durable
        self._lock_fd = os.open(
            LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=dir_fd
        )
        self._fd = -1
        self._ino = -1
        #: End of the last valid commit we have read (or written).
        self._end = 0
        self._commits_since_index = 0
        #: Compact when the journal grows past this (twice its live data, plus
        #: slack); learnt at the first upkeep, which comes within INDEX_EVERY commits.
        self._compact_at = 1 << 62
        self._unsynced = False

    # -- opening ---------------------------------------------------------

    @classmethod
    def create(cls, path: Path, *, durable: bool) -> Journal:
        """Make ``path`` and an empty journal in it; refuses an existing one."""
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        dir_fd = _open_dir(path)
        tmp = f"{JOURNAL_NAME}.new-{os.getpid()}-{os.urandom(4).hex()}"
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
        journal = cls(dir_fd, path, durable=durable)
        if durable:
            os.fsync(dir_fd)
        journal._reopen()
        return journal

    @classmethod
    def open(cls, where: str, *, durable: bool) -> Journal:
        """Open the journal of directory ``where`` (or of the journal file ``where``)."""
        try:
            try:
                dir_fd = _open_dir(where)
            except NotADirectoryError:  # the journal file itself, or a link to it
                where = os.path.dirname(os.path.realpath(where))
                dir_fd = _open_dir(where)
        except (FileNotFoundError, NotADirectoryError):
            raise NoEnvironmentError(where) from None
        path = Path(os.path.abspath(where))
        try:
            os.stat(JOURNAL_NAME, dir_fd=dir_fd)
            return cls(dir_fd, path, durable=durable)
        except FileNotFoundError:
            os.close(dir_fd)
            raise NoEnvironmentError(path) from None

    def close(self) -> None:
        """Release the file descriptors."""
        for fd in (self._fd, self._lock_fd, self._dir_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._lock_fd = self._dir_fd = -1

    # -- where -----------------------------------------------------------

    @property
    def directory(self) -> Path:
        """Where the directory is now, even if it was moved since it was opened."""
        try:
            live = os.readlink(f"/proc/self/fd/{self._dir_fd}")
        except OSError:
            return self._path
        return self._path if live.endswith(" (deleted)") else Path(live)

    @property
    def path(self) -> Path:
        """The journal file."""
        return self.directory / JOURNAL_NAME

    @property
    def opened_as(self) -> Path:
        """The directory's absolute path as given when it was opened."""
        return self._path

    def stat_dir(self) -> os.stat_result:
        """``stat`` of the environment directory."""
        return os.fstat(self._dir_fd)

    def stat_journal(self) -> os.stat_result:
        """``stat`` of the journal file as it is named now."""
        return os.stat(JOURNAL_NAME, dir_fd=self._dir_fd)

    @property
    def size(self) -> int:
        """Bytes of valid journal."""
        return self._end

    # -- locking ---------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the environment's file lock.

        The lock is a kernel lock (``flock``): it is released when its holder
        dies, however it dies, so a killed process never leaves a stale lock.
        """
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    # -- reading ---------------------------------------------------------

    def _reopen(self) -> None:
        fd = os.open(JOURNAL_NAME, os.O_RDWR | os.O_CLOEXEC, dir_fd=self._dir_fd)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = fd
        self._ino = os.fstat(fd).st_ino
        head = os.pread(fd, len(_HEADER), 0)
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
        self._end = len(_HEADER)

    def read_new(self) -> Update:
        """Read the commits made since the last call (call with the lock held)."""
        if self._fd < 0 or os.stat(JOURNAL_NAME, dir_fd=self._dir_fd).st_ino != self._ino:
            self._reopen()
            update = self._read_index() or Update()
            update.full = True
        else:
            update = Update()
        size = os.fstat(self._fd).st_size
        if size < self._end:
            raise CorruptEnvironmentError(self.path, f"the journal shrank to {size} bytes", size)
        if size > self._end:
            update.merge(self._scan(self._end, size))
        return update

    def _scan(self, start: int, end: int) -> Update:
        update = Update()
        buf, buf_at = b"", start
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
                if body + length > buf_at + len(buf):
                    buf, buf_at = os.pread(self._fd, max(_CHUNK, length), body), body
                payload = buf[body - buf_at : body - buf_at + length]
                if zlib.crc32(payload) != crc:
                    self._check_torn(pos, end)
                    break
                _apply_commit(update, payload, self, pos)
                self._end = body + length
                self._commits_since_index += 1
            pos = body + length
        return update

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
        data = os.pread(self._fd, stored.length, stored.offset)
        if len(data) != stored.length or zlib.crc32(data) != stored.crc:
            from ._errors import CorruptValueError  # rare path

            raise CorruptValueError(key, self.path, "its bytes fail their checksum")
        return data

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
        """Append one commit (call with the lock held, after :meth:`read_new`)."""
        if os.fstat(self._fd).st_size != self._end:
            # A torn tail left by a writer that died: cut it so our frames
            # follow the last valid commit directly.
            os.ftruncate(self._fd, self._end)
        chunks: list[bytes] = []
        pos = self._end
        entries: dict[str, Any] = {}
        stored: dict[str, Stored] = {}
        for key, raw in data.items():
            if raw is None:
                entries[key] = None
                continue
            if len(raw) > BLOB_THRESHOLD:
                crc = zlib.crc32(raw)
                head = _FRAME.pack(_FRAME_MAGIC, _BLOB, len(raw), crc)
                chunks += [head + _CRC.pack(zlib.crc32(head)), raw]
                item = Stored(digests[key], None, pos + _FRAME_SIZE, len(raw), crc)
                pos += _FRAME_SIZE + len(raw)
            else:
                item = Stored(digests[key], raw)
            stored[key] = item
            entries[key] = item.to_tuple()
        payload = pickle.dumps((entries, steps, label), protocol=pickle.HIGHEST_PROTOCOL)
        chunks.append(_frame(_COMMIT, payload))
        os.lseek(self._fd, self._end, os.SEEK_SET)
        _write_all(self._fd, chunks)
        self._end = pos + _FRAME_SIZE + len(payload)
        self._commits_since_index += 1
        self._unsynced = True
        if sync:
            self.sync()
        return stored

    def sync(self) -> None:
        """Make every appended commit durable (no-op when not durable)."""
        if self._unsynced and self.durable:
            os.fdatasync(self._fd)
        self._unsynced = False

    # -- upkeep ----------------------------------------------------------

    def upkeep(
        self, snapshot: Callable[[], tuple[dict[str, Stored], dict[str, dict[str, Any]]]]
    ) -> dict[str, Stored] | None:
        """Compact, or refresh the index cache, when due (lock held, all synced).

        ``snapshot()`` gives the whole live state; it is called only when some
        upkeep is due, so a commit's cost stays independent of the state's size.
        Returns the values' new places after a compaction, else ``None``.
        """
        if self._end <= self._compact_at and self._commits_since_index < INDEX_EVERY:
            return None
        data, steps = snapshot()
        self._plan_compaction(data, steps)
        if self._end > self._compact_at:
            return self._compact(data, steps)
        if self._commits_since_index >= INDEX_EVERY:
            self._write_index(data, steps)
        return None

    def _plan_compaction(self, data: Mapping[str, Stored | None], steps: Mapping[str, Any]) -> None:
        live = len(_HEADER) + sum(item.size for item in data.values() if item) + 512 * len(steps)
        self._compact_at = 2 * live + _COMPACT_SLACK

    def _compact(
        self, data: dict[str, Stored], steps: dict[str, dict[str, Any]]
    ) -> dict[str, Stored]:
        tmp = f"{JOURNAL_NAME}.compact-{os.getpid()}-{os.urandom(4).hex()}"
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600, dir_fd=self._dir_fd
        )
        try:
            chunks = [_HEADER]
            pos = len(_HEADER)
            moved: dict[str, Stored] = {}
            for key, item in data.items():
                if item.inline is None:
                    # Blobs are copied as they are: never unpickled, never re-checked here.
                    raw = os.pread(self._fd, item.length, item.offset)
                    head = _FRAME.pack(_FRAME_MAGIC, _BLOB, item.length, item.crc)
                    chunks += [head + _CRC.pack(zlib.crc32(head)), raw]
                    item = item._replace(offset=pos + _FRAME_SIZE)  # noqa: PLW2901
                    pos += _FRAME_SIZE + item.length
                moved[key] = item
            entries = {key: item.to_tuple() for key, item in moved.items()}
            payload = pickle.dumps((entries, steps, "compaction"), protocol=pickle.HIGHEST_PROTOCOL)
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
        self._reopen()
        self._end = pos + _FRAME_SIZE + len(payload)
        self._commits_since_index = 0
        return moved

    def _write_index(self, data: dict[str, Stored], steps: dict[str, dict[str, Any]]) -> None:
        # The index is a cache, rewritten in place and never fsynced: it is only
        # read and written under the lock, and one torn by a crash fails its
        # checksum, so loading falls back to scanning the journal.
        anchor = _anchor(self._fd, self._end)
        entries = {key: item.to_tuple() for key, item in data.items()}
        body = pickle.dumps(
            (self._ino, self._end, anchor, entries, steps), protocol=pickle.HIGHEST_PROTOCOL
        )
        blob = _INDEX_MAGIC + _CRC.pack(zlib.crc32(body)) + body
        fd = os.open(
            INDEX_NAME, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=self._dir_fd
        )
        try:
            _write_all(fd, [blob])
            os.ftruncate(fd, len(blob))
        finally:
            os.close(fd)
        self._commits_since_index = 0

    def _read_index(self) -> Update | None:
        try:
            fd = os.open(INDEX_NAME, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self._dir_fd)
        except FileNotFoundError:
            return None
        try:
            raw = os.read(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        body = raw[len(_INDEX_MAGIC) + _CRC.size :]
        if raw[: len(_INDEX_MAGIC)] != _INDEX_MAGIC or _CRC.unpack_from(raw, 8)[0] != zlib.crc32(
            body
        ):
            return None
        try:
            ino, end, anchor, entries, steps = pickle.loads(body)  # builtins, checksummed
        except Exception:  # noqa: BLE001 - a bad cache is ignored, never trusted
            return None
        if ino != self._ino or os.fstat(self._fd).st_size < end or _anchor(self._fd, end) != anchor:
            return None
        self._end = end
        return Update(data=entries, steps=steps)


def _anchor(fd: int, end: int) -> bytes:
    """The bytes just before ``end``: ties an index cache to one journal state."""
    start = max(0, end - 64)
    return os.pread(fd, end - start, start)


def _open_dir(path: str | Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


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


def _apply_commit(update: Update, payload: bytes, journal: Journal, offset: int) -> None:
    try:
        entries, steps, _label = pickle.loads(payload)  # builtins only, checksummed
        for key, value in entries.items():
            update.data[key] = value
        update.steps.update(steps)
    except Exception as error:  # a checksummed frame that still fails is corruption
        raise CorruptEnvironmentError(
            journal.path, f"unreadable commit ({error!r})", offset
        ) from error
