"""``run``: one command, locally or on many nodes through the OpenSSH client."""

from __future__ import annotations

import math
import os
import shlex
import shutil
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ._fleet import Job, run_jobs
from ._nodeset import NodeSet

if TYPE_CHECKING:
    from ._result import ShellResult

__all__ = ["LOCALHOST", "openssh_options", "run"]

#: The node name of a local run.
LOCALHOST = "localhost"

# Appended to a remote command so that the remote shell reports a signal as
# 128 + signal: without it, a shell may exec the last command itself, sshd then
# reports "killed by signal" and the ssh client can only exit with 255.
_KEEP_STATUS = "\nexit $?"


def run(
    cmd: str | Sequence[str],
    nodes: NodeSet | str | Iterable[str] | None = None,
    *,
    fanout: int = 64,
    timeout: float | None = None,
    connect_timeout: float | None = 10,
    stdin: str | bytes | None = None,
    stderr: bool = True,
    ssh_options: Sequence[str] = (),
    ssh_config: str | os.PathLike[str] | None = None,
) -> ShellResult:
    """Run ``cmd`` locally (``nodes=None``, node ``localhost``) or on each node over ssh.

    A string goes through a shell: ``/bin/sh`` locally, the login shell of the
    remote user (assumed POSIX) on a node. A sequence is run as it is locally,
    with no shell, and quoted with :func:`shlex.join` for the remote shell.

    Remote commands run through the ``ssh`` program, so ``~/.ssh/config``,
    keys, agents and jump hosts apply; ``BatchMode=yes`` makes a node that
    wants a password fail instead of waiting. At most ``fanout`` commands run
    at once. ``timeout`` is each command's limit in seconds, counted from its
    start: a node over it is killed and listed in ``result.timeouts`` (its
    output so far is kept). Killing the ssh client closes the connection, but
    sshd does not signal a command that has no terminal: a remote command that
    ignores its closed output may run on.

    Args:
        cmd: a shell command line, or a program and its arguments.
        nodes: where to run: a :class:`NodeSet`, a pattern such as
            ``"node[1-4]"``, or names; ``None`` runs once, locally.
        fanout: how many commands may run at the same time.
        timeout: seconds each command may run; ``None`` for no limit.
        connect_timeout: seconds ssh may take to connect (ssh's ``ConnectTimeout``).
        stdin: data given to every command's standard input; ``None`` gives
            an empty input (never this process's own).
        stderr: ``True`` keeps error output apart (``result.error(node)``);
            ``False`` merges it into the output, in the order it was written.
        ssh_options: ssh options as ``"Key=value"`` strings, each passed as
            ``-o Key=value`` before expkit's own, so they take precedence.
        ssh_config: an ssh configuration file used instead of ``~/.ssh/config``
            and ``/etc/ssh/ssh_config`` (``ssh -F``).

    Returns:
        A :class:`ShellResult` with every node's output, error output and
        return code (exit status, 128 + signal, or 255 when ssh fails).

    """
    data = stdin.encode() if isinstance(stdin, str) else stdin
    if isinstance(cmd, str):
        argv, line = ["/bin/sh", "-c", cmd], cmd
    else:
        argv = [os.fspath(arg) for arg in cmd]
        if not argv:
            msg = "the command is an empty sequence; give a program to run"
            raise ValueError(msg)
        line = shlex.join(argv)
    if nodes is None:
        jobs = [Job(LOCALHOST, argv)]
    else:
        ssh = _program("ssh")
        options = openssh_options(connect_timeout, ssh_options, ssh_config)
        remote = line + _KEEP_STATUS
        # "--" ends ssh's options: a node name can never be read as one (names
        # starting with "-" are refused by NodeSet as well).
        jobs = [Job(node, [ssh, *options, "-T", "--", node, remote]) for node in NodeSet(nodes)]
    return run_jobs(jobs, fanout=fanout, timeout=timeout, stdin=data, merge_stderr=not stderr)


def openssh_options(
    connect_timeout: float | None,
    ssh_options: Sequence[str],
    ssh_config: str | os.PathLike[str] | None,
) -> list[str]:
    """The options ssh and scp share: the caller's first, since ssh keeps the first value."""
    options = [] if ssh_config is None else ["-F", os.fspath(ssh_config)]
    for option in ssh_options:
        if option.startswith("-"):
            msg = f"ssh option {option!r} must be of the form 'Key=value' (such as 'Port=2222')"
            raise ValueError(msg)
        options += ["-o", option]
    options += ["-o", "BatchMode=yes"]
    if connect_timeout is not None:
        # ssh takes whole seconds; round up so a short timeout never becomes "no timeout".
        options += ["-o", f"ConnectTimeout={max(1, math.ceil(connect_timeout))}"]
    return options


def _program(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not on PATH — install the OpenSSH client (openssh-client)"
        raise FileNotFoundError(msg)
    return path
