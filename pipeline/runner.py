"""Spec -> DAG -> Executor -> run report, with signals, run directories and resume.

A run lives in ``<run_dir>/<run_id>/``: ``request.json`` (file and overrides, for resume),
``state.jsonl`` and ``results/`` (the executor's journal), ``report.json`` (written at the end,
whatever the outcome) and whatever the tasks write there (data files, Milvus Lite, embedded PostgreSQL).
SIGINT/SIGTERM cancel the executor: running tasks get their cancellation, the journal keeps what
succeeded, the report marks the rest, and ``--resume RUN_ID`` picks up from there.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import structlog

from config.settings import Settings
from dag_orchestrator.context import PipelineContext, new_run_id
from dag_orchestrator.dag import DAG
from dag_orchestrator.events import Observer
from dag_orchestrator.executor import Executor, FailurePolicy
from dag_orchestrator.locks import LockHeld, PathLock
from dag_orchestrator.state import RunResult, StateStore
from pipeline.registry import build_dag
from pipeline.spec import PipelineSpec, SpecError, load_spec
from task_components.base import Component

__all__ = ["PreparedRun", "RunDirBusy", "RunOptions", "execute", "innermost", "prepare_run", "prepare_spec"]


class RunDirBusy(SpecError):
    """Another live process holds the run directory (the daemon waits and tries again)."""


@dataclass(slots=True)
class RunOptions:
    run_dir: Path = Path("runs")
    resume: str | None = None
    max_concurrency: int | None = None
    backend: str = "local"
    scheduler: str | None = None  # Dask scheduler address; None with backend dask: a LocalCluster per run
    only: list[str] = field(default_factory=list)
    policy: FailurePolicy | None = None


@dataclass(slots=True)
class PreparedRun:
    spec: PipelineSpec
    dag: DAG
    run_id: str
    path: Path
    resume: bool
    lock: PathLock | None = None  # held from prepare until execute ends: one process per run directory


def prepare_run(file: str | Path, overrides: dict[str, Any], options: RunOptions) -> PreparedRun:
    """Everything that can be checked before a run starts; raises SpecError (exit 2)."""
    if options.resume:
        path = options.run_dir / options.resume
        request = path / "request.json"
        if not request.exists():
            raise SpecError(file, f"--resume {options.resume}: no run found at {path}")
        saved = json.loads(request.read_text())
        overrides = {**saved.get("overrides", {}), **overrides}
        run_id = options.resume
    else:
        run_id = new_run_id()
        path = options.run_dir / run_id
    return prepare_spec(load_spec(file, overrides), file, overrides, options, run_id, path)


def prepare_spec(
    spec: PipelineSpec, file: str | Path, overrides: dict[str, Any], options: RunOptions,
    run_id: str | None = None, path: Path | None = None,
) -> PreparedRun:  # fmt: skip
    """A spec built in code (the CLI's one-shot commands) gets the same checks and run directory."""
    run_id = run_id or new_run_id()
    path = path or options.run_dir / run_id
    dag = build_dag(spec, file)
    if options.only:
        try:
            dag = dag.subgraph(options.only)
        except ValueError as err:
            raise SpecError(file, str(err), field="--only") from None
    lock = _lock_run_dir(file, path, run_id)
    try:
        (path / "request.json").write_text(
            json.dumps({"file": str(file), "overrides": overrides, "run_id": run_id}, indent=2, default=str)
        )
    except OSError as exc:
        lock.release()
        raise SpecError(file, f"cannot write to the run directory {path}: {exc.strerror or exc}") from None
    return PreparedRun(spec, dag, run_id, path, bool(options.resume), lock)


def _lock_run_dir(file: str | Path, path: Path, run_id: str) -> PathLock:
    """Create the run directory and take its lock; any problem is a SpecError (exit 2) naming the path."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        return PathLock(path / ".lock", f"run directory {path}").acquire(run_id=run_id)
    except LockHeld as exc:
        raise RunDirBusy(file, f"{exc}; wait for it to finish or stop it first") from None
    except (FileExistsError, NotADirectoryError):
        raise SpecError(file, f"cannot use {path} as a run directory: a file is in the way") from None
    except OSError as exc:
        raise SpecError(file, f"cannot use {path} as a run directory: {exc.strerror or exc}") from None


async def _cancel_on_signal(executor: Executor) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            executor.cancel(f"interrupted by {signal.Signals(signum).name}")
            return


async def execute(
    prepared: PreparedRun,
    settings: Settings,
    options: RunOptions,
    observers: Iterable[Observer] = (),
    handle_signals: bool = True,
) -> RunResult:
    spec = prepared.spec
    executor = Executor(
        max_concurrency=options.max_concurrency or spec.max_concurrency or settings.pipeline.max_concurrency,
        kind_limits=spec.kind_limits,
        policy=options.policy or spec.policy,
        observers=observers,
    )
    ctx = PipelineContext(
        run_id=prepared.run_id,
        params=spec.params,
        run_dir=prepared.path,
        services={
            "settings": settings, "backend": options.backend, "scheduler": options.scheduler,
            "workers": settings.pipeline.workers, "closers": [],
        },
    )
    store = StateStore(prepared.path)
    try:
        async with anyio.create_task_group() as tg:
            if handle_signals:
                tg.start_soon(_cancel_on_signal, executor)
            try:
                result = await executor.run(prepared.dag, ctx, store=store, resume=prepared.resume)
            finally:
                tg.cancel_scope.cancel()
    except BaseException as exc:  # a crash: the report is still written, then the crash goes on
        crashed = getattr(innermost(exc), "run_result", None)
        if crashed is not None:
            write_report(prepared, crashed)
        raise
    finally:
        for close in reversed(ctx.services["closers"]):  # what tasks held for the whole run (locks, servers)
            try:
                close()
            except Exception as exc:  # noqa: BLE001 - one failing release must not keep the others held
                ctx.log.warning("releasing a run resource failed", error=f"{type(exc).__name__}: {exc}")
        if prepared.lock is not None:
            prepared.lock.release()
    write_report(prepared, result)
    return result


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
