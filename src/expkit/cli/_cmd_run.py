"""``exp run``: make the targets, showing progress; Ctrl-C leaves a resumable environment."""

import enum
import shlex
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NamedTuple

import typer

from ._common import (
    EnvOption,
    FileOption,
    QuietOption,
    ResultsOption,
    State,
    VerboseOption,
    env_exists,
    settle,
    shown_path,
)
from ._complete import complete_step

if TYPE_CHECKING:
    from expkit import Environment, RunReport

__all__ = ["ExecutorName", "ForceOption", "ParamOption", "Targets", "run"]


class ExecutorName(str, enum.Enum):
    """What runs the steps."""

    sequential = "sequential"
    threads = "threads"
    processes = "processes"
    dask = "dask"


class _Run(NamedTuple):
    """What `exp run` was asked to do, as make() takes it and as the command line said it."""

    names: list[str]
    forced: list[str]
    params: dict[str, dict[str, Any]]
    param_args: list[str]
    set_args: list[str]
    jobs: int | None
    executor: ExecutorName
    address: str | None
    fail_fast: bool


Targets = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="STEP",
        help="Steps to make, with what they need; a sweep instance as 'bench[rate=10]'. "
        "[default: every step no other step requires]",
        show_default=False,
        autocompletion=complete_step,
    ),
]
ForceOption = Annotated[
    list[str] | None,
    typer.Option(
        "--force",
        metavar="STEP",
        help="Run STEP again even if it is done (and what depends on it). Repeatable.",
        show_default=False,
        autocompletion=complete_step,
    ),
]
ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "-p",
        "--param",
        metavar="STEP.KEY=VALUE",
        help="A parameter of a step, typed as YAML reads it (-p bench.rate=10). Repeatable.",
        show_default=False,
    ),
]


def run(
    ctx: typer.Context,
    *,
    targets: Targets = None,
    new: Annotated[
        bool, typer.Option("--new", help="Start a fresh environment under the results directory.")
    ] = False,
    force: ForceOption = None,
    param: ParamOption = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "-j",
            "--jobs",
            min=1,
            metavar="N",
            help="How many steps may run at once. [default: the executor's width]",
            show_default=False,
        ),
    ] = None,
    executor: Annotated[
        ExecutorName, typer.Option("--executor", help="What runs the steps.")
    ] = ExecutorName.sequential,
    address: Annotated[
        str | None,
        typer.Option(
            "--address", metavar="A", help="The Dask scheduler's address (--executor dask)."
        ),
    ] = None,
    resume_from: Annotated[
        Path | None,
        typer.Option(
            "--resume-from",
            metavar="ENV",
            help="Start a new environment holding the done steps of ENV, and go on from there.",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="A YAML file, read into env['config'] (again at every run).",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY.PATH=VALUE",
            help="Override a key of the configuration (YAML-typed; may add keys). Repeatable.",
            show_default=False,
        ),
    ] = None,
    fail_fast: Annotated[
        bool, typer.Option("--fail-fast", help="Start no step after a failure.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would run and why, and run nothing.")
    ] = False,
    file: FileOption = None,
    env: EnvOption = None,
    results: ResultsOption = None,
    verbose: VerboseOption = 0,
    quiet: QuietOption = False,
) -> None:
    """Make the targets: run what is failed, interrupted or missing, skip what is done.

    Creates an environment when there is none. Exit status: 0 when every
    step is done, 1 when a step failed, 2 for a usage or configuration
    error, 130 when interrupted (Ctrl-C), with the command that resumes.
    """
    from expkit._config import load_config
    from expkit._graph import resolve_step
    from expkit._task import registry

    from ._experiment import load_experiment
    from ._values import apply_overrides, parse_overrides, parse_params

    state = settle(ctx, file=file, env=env, results=results, verbose=verbose, quiet=quiet)
    load_experiment(state.file)
    asked = _Run(
        names=list(targets or ()),
        forced=list(force or ()),
        params=parse_params(param or ()),
        param_args=list(param or ()),
        set_args=list(set_ or ()),
        jobs=jobs,
        executor=executor,
        address=address,
        fail_fast=fail_fast,
    )
    overrides = parse_overrides(asked.set_args)
    # Everything given is checked before an environment is made or changed.
    config_data = load_config(config.absolute()) if config is not None else None
    apply_overrides(config_data or {}, overrides)
    for name in [*asked.names, *asked.forced, *asked.params]:
        resolve_step(name, registry)
    if dry_run:
        from ._cmd_plan import show_plan

        show_plan(state, asked.names, asked.forced, asked.params, as_json=False, new=new)
        return
    environment = _environment(state, new=new, resume_from=resume_from)
    _configure(environment, config, config_data, overrides, asked.set_args)
    start = time.monotonic()
    report = _make(state, environment, asked)
    raise typer.Exit(_outcome(report, state, time.monotonic() - start))


