"""Spec -> DAG -> Executor -> run report, with signals, run directories and resume.

A run lives in ``<run_dir>/<run_id>/``: ``request.json`` (file and overrides, for resume),
``state.jsonl`` and ``results/`` (the executor's journal), ``report.json`` (written at the end,
whatever the outcome) and whatever the tasks write there (data files, Milvus Lite, embedded PostgreSQL).
SIGINT/SIGTERM/SIGHUP cancel the executor: running tasks get their cancellation, the journal keeps
what succeeded, the report marks the rest, and ``--resume RUN_ID`` picks up from there. SIGHUP is
here because a closed terminal (a dropped ssh session) is an interruption, not a reason to die with
no report and an embedded server left running; unless it was ignored when the run started (``nohup``):
then the caller asked for the run to outlive its terminal, and it does.

``RunOptions.metrics_port`` serves ``/metrics`` and ``/healthz`` for the run's length (the daemon's
HTTP code, pipeline/metrics_http.py): a streaming source counts its figures there
(task_components/streaming/metrics.py). The port is bound before any task starts, so a port in use
ends the run before it consumed anything (``MetricsPortError``).
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import structlog

from config.settings import Settings
from dag_orchestrator.context import PipelineContext, RunServices, new_run_id
from dag_orchestrator.dag import DAG
from dag_orchestrator.diskspace import DiskFullError, naming_enospc
from dag_orchestrator.events import Observer
from dag_orchestrator.executor import Executor, FailurePolicy
from dag_orchestrator.locks import LockHeld, PathLock
from dag_orchestrator.state import RunResult, StateStore
from pipeline.compose import Pipeline, PipelineError
from pipeline.metrics_http import serve_http
from pipeline.registry import build_dag
from pipeline.run_events import EventLog
from pipeline.run_signals import cancel_on_signal, hangup_reaches_only_the_run, stop_signals
from pipeline.run_space import warn_if_short_of_space
from pipeline.spec import PipelineSpec, SpecError, load_spec
from task_components.base import Component
from task_components.streaming.metrics import StreamMetrics, install

__all__ = [
    "MetricsPortError",
    "NoSpaceForRun",
    "PreparedRun",
    "RunDirBusy",
    "RunOptions",
    "execute",
    "innermost",
    "prepare_pipeline",
    "prepare_run",
    "prepare_spec",
    "saved_request",
]


class RunDirBusy(SpecError):
    """Another live process holds the run directory (the daemon waits and tries again)."""


class NoSpaceForRun(SpecError):
    """The run directory's disk is full before the run starts (run directory, ``request.json``).

    Still refused before anything runs, like invalid input (the daemon dead-letters it the same way),
    but it is not invalid input: the CLI exits 1, as for a disk that fills during the run.
    """


class MetricsPortError(OSError):
    """``--metrics-port`` cannot be served (in use, not allowed): said before the run starts (exit 2)."""


@dataclass(slots=True)
class RunOptions:
    run_dir: Path = Path("runs")
    resume: str | None = None
    max_concurrency: int | None = None
    backend: str = "local"
    scheduler: str | None = None  # Dask scheduler address; None with backend dask: a LocalCluster per run
    only: list[str] = field(default_factory=list)
    policy: FailurePolicy | None = None
    metrics_port: int | None = None  # serve /metrics and /healthz on this port (0: any free one) for the run
    metrics_host: str = "127.0.0.1"


@dataclass(slots=True)
class PreparedRun:
    spec: PipelineSpec
    dag: DAG
    run_id: str
    path: Path
    resume: bool
    lock: PathLock | None = None  # held from prepare until execute ends: one process per run directory
    file: str = ""  # the pipeline file; a spec built in code (one-shot commands) names none that exists

    @property
    def resumable(self) -> bool:
        """``run FILE --resume RUN_ID`` needs the file again: a one-shot command's run cannot be resumed."""
        return Path(self.file).is_file()


