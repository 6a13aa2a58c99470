"""Where environments live: the results root, names, the ``current`` link, trust."""

from __future__ import annotations

import os
import stat
from datetime import datetime

from ._errors import UntrustedEnvironmentError
from ._typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "CURRENT_LINK",
    "check_trusted",
    "default_root",
    "durable_default",
    "repoint",
    "timestamp_name",
    "untrusted_reason",
]

#: The link to the current environment, relative to the working directory
#: (a string: ``pathlib`` loads when a path is first built, not at import).
CURRENT_LINK = "current"


def default_root() -> Path:
    """``$EXP_RESULTS``, else ``./results``."""
    from pathlib import Path

    return Path(os.environ.get("EXP_RESULTS") or "results")


def durable_default(durable: bool | None) -> bool:  # noqa: FBT001 - a resolver of one flag
    """An explicit choice wins; else ``EXPKIT_DURABLE=0`` turns fsync off."""
    if durable is not None:
        return durable
    return os.environ.get("EXPKIT_DURABLE", "1").strip().lower() not in ("0", "false", "no", "off")


def timestamp_name() -> str:
    """``YYYY-MM-DDTHH-MM-SS`` in local time (safe in file names everywhere)."""
    return datetime.now().astimezone().strftime("%Y-%m-%dT%H-%M-%S")


def repoint(link: str | Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically, whatever ``link`` was (even dangling).

    A temporary link is made beside it and renamed over it: a reader sees the
    old target or the new one, never no link. The link is relative when it
    can be, so moving the whole project keeps it valid.
    """
    from pathlib import Path

    link = Path(link)
    parent = link.parent if str(link.parent) else Path()
    if link.is_dir() and not link.is_symlink():
        msg = f"{link} is a real directory, not a link; move it away to let expkit manage it"
        raise IsADirectoryError(msg)
    try:
        relative = os.path.relpath(target.resolve(), parent.resolve())
    except ValueError:  # another drive on Windows
        relative = str(target.resolve())
    tmp = parent / f".{link.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    os.symlink(relative, tmp, target_is_directory=True)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_trusted(path: Path, info: os.stat_result) -> None:
    """Refuse what another user owns or others may write: unpickling runs code."""
    reason = untrusted_reason(info)
    if reason is not None:
        raise UntrustedEnvironmentError(path, reason)


def untrusted_reason(info: os.stat_result, uid: int | None = None) -> str | None:
    """Why a file or directory with this ``stat`` must not be trusted, or ``None``.

    ``uid``: this process's user id, when the caller has it already.
    """
    if uid is None and _getuid is not None:
        uid = _getuid()
    if uid is not None and info.st_uid != uid:
        return f"it is owned by uid {info.st_uid}, not by you"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is writable by group or others (mode {stat.filemode(info.st_mode)})"
    return None


_getuid = getattr(os, "getuid", None)
