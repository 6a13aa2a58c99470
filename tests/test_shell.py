"""Tests of ``expkit.shell.run``, ``copy`` and ``rcopy``: local runs and a real sshd on loopback.

The remote tests talk to an OpenSSH server started for this session on
127.0.0.1, one port per node (``tests/_sshd.py``). Every node is this
machine, so a remote command can leave evidence in a local file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pickle
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from expkit import Environment
from expkit.shell import NodeSet, NodeSetError, ShellResult, copy, rcopy, run

from ._sshd import LoopbackSshd, loopback_sshd
from .helpers import run_python

NODES = 8
HOW_TO = Path(__file__).resolve().parent.parent / "docs" / "how-to" / "run-commands-on-nodes.md"


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSshd]:
    """An sshd on loopback serving ``node1`` .. ``node8``; ``down`` is a closed port."""
    with loopback_sshd(tmp_path_factory.mktemp("sshd"), NODES) as server:
        yield server


def remote(sshd: LoopbackSshd, cmd: str | list[str], nodes: str, **options: Any) -> ShellResult:
    """``run`` through the test sshd's client configuration."""
    return run(cmd, nodes, ssh_config=sshd.ssh_config, **options)


def on_ports(sshd: LoopbackSshd, nodes: str, then: str, otherwise: str) -> str:
    """A command running ``then`` on the given nodes and ``otherwise`` on the others."""
    # All nodes are 127.0.0.1: the port the connection reached tells them apart.
    ports = "|".join(str(sshd.ports[int(node[4:]) - 1]) for node in NodeSet(nodes))
    return f'case "${{SSH_CONNECTION##* }}" in {ports}) {then};; *) {otherwise};; esac'


# -- local runs ------------------------------------------------------------------------


class TestLocal:
    """Without nodes, the command runs here, on the node named ``localhost``."""

    def test_string_goes_through_the_shell(self) -> None:
        """A string is a shell command line: expansions, pipes and exit status."""
        result = run("echo $((1 + 2)) | tr 3 x; exit 4")
        assert result.nodes == NodeSet("localhost")
        assert result.buffer("localhost") == "x\n"
        assert result.retcode("localhost") == 4

    def test_list_never_goes_through_a_shell(self, tmp_path: Path) -> None:
        """A list is run as it is: shell syntax in an argument stays literal."""
        args = ["$HOME", "a b", "; touch pwned", "`id`", "*"]
        result = run(["printf", "%s\\n", *args])
        assert result.buffer("localhost").splitlines() == args
        assert not (tmp_path / "pwned").exists()

    def test_missing_program(self) -> None:
        """A program that does not exist gives 127 and says so, as a shell would."""
        result = run(["expkit-no-such-program", "x"])
        assert result.retcode("localhost") == 127
        assert "expkit-no-such-program" in result.error("localhost")

    def test_killed_by_signal(self) -> None:
        """A command killed by a signal returns 128 + the signal number."""
        result = run("kill -KILL $$")
        assert result.retcode("localhost") == 128 + signal.SIGKILL

    def test_timeout_keeps_partial_output(self) -> None:
        """A timed-out command is killed, has no return code and keeps its output."""
        result = run("echo partial; exec sleep 60", timeout=0.5)
        assert result.timeouts == NodeSet("localhost")
        assert result.buffer("localhost") == "partial\n"
        assert result.max_retcode is None
        with pytest.raises(KeyError, match="timed out"):
            result.retcode("localhost")

    def test_timeout_kills_the_whole_process_group(self) -> None:
        """A background child holding the output open is killed with its shell."""
        result = run("sleep 60 & echo started", timeout=0.5)
        assert result.timeouts == NodeSet("localhost")
        assert result.buffer("localhost") == "started\n"

    def test_stdin(self) -> None:
        """``stdin`` feeds the command, however large; ``None`` is an empty input."""
        data = "x" * 1_000_000 + "\n"
        assert run("wc -c", stdin=data).buffer("localhost").strip() == str(len(data))
        assert run("cat", stdin=b"bytes").buffer("localhost") == "bytes"
        assert run("cat").buffer("localhost") == ""

    def test_stderr_apart_or_merged(self) -> None:
        """Error output is apart by default, merged in order with ``stderr=False``."""
        cmd = "echo one; echo two >&2; echo three"
        apart = run(cmd)
        assert (apart.buffer("localhost"), apart.error("localhost")) == ("one\nthree\n", "two\n")
        merged = run(cmd, stderr=False)
        assert (merged.buffer("localhost"), merged.error("localhost")) == ("one\ntwo\nthree\n", "")

    def test_invalid_utf8_is_replaced(self) -> None:
        """Output that is not UTF-8 is decoded with replacement characters."""
        assert run(["printf", "a\\377b"]).buffer("localhost") == "a\ufffdb"

    def test_result_pickles(self) -> None:
        """A local result survives pickling with its outputs and codes."""
        result = run("echo out; echo err >&2; exit 2")
        copy = pickle.loads(pickle.dumps(result))
        assert (copy.buffer("localhost"), copy.error("localhost")) == ("out\n", "err\n")
        assert copy.retcode("localhost") == 2
        assert str(copy) == str(result)

    def test_unknown_node(self) -> None:
        """Asking for a node the command did not run on is a KeyError naming it."""
        with pytest.raises(KeyError, match="node9"):
            run("true").buffer("node9")

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"fanout": 0}, "fanout must be at least 1"),
            ({"timeout": 0}, "timeout must be a positive"),
        ],
    )
    def test_invalid_options(self, options: dict[str, Any], message: str) -> None:
        """A fanout below 1 or a non-positive timeout is refused."""
        with pytest.raises(ValueError, match=message):
            run("true", **options)

    def test_empty_command(self) -> None:
        """An empty command list is refused."""
        with pytest.raises(ValueError, match="empty"):
            run([])