def prepare_run(
    file: str | Path,
    overrides: dict[str, Any],
    options: RunOptions,
    *,
    spec: PipelineSpec | None = None,
    dag: DAG | None = None,
) -> PreparedRun:
    """Everything that can be checked before a run starts; raises SpecError (exit 2).

    ``spec`` (and ``dag``): what the caller already loaded (and built) from ``file`` with these
    overrides, e.g. the daemon, which resolves a request once and carries it: the file is then not read
    again. On resume the saved overrides are merged first; a given spec must have been loaded with them.
    """
    run_id, path, overrides = _place(file, overrides, options)
    python = PYTHON_RUN.fullmatch(str(file))
    if spec is None and python and options.resume and not Path(file).exists():
        raise SpecError(
            file,
            f"run {run_id} came from the Python pipeline {python[1]!r}: resume it from Python "
            f"with `p.run(..., resume={run_id!r})`, p being that pipeline",
        )
    if spec is None:
        spec = load_spec(file, overrides)
    return prepare_spec(spec, file, overrides, options, run_id, path, dag=dag)


def prepare_pipeline(pipeline: Pipeline, options: RunOptions, settings: Settings | None = None) -> PreparedRun:
    """A pipeline composed in Python: its own checks (``settings`` problems too, when given), then the same
    run directory, lock and ``request.json`` as a file's run. It is resumed by running it again with
    ``options.resume``: the code, not a file, is what describes it, so ``request.json`` names no file."""
    file = f"<python:{pipeline.name}>"
    dag = pipeline.build(settings)
    run_id, path, _ = _place(file, {}, options)
    if options.resume:
        saved = set(saved_request(file, path, run_id).get("tasks") or ())
        if saved and saved != {t.name for t in dag}:
            raise PipelineError(
                f"cannot resume run {run_id}: it ran tasks {sorted(saved)}, this pipeline has {sorted(t.name for t in dag)}",
                pipeline=pipeline.name,
            )
    spec = PipelineSpec.model_validate(
        {
            "name": pipeline.name,
            "description": pipeline.description,
            "params": pipeline.params,
            "policy": pipeline.policy,
            "max_concurrency": pipeline.max_concurrency,
            "kind_limits": pipeline.kind_limits,
            "tasks": pipeline.describe(),
        }
    )
    return prepare_spec(spec, file, {}, options, run_id, path, dag=dag)


def _place(file: str | Path, overrides: dict[str, Any], options: RunOptions) -> tuple[str, Path, dict[str, Any]]:
    """The run's id and directory, fresh or (``options.resume``) the saved run's, with its overrides."""
    if not options.resume:
        run_id = new_run_id()
        return run_id, options.run_dir / run_id, overrides
    path = options.run_dir / options.resume
    saved = saved_request(file, path, options.resume)
    was, now = str(saved.get("file", "")), str(file)
    from_python, to_python = PYTHON_RUN.fullmatch(was), PYTHON_RUN.fullmatch(now)
    if was != now and from_python and to_python:
        raise PipelineError(
            f"cannot resume run {options.resume}: it is a run of pipeline {from_python[1]!r}, not of {to_python[1]!r}",
            pipeline=to_python[1],
        )
    if was != now and from_python:
        raise SpecError(
            file,
            f"run {options.resume} came from the Python pipeline {from_python[1]!r}: resume "
            f"it from Python with `p.run(..., resume={options.resume!r})`, p being that "
            "pipeline",
        )
    if was != now and to_python:
        raise PipelineError(
            f"cannot resume run {options.resume}: it is a run of the file {was!r}; resume it "
            f"with `run_pipeline.py run {was} --resume {options.resume}`",
            pipeline=to_python[1],
        )
    return options.resume, path, {**saved.get("overrides", {}), **overrides}


PYTHON_RUN = re.compile(r"<python:(.*)>")  # what request.json names as the file of a pipeline composed in Python


