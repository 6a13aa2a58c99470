"""The ``exp`` command, run as the installed executable in a subprocess."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from .helpers import run_python

EXP = Path(sys.executable).with_name("exp")
TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial" / "first-experiment.md"

EXPERIMENT = """
import logging
import os
import sys

from expkit import task

log = logging.getLogger("demo")


@task
def provision(env, nodes: int = 2):
    print(f"provisioning {nodes} nodes")
    env["nodes"] = [f"n{i}" for i in range(nodes)]
    return nodes


@task(requires=[provision])
def deploy(env):
    log.warning("deploying on %s", env["nodes"])
    print("a line on stderr", file=sys.stderr)
    if os.environ.get("DEPLOY_FAILS"):
        raise ValueError("deploy broke")
    env["deployed"] = True


@task(requires=[deploy], grid={"rate": [10, 100]})
def bench(env, rate: int):
    factor = ((env.get("config") or {}).get("bench") or {}).get("factor", 1)
    print(f"bench at {rate}")
    return rate * factor


@task(requires=[deploy])
def report(env):
    env["report"] = "ok"
"""


def exp(
    *args: str, code: int = 0, extra_env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``exp ARGS`` (here, or in ``cwd``); check its exit status."""
    result = subprocess.run(
        [str(EXP), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(extra_env or {})},
        cwd=cwd,
        check=False,
    )
    assert result.returncode == code, (
        f"exp {' '.join(args)} exited {result.returncode}, not {code}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a user error prints, with no traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("exp: error: ")
    return lines[0]


def status_of(*args: str, cwd: Path | None = None) -> dict[str, Any]:
    """``exp status --json`` as name -> step."""
    steps = json.loads(exp("status", "--json", *args, cwd=cwd).stdout)["steps"]
    return {step["name"]: step for step in steps}


@pytest.fixture
def expfile() -> Path:
    """The experiment as ./expfile.py, found without -f."""
    path = Path("expfile.py")
    path.write_text(EXPERIMENT)
    return path


@pytest.fixture
def ran(expfile: Path) -> subprocess.CompletedProcess[str]:
    """The experiment, run once here."""
    return exp("run")


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where the experiment ran to the end, for commands that only read."""
    where = tmp_path_factory.mktemp("finished")
    (where / "expfile.py").write_text(EXPERIMENT)
    exp("run", "-q", cwd=where)
    return where


class TestExperimentFile:
    """Discovery: -f PATH or MODULE, $EXP_FILE, ./expfile.py; a broken file is one clear line."""

    def test_none_found(self) -> None:
        """Without -f, $EXP_FILE or expfile.py, exp says how to name one, and exits 2."""
        line = one_error_line(exp("plan", code=2))
        assert "expfile.py" in line
        assert "-f FILE" in line

    def test_missing_file(self) -> None:
        """A -f path that does not exist exits 2."""
        assert "no such experiment file" in one_error_line(exp("-f", "nope.py", "run", code=2))
        assert not Path("current").exists()

    def test_syntax_error(self) -> None:
        """A syntax error is reported with its line, no traceback; -v shows the traceback."""
        Path("broken.py").write_text("from expkit import task\n\ndef oops(:\n")
        line = one_error_line(exp("-f", "broken.py", "plan", code=2))
        assert "broken.py: syntax error: line 3" in line
        assert "Traceback" in exp("-v", "-f", "broken.py", "plan", code=2).stderr

    def test_error_while_loading(self) -> None:
        """An exception raised by the file names its line."""
        Path("raises.py").write_text("from expkit import task\n\nraise RuntimeError('no config')\n")
        line = one_error_line(exp("plan", "-f", "raises.py", code=2))
        assert "line 3: RuntimeError: no config" in line

    def test_cycle(self) -> None:
        """Steps that require each other: a cycle, named, exit 2."""
        Path("cycle.py").write_text(
            textwrap.dedent(
                """
                from expkit import task

                @task(requires=["b"])
                def a(env): ...

                @task(requires=["a"])
                def b(env): ...
                """
            )
        )
        line = one_error_line(exp("-f", "cycle.py", "run", code=2))
        assert "cycle: b -> a -> b" in line
        assert not Path("current").exists()

    def test_module_name_and_exp_file(self) -> None:
        """-f takes a module importable from here; $EXP_FILE names the file otherwise."""
        Path("mine.py").write_text(EXPERIMENT)
        plan = json.loads(exp("-f", "mine", "plan", "--json").stdout)
        assert [e["name"] for e in plan][:2] == ["provision", "deploy"]
        assert "no such experiment file" in one_error_line(
            exp("-f", "not_a_module", "plan", code=2)
        )
        by_env = exp("plan", "deploy", extra_env={"EXP_FILE": "mine.py"})
        assert "never run" in by_env.stdout

    def test_experiment_objects_are_collected(self) -> None:
        """The experiment's objects are collected: `exp` freezes only its own modules."""
        Path("expfile.py").write_text(
            textwrap.dedent(
                """
                import gc
                from pathlib import Path
                from expkit import task

                class Cycle:
                    def __init__(self):
                        self.me = self  # only the cycle collector frees it

                    def __del__(self):
                        Path("collected").touch()

                Cycle()  # garbage as soon as the file has loaded

                @task
                def collect():
                    gc.collect()
                """
            )
        )
        exp("run")
        assert Path("collected").exists()


class TestRun:
    """exp run: makes the targets with progress, exit 0, 1 or 2, and resumes."""

    def test_runs_everything_then_nothing(self, ran: subprocess.CompletedProcess[str]) -> None:
        """A first run shows each step start and end, a sweep's count; a second run skips all."""
        out = ran.stdout
        assert "plan: 5 to run, 0 to skip" in out
        assert "start     provision  (never run)" in out
        assert "provisioning 2 nodes" in out  # the step's own output, shown live
        assert "done      bench[rate=100]" in out
        assert "[bench 2/2]" in out
        assert "5 ran; 5 done" in out
        again = exp("run")
        assert "0 ran; 5 done" in again.stdout
        assert "5 steps up to date" in again.stdout
        assert "start" not in again.stdout

    @pytest.mark.usefixtures("expfile")
    def test_failure_exits_1_and_resumes(self) -> None:
        """A failing step: exit 1, dependents skipped; fixed, the next run goes on from there."""
        failed = exp("run", code=1, extra_env={"DEPLOY_FAILS": "1"})
        assert "failed    deploy" in failed.stdout
        assert "ValueError: deploy broke" in failed.stdout
        assert "skipped   report  upstream 'deploy' failed" in failed.stdout
        assert "exp log deploy" in failed.stdout
        assert "Traceback" not in failed.stderr
        steps = status_of()
        assert steps["deploy"]["status"] == "failed"
        assert steps["deploy"]["error"]["message"] == "deploy broke"
        log = exp("log", "deploy").stdout
        assert "WARNING demo: deploying on ['n0', 'n1']" in log
        assert "a line on stderr" in log
        assert "ValueError: deploy broke" in log  # the traceback is in the log
        resumed = exp("run")
        assert "1 step up to date: provision" in resumed.stdout
        assert "start     deploy  (failed at" in resumed.stdout
        assert status_of()["provision"]["started"] == steps["provision"]["started"]

    @pytest.mark.usefixtures("expfile")
    def test_unknown_step(self) -> None:
        """A misspelt step: the closest names, exit 2, and no environment made."""
        line = one_error_line(exp("run", "bnech", code=2))
        assert "unknown step 'bnech'" in line
        assert "did you mean 'bench'" in line
        assert one_error_line(exp("run", "--force", "deplyo", code=2)).endswith("'deploy'?")
        assert not Path("current").exists()
        assert not Path("results").exists()

    @pytest.mark.usefixtures("expfile")
    def test_params_yaml_typed(self) -> None:
        """-p STEP.KEY=VALUE is YAML-typed; a malformed one exits 2."""
        exp("run", "provision", "-p", "provision.nodes=3")
        assert json.loads(exp("show", "nodes", "--json").stdout) == ["n0", "n1", "n2"]
        assert "expected STEP.KEY=VALUE" in one_error_line(exp("run", "-p", "nodes=3", code=2))

    @pytest.mark.usefixtures("expfile")
    def test_dry_run_makes_nothing(self) -> None:
        """--dry-run shows the plan and creates no environment."""
        out = exp("run", "--dry-run", "deploy").stdout
        assert "provision" in out
        assert "never run" in out
        assert not Path("current").exists()

    @pytest.mark.usefixtures("expfile")
    def test_processes_executor_logs_in_workers(self) -> None:
        """Steps of a file loaded by path run in worker processes, which write their logs."""
        out = exp("run", "--executor", "processes", "-j", "2", "bench").stdout
        assert "4 ran; 4 done" in out
        log = Path("current/logs/bench[rate=100].log").read_text()
        assert "bench at 100" in log
        assert f"pid {os.getpid()}" not in log

    @pytest.mark.usefixtures("ran")
    def test_envs_new_and_use(self) -> None:
        """--new makes a second environment; envs lists both; use re-points current."""
        first = Path("current").resolve()
        exp("run", "provision", "--new", "-q")
        second = Path("current").resolve()
        assert second != first
        listing = exp("envs").stdout
        assert f"*  {second.name}" in listing
        assert first.name in listing
        assert "5 done" in listing
        assert first.name in exp("use", first.name).stdout
        assert Path("current").resolve() == first
        assert "nor the name of one" in one_error_line(exp("use", "nowhere", code=2))
        assert "no environments under elsewhere" in exp("envs", "--results", "elsewhere").stdout

    @pytest.mark.usefixtures("ran")
    def test_resume_from(self) -> None:
        """--resume-from starts a new environment seeded with the done steps of another."""
        first = Path("current").resolve()
        out = exp("run", "--resume-from", str(first), "--env", "again").stdout
        assert "0 ran; 5 done" in out
        assert Path("again/env").is_file()


class TestConfiguration:
    """--config FILE into env['config'] (read again at each run), --set overrides."""

    @pytest.mark.usefixtures("expfile")
    def test_config_reloaded_and_overridden(self) -> None:
        """The file is stored absolute, re-read at every run, and --set adds typed keys."""
        Path("conf.yaml").write_text("bench:\n  factor: 2\n")
        exp("run", "--config", "conf.yaml", "--set", "extra.flag=true")
        assert status_of()["bench[rate=100]"]["status"] == "done"
        shown = json.loads(exp("show", "--json").stdout)
        assert shown["config"] == {"bench": {"factor": 2}, "extra": {"flag": True}}
        assert shown["config_file"] == str(Path("conf.yaml").absolute())
        Path("conf.yaml").write_text("bench:\n  factor: 3\n")
        exp("run")
        assert json.loads(exp("show", "config", "--json").stdout) == {"bench": {"factor": 3}}

    @pytest.mark.usefixtures("expfile")
    def test_set_without_config_file(self) -> None:
        """--set works without --config: the configuration starts empty."""
        exp("run", "provision", "--set", "bench.factor=5", "--set", "a.b.c=[1, 2]")
        config = json.loads(exp("show", "config", "--json").stdout)
        assert config == {"bench": {"factor": 5}, "a": {"b": {"c": [1, 2]}}}

    @pytest.mark.usefixtures("expfile")
    def test_bad_yaml_exits_2_with_line(self) -> None:
        """Invalid YAML: file and line, exit 2, and nothing created."""
        Path("bad.yaml").write_text("bench:\n  factor: [1,\n  other: 2\n")
        line = one_error_line(exp("run", "--config", "bad.yaml", code=2))
        assert f"{Path('bad.yaml').absolute()}:4: invalid YAML" in line
        assert not Path("current").exists()

    @pytest.mark.usefixtures("expfile")
    def test_set_on_a_bad_key(self) -> None:
        """--set through a value that is not a mapping, or with an empty key, exits 2."""
        Path("conf.yaml").write_text("bench:\n  factor: 2\n")
        line = one_error_line(
            exp("run", "--config", "conf.yaml", "--set", "bench.factor.x=1", code=2)
        )
        assert "bench.factor is 2 (type int), not a mapping" in line
        assert "dotted path" in one_error_line(exp("run", "--set", "bench..x=1", code=2))
        assert "not valid YAML" in one_error_line(exp("run", "--set", "a=[1,", code=2))
        assert not Path("current").exists()


class TestInspect:
    """status, show, log, graph, plan and reset on an environment, and without one."""

    @pytest.mark.usefixtures("expfile")
    def test_need_an_environment(self) -> None:
        """status, show, log and reset exit 2 without an environment; plan and graph work."""
        for command in (["status"], ["show"], ["log", "deploy"], ["reset", "deploy"]):
            line = one_error_line(exp(*command, code=2))
            assert "no environment at" in line
            assert "exp run" in line
        assert "never run" in exp("plan").stdout
        assert "deploy [pending]" in exp("graph").stdout

    def test_status_and_plan(self, finished: Path) -> None:
        """The status command lists every step with attempts and duration; plan --json says why."""
        text = exp("status", cwd=finished).stdout
        assert "5 done" in text
        assert "bench[rate=10]" in text
        steps = status_of(cwd=finished)
        assert steps["provision"]["attempts"] == 1
        assert steps["provision"]["duration"] >= 0
        plan = json.loads(exp("plan", "--json", "--force", "deploy", cwd=finished).stdout)
        actions = {e["name"]: (e["action"], e["reason"]) for e in plan}
        assert actions["provision"] == ("skip", "up to date")
        assert actions["deploy"] == ("run", "forced")

    def test_show(self, finished: Path) -> None:
        """The show command lists keys with short reprs, one key in full, and suggests a misspelt key."""
        table = exp("show", cwd=finished).stdout
        assert "['n0', 'n1']" in table
        assert exp("show", "report", cwd=finished).stdout.strip() == "'ok'"
        assert "did you mean 'nodes'" in one_error_line(exp("show", "node", code=2, cwd=finished))

    def test_graph_formats(self, finished: Path) -> None:
        """The graph as DOT, Mermaid and a text tree, with statuses."""
        assert '"provision" -> "deploy";' in exp("graph", "--format", "dot", cwd=finished).stdout
        assert "flowchart LR" in exp("graph", "--format", "mermaid", cwd=finished).stdout
        assert "`-- report [done]" in exp("graph", cwd=finished).stdout

    def test_log(self, finished: Path) -> None:
        """The log command shows a step's output; a sweep shows every instance; an unknown step exits 2."""
        assert "provisioning 2 nodes" in exp("log", "provision", cwd=finished).stdout
        sweep = exp("log", "bench", cwd=finished).stdout
        assert "==> bench[rate=10] <==" in sweep
        assert "bench at 100" in sweep
        silent = exp("log", "report", cwd=finished)
        assert silent.stdout == ""
        assert "no output captured" in silent.stderr
        assert "did you mean" in one_error_line(exp("log", "deplo", code=2, cwd=finished))

    @pytest.mark.usefixtures("ran")
    def test_reset(self) -> None:
        """The reset command marks steps pending (a sweep: its instances); --downstream adds dependents."""
        assert "bench[rate=10], bench[rate=100]" in exp("reset", "bench").stdout
        assert "2 ran; 5 done" in exp("run", "-q").stdout
        exp("reset", "deploy", "--downstream")
        steps = status_of()
        assert {n for n, s in steps.items() if s["status"] == "pending"} == {
            "deploy",
            "bench[rate=10]",
            "bench[rate=100]",
            "report",
        }
        assert "unknown step 'nothing'" in one_error_line(exp("reset", "nothing", code=2))


class TestLiveLines:
    """Progress lines through a pipe show as the run goes, in order with the steps' output."""

    def test_lines_show_before_a_step_ends(self) -> None:
        """A step waiting on the test: the lines before it, and its own output, are already read."""
        Path("expfile.py").write_text(
            textwrap.dedent(
                """
                import time
                from pathlib import Path
                from expkit import task

                @task
                def first():
                    pass

                @task(requires=[first])
                def waiting():
                    print("inside waiting", flush=True)
                    deadline = time.monotonic() + 60  # the test lets it go long before
                    while not Path("go").exists() and time.monotonic() < deadline:
                        time.sleep(0.01)
                """
            )
        )
        with subprocess.Popen(
            [str(EXP), "run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as proc:
            assert proc.stdout is not None
            seen: list[str] = []
            while not seen or seen[-1] != "inside waiting":
                line = proc.stdout.readline()
                assert line, f"exp ended before the step printed: {seen}"
                seen.append(line.rstrip("\n"))
            # Read while the step still waits: nothing was held back until it ended.
            assert not Path("go").exists()
            Path("go").touch()
            rest, _ = proc.communicate(timeout=60)
        # After "environment:", without the reasons and durations.
        progress = [re.sub(r"  (\(.*\)|[0-9.]+ s)$", "", line) for line in seen[1:]]
        assert progress == [
            "plan: 2 to run, 0 to skip",
            "start     first",
            "done      first",
            "start     waiting",
            "inside waiting",
        ]
        assert proc.returncode == 0
        assert "done      waiting" in rest

    @pytest.mark.parametrize(
        "start",
        [
            'subprocess.run(["echo", "from a program"], check=True)',
            'os.system("echo from a program")',
        ],
    )
    def test_start_line_before_a_program_the_step_starts(self, start: str) -> None:
        """A program writes to the pipe directly: the step's start line, held back, is out first."""
        Path("expfile.py").write_text(
            textwrap.dedent(
                f"""
                import os
                import subprocess
                from expkit import task

                @task
                def first():
                    pass

                @task(requires=[first])
                def program():
                    {start}
                """
            )
        )
        lines = exp("run").stdout.splitlines()
        # "start program" follows "done first" at once: it is held, not written, when the
        # program starts, unless starting a program writes the held lines.
        assert lines.index("from a program") == lines.index("start     program  (never run)") + 1

    def test_start_line_of_a_silent_step_shows_while_it_runs(self) -> None:
        """Held lines are written within a tenth of a second, without any output to push them."""
        Path("expfile.py").write_text(
            textwrap.dedent(
                """
                import time
                from pathlib import Path
                from expkit import task

                @task
                def first():
                    pass

                @task(requires=[first])
                def silent():
                    deadline = time.monotonic() + 60  # the test lets it go long before
                    while not Path("go").exists() and time.monotonic() < deadline:
                        time.sleep(0.01)
                    Path("ended").touch()
                """
            )
        )
        with subprocess.Popen(
            [str(EXP), "run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as proc:
            assert proc.stdout is not None
            seen: list[str] = []
            while not seen or not seen[-1].startswith("start     silent"):
                line = proc.stdout.readline()
                assert line, f"exp ended before the step's start line: {seen}"
                seen.append(line.rstrip("\n"))
            assert not Path("ended").exists(), "the line came only once the step had ended"
            Path("go").touch()
            rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert "done      silent" in rest


class TestInterrupt:
    """Ctrl-C during exp run: exit 130, the step CANCELLED, the resume command, nothing lost."""

    def test_sigint_then_resume(self) -> None:
        """A real SIGINT stops the run; the next run skips what finished and runs the rest."""
        Path("expfile.py").write_text(
            textwrap.dedent(
                """
                import os, time
                from pathlib import Path
                from expkit import task

                @task
                def first(env):
                    env["first"] = 1

                @task(requires=[first])
                def slow(env):
                    env["partial"] = "kept"
                    Path("started").touch()
                    time.sleep(float(os.environ.get("SLOW", "0")))
                    env["slow"] = "finished"
                """
            )
        )
        with subprocess.Popen(
            [str(EXP), "run"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "SLOW": "60"},
        ) as proc:
            deadline = time.monotonic() + 60
            while not Path("started").exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, out + err
        assert "cancelled slow" in out
        env = os.path.relpath(Path("current").resolve())
        assert f"resume with: exp run --env {env}" in err
        steps = status_of()
        assert steps["first"]["status"] == "done"
        assert steps["slow"]["status"] == "cancelled"
        resumed = exp("run")
        assert "start     slow  (cancelled)" in resumed.stdout
        assert "1 ran; 2 done" in resumed.stdout
        assert json.loads(exp("show", "slow", "--json").stdout) == "finished"


class TestCommand:
    """Help, global options on either side of the command, completion, the reference."""

    def test_help_lists_every_command(self) -> None:
        """The help names the commands of DESIGN section 7; run --help its options."""
        out = exp("--help").stdout
        for command in ("run", "plan", "status", "graph", "envs", "use", "show", "reset", "log"):
            assert f" {command} " in out
        run_help = exp("run", "--help").stdout
        for option in ("--new", "--force", "--param", "--jobs", "--executor", "--address"):
            assert option in run_help
        for option in ("--resume-from", "--config", "--set", "--fail-fast", "--dry-run", "--env"):
            assert option in run_help

    def test_global_options_before_or_after(self, finished: Path) -> None:
        """--env and -f work before the command and after it, from another directory."""
        where = str((finished / "current").resolve())
        assert "5 done" in exp("--env", where, "status").stdout
        plan = exp("plan", "-f", str(finished / "expfile.py"), "--env", where).stdout
        assert "5 steps up to date" not in plan  # a table, one row per step
        assert plan.count("up to date") == 5

    @pytest.mark.usefixtures("expfile")
    def test_step_names_complete(self) -> None:
        """Shell completion offers the experiment's step names."""
        completion = exp(
            extra_env={
                "_EXP_COMPLETE": "complete_bash",
                "COMP_WORDS": "exp run b",
                "COMP_CWORD": "2",
            }
        )
        assert completion.stdout.split() == ["bench"]

    def test_command_annotations_are_objects(self) -> None:
        """The commands are read by typer at each start: strings it would compile and evaluate."""
        import importlib
        import inspect

        from expkit.cli import _app, _complete

        commands = [
            getattr(importlib.import_module(module, "expkit.cli"), function)
            for module, function in _app._COMMANDS.values()
        ]
        for function in [*commands, _app.main, _complete.complete_step]:
            annotations = inspect.get_annotations(function)
            assert annotations, function
            strings = [name for name, value in annotations.items() if isinstance(value, str)]
            assert not strings, f"{function.__qualname__}: {strings}"

    def test_cli_reference_is_generated(self) -> None:
        """docs/reference/cli.md is what docs/gen_cli_reference.py writes from the app."""
        script = Path(__file__).resolve().parent.parent / "docs" / "gen_cli_reference.py"
        result = subprocess.run(
            [sys.executable, str(script), "--check"], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr


# A fenced block of the tutorial, and the exit status an HTML comment before it expects.
_BLOCK = re.compile(
    r"(?:<!-- exit (?P<code>\d+) -->\n)?```(?P<lang>\w+)(?P<info>[^\n]*)\n(?P<body>.*?)```",
    re.DOTALL,
)
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d(?:-\d+)?")
_VARYING = [
    (_STAMP, "<ENV>"),
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?: [+-]\d{4})?"), "<TIME>"),
    (re.compile(r"at \d\d:\d\d\b"), "at <TIME>"),
    (re.compile(r"\d+\.\d+ s\b"), "<SECONDS>"),
    (re.compile(r"pid \d+ on \S+"), "pid <PID>"),
]


class TestQuickConversion:
    """Plain option values are converted without pydantic, exactly as typer converts them."""

    @pytest.mark.usefixtures("expfile")
    def test_run_loads_no_pydantic(self) -> None:
        """A whole ``exp run`` with options of every plain kind never imports pydantic."""
        code = """
            import sys
            from expkit.cli import main
            sys.argv = ["exp", "-v", "run", "-j", "2", "--executor", "threads", "-p",
                        "provision.nodes=3", "--force", "deploy", "--env", "e", "-q"]
            try:
                main()
            except SystemExit as stop:
                print(stop.code, "pydantic" in sys.modules)
            """
        assert run_python(code).stdout.split()[-2:] == ["0", "False"]

    def test_same_values_and_errors_as_typer(self, tmp_path: Path) -> None:
        """Every option given the quick conversion gives typer's value, or typer's error."""
        typer_main = pytest.importorskip("typer.main")
        coercion = pytest.importorskip("typer._coercion")
        if not hasattr(coercion, "build_runtime_param"):
            pytest.skip("this typer converts values through click's types")
        import typer

        from expkit.cli._app import app
        from expkit.cli._coerce import install

        unreadable = tmp_path / "unreadable"
        unreadable.write_text("")
        unreadable.chmod(0)
        samples: list[object] = [None, "", "2", "0", "-1", "1.5", " 3", "x", "threads", "Dask"]
        samples += ["dask", str(tmp_path), str(unreadable), ["a", "b"], ("x",), [], 3, 0, True]
        samples += [False, Path("p"), 2.0]
        group = typer_main.get_command(app)
        top = typer.Context(group)
        commands = [(group, top)] + [
            (command, typer.Context(command, parent=top)) for command in group.commands.values()
        ]
        checked = 0
        for command, ctx in commands:
            params = command.get_params(ctx)
            install(params)
            for param in params:
                quick = param._runtime_param
                if quick is None:
                    continue
                full = coercion.build_runtime_param(param.type_descriptor)
                for value in samples:
                    assert _outcome(quick, value, param, ctx) == _outcome(
                        full, value, param, ctx
                    ), (
                        command.name,
                        param.name,
                        value,
                    )
                    checked += 1
        assert checked > 100


def _outcome(converter: Any, value: object, param: Any, ctx: Any) -> tuple[str, object]:
    """What converting ``value`` gives: its result, or its error's type and message."""
    try:
        return ("value", converter.coerce(value, param=param, ctx=ctx))
    except Exception as error:  # noqa: BLE001 - the error is the outcome compared
        return (type(error).__name__, str(error))


def _steady(line: str) -> str:
    """A line of output with what changes from run to run (times, pids, names) masked."""
    for pattern, mask in _VARYING:
        line = pattern.sub(mask, line)
    return line.rstrip()


def _commands(body: str) -> list[tuple[str, list[str]]]:
    """The ``$ command`` lines of a console block, each with the output shown under it."""
    found: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            found.append((line[2:], []))
        elif found:
            found[-1][1].append(line)
    return found


class TestTutorial:
    """docs/tutorial/first-experiment.md runs as written."""

    def test_commands_give_the_output_shown(self) -> None:
        """Each command exits as the page says, printing the lines shown (times masked)."""
        stamps: dict[str, str] = {}  # environment names on the page -> here
        ran = 0
        for block in _BLOCK.finditer(TUTORIAL.read_text()):
            title = re.search(r'title="([^"]+)"', block["info"])
            if block["lang"] == "python" and title:
                Path(title[1]).write_text(block["body"])
            if block["lang"] != "console":
                continue
            for written, shown in _commands(block["body"]):
                command = written
                for page, here in stamps.items():
                    command = command.replace(page, here)
                words = shlex.split(command)
                assert words[0] == "exp"
                result = exp(*words[1:], code=int(block["code"] or 0))
                ran += 1
                printed = result.stdout.splitlines()
                for want, got in zip(shown, printed, strict=False):
                    if want.startswith("environment: ") and got.startswith("environment: "):
                        stamps.update(zip(_STAMP.findall(want), _STAMP.findall(got), strict=True))
                remaining = iter(_steady(line) for line in printed)
                for want in shown:
                    if want.strip() != "...":
                        assert _steady(want) in remaining, (
                            f"$ {command}: {want!r} not in\n{result.stdout}"
                        )
        assert ran >= 10
