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
"""

from __future__ import annotations

import enum
import random
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import anyio
from anyio.abc import TaskGroup

from dag_orchestrator.context import PipelineContext, TaskError, current_task
from dag_orchestrator.dag import DAG
from dag_orchestrator.events import Event, EventBus, EventKind, Observer
from dag_orchestrator.state import RunResult, StateStore, TaskRun, TaskState
from dag_orchestrator.streams import StreamHub, UpstreamStreamError

__all__ = ["Executor", "FailurePolicy", "TaskTimeoutError"]


class FailurePolicy(enum.StrEnum):
    FAIL_FAST = "fail_fast"  # cancel everything on the first failure
    CONTINUE = "continue"  # skip only what depends on the failure


class TaskTimeoutError(TimeoutError):
    pass


def _root(exc: BaseException) -> BaseException:
    """The error a person needs: task groups wrap a task's real failure in an ExceptionGroup."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    exc = _root(exc)
    if isinstance(exc, BaseExceptionGroup):
        text = "; ".join(_describe(e) for e in exc.exceptions[:3])
        return text if len(exc.exceptions) <= 3 else f"{text} (+{len(exc.exceptions) - 3} more)"
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 2000 else text[:2000] + "... (truncated)"


class Executor:
    def __init__(
        self,
        max_concurrency: int = 8,
        *,
        kind_limits: dict[str, int] | None = None,
        policy: FailurePolicy | str = FailurePolicy.FAIL_FAST,
        observers: Iterable[Observer] = (),
        stream_buffer: int = 4,
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
        self._rng = random.Random(seed)
        self._tg: TaskGroup | None = None
        self._cancel_reason: str | None = None

    # -- public ---------------------------------------------------------------------------------
    def cancel(self, reason: str = "cancelled") -> None:
        """Stop the run: running tasks get their cancellation, nothing new starts (signal handlers)."""
        self._cancel_reason = self._cancel_reason or reason
        self._stopping = True
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def run(
        self, dag: DAG, ctx: PipelineContext | None = None, *, store: StateStore | None = None, resume: bool = False
    ) -> RunResult:
        dag.validate()
        ctx = ctx or PipelineContext()
        self._prepare(dag, ctx, store, resume)
        started = time.time()
        self._emit(EventKind.RUN_STARTED, None, data={"tasks": len(self.runs)})
        if store is not None:
            store.open()
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self._dispatch()
        finally:
            self._tg = None
            if store is not None:
                store.close()
        result = self._result(dag, ctx, started)
        self._emit(EventKind.RUN_FINISHED, None, data={"state": result.state.value})
        return result

    # -- planning -------------------------------------------------------------------------------
    def _prepare(self, dag: DAG, ctx: PipelineContext, store: StateStore | None, resume: bool) -> None:
        self.dag, self.ctx, self.store = dag, ctx, store
        self._stopping = False
        self._cancel_reason = None
        tasks = {t.name: t for t in dag}
        self.tasks = tasks
        self.runs = {name: TaskRun(name) for name in tasks}
        self._needs = {name: dag.needs_of(name) for name in tasks}
        self._dependents: dict[str, list[str]] = {name: [] for name in tasks}
        for name, needs in self._needs.items():
            for need in needs:
                self._dependents[need].append(name)
        done = self._resumable(store) if resume and store is not None else {}
        for name, value in done.items():
            run = self.runs[name]
            run.state, run.resumed = TaskState.SUCCEEDED, True
            ctx.results[name] = value
            self._emit(EventKind.TASK_RESUMED, name)
        self._unmet = {name: sum(1 for n in self._needs[name] if n not in done) for name in tasks if name not in done}
        self._users_left = {name: len(self._dependents[name]) for name in tasks}
        self._ready: deque[str] = deque(n for n in tasks if n not in done and self._unmet[n] == 0)
        self._running = 0
        self._kind_running: dict[str, int] = {}
        self._kind_waiting: dict[str, deque[str]] = {}
        self._exempt: set[str] = set()
        ctx._progress = self._on_progress if self.bus else None

    def _resumable(self, store: StateStore) -> dict[str, Any]:
        done = {n: v for n, v in store.succeeded().items() if n in self.tasks}
        changed = True
        while changed:  # a producer must stream again for any consumer that runs again
            changed = False
            for name in list(done):
                if any(c not in done and name in self.tasks[c].streams_from for c in self._dependents[name]):
                    del done[name]
                    changed = True
        return done

    # -- scheduling -----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        ready, limits = self._ready, self.kind_limits
        while ready and self._running < self.max_concurrency and not self._stopping:
            name = ready.popleft()
            kind = self.tasks[name].kind
            if limits and kind in limits:
                if self._kind_running.get(kind, 0) >= limits[kind]:
                    self._kind_waiting.setdefault(kind, deque()).append(name)
                    continue
                self._kind_running[kind] = self._kind_running.get(kind, 0) + 1
            self._running += 1
            self._start(name)

    def _start(self, name: str) -> None:
        assert self._tg is not None
        task = self.tasks[name]
        self.runs[name].state = TaskState.RUNNING
        if task.emits_stream:
            consumers = [c for c in self._dependents[name] if name in self.tasks[c].streams_from]
            consumers = [c for c in consumers if self.runs[c].state is TaskState.PENDING]
            self.ctx._hubs[name] = StreamHub(name, consumers, self.stream_buffer)
        self._tg.start_soon(self._run_task, name, name=f"task:{name}")
        if task.emits_stream:
            for consumer in self._dependents[name]:
                if name in self.tasks[consumer].streams_from:
                    self._satisfy(consumer)

    def _satisfy(self, name: str) -> None:
        """One need of ``name`` is met; start or queue it when none are left."""
        if self.runs[name].state is not TaskState.PENDING:
            return
        self._unmet[name] -= 1
        if self._unmet[name] == 0:
            if self.tasks[name].streams_from:
                if not self._stopping:
                    self._exempt.add(name)
                    self._start(name)
            else:
                self._ready.append(name)

    # -- running one task -----------------------------------------------------------------------
    async def _run_task(self, name: str) -> None:
        task, run, ctx = self.tasks[name], self.runs[name], self.ctx
        if self._stopping:  # fail-fast or a signal came between dispatch and this coroutine's start
            self._finish(name, TaskState.CANCELLED, error=self._cancel_reason or "run stopped")
            return
        current_task.set(name)
        run.started_at = time.time()
        self._emit(EventKind.TASK_STARTED, name)
        try:
            while True:
                run.attempts += 1
                try:
                    if task.timeout is None:
                        result = await task.run(ctx)
                    else:
                        try:
                            with anyio.fail_after(task.timeout):
                                result = await task.run(ctx)
                        except TimeoutError as exc:
                            raise TaskTimeoutError(f"task {name!r} timed out after {task.timeout:g}s") from exc
                except UpstreamStreamError as exc:
                    self._finish(name, TaskState.CANCELLED, error=str(exc))
                    return
                except Exception as exc:  # noqa: BLE001 - failures are recorded, not raised
                    if task.retry.should_retry(run.attempts, exc) and self._replayable(name):
                        delay = task.retry.delay(run.attempts, self._rng)
                        self._emit(EventKind.TASK_RETRYING, name, error=_describe(exc), delay=delay)
                        await anyio.sleep(delay)
                        continue
                    self._finish(name, TaskState.FAILED, error=_describe(exc), exc=exc)
                    return
                self._finish(name, TaskState.SUCCEEDED, result=result)
                return
        except anyio.get_cancelled_exc_class():
            self._finish(name, TaskState.CANCELLED, error=self._cancel_reason or "run cancelled")
            raise
        except BaseException as exc:  # a crash (KeyboardInterrupt, SystemExit...): record, then end the run
            self._finish(name, TaskState.FAILED, error=f"crash: {_describe(exc)}", exc=exc)
            raise

    def _replayable(self, name: str) -> bool:
        hubs = self.ctx._hubs
        hub = hubs.get(name)
        if hub is not None and hub.emitted:
            return False
        return not any(p in hubs and hubs[p].reader_started(name) for p in self.tasks[name].streams_from)

    def _finish(
        self,
        name: str,
        state: TaskState,
        *,
        result: Any = None,
        error: str | None = None,
        exc: BaseException | None = None,
    ) -> None:
        run, task, ctx = self.runs[name], self.tasks[name], self.ctx
        if run.state.is_terminal:
            return
        run.state = state
        run.ended_at = time.time()
        if error:
            run.error = error
            run.error_type = type(_root(exc)).__name__ if exc else state.value
        self._release_slot(name)
        if state is TaskState.SUCCEEDED:
            ctx.results[name] = result  # before the hub closes: consumers may read it at end of stream
        hub = ctx._hubs.get(name)
        if hub is not None:
            hub.close(exc, finished=state is TaskState.SUCCEEDED)
        for producer in task.streams_from:
            if producer in ctx._hubs:
                ctx._hubs[producer].close_reader(name)
        if self.store is not None and run.started_at is not None:
            self.store.record(run, result)
        if state is TaskState.SUCCEEDED:
            self._emit(EventKind.TASK_SUCCEEDED, name)
            for dependent in self._dependents[name]:
                if name not in self.tasks[dependent].streams_from:
                    self._satisfy(dependent)
            self._release_inputs(name)
        elif state is TaskState.FAILED:
            ctx.errors.append(TaskError(name, run.error_type or "", error or "", run.attempts))
            self._emit(EventKind.TASK_FAILED, name, error=error)
            self._on_failure(name)
        else:
            self._emit(EventKind.TASK_CANCELLED, name, error=error)
            if not self._stopping:
                self._on_failure(name)
        self._dispatch()

    def _release_slot(self, name: str) -> None:
        if name in self._exempt:
            self._exempt.discard(name)
            return
        self._running -= 1
        kind = self.tasks[name].kind
        if kind in self._kind_running:
            self._kind_running[kind] -= 1
            waiting = self._kind_waiting.get(kind)
            if waiting:
                self._ready.appendleft(waiting.popleft())

    def _release_inputs(self, name: str) -> None:
        if not self.release_results:
            return
        for need in self._needs[name]:
            self._users_left[need] -= 1
            if self._users_left[need] == 0:
                self.ctx.results.pop(need, None)

    def _on_failure(self, name: str) -> None:
        if self.policy is FailurePolicy.FAIL_FAST:
            self.cancel(f"fail-fast: task {name!r} failed")
            return
        stack = list(self._dependents[name])
        while stack:
            dep = stack.pop()
            run = self.runs[dep]
            if run.state is TaskState.PENDING:
                run.state = TaskState.SKIPPED
                run.error = f"skipped: upstream task {name!r} did not succeed"
                self._emit(EventKind.TASK_SKIPPED, dep, error=run.error)
                stack.extend(self._dependents[dep])

    # -- reporting ------------------------------------------------------------------------------
    def _emit(self, kind: EventKind, task: str | None, **kw: Any) -> None:
        if self.bus:
            attempt = self.runs[task].attempts if task else 0
            self.bus.emit(Event(kind, self.ctx.run_id, task, attempt, **kw))

    def _on_progress(self, task: str, data: dict[str, Any]) -> None:
        self._emit(EventKind.TASK_PROGRESS, task, data=data)

    def _result(self, dag: DAG, ctx: PipelineContext, started: float) -> RunResult:
        leftover = TaskState.CANCELLED if self._stopping else TaskState.SKIPPED
        for run in self.runs.values():
            if not run.state.is_terminal:
                run.state = leftover
                run.error = run.error or self._cancel_reason
        states = {r.state for r in self.runs.values()}
        if states <= {TaskState.SUCCEEDED}:
            overall = TaskState.SUCCEEDED
        elif self._cancel_reason and not self._cancel_reason.startswith("fail-fast"):
            overall = TaskState.CANCELLED
        else:
            overall = TaskState.FAILED
        return RunResult(
            run_id=ctx.run_id,
            dag=dag.name,
            state=overall,
            tasks=self.runs,
            started_at=started,
            ended_at=time.time(),
            results=dict(ctx.results),
            reason=self._cancel_reason,
        )
