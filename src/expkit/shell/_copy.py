"""``copy`` and ``rcopy``: files to and from many nodes at once, through scp."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ._fleet import Job, run_jobs
from ._nodeset import NodeSet
from ._run import _program, openssh_options

if TYPE_CHECKING:
    from ._result import ShellResult

__all__ = ["copy", "rcopy"]


def copy(
    src: str | os.PathLike[str],
    dest: str,
    nodes: NodeSet | str | Iterable[str],
    *,
    fanout: int = 64,
    timeout: float | None = None,
    connect_timeout: float | None = 10,
    preserve: bool = False,
    ssh_options: Sequence[str] = (),
    ssh_config: str | os.PathLike[str] | None = None,
) -> ShellResult:
    """Copy the local file or directory ``src`` to the path ``dest`` on every node.

    This runs ``scp -r`` once per node, with the fanout, timeout and ssh
    options of :func:`run`; ``preserve`` keeps modification times and modes
    (``scp -p``). A node's return code is scp's: 0, or 1 (or 255) on failure,
    with scp's message in ``result.error(node)``. The remote path is taken as
    it is (OpenSSH 9.0 and later copy over SFTP, with no remote shell).
    """
    argv = _scp_argv(connect_timeout, ssh_options, ssh_config, preserve=preserve)
    local = _local(src)
    jobs = [Job(node, [*argv, local, f"{_host(node)}:{dest}"]) for node in NodeSet(nodes)]
    return run_jobs(jobs, fanout=fanout, timeout=timeout, stdin=None, merge_stderr=False)


def rcopy(
    src: str,
    dest: str | os.PathLike[str],
    nodes: NodeSet | str | Iterable[str],
    *,
    fanout: int = 64,
    timeout: float | None = None,
    connect_timeout: float | None = 10,
    preserve: bool = False,
    ssh_options: Sequence[str] = (),
    ssh_config: str | os.PathLike[str] | None = None,
) -> ShellResult:
    """Copy the file or directory ``src`` from every node into the local directory ``dest``.

    Each node's copy is named after the source and the node, as ClusterShell's
    ``clush --rcopy`` does: ``rcopy("/var/log/syslog", "logs", "node[1-2]")``
    writes ``logs/syslog.node1`` and ``logs/syslog.node2``. ``dest`` is
    created if missing. A copy that already exists is overwritten (a
    directory's copy goes inside an existing one). Options are those of
    :func:`copy`.
    """
    name = posixpath.basename(src.rstrip("/"))
    if name in {"", ".", ".."}:
        msg = f"cannot name the copies of {src!r} after it; give the path of a file or directory"
        raise ValueError(msg)
    os.makedirs(dest, exist_ok=True)
    argv = _scp_argv(connect_timeout, ssh_options, ssh_config, preserve=preserve)
    jobs = [
        Job(node, [*argv, f"{_host(node)}:{src}", _local(os.path.join(dest, f"{name}.{node}"))])
        for node in NodeSet(nodes)
    ]
    return run_jobs(jobs, fanout=fanout, timeout=timeout, stdin=None, merge_stderr=False)


def _scp_argv(
    connect_timeout: float | None,
    ssh_options: Sequence[str],
    ssh_config: str | os.PathLike[str] | None,
    *,
    preserve: bool,
) -> list[str]:
    # -r copies a file as well as a directory; -q drops the progress meter.
    flags = ["-q", "-r", *(["-p"] if preserve else [])]
    options = openssh_options(connect_timeout, ssh_options, ssh_config)
    # "--" ends the options: neither a path nor a node is ever read as one.
    return [_program("scp"), *options, *flags, "--"]


def _local(path: str | os.PathLike[str]) -> str:
    # scp reads "a:b" as host "a", path "b"; a path with a directory part never is.
    text = os.fspath(path)
    return text if os.path.isabs(text) else os.path.join(".", text)


def _host(node: str) -> str:
    # An IPv6 address holds colons: scp wants it between brackets.
    return f"[{node}]" if ":" in node else node