class TestSummary:
    """``str(result)`` summarises, ``repr`` is one line."""

    def test_groups_nodes_that_ended_alike(self) -> None:
        """Nodes with the same outcome and output share one entry."""
        result = ShellResult(
            {"n1": b"ok\n", "n2": b"ok\n", "n3": b"", "n4": b"half"},
            {"n1": b"", "n2": b"", "n3": b"boom\n", "n4": b""},
            {"n1": 0, "n2": 0, "n3": 1},
            {"n4"},
        )
        assert str(result).splitlines() == [
            "4 node(s): 2 ok, 1 failed, 1 timed out",
            "n[1-2]: exit 0",
            "  ok",
            "n3: exit 1",
            "  stderr: boom",
            "n4: timed out",
            "  half",
        ]
        assert repr(result) == "<ShellResult n[1-4] max_retcode=1, timeouts='n4'>"

    def test_long_output_is_cut(self) -> None:
        """The summary shows the first lines of a long output and counts the rest."""
        text = "".join(f"line {i}\n" for i in range(25)).encode()
        summary = str(ShellResult({"n1": text}, {"n1": b""}, {"n1": 0}))
        assert "  line 9" in summary
        assert "line 10" not in summary
        assert "  ... (15 more lines)" in summary


# -- safety ------------------------------------------------------------------------------