def saved_request(file: str | Path, path: Path, run_id: str) -> dict[str, Any]:
    """A run's ``request.json`` (what resuming it needs), or a SpecError naming the run."""
    request = path / "request.json"
    if not request.exists():
        raise SpecError(file, f"--resume {run_id}: no run found at {path}")
    try:
        saved = json.loads(request.read_text())
    except (OSError, ValueError) as exc:
        raise SpecError(file, f"--resume {run_id}: cannot read {request}: {exc}") from None
    if not isinstance(saved, dict):
        raise SpecError(file, f"--resume {run_id}: {request} is not a run's request")
    return saved


def prepare_spec(
    spec: PipelineSpec,
    file: str | Path,
    overrides: dict[str, Any],
    options: RunOptions,
    run_id: str | None = None,
    path: Path | None = None,
    *,
    dag: DAG | None = None,
) -> PreparedRun:
    """A spec built in code (the CLI's one-shot commands) gets the same checks and run directory.

    ``dag``: the spec's DAG when the caller built it already (``build_dag(spec, file)``): not built twice.
    """
    run_id = run_id or new_run_id()
    path = path or options.run_dir / run_id
    dag = dag if dag is not None else build_dag(spec, file)
    if options.only:
        try:
            dag = dag.subgraph(options.only)
        except ValueError as err:
            raise SpecError(file, str(err), field="--only") from None
    lock = _lock_run_dir(file, path, run_id)
    try:
        with naming_enospc(path / "request.json"):
            request = {"file": str(file), "overrides": overrides, "run_id": run_id, "tasks": sorted(spec.tasks)}
            (path / "request.json").write_text(json.dumps(request, indent=2, default=str))
    except DiskFullError as exc:
        lock.release()
        raise NoSpaceForRun(file, f"cannot write to the run directory {path}: {exc}") from None
    except OSError as exc:
        lock.release()
        raise SpecError(file, f"cannot write to the run directory {path}: {exc.strerror or exc}") from None
    return PreparedRun(spec, dag, run_id, path, bool(options.resume), lock, str(file))


def _lock_run_dir(file: str | Path, path: Path, run_id: str) -> PathLock:
    """Create the run directory and take its lock; any problem is a SpecError (exit 2) naming the path."""
    try:
        with naming_enospc(path, "creating"):
            path.mkdir(parents=True, exist_ok=True)
            return PathLock(path / ".lock", f"run directory {path}").acquire(run_id=run_id)
    except LockHeld as exc:
        raise RunDirBusy(file, f"{exc}; wait for it to finish or stop it first") from None
    except DiskFullError as exc:
        raise NoSpaceForRun(file, f"cannot use {path} as a run directory: {exc}") from None
    except (FileExistsError, NotADirectoryError):
        raise SpecError(file, f"cannot use {path} as a run directory: a file is in the way") from None
    except OSError as exc:
        raise SpecError(file, f"cannot use {path} as a run directory: {exc.strerror or exc}") from None


async def execute(
    prepared: PreparedRun,
    settings: Settings,
    options: RunOptions,
    observers: Iterable[Observer] = (),
    handle_signals: bool | tuple[signal.Signals, ...] = True,
) -> RunResult:
    """Run a prepared run to its end and write its report. ``handle_signals``: True takes SIGINT, SIGTERM
    and SIGHUP (``stop_signals``) to stop the run cleanly; a tuple takes those signals; False none."""
    spec = prepared.spec
    ctx: PipelineContext | None = None
    signums = stop_signals() if handle_signals is True else tuple(handle_signals or ())
    try:  # everything after prepare is inside: the run directory's lock is released however this ends
        executor = Executor(
            max_concurrency=options.max_concurrency or spec.max_concurrency or settings.pipeline.max_concurrency,
            kind_limits=spec.kind_limits,
            policy=options.policy or spec.policy,
            observers=[*observers, event_log(prepared)],
        )
        ctx = PipelineContext(
            run_id=prepared.run_id,
            params=spec.params,
            run_dir=prepared.path,
            services=RunServices(settings, options.backend, options.scheduler, settings.pipeline.workers),
        )
        store = StateStore(prepared.path)
        warn_if_short_of_space(prepared.path, prepared.run_id, prepared.dag, settings)
        with hangup_reaches_only_the_run(signums):
            async with anyio.create_task_group() as tg:
                if options.metrics_port is not None:
                    await tg.start(_serve_metrics, options, ctx)
                if signums:
                    tg.start_soon(cancel_on_signal, executor, signums)
                try:
                    result = await executor.run(prepared.dag, ctx, store=store, resume=prepared.resume)
                finally:
                    tg.cancel_scope.cancel()
    except BaseException as exc:  # a crash: the report is still written, then the crash goes on
        crashed = getattr(innermost(exc), "run_result", None)
        if crashed is not None:
            _report_or_say_why(prepared, crashed)
        raise
    finally:
        if ctx is not None:
            ctx.services.close(ctx.log)  # what tasks held for the whole run (locks, servers)
        if prepared.lock is not None:
            prepared.lock.release()
    _report_or_say_why(prepared, result)
    return result


