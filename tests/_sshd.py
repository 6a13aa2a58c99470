"""A real OpenSSH server on loopback, for the tests and benchmarks of ``expkit.shell``.

:func:`loopback_sshd` generates a host key and a user key, writes an
``sshd_config`` of absolute paths (nothing under ``~/.ssh`` or ``/etc/ssh`` is
read or written) and starts ``sshd`` listening on one free port per node (one
server per 16 nodes: sshd listens on 16 sockets at most), or one server per
node with a home directory of its own (``separate_homes=True``, for
experiments that must tell the nodes' files apart). The client side is
an ``ssh_config`` naming each node (``node1``, ``node2``, ...) as an alias of
``127.0.0.1`` and its port, plus ``down``, whose port nothing listens on.
Give that file to ``run(..., ssh_config=...)``.

Run as a program, it starts loopback nodes with homes of their own until
Ctrl-C, to try ``experiments/cluster.py`` on a machine with no testbed::

    python -m tests._sshd 4    # from the repository; prints the config file to use
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["LoopbackSshd", "find_sshd", "loopback_sshd"]

# Every node presents the same host key; the client knows it under this alias.
_HOST_KEY_ALIAS = "expkit-test-sshd"
_START_TIMEOUT = 20.0
_PORTS_PER_SERVER = 16


@dataclasses.dataclass(frozen=True)
class LoopbackSshd:
    """Running sshd servers and the client configuration that reaches them."""

    directory: Path
    #: The nodes' home directory (``$HOME`` of remote shells, where scp's relative paths go).
    home: Path
    ssh_config: Path
    nodes: tuple[str, ...]
    down: str
    ports: tuple[int, ...]
    #: Each node's home directory: ``home`` for all, unless the homes are separate.
    homes: dict[str, Path]


def find_sshd() -> str:
    """The sshd program: ``/usr/sbin/sshd``, or one on PATH (never a reason to skip)."""
    for candidate in ("/usr/sbin/sshd", "/usr/local/sbin/sshd", shutil.which("sshd")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    msg = (
        "sshd is not installed: the shell tests need a real OpenSSH server — "
        "apt-get install openssh-server (.ci/run does this on CI)"
    )
    raise RuntimeError(msg)


@contextlib.contextmanager
def loopback_sshd(
    directory: Path, count: int, *, separate_homes: bool = False
) -> Iterator[LoopbackSshd]:
    """Start sshd for ``count`` nodes under ``directory``; stop it on exit.

    With ``separate_homes``, each node has its own server and home directory,
    ``home/<node>``, as if it were a machine of its own (``$HOME`` of its
    remote shells, where scp's relative paths go). sshd takes the home from
    its configuration, not per port, hence a server per node.
    """
    sshd = find_sshd()
    directory.mkdir(parents=True, exist_ok=True)
    host_key, user_key = directory / "host_key", directory / "user_key"
    for key in (host_key, user_key):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "expkit-test", "-f", str(key)],
            check=True,
            stdin=subprocess.DEVNULL,
        )
    shutil.copyfile(user_key.with_suffix(".pub"), directory / "authorized_keys")
    public_host_key = host_key.with_suffix(".pub").read_text().split()
    (directory / "known_hosts").write_text(f"{_HOST_KEY_ALIAS} {' '.join(public_host_key[:2])}\n")

    *ports, closed = _free_ports(count + 1)
    nodes = tuple(f"node{i}" for i in range(1, count + 1))
    client_config = directory / "ssh_config"
    _write_client_config(client_config, directory, dict(zip(nodes, ports, strict=True)), closed)
    shared = directory / "home"
    if separate_homes:
        homes = {node: shared / node for node in nodes}
        groups = [[port] for port in ports]
    else:
        homes = dict.fromkeys(nodes, shared)
        # sshd listens on at most 16 sockets (MAX_LISTEN_SOCKS): one server per 16 nodes.
        groups = [ports[i : i + _PORTS_PER_SERVER] for i in range(0, len(ports), _PORTS_PER_SERVER)]
    for home in {shared, *homes.values()}:
        home.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as servers:
        for number, group in enumerate(groups):
            home = homes[nodes[ports.index(group[0])]]
            servers.enter_context(_server(sshd, directory, number, group, home))
        yield LoopbackSshd(directory, shared, client_config, nodes, "down", tuple(ports), homes)


@contextlib.contextmanager
def _server(
    sshd: str, directory: Path, number: int, ports: list[int], home: Path
) -> Iterator[None]:
    """One sshd process listening on ``ports``, until the context ends."""
    config = directory / f"sshd_config.{number}"
    _write_server_config(sshd, config, directory, number, ports, home=home)
    log_path = directory / f"sshd.{number}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        try:
            _wait_listening(process, ports, log_path)
            yield
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _free_ports(count: int) -> list[int]:
    # All sockets are held open together, so the kernel gives distinct ports.
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _write_server_config(
    sshd: str, path: Path, directory: Path, number: int, ports: list[int], *, home: Path
) -> None:
    lines = [f"ListenAddress 127.0.0.1:{port}" for port in ports]
    lines += [
        f"HostKey {directory / 'host_key'}",
        f"PidFile {directory / f'sshd.{number}.pid'}",
        f"AuthorizedKeysFile {directory / 'authorized_keys'}",
        "UsePAM no",
        # The key files live in a temporary directory that sshd would find too open.
        "StrictModes no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",  # CI runs the tests as root
        # Many connections start at once (fanout): sshd's default (10:30:100) drops some.
        "MaxStartups 1000",
        "MaxSessions 1000",
        "LogLevel ERROR",
        # A home of its own, as on a fresh node: remote shells read no dotfiles of this
        # machine's user (a ~/.bashrc running `pyenv init` costs more than the
        # connection), and scp's relative paths land there (it speaks SFTP since
        # OpenSSH 9.0).
        f"SetEnv HOME={home}",
        f"Subsystem sftp internal-sftp -d {home}",
    ]
    # OpenSSH 9.8 and later penalise addresses whose connections fail or time
    # out; the tests do both on purpose. Older versions do not know the option.
    candidate = [*lines, "PerSourcePenalties no"]
    path.write_text("\n".join(candidate) + "\n")
    check = _check_config(sshd, path)
    if check.returncode != 0 and "PerSourcePenalties" in check.stderr:
        path.write_text("\n".join(lines) + "\n")
        check = _check_config(sshd, path)
    if check.returncode != 0:
        msg = f"sshd refuses its test configuration {path}:\n{check.stderr}"
        raise RuntimeError(msg)


def _check_config(sshd: str, path: Path) -> subprocess.CompletedProcess[str]:
    check = subprocess.run(
        [sshd, "-t", "-f", str(path)],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    missing = "Missing privilege separation directory: "
    if check.returncode != 0 and missing in check.stderr:
        # A fresh install of openssh-server in a container has no /run/sshd until
        # the service first starts; sshd running as root needs it (empty, root's).
        privsep = check.stderr.split(missing, 1)[1].split()[0]
        os.makedirs(privsep, mode=0o755, exist_ok=True)
        return _check_config(sshd, path)
    return check


def _write_client_config(
    path: Path, directory: Path, ports: dict[str, int], closed_port: int
) -> None:
    lines = []
    for alias, port in [*ports.items(), ("down", closed_port)]:
        lines += [f"Host {alias}", "  HostName 127.0.0.1", f"  Port {port}"]
    lines += [
        "Host *",
        f"  User {pwd.getpwuid(os.getuid()).pw_name}",
        f"  IdentityFile {directory / 'user_key'}",
        "  IdentitiesOnly yes",
        "  IdentityAgent none",
        f"  HostKeyAlias {_HOST_KEY_ALIAS}",
        f"  UserKnownHostsFile {directory / 'known_hosts'}",
        "  GlobalKnownHostsFile /dev/null",
        "  StrictHostKeyChecking yes",
        "  UpdateHostKeys no",
        "  ControlMaster no",
        "  ControlPath none",
        "  ForwardAgent no",
        "  ForwardX11 no",
        "  LogLevel ERROR",
    ]
    path.write_text("\n".join(lines) + "\n")


def _wait_listening(process: subprocess.Popen[bytes], ports: list[int], log: Path) -> None:
    """Return once sshd accepts connections on every port; fail if it exits or stalls."""
    deadline = time.monotonic() + _START_TIMEOUT
    waiting = list(ports)
    while waiting:
        if process.poll() is not None or time.monotonic() > deadline:
            msg = f"sshd did not start listening on {waiting}:\n{log.read_text(errors='replace')}"
            raise RuntimeError(msg)
        try:
            with socket.create_connection(("127.0.0.1", waiting[0]), timeout=1):
                waiting.pop(0)
        except OSError:
            time.sleep(0.02)


def main(argv: Sequence[str]) -> int:
    """Start ``argv[0]`` (default 4) loopback nodes with homes of their own, until Ctrl-C."""
    count = int(argv[0]) if argv else 4
    # Stop cleanly on Ctrl-C or kill (a shell's background job ignores SIGINT otherwise).
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.default_int_handler)
    directory = Path(tempfile.mkdtemp(prefix="expkit-nodes-"))
    with loopback_sshd(directory, count, separate_homes=True) as server:
        config = directory / "cluster.yaml"
        names = f"node[1-{count}]"
        config.write_text(f"nodes: {names}\nssh_config: {server.ssh_config}\n")
        print(  # noqa: T201 - what a person running this program reads
            f"{names} listen on 127.0.0.1, ports {', '.join(map(str, server.ports))}; "
            f"their homes are {server.home}/<node>\n"
            f"ssh config: {server.ssh_config}\n"
            f"cluster config: {config}\n"
            f"try: exp -f experiments/cluster.py run --config {config}\n"
            "Ctrl-C (or kill) stops them.",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
    shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