def _environment(state: State, *, new: bool, resume_from: Path | None) -> "Environment":
    """The environment of the run; a new one when asked, or when there is none."""
    from expkit import Environment
    from expkit._paths import CURRENT_LINK, default_root

    def create() -> "Environment":
        if state.env is None:
            return Environment.create(default_root())
        return Environment.create(state.env.parent, state.env.name)

    if resume_from is not None:
        earlier = Environment.load(resume_from)
        fresh = create()
        fresh.merge_done_tasks(earlier)
        fresh.dump()
        return fresh
    if new:
        return create()
    where = state.env if state.env is not None else Path(CURRENT_LINK)
    return Environment.load(where) if env_exists(where) else create()


def _configure(
    env: "Environment",
    config: Path | None,
    config_data: dict[str, Any] | None,
    overrides: list[tuple[list[str], Any]],
    given: list[str],
) -> None:
    """``env["config"]``: the configuration file read again, then this run's ``--set``.

    A ``--set`` lasts one run, like the file's content: each run rebuilds the
    configuration from the file (or from nothing) and its own overrides, and
    records them as ``env["config_overrides"]``. An environment whose
    configuration never came from ``exp run`` is left alone.
    """
    from expkit._config import load_config

    from ._values import apply_overrides

    if config is not None:
        env["config_file"] = str(config.absolute())
        base = config_data or {}
    elif "config_file" in env:
        base = load_config(Path(env["config_file"]))  # read again at every run
    elif overrides or "config_overrides" in env:
        base = {}  # --set works without a file: the configuration starts empty
    else:
        return
    env["config"] = apply_overrides(base, overrides)
    env["config_overrides"] = list(given)
    env.dump()


def _resume_command(state: State, asked: _Run, env: "Environment") -> str:
    """The ``exp run`` command that goes on with this run, in this environment."""
    words = ["exp"]
    if state.file:
        words += ["-f", state.file]
    words += ["run", *asked.names]
    for name in asked.forced:
        words += ["--force", name]
    for item in asked.param_args:
        words += ["-p", item]
    for item in asked.set_args:
        words += ["--set", item]
    if asked.jobs is not None:
        words += ["-j", str(asked.jobs)]
    if asked.executor is not ExecutorName.sequential:
        words += ["--executor", asked.executor.value]
    if asked.address:
        words += ["--address", asked.address]
    if asked.fail_fast:
        words.append("--fail-fast")
    words += ["--env", shown_path(env.resultdir)]
    return shlex.join(words)


def _make(state: State, env: "Environment", asked: _Run) -> "RunReport":
    from expkit import make

    from ._progress import display

    if not state.quiet:
        print(f"environment: {shown_path(env.resultdir)}", flush=True)  # noqa: T201
    # Worker processes print to the terminal themselves: no live area they could break.
    live = asked.executor in (ExecutorName.sequential, ExecutorName.threads)
    with display(quiet=state.quiet, verbose=state.verbose, live=live) as observer:
        return make(
            *asked.names,
            env=env,
            jobs=asked.jobs,
            executor=asked.executor.value,
            address=asked.address,
            fail_fast=asked.fail_fast,
            force=asked.forced,
            params=asked.params,
            check=False,
            resume_hint=_resume_command(state, asked, env),
            on_event=observer,
        )


def _outcome(report: "RunReport", state: State, elapsed: float) -> int:
    """Print how the run went; the exit status (0: all done, 1: a step is not)."""
    from ._progress import seconds

    print(f"{report.summary()} in {seconds(elapsed)}", flush=True)  # noqa: T201
    if report.ok:
        return 0
    where = f" --env {shlex.quote(str(state.env))}" if state.env is not None else ""
    for outcome in report:
        if outcome.ran and outcome.error is not None and outcome.status.value != "done":
            print(  # noqa: T201
                f"{outcome.status.value}: {outcome.name}: {outcome.error.summary()} "
                f"— its output: exp log {shlex.quote(outcome.name)}{where}",
                flush=True,
            )
    if report.resume and not state.quiet:
        print(f"resume with: {report.resume}", flush=True)  # noqa: T201
    return 1
