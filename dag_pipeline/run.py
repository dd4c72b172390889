"""Running a composed pipeline from Python: what ``run-pipeline run`` gives, as a value.

The run goes through the CLI's own runner (``pipeline.runner``): a run directory with ``request.json``,
the state journal and ``report.json``/``report.html``, the run directory's lock, resume by run id,
signals that stop the run cleanly (when running in the main thread), and the run's closers (collection
locks, embedded servers) released however it ends. Nothing here re-implements any of it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from config import get_settings
from config.settings import Settings
from dag_orchestrator.backends import BACKENDS
from dag_orchestrator.events import Observer
from dag_orchestrator.executor import FailurePolicy
from dag_orchestrator.state import RunResult, TaskState
from dag_pipeline.signals import restoring_signals, unclaimed_signals
from pipeline.compose import Pipeline as _Composed
from pipeline.compose import PipelineError, Step
from pipeline.run_signals import stop_signals
from pipeline.runner import RunOptions, execute, prepare_pipeline, summaries

__all__ = ["Pipeline", "PipelineRun"]


@dataclass(frozen=True, slots=True)
class PipelineRun:
    """One finished run: its result, where it lives, and the summary the CLI prints."""

    result: RunResult
    path: Path  # the run directory
    summary: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.result.run_id

    @property
    def ok(self) -> bool:
        return self.result.ok

    @property
    def state(self) -> TaskState:
        return self.result.state

    @property
    def report(self) -> Path:
        return self.path / "report.json"

    def __getitem__(self, step: Step | str) -> Any:
        """A step's result (what its component returned), by handle or name."""
        name = step.name if isinstance(step, Step) else step
        if name not in self.result.results:
            state = self.result.tasks[name].state.value if name in self.result.tasks else "not in this pipeline"
            raise KeyError(f"step {name!r} has no result ({state})")
        return self.result.results[name]


def _not_in_a_worker_bootstrap() -> None:
    """CPU work runs in worker processes that import the caller's script again (forkserver/spawn): a script
    that runs its pipeline at import time would start one run per worker. Refused, named, like
    multiprocessing's own check (``_inheriting`` is the flag it reads for the same purpose)."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(
            "Pipeline.run() while a worker process imports the main script: put the run under "
            "`if __name__ == '__main__':` (worker processes import the script again)"
        )


class Pipeline(_Composed):
    """Compose with ``step()``, check with ``validate()``, run with ``run()`` (or ``await run_async()``)."""

    def run(
        self,
        run_dir: str | Path | None = None,
        *,
        resume: str | None = None,
        settings: Settings | None = None,
        max_concurrency: int | None = None,
        backend: str | None = None,
        scheduler: str | None = None,
        only: Sequence[str] = (),
        policy: FailurePolicy | str | None = None,
        observers: Iterable[Observer] = (),
        handle_signals: bool | None = None,
    ) -> PipelineRun:
        """Run to the end and return the run (a failed run is returned, ``ok`` False; resume it with
        ``resume=run.run_id``). Inside an event loop (a notebook, an async app), ``await run_async()``."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("Pipeline.run() is called inside an event loop: use `await pipeline.run_async(...)`")
        _not_in_a_worker_bootstrap()
        call = partial(
            self.run_async,
            run_dir,
            resume=resume,
            settings=settings,
            max_concurrency=max_concurrency,
            backend=backend,
            scheduler=scheduler,
            only=only,
            policy=policy,
            observers=observers,
            handle_signals=handle_signals,
        )
        return anyio.run(call)

    async def run_async(
        self,
        run_dir: str | Path | None = None,
        *,
        resume: str | None = None,
        settings: Settings | None = None,
        max_concurrency: int | None = None,
        backend: str | None = None,
        scheduler: str | None = None,
        only: Sequence[str] = (),
        policy: FailurePolicy | str | None = None,
        observers: Iterable[Observer] = (),
        handle_signals: bool | None = None,
    ) -> PipelineRun:
        """``run()`` in the caller's event loop. Settings default to the environment (``PIPELINE__*``...),
        as for the CLI; a problem found before the run starts raises PipelineError.

        ``handle_signals``: None (default) stops the run cleanly on SIGINT, SIGTERM or SIGHUP, but only
        on those the application does not handle itself and only in the main thread; True takes all
        three for the run, False none. Either way each handler is what it was before once the run
        ends. A run stopped by SIGINT (Ctrl-C) raises KeyboardInterrupt after its report is written."""
        _not_in_a_worker_bootstrap()
        settings = settings or get_settings()
        if max_concurrency is not None and (
            isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1
        ):
            raise PipelineError(
                f"max_concurrency is a whole number >= 1, got {max_concurrency!r}", pipeline=self.name, field="max_concurrency"
            )
        try:
            run_policy = FailurePolicy(policy) if policy is not None else None
        except ValueError:
            known = ", ".join(repr(p.value) for p in FailurePolicy)
            raise PipelineError(f"policy is one of {known}, got {policy!r}", pipeline=self.name, field="policy") from None
        if backend is not None and backend not in BACKENDS:
            raise PipelineError(f"backend is one of {', '.join(BACKENDS)}, got {backend!r}", pipeline=self.name, field="backend")
        options = RunOptions(
            run_dir=Path(run_dir) if run_dir is not None else settings.pipeline.run_dir,
            resume=resume,
            max_concurrency=max_concurrency,
            backend=backend or settings.pipeline.backend,
            scheduler=scheduler or settings.pipeline.scheduler,
            only=list(only),
            policy=run_policy,
        )
        main = threading.current_thread() is threading.main_thread()  # handlers exist only there
        signums = () if not main or handle_signals is False else stop_signals()
        if handle_signals is None:
            signums = unclaimed_signals(signums)
        prepared = prepare_pipeline(self, options, settings)
        with restoring_signals(signums):
            result = await execute(prepared, settings, options, observers=observers, handle_signals=signums)
        if result.state is TaskState.CANCELLED and result.reason == f"interrupted by {signal.SIGINT.name}":
            raise KeyboardInterrupt(f"run {result.run_id} interrupted; its report is {prepared.path / 'report.json'}")
        return PipelineRun(result, prepared.path, summaries(prepared.dag, result))
