"""Notebooks: steps defined in cells, run in a real Jupyter kernel (nbclient + ipykernel).

Each notebook runs in a fresh kernel whose working directory is the test's
own; the steps append their names to ``runs.log`` there, which counts runs
across kernels. The kernel is this interpreter (a kernelspec written for
``sys.executable``), so a clean checkout needs no installed kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError

import expkit
import expkit._make
from expkit import Environment, Status, make, task
from expkit._notebook import NotebookProgress, default_observer

ROOT = Path(__file__).resolve().parent.parent
KERNEL = "expkit-test"
#: Seconds a cell may take before nbclient gives up: a hung kernel fails, never hangs.
CELL_TIMEOUT = 60

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kernels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Jupyter data directory whose one kernel is this interpreter."""
    data = tmp_path_factory.mktemp("jupyter")
    spec = data / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    kernel = {"argv": argv, "display_name": "expkit tests", "language": "python"}
    (spec / "kernel.json").write_text(json.dumps(kernel))
    return data


@pytest.fixture(autouse=True)
def _kernel_on_path(kernels: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A name no user kernel has: a kernelspec in ~/.local cannot shadow it.
    monkeypatch.setenv("JUPYTER_PATH", str(kernels))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")


def notebook(*cells: str) -> nbformat.NotebookNode:
    """A notebook of code cells; a cell starting ``# raises`` may raise."""
    made = []
    for source in cells:
        cell = nbformat.v4.new_code_cell(textwrap.dedent(source).strip())  # type: ignore[no-untyped-call]
        if source.lstrip().startswith("# raises"):
            cell.metadata["tags"] = ["raises-exception"]
        made.append(cell)
    made_nb: nbformat.NotebookNode = nbformat.v4.new_notebook(cells=made)  # type: ignore[no-untyped-call]
    return made_nb


def read(path: Path) -> nbformat.NotebookNode:
    """A notebook file, as nbformat 4."""
    nb: nbformat.NotebookNode = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    return nb


def client(nb: nbformat.NotebookNode) -> NotebookClient:
    """A client that runs ``nb`` in a fresh kernel, in the current directory."""
    return NotebookClient(
        nb,
        kernel_name=KERNEL,
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(Path.cwd())}},
    )


