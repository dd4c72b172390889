"""The anyio executor: run a validated DAG, each task as soon as its inputs are ready.

Design choices:

* A ready queue with per-task counters of unmet needs, not a task per node waiting on events. When a
  task ends, its own coroutine decrements its dependents' counters and dispatches what became ready,
  so the scheduler never polls and nothing is spawned before it can run. This is what keeps the
  per-task overhead below a naive "one waiting coroutine per node" loop.
* Concurrency is a counter checked at dispatch (global ``max_concurrency`` plus per-``kind`` limits).
  Stream consumers are exempt: a producer cannot progress until its consumers read, so they start
  together with it and count against no limit (they would otherwise deadlock a limit of 1).
* Every task runs in its own cancel scope inside one task group. Fail-fast cancels the group; the
  continue policy marks exactly the descendants of a failure SKIPPED; a signal calls ``cancel()``.
  Cancellation is never swallowed: a cancelled task is recorded as CANCELLED and the exception goes on.
* ``Exception`` is retried per the task's RetryPolicy; any other BaseException is a crash that ends
  the run (Prefect's split). A stream producer is not retried once it has emitted (its consumers
  would see chunks twice), nor a consumer once it has read (the chunks it read are gone).
* State: each terminal transition is appended to the run's StateStore, so an interrupted run resumes
  from what succeeded. A succeeded stream producer is re-run if any of its consumers has to run again,
  because a stream cannot be replayed from the journal (generation is deterministic, so it is identical).
  Results are pickled in a worker thread, never on the event loop.
* Everything that changes while a DAG runs lives in one ``_Scheduler`` per ``run()`` call, not on the
  Executor, so one Executor can run several DAGs at once; ``cancel()`` stops all of them. Why a run
  stopped is an enum, never parsed back out of a message.
* A timeout is the task's own deadline scope expiring; a ``TimeoutError`` the task raises itself (a
  socket, a client library) is that task's error like any other.
* ``SequentialExecutor`` runs one task at a time in topological order (streams buffer fully, consumers
  run after their producer): the same results, easy to step through in a debugger (Dask's get_sync).
  A producer that declares ``needs_concurrent_consumers`` (it waits for its consumers while it runs)
  is refused there with a clear error instead of waiting for ever.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable

from dag_orchestrator.context import PipelineContext
from dag_orchestrator.dag import DAG, DAGValidationError
from dag_orchestrator.events import EventBus, Observer
from dag_orchestrator.scheduler import FailurePolicy, StopReason, TaskTimeoutError, _Scheduler
from dag_orchestrator.state import RunResult, StateStore

__all__ = ["Executor", "FailurePolicy", "SequentialExecutor", "StopReason", "TaskTimeoutError"]


class Executor:
    """Runs DAGs; holds only configuration (limits, policy, observers). Per-run state is a _Scheduler."""

    sequential = False

    def __init__(
        self,
        max_concurrency: int = 8,
        *,
        kind_limits: dict[str, int] | None = None,
        policy: FailurePolicy | str = FailurePolicy.FAIL_FAST,
        observers: Iterable[Observer] = (),
        stream_buffer: float = 4,
        release_results: bool = False,
        seed: int | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.max_concurrency = max_concurrency
        self.kind_limits = dict(kind_limits or {})
        self.policy = FailurePolicy(policy)
        self.bus = EventBus(list(observers))
        self.stream_buffer = stream_buffer
        self.release_results = release_results
        self.rng = random.Random(seed)
        self._active: set[_Scheduler] = set()

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop every run in flight: running tasks get their cancellation, nothing new starts."""
        for scheduler in list(self._active):
            scheduler.cancel(reason)

    async def run(
        self, dag: DAG, ctx: PipelineContext | None = None, *, store: StateStore | None = None, resume: bool = False
    ) -> RunResult:
        """Run ``dag`` to the end. A crash (a BaseException from a task) still ends with RUN_FINISHED;
        the exception is re-raised carrying the run's result as ``run_result``."""
        dag.validate()
        scheduler = _Scheduler(self, dag, ctx or PipelineContext(), store)
        self._active.add(scheduler)
        try:
            return await scheduler.run(resume)
        finally:
            self._active.discard(scheduler)


class SequentialExecutor(Executor):
    """One task at a time, in topological order; streams are buffered whole. For debugging only:
    results equal the concurrent executor's, memory does not stay bounded."""

    sequential = True

    def __init__(
        self, *, policy: FailurePolicy | str = FailurePolicy.FAIL_FAST, observers: Iterable[Observer] = (), seed: int | None = None
    ) -> None:
        super().__init__(1, policy=policy, observers=observers, stream_buffer=math.inf, seed=seed)

    async def run(
        self, dag: DAG, ctx: PipelineContext | None = None, *, store: StateStore | None = None, resume: bool = False
    ) -> RunResult:
        """Refuse a producer that waits for its stream's consumers while it runs (a streaming source waiting
        for acknowledgements): here they start only after it ended, so it would wait for ever."""
        for t in dag:
            if getattr(t, "needs_concurrent_consumers", False) and any(t.name in dag.task(c).streams_from for c in dag.downstream(t.name)):
                raise DAGValidationError(
                    f"task {t.name!r} waits for the tasks reading its stream while it runs, and the "
                    "SequentialExecutor starts them only after it ended: run it with Executor",
                    task=t.name,
                )
        return await super().run(dag, ctx, store=store, resume=resume)
