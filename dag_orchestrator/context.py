"""PipelineContext: the one object every task receives.

One context serves the whole run; which task is calling is known from a context variable the
executor sets in each task's own anyio task, so ``ctx.emit`` and ``ctx.stream`` need no task
argument and the structlog logger is bound with ``run_id``/``task``/``correlation_id`` for free.
Arguments are keyword-only (a context is built in many places; positions would drift). ``hubs`` and
``on_progress`` are the executor's public hooks: it registers each producer's stream hub there and
receives ``ctx.progress(...)`` reports through the callback. ``services`` is what the run lends its
tasks (``RunServices``): typed, so a misspelt key is a type error rather than a None at run time.
"""

from __future__ import annotations

import contextvars
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from dag_orchestrator.streams import StreamHub, StreamReader

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = ["PipelineContext", "RunServices", "TaskError", "current_task"]

current_task: contextvars.ContextVar[str | None] = contextvars.ContextVar("current_task", default=None)


@dataclass(slots=True)
class TaskError:
    task: str
    error_type: str
    message: str
    attempt: int


@dataclass(slots=True)
class RunServices:
    """What a run lends its tasks: the configuration, where CPU work runs, and what to release at its end.

    ``closers`` run in reverse order when the run ends, however it ends (the runner calls ``close``):
    a component that holds something for the whole run (a collection lock, a server) registers its
    release with ``on_close``. ``scratch`` is per-run state a component keeps between attempts (the
    task objects themselves stay immutable, so a resumed or repeated run starts clean).
    """

    settings_given: Settings | None = None  # None: read from the environment when first asked for
    backend: str = "local"  # "local" or "dask": where CPU-bound chunks run
    scheduler: str | None = None  # Dask scheduler address; None with backend dask: a LocalCluster per run
    workers: int | None = None  # CPU worker processes; None: one per core
    closers: list[Callable[[], None]] = field(default_factory=list)
    scratch: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        if self.settings_given is None:
            from config.settings import Settings  # only when a task asks: plain DAGs need no configuration

            self.settings_given = Settings()
        return self.settings_given

    def on_close(self, release: Callable[[], None]) -> None:
        self.closers.append(release)

    def close(self, log: Any) -> None:
        """Release in reverse order; one failing release does not keep the others held."""
        while self.closers:
            release = self.closers.pop()
            try:
                release()
            except Exception as exc:  # noqa: BLE001 - logged; the others still run
                log.warning("releasing a run resource failed", error=f"{type(exc).__name__}: {exc}")


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


class PipelineContext:
    def __init__(
        self,
        *,
        run_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        run_dir: Path | None = None,
        correlation_id: str | None = None,
        services: RunServices | None = None,
    ) -> None:
        self.run_id = run_id or new_run_id()
        self.params: dict[str, Any] = dict(params or {})
        self.run_dir = Path(run_dir) if run_dir else None
        self.correlation_id = correlation_id or self.run_id
        self.services = services if services is not None else RunServices()
        self.results: dict[str, Any] = {}
        self.metrics: dict[str, dict[str, float]] = defaultdict(dict)
        self.errors: list[TaskError] = []
        self.hubs: dict[str, StreamHub] = {}  # producer name -> its stream hub, set by the executor
        self.on_progress: Callable[[str, dict[str, Any]], None] | None = None  # set by the executor

    # -- identity -------------------------------------------------------------------------------
    @property
    def task_name(self) -> str:
        name = current_task.get()
        if name is None:
            raise RuntimeError("this context method is only available inside a running task")
        return name

    @property
    def log(self) -> Any:
        return structlog.get_logger("task").bind(run_id=self.run_id, task=current_task.get(), correlation_id=self.correlation_id)

    # -- data flow ------------------------------------------------------------------------------
    def result(self, name: str) -> Any:
        try:
            return self.results[name]
        except KeyError:
            raise KeyError(
                f"task {current_task.get()!r} asked for the result of {name!r}, which has none yet (is {name!r} in its needs?)"
            ) from None

    async def emit(self, chunk: Any) -> None:
        """Send one chunk to every task streaming from the current task (waits if they lag)."""
        name = self.task_name
        hub = self.hubs.get(name)
        if hub is None:
            raise RuntimeError(f"task {name!r} emits a stream but was not declared with emits_stream=True")
        await hub.emit(chunk)

    def stream(self, producer: str) -> StreamReader:
        hub = self.hubs.get(producer)
        if hub is None:
            raise LookupError(f"task {self.task_name!r} reads a stream from {producer!r}, which emits none")
        return hub.reader(self.task_name)

    def has_stream_consumers(self) -> bool:
        """Producers may skip building chunks nobody reads (e.g. when resumed downstream)."""
        hub = self.hubs.get(self.task_name)
        return hub is not None and bool(hub.consumers)

    # -- observability --------------------------------------------------------------------------
    def metric(self, key: str, value: float) -> None:
        self.metrics[self.task_name][key] = value

    def progress(self, **data: Any) -> None:
        """Report progress (e.g. ``done=rows, total=total_rows``) to observers such as the progress bar."""
        if self.on_progress is not None:
            self.on_progress(self.task_name, data)