def execute(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Run every cell from the top in a fresh kernel; a cell error fails the test."""
    client(nb).execute()
    return nb


@contextlib.contextmanager
def once(flag: Path, act: Callable[[], None]) -> Iterator[None]:
    """Do ``act`` from another thread as soon as ``flag`` exists (a step made it).

    The block must see ``act`` done: a notebook that ends first fails the test.
    """
    flag = flag.resolve()  # the next test runs in another directory
    done = threading.Event()
    ended = threading.Event()
    errors: list[BaseException] = []

    def watch() -> None:
        while not flag.exists():
            if ended.wait(0.02):  # the notebook ended without reaching the step
                return
        try:
            act()
        except BaseException as error:  # noqa: BLE001 - reported by the test's thread
            errors.append(error)
        done.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        ended.set()
        watcher.join()
    if errors:
        raise errors[0]
    assert done.is_set(), f"{flag} never appeared"


def runs() -> Counter[str]:
    """How many times each step ran, in every kernel so far."""
    log = Path("runs.log")
    return Counter(log.read_text().split()) if log.exists() else Counter()


def printed(nb: nbformat.NotebookNode, tag: str) -> Any:
    """The JSON a cell printed after ``tag``, in the last cell that printed it."""
    found = None
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            for line in output.get("text", "").splitlines():
                if line.startswith(tag + " "):
                    found = json.loads(line[len(tag) + 1 :])
    assert found is not None, f"no cell printed {tag}"
    return found


def shown(cell: nbformat.NotebookNode, mime: str = "text/html") -> str:
    """Everything a cell displayed as ``mime`` (progress tables, reprs)."""
    return "\n".join(o.get("data", {}).get(mime, "") for o in cell.get("outputs", []))


SETUP = """
    import asyncio, json, os, pathlib, time
    from expkit import Environment, make, plan, task
    from expkit._notebook import NotebookProgress

    LOG = pathlib.Path("runs.log").resolve()

    def log(name):
        with LOG.open("a") as f:
            f.write(name + "\\n")

    def reasons():
        return {e.name: e.reason for e in plan()}
"""

SWEEP = """
    @task
    def prepare(env):
        log("prepare")
        env["data"] = [1, 2, 3]

    @task(requires=[prepare], grid={"seed": [0, 1, 2]}, rerun_on_change=True)
    def train(env, seed):
        log(f"train[seed={seed}]")
        env[f"score-{seed}"] = sum(env["data"]) * seed

    @task(requires=[train], rerun_on_change=True)
    def analyse(env):
        log("analyse")
        env["best"] = max(env[f"score-{seed}"] for seed in range(3))
"""


class TestRestartAndRunAll:
    """'Restart & Run All' picks up where the last kernel stopped."""

    CELLS = (
        SETUP,
        SWEEP,
        """
        %%time
        # Under a cell magic the source is not in the kernel's cache: the
        # compiled code is hashed, and must not change with the kernel either.
        @task(requires=[analyse], rerun_on_change=True)
        def magic(env):
            log("magic")
            env["squares"] = [x * x for x in range(3)]
        """,
        """
        print("PLAN", json.dumps(reasons()))
        # ipykernel runs cells inside its event loop: make must not need one of its own.
        assert asyncio.get_running_loop().is_running()
        report = make(on_event=NotebookProgress())
        print("RAN", json.dumps(report.ran))
        print("CELL", json.dumps(analyse.__wrapped__.__code__.co_filename))
        """,
        "plan()",
        "report",
        "Environment.load()",
    )

    def test_second_execution_runs_no_done_step(self) -> None:
        """Executed twice from the top, each time in a new kernel: the second runs nothing."""
        first = execute(notebook(*self.CELLS))
        assert printed(first, "RAN") == [
            "prepare",
            "train[seed=0]",
            "train[seed=1]",
            "train[seed=2]",
            "analyse",
            "magic",
        ]
        second = execute(notebook(*self.CELLS))
        assert printed(second, "RAN") == []
        assert set(printed(second, "PLAN").values()) == {"up to date"}
        assert runs() == {
            "prepare": 1,
            "train[seed=0]": 1,
            "train[seed=1]": 1,
            "train[seed=2]": 1,
            "analyse": 1,
            "magic": 1,
        }
        # The steps re-run on a code change, so their prints matched although
        # the kernels compiled the cells under different file names.
        assert printed(first, "CELL") != printed(second, "CELL")

    def test_environment_lives_under_the_working_directory(self) -> None:
        """Without an env argument, the environment is ./current under the notebook's directory."""
        execute(notebook(*self.CELLS))
        env = Environment.load()
        assert env.resultdir.resolve().parent == (Path.cwd() / "results").resolve()
        assert env["best"] == 12
        assert env.is_done("analyse")

    def test_progress_and_reprs_render_as_html(self) -> None:
        """The run's progress table, the plan, the report and the environment show as HTML."""
        nb = execute(notebook(*self.CELLS))
        progress, plan_cell, report_cell, env_cell = (nb.cells[i] for i in range(3, 7))
        table = shown(progress)
        assert "6/6 finished" in table
        assert "train (3 instances)" in table
        assert "analyse" in table
        assert "prepare" in shown(progress, "text/plain")
        assert "up to date" in shown(plan_cell)
        assert "6 ran" in shown(report_cell)
        assert "<code>best</code>" in shown(env_cell)


class TestDirectCalls:
    """A step defined in a cell and called directly runs that step only, as from a script."""

    def test_steps_called_in_cells(self) -> None:
        """new=True starts the environment; a missing prerequisite is refused; make then resumes."""
        nb = execute(
            notebook(
                SETUP,
                """
                @task(new=True)
                def provision(env, nodes=2):
                    log("provision")
                    env["nodes"] = [f"node-{i}" for i in range(nodes)]

                @task(requires=[provision])
                def deploy(env):
                    log("deploy")

                @task(requires=[deploy])
                def bench(env):
                    log("bench")
                    return len(env["nodes"])
                """,
                "provision()",
                """
                # raises PrerequisiteError: deploy is not done
                bench()
                """,
                """
                deploy()
                print("RESULT", json.dumps(bench()))
                print("PLAN", json.dumps(reasons()))
                print("RAN", json.dumps(make().ran))
                """,
            )
        )
        refused = [o.get("ename") for o in nb.cells[3].outputs if o.output_type == "error"]
        assert refused == ["PrerequisiteError"]
        assert printed(nb, "RESULT") == 2
        assert set(printed(nb, "PLAN").values()) == {"up to date"}
        assert printed(nb, "RAN") == []
        assert runs() == {"provision": 1, "deploy": 1, "bench": 1}
        assert Environment.load()["nodes"] == ["node-0", "node-1"]


class TestKilledKernel:
    """A kernel killed mid-step leaves that step INTERRUPTED; the next run re-runs it."""

    @staticmethod
    def cells(executor: str) -> tuple[str, ...]:
        """The notebook, its steps run by ``executor``."""
        steps = """
            BLOCK, STARTED = pathlib.Path("block").resolve(), pathlib.Path("started").resolve()

            @task
            def first(env):
                log("first")

            @task(requires=[first])
            def slow(env):
                log("slow")
                if BLOCK.exists():
                    # Renamed into place: the test reads a whole pid or nothing.
                    STARTED.with_suffix(".tmp").write_text(str(os.getpid()))
                    STARTED.with_suffix(".tmp").rename(STARTED)
                    while True:  # until the test kills this kernel
                        time.sleep(0.05)

            @task(requires=[slow])
            def last(env):
                log("last")
            """
        run = f"""
            print("PLAN", json.dumps(reasons()))
            print("RAN", json.dumps(make(executor={executor!r}).ran))
            """
        return SETUP, steps, run

    @pytest.mark.parametrize("executor", ["sequential", "processes"])
    def test_sigkill_mid_step_then_run_again(self, executor: str) -> None:
        """SIGKILL while 'slow' runs: 'slow' is INTERRUPTED, re-run next time, 'first' skipped."""
        Path("block").touch()
        killer = client(notebook(*self.cells(executor)))

        def kill() -> None:
            assert killer.km is not None
            os.kill(killer.km.provisioner.process.pid, signal.SIGKILL)  # type: ignore[union-attr]

        with once(Path("started"), kill), pytest.raises(DeadKernelError):
            killer.execute()
        # The process that ran the step (the kernel, or its worker) does not outlive the kernel.
        assert gone(int(Path("started").read_text()))
        assert Environment.load().get_status("slow") is Status.INTERRUPTED
        Path("block").unlink()

        again = execute(notebook(*self.cells(executor)))
        plan = printed(again, "PLAN")
        assert plan["first"] == "up to date"
        assert plan["slow"].startswith("interrupted")
        assert printed(again, "RAN") == ["slow", "last"]
        assert runs() == {"first": 1, "slow": 2, "last": 1}


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether process ``pid`` is dead (a zombie counts) or dies within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


class TestCodeChange:
    """A step edited in its cell shows as changed; it re-runs only with rerun_on_change."""

    @staticmethod
    def cells(version: int) -> tuple[str, ...]:
        """The notebook, with the steps' code at ``version``."""
        steps = f"""
            @task
            def keep(env):
                log("keep")
                env["keep"] = {version}

            @task(rerun_on_change=True)
            def redo(env):
                log("redo")
                env["redo"] = {version}
            """
        run = """
            print("PLAN", json.dumps(reasons()))
            print("RAN", json.dumps(make().ran))
            """
        return SETUP, steps, run

    def test_edited_step_is_code_changed(self) -> None:
        """After an edit, 'keep' is kept as code changed and 'redo' re-runs."""
        execute(notebook(*self.cells(1)))
        edited = execute(notebook(*self.cells(2)))
        plan = printed(edited, "PLAN")
        assert plan["keep"] == "code changed (kept: rerun_on_change is off)"
        assert plan["redo"] == "code changed"
        assert printed(edited, "RAN") == ["redo"]
        assert runs() == {"keep": 1, "redo": 2}
        env = Environment.load()
        assert (env["keep"], env["redo"]) == (1, 2)


class TestProcessesExecutor:
    """The processes executor runs steps defined in cells (shipped by value)."""

    def test_cell_defined_steps_run_in_worker_processes(self) -> None:
        """Cell-defined steps, a helper and a global of another cell reach the workers."""
        nb = execute(
            notebook(
                SETUP,
                """
                FACTOR = 10

                def scaled(x):
                    return x * FACTOR
                """,
                """
                @task(grid={"x": [1, 2, 3, 4]})
                def work(env, x):
                    log(f"work[x={x}]")
                    env[f"pid-{x}"] = os.getpid()
                    env[f"out-{x}"] = scaled(x)

                @task(requires=[work])
                def total(env):
                    log("total")
                    env["total"] = sum(env[f"out-{x}"] for x in range(1, 5))
                """,
                """
                report = make(executor="processes", jobs=2)
                env = Environment.load()
                pids = {env[f"pid-{x}"] for x in range(1, 5)}
                print("RAN", json.dumps(report.ran))
                print("OUT", json.dumps({"total": env["total"], "kernel": os.getpid() in pids}))
                print("AGAIN", json.dumps(make(executor="processes", jobs=2).ran))
                """,
            )
        )
        assert len(printed(nb, "RAN")) == 5
        assert printed(nb, "OUT") == {"total": 100, "kernel": False}
        assert printed(nb, "AGAIN") == []
        assert runs() == {f"work[x={x}]": 1 for x in range(1, 5)} | {"total": 1}


class TestKernelInterrupt:
    """Interrupting the kernel mid-step cancels the step; the next make re-runs it."""

    @pytest.mark.parametrize("executor", ["sequential", "threads", "processes"])
    def test_interrupt_cancels_then_make_reruns(self, executor: str) -> None:
        """A real kernel interrupt (SIGINT) during 'slow': CANCELLED, committed, re-run."""
        Path("block").touch()
        nb = notebook(
            SETUP,
            f"""
            EXECUTOR = {executor!r}
            BLOCK, STARTED = pathlib.Path("block").resolve(), pathlib.Path("started").resolve()
            """,
            """
            @task
            def slow(env):
                log("slow")
                if BLOCK.exists():
                    STARTED.touch()
                    while True:  # until the test interrupts the kernel
                        time.sleep(0.05)
                env["pid"] = os.getpid()
            """,
            """
            # raises KeyboardInterrupt
            make(executor=EXECUTOR, on_event=NotebookProgress())
            """,
            """
            BLOCK.unlink()
            print("STATUS", json.dumps(Environment.load().get_status("slow").value))
            print("PLAN", json.dumps(reasons()))
            """,
            """
            report = make(executor=EXECUTOR, on_event=NotebookProgress())
            print("RAN", json.dumps(report.ran))
            print("HERE", json.dumps(Environment.load()["pid"] == os.getpid()))
            """,
        )
        interrupter = client(nb)

        async def stop(km: AsyncKernelManager) -> None:
            await km.interrupt_kernel()  # what Jupyter's stop button does

        def interrupt() -> None:
            assert isinstance(interrupter.km, AsyncKernelManager)
            asyncio.run(stop(interrupter.km))

        with once(Path("started"), interrupt):
            interrupter.execute()
        interrupted = nb.cells[3]
        assert [o.get("ename") for o in interrupted.outputs if o.output_type == "error"] == [
            "KeyboardInterrupt"
        ]
        assert "cancelled" in shown(interrupted)
        assert printed(nb, "STATUS") == "cancelled"
        assert printed(nb, "PLAN") == {"slow": "cancelled"}
        assert printed(nb, "RAN") == ["slow"]
        assert printed(nb, "HERE") is (executor != "processes")
        assert "1/1 finished" in shown(nb.cells[5])
        assert runs() == {"slow": 2}


@pytest.mark.dask
class TestDask:
    """A Dask run from a notebook: cell-defined steps on a local cluster, with progress."""

    def test_dask_local_cluster_from_a_notebook(self) -> None:
        """Steps of a cell run on a local Dask cluster; the progress table follows them."""
        nb = execute(
            notebook(
                SETUP,
                """
                @task(grid={"x": [1, 2, 3]})
                def square(env, x):
                    log(f"square[x={x}]")
                    env[f"sq-{x}"] = x * x
                """,
                """
                report = make(executor="dask", on_event=NotebookProgress())
                env = Environment.load()
                print("OUT", json.dumps([env[f"sq-{x}"] for x in (1, 2, 3)]))
                """,
            )
        )
        assert printed(nb, "OUT") == [1, 4, 9]
        table = shown(nb.cells[2])
        assert "3/3 finished" in table
        assert "square (3 instances)" in table
        assert runs() == {f"square[x={x}]": 1 for x in (1, 2, 3)}


class TestTutorial:
    """experiments/notebook.ipynb runs from the top, and is committed without outputs."""

    PATH = ROOT / "experiments" / "notebook.ipynb"

    def test_tutorial_notebook_runs(self) -> None:
        """Every cell of the tutorial runs without error, twice (the second run resumes)."""
        for _ in range(2):
            nb = execute(read(self.PATH))
        assert "up to date" in "\n".join(shown(cell) for cell in nb.cells)

    def test_tutorial_is_committed_without_outputs(self) -> None:
        """The committed notebook carries no outputs or execution counts."""
        nb = read(self.PATH)
        nbformat.validate(nb)
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        assert code
        assert all(cell.outputs == [] and cell.execution_count is None for cell in code)


class TestHowTo:
    """The examples of docs/how-to/notebooks.md run, in order, as the cells of a notebook."""

    PATH = ROOT / "docs" / "how-to" / "notebooks.md"

    def test_examples_run_as_cells(self) -> None:
        """Each python block is a cell: the run, the plan and the environment show as documented."""
        blocks = re.findall(r"```python\n(.*?)```", self.PATH.read_text(), re.DOTALL)
        nb = execute(notebook(*blocks))
        html = [shown(cell) for cell in nb.cells]
        assert "5 ran; 5 done" in html[1]
        assert "up to date" in html[2]
        assert "<code>best</code>" in html[3]
        assert "0 ran" in html[4]
        assert Environment.load().is_done("summarise")


class TestDefaultObserver:
    """make's default progress: a live table in a kernel, nothing elsewhere."""

    def test_none_outside_a_kernel(self) -> None:
        """In a plain interpreter (this one) there is no notebook progress."""
        assert default_observer() is None

    def test_table_in_a_kernel(self) -> None:
        """In a kernel the default observer is the notebook table."""
        nb = execute(
            notebook(
                """
                import json
                from expkit._notebook import default_observer
                print("KIND", json.dumps(type(default_observer()).__name__))
                """
            )
        )
        assert printed(nb, "KIND") == "NotebookProgress"

    def test_held_back_update_is_drawn_when_the_cell_ends(self) -> None:
        """A run that stops early (fail_fast) shows its last state, though updates were held back."""
        nb = execute(
            notebook(
                """
                from expkit import make, task
                from expkit._notebook import NotebookProgress

                @task
                def broken(env):
                    raise ValueError("no luck")

                @task
                def other(env):
                    pass
                """,
                """
                # One update an hour at most: only the cell's end can draw the failure.
                report = make(fail_fast=True, check=False, on_event=NotebookProgress(interval=3600))
                """,
            )
        )
        table = shown(nb.cells[1])
        assert "ValueError: no luck" in table
        assert "0/2 finished" not in table

    def test_make_shows_progress_by_default(self) -> None:
        """In a kernel, make without on_event shows the progress table."""
        nb = execute(notebook(SETUP, SWEEP, "make()"))
        assert "5/5 finished" in shown(nb.cells[2])


class TestMakeInARunningLoop:
    """make is plain blocking code: it runs where an event loop is already running."""

    def test_make_inside_a_coroutine(self) -> None:
        """A coroutine under asyncio.run calls make, which runs its steps."""

        @task
        def step(env: Environment) -> int:
            return 1

        async def main() -> list[str]:
            asyncio.get_running_loop()
            return make(step).ran

        assert asyncio.run(main()) == ["step"]


class _Recorded(NotebookProgress):
    """The table, kept as each update would show it instead of displayed."""

    def __init__(self, interval: float) -> None:
        super().__init__(interval)
        self.shown: list[str] = []

    def publish(self, bundle: dict[str, str]) -> None:
        self.shown.append(bundle["text/plain"])


class TestProgressTable:
    """The progress table stays small and is not redrawn for every event of a fast sweep."""

    def test_sweep_is_one_row(self) -> None:
        """A sweep of 20 instances is one row with its counts, not 20 rows."""

        @task(grid={"i": range(20)})
        def many(env: Environment, i: int) -> None:
            pass

        progress = _Recorded(interval=0)
        expkit.make(many, on_event=progress)
        last = progress.shown[-1]
        assert "20/20 finished" in last
        assert "many (20 instances)" in last
        assert "20 done" in last
        assert "many[" not in last
        assert "many (20 instances)" in progress.html()

    def test_fast_events_are_throttled(self) -> None:
        """Within one interval only the plan and the end are drawn, and no redraw stays pending."""

        @task(grid={"i": range(20)})
        def many(env: Environment, i: int) -> None:
            pass

        progress = _Recorded(interval=3600)
        expkit.make(many, on_event=progress)
        assert len(progress.shown) == 2
        assert "0/20 finished" in progress.shown[0]
        assert "20/20 finished" in progress.shown[1]
        assert progress._timer is None

    def test_failure_is_drawn_with_its_error(self) -> None:
        """A failed step and the step skipped after it show in the last drawing, error included."""

        @task
        def broken(env: Environment) -> None:
            msg = "no luck"
            raise ValueError(msg)

        @task(requires=[broken])
        def after(env: Environment) -> None:
            pass

        progress = _Recorded(interval=3600)
        report = expkit.make(after, on_event=progress, check=False)
        assert report.counts[Status.FAILED] == 1
        assert len(progress.shown) == 2
        assert "ValueError: no luck" in progress.shown[-1]
        assert "skipped" in progress.shown[-1]

    def test_a_big_dag_draws_what_needs_attention(self) -> None:
        """Past ROWS_SHOWN rows, failures are drawn first and the rest counted in one line."""
        from expkit._notebook import ROWS_SHOWN

        steps = []
        for i in range(ROWS_SHOWN + 20):

            @task(name=f"s{i:03d}")
            def step(env: Environment) -> None:
                pass

            steps.append(step)

        @task(name="late_failure")
        def late_failure(env: Environment) -> None:
            msg = "no luck"
            raise ValueError(msg)

        progress = _Recorded(interval=3600)
        expkit.make(*steps, late_failure, on_event=progress, check=False)
        last = progress.shown[-1]
        assert "late_failure" in last
        assert "ValueError: no luck" in last
        assert "s000" in last
        assert f"s{ROWS_SHOWN + 19:03d}" not in last
        assert "... and 21 more: 21 done" in last
        assert "... and 21 more: 21 done" in progress.html()

    def test_steps_never_started_say_so(self) -> None:
        """After a fail_fast stop, a step that never started is not left "waiting"."""

        @task
        def broken(env: Environment) -> None:
            msg = "no luck"
            raise ValueError(msg)

        @task
        def later(env: Environment) -> None:
            pass

        progress = _Recorded(interval=3600)
        expkit.make(broken, later, fail_fast=True, check=False, on_event=progress)
        last = progress.shown[-1]
        assert "not started: fail_fast after a failure" in last
        assert "waiting" not in last