def event_log(prepared: PreparedRun) -> EventLog:
    """The run's ``events.jsonl`` (what ``serve`` shows live), opened with the DAG it runs."""
    tasks = [t.name for t in prepared.dag]
    return EventLog(prepared.path, prepared.spec.name, prepared.spec.params, tasks, dag_edges(prepared.dag))


async def _serve_metrics(options: RunOptions, ctx: PipelineContext, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    """/metrics and /healthz for the run; started once the port is bound (the URL is logged)."""
    metrics = StreamMetrics()
    install(ctx.services, metrics)
    host, port = options.metrics_host, options.metrics_port or 0

    def health() -> dict[str, Any]:
        return {**metrics.health(), "run_id": ctx.run_id}

    def bound(actual: int) -> None:
        structlog.get_logger("pipeline.runner").info("metrics listening", url=f"http://{host}:{actual}/metrics", run_id=ctx.run_id)
        task_status.started(actual)

    try:
        await serve_http(host, port, metrics, health, bound)
    except OSError as exc:
        raise MetricsPortError(f"cannot serve /metrics on {host}:{port}: {exc.strerror or exc}") from None


def _report_or_say_why(prepared: PreparedRun, result: RunResult) -> None:
    """A report that cannot be written (a full disk) is logged, named: the run's outcome stands regardless."""
    try:
        write_report(prepared, result)
    except OSError as exc:
        structlog.get_logger("pipeline.runner").error(
            "report.json not written", run_id=result.run_id, state=result.state.value, error=str(exc)
        )


def innermost(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member groups (what a task group wraps a failure in)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def summaries(dag: DAG, result: RunResult) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for t in dag:
        if isinstance(t, Component) and t.name in result.results:
            try:
                out[t.name] = t.summarize(result.results[t.name])
            except Exception as exc:  # noqa: BLE001 - a summary must never hide the run's outcome
                out[t.name] = {"summary_error": repr(exc)}
    return {k: v for k, v in out.items() if v}


def write_report(prepared: PreparedRun, result: RunResult) -> Path:
    """report.json, then report.html beside it; the page is a view, so failing to draw it changes nothing."""
    path = result.write_report(
        prepared.path / "report.json",
        extra={
            "pipeline": prepared.spec.name,
            "params": prepared.spec.params,
            "summary": summaries(prepared.dag, result),
            "edges": dag_edges(prepared.dag),
        },
    )
    try:
        from pipeline.report_html import write_html  # Jinja2 loads only when a run ends

        write_html(prepared.path)
    except Exception as exc:  # noqa: BLE001 - see docstring: the run's outcome stands
        structlog.get_logger("pipeline.runner").warning(
            "report.html not written", run_id=result.run_id, error=f"{type(exc).__name__}: {exc}"
        )
    return path


def dag_edges(dag: DAG) -> list[dict[str, Any]]:
    """The DAG's edges with a stream flag: with them a report can be rebuilt from report.json alone."""
    return [{"from": a, "to": b, "stream": a in dag.task(b).streams_from} for a, b in dag.graph.edges]