class TestSafety:
    """Node names and options can never be read as ssh or scp options."""

    @pytest.mark.parametrize("nodes", ["-oProxyCommand=touch pwned", "n1,-n2"])
    def test_dash_node_refused(self, nodes: str, tmp_path: Path) -> None:
        """A node name starting with '-' is refused before anything runs."""
        with pytest.raises(NodeSetError, match="starts with '-'"):
            run("true", nodes)
        with pytest.raises(NodeSetError, match="starts with '-'"):
            copy(tmp_path, "x", nodes)
        with pytest.raises(NodeSetError, match="starts with '-'"):
            rcopy("x", tmp_path, nodes)
        assert not (tmp_path / "pwned").exists()

    def test_ssh_option_must_not_be_a_flag(self) -> None:
        """``ssh_options`` are ``Key=value`` settings, never raw command-line flags."""
        with pytest.raises(ValueError, match="Key=value"):
            run("true", "n1", ssh_options=["-oProxyCommand=sh"])

    def test_missing_ssh_client(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Without an ssh program on PATH, the error says what to install."""
        monkeypatch.setenv("PATH", "")
        with pytest.raises(FileNotFoundError, match="openssh-client"):
            run("true", "n1")


# -- remote runs ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed(sshd: LoopbackSshd) -> ShellResult:
    """One run on node[1-4] and ``down``: node[1-2] print ``low``, node[3-4] fail with 3."""
    cmd = on_ports(sshd, "node[1-2]", "echo low", "echo high; echo oops >&2; exit 3")
    return remote(sshd, cmd, "node[1-4],down")


class TestRemote:
    """Commands on several nodes through a real sshd."""

    def test_each_node_has_its_output_and_code(self, mixed: ShellResult) -> None:
        """Every node's output, error output and return code are its own."""
        assert mixed.nodes == NodeSet("node[1-4],down")
        assert [mixed.buffer(node) for node in ("node1", "node3")] == ["low\n", "high\n"]
        assert [mixed.error(node) for node in ("node2", "node4")] == ["", "oops\n"]
        assert [mixed.retcode(node) for node in ("node1", "node4")] == [0, 3]

    def test_closed_port_is_255(self, mixed: ShellResult) -> None:
        """A node ssh cannot reach returns 255 with ssh's message."""
        assert mixed.retcode("down") == 255
        assert "Connection refused" in mixed.error("down")
        assert mixed.max_retcode == 255

    def test_grouping(self, mixed: ShellResult) -> None:
        """Nodes with identical output, or identical codes, are grouped."""
        assert list(mixed.iter_buffers()) == [
            ("", NodeSet("down")),
            ("low\n", NodeSet("node[1-2]")),
            ("high\n", NodeSet("node[3-4]")),
        ]
        assert list(mixed.iter_retcodes()) == [
            (0, NodeSet("node[1-2]")),
            (3, NodeSet("node[3-4]")),
            (255, NodeSet("down")),
        ]
        assert [nodes for text, nodes in mixed.iter_errors() if text == "oops\n"] == [
            NodeSet("node[3-4]")
        ]

    def test_result_pickles(self, mixed: ShellResult) -> None:
        """A remote result survives pickling (a step stores it in its environment)."""
        copy = pickle.loads(pickle.dumps(mixed))
        assert list(copy.iter_buffers()) == list(mixed.iter_buffers())
        assert list(copy.iter_retcodes()) == list(mixed.iter_retcodes())
        assert copy.error("down") == mixed.error("down")
        assert str(copy) == str(mixed)

    def test_summary(self, mixed: ShellResult) -> None:
        """The summary counts outcomes and shows each group once."""
        lines = str(mixed).splitlines()
        assert lines[0] == "5 node(s): 2 ok, 3 failed, 0 timed out"
        assert "node[1-2]: exit 0" in lines
        assert "node[3-4]: exit 3" in lines
        assert "down: exit 255" in lines

    def test_killed_by_signal(self, sshd: LoopbackSshd) -> None:
        """A remote command killed by a signal returns 128 + the signal, not ssh's 255."""
        result = remote(sshd, "sh -c 'kill -TERM $$'", "node1")
        assert result.retcode("node1") == 128 + signal.SIGTERM

    def test_list_is_quoted_for_the_remote_shell(self, sshd: LoopbackSshd) -> None:
        """Each element of a list arrives as one argument, shell syntax untouched."""
        args = ["$HOME", "a  b", "it's", "; touch pwned", "`id`", "*", ""]
        result = remote(sshd, ["printf", "[%s]\\n", *args], "node1")
        assert result.buffer("node1").splitlines() == [f"[{arg}]" for arg in args]
        assert not (Path.home() / "pwned").exists()

    def test_stdin_and_merged_stderr(self, sshd: LoopbackSshd) -> None:
        """``stdin`` reaches every node; ``stderr=False`` merges error output into the output."""
        result = remote(sshd, "cat; echo err >&2", "node[1-2]", stdin="data\n", stderr=False)
        for node in ("node1", "node2"):
            assert sorted(result.buffer(node).splitlines()) == ["data", "err"]
            assert result.error(node) == ""

    def test_timeout_keeps_partial_output(self, sshd: LoopbackSshd, tmp_path: Path) -> None:
        """A node over the timeout is cut off with its output so far; the others finish."""
        pidfile = tmp_path / "pid"
        slow = f"echo partial; echo $$ > {pidfile}; exec sleep 60"
        try:
            result = remote(
                sshd, on_ports(sshd, "node1", slow, "echo quick"), "node[1-2]", timeout=3
            )
        finally:
            # sshd does not signal a command without a terminal when its client goes.
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
        assert result.timeouts == NodeSet("node1")
        assert result.buffer("node1") == "partial\n"
        with pytest.raises(KeyError):
            result.retcode("node1")
        assert result.retcode("node2") == 0
        assert result.buffer("node2") == "quick\n"
        assert result.max_retcode == 0

    def test_no_nodes(self, sshd: LoopbackSshd) -> None:
        """An empty node set runs nothing and has no return code."""
        result = remote(sshd, "true", "")
        assert len(result) == 0
        assert result.max_retcode is None


class TestFanout:
    """At most ``fanout`` connections are open at once, and that many are."""

    @pytest.mark.parametrize("fanout", [3, NODES])
    def test_connections_reach_and_never_exceed_fanout(
        self, sshd: LoopbackSshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fanout: int
    ) -> None:
        """The overlap of ssh clients, measured from the log they write, is the fanout.

        ``ssh`` is found on PATH, so a wrapper put first logs ``S`` when a
        client starts and ``E`` when it has ended. A controller ignoring the
        fanout would start every client at once, all logging ``S`` before any
        connection could complete. Each remote command (this machine too)
        waits until as many clients as allowed are running, or all that
        remain, so the overlap reaches the fanout rather than merely staying
        under it.
        """
        log = tmp_path / "log"
        log.touch()
        wrapper = tmp_path / "bin" / "ssh"
        wrapper.parent.mkdir()
        wrapper.write_text(
            f'#!/bin/sh\necho S >> {log}\n{shutil.which("ssh")} "$@"\n'
            f"code=$?\necho E >> {log}\nexit $code\n"
        )
        wrapper.chmod(0o755)
        monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
        cmd = f"""
            log={log}; total={NODES}; fanout={fanout}
            while :; do
                s=0; e=0
                while read -r event; do
                    case $event in S) s=$((s + 1));; E) e=$((e + 1));; esac
                done < "$log"
                need=$((total - e)); [ "$need" -gt "$fanout" ] && need=$fanout
                [ $((s - e)) -ge "$need" ] && break
                sleep 0.02
            done
        """
        result = remote(sshd, cmd, f"node[1-{NODES}]", fanout=fanout, timeout=60)
        assert result.max_retcode == 0
        assert not result.timeouts
        events = log.read_text().split()
        assert events.count("S") == events.count("E") == NODES
        running = peak = 0
        for event in events:
            running += 1 if event == "S" else -1
            peak = max(peak, running)
        assert peak == fanout


class TestCopy:
    """``copy`` and ``rcopy`` through scp."""

    def test_copy_a_directory(self, sshd: LoopbackSshd, tmp_path: Path) -> None:
        """A directory is copied whole to the destination on the node."""
        source = tmp_path / "source"
        (source / "sub").mkdir(parents=True)
        (source / "sub" / "file.txt").write_text("content\n")
        result = copy(source, str(tmp_path / "copied"), "node1", ssh_config=sshd.ssh_config)
        assert result.retcode("node1") == 0
        assert (tmp_path / "copied" / "sub" / "file.txt").read_text() == "content\n"

    def test_copy_to_an_unreachable_node(self, sshd: LoopbackSshd, tmp_path: Path) -> None:
        """A node that cannot be reached fails alone; the others get the file."""
        source = tmp_path / "file.txt"
        source.write_text("content\n")
        dest = str(tmp_path / "copy.txt")
        result = copy(source, dest, "node2,down", ssh_config=sshd.ssh_config)
        assert result.retcode("node2") == 0
        assert result.retcode("down") == 255
        assert Path(dest).read_text() == "content\n"

    def test_rcopy_names_each_copy_after_its_node(self, sshd: LoopbackSshd, tmp_path: Path) -> None:
        """Each node's file lands in dest as ``<name>.<node>``; dest is created."""
        source = tmp_path / "app.log"
        source.write_text("log\n")
        dest = tmp_path / "collected"
        result = rcopy(str(source), dest, "node[1-3]", ssh_config=sshd.ssh_config)
        assert list(result.iter_retcodes()) == [(0, NodeSet("node[1-3]"))]
        assert sorted(path.name for path in dest.iterdir()) == [
            "app.log.node1",
            "app.log.node2",
            "app.log.node3",
        ]
        assert (dest / "app.log.node2").read_text() == "log\n"

    def test_rcopy_needs_a_name(self, tmp_path: Path) -> None:
        """A source with no name to give the copies is refused."""
        with pytest.raises(ValueError, match="cannot name the copies"):
            rcopy("/", tmp_path, "node1")


class TestHowTo:
    """The examples of docs/how-to/run-commands-on-nodes.md run against the loopback nodes."""

    def test_examples_run(self, sshd: LoopbackSshd, monkeypatch: pytest.MonkeyPatch) -> None:
        """Each python block of the page runs, in order, in one namespace."""
        import expkit.shell

        for name in ("run", "copy", "rcopy"):
            # The page relies on ~/.ssh/config; the test nodes live in their own file.
            bound = functools.partial(getattr(expkit.shell, name), ssh_config=sshd.ssh_config)
            monkeypatch.setattr(expkit.shell, name, bound)
        text = HOW_TO.read_text(encoding="utf-8")
        blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
        assert len(blocks) >= 5
        namespace: dict[str, Any] = {}
        for number, block in enumerate(blocks, 1):
            code = compile(block, f"{HOW_TO.name} block {number}", "exec")
            exec(code, namespace)  # noqa: S102 - the page's own examples are under test

        assert list(namespace["fetched"].iter_retcodes()) == [(0, NodeSet("node[1-3]"))]
        assert (Path("answers") / "answer.txt.node2").read_text() == "42\n"
        kernels = Environment.load()["kernels"]
        assert kernels.max_retcode == 0
        assert kernels.nodes == NodeSet("node[1-4]")


class TestPackage:
    """The package's exports and imports."""

    def test_all_is_sorted_and_complete(self) -> None:
        """``expkit.shell.__all__`` is sorted and names every public object."""
        import expkit.shell

        public = {
            name
            for name, value in vars(expkit.shell).items()
            if not name.startswith("_") and type(value) is not type(expkit.shell)
        }
        assert expkit.shell.__all__ == sorted(expkit.shell.__all__)
        assert set(expkit.shell.__all__) == public - {"annotations"}

    def test_imports_stay_light(self) -> None:
        """``import expkit`` leaves the shell package alone, which needs the standard library only."""
        out = run_python(
            """
            import json, sys
            import expkit
            before = "expkit.shell" in sys.modules
            import expkit.shell
            print(json.dumps([before, sorted(sys.modules)]))
            """
        ).stdout
        before, modules = json.loads(out)
        assert before is False
        heavy = {"typer", "rich", "click", "yaml", "cloudpickle", "dask", "paramiko", "asyncssh"}
        assert heavy.isdisjoint(name.split(".")[0] for name in modules)
