"""The state of one run of one DAG, and how it moves: the executor's working half.

``Executor`` (executor.py) holds configuration and starts one ``_Scheduler`` per ``run()``, handing
itself over as the ``RunConfig`` it reads (a protocol: this module never imports the executor); everything
that changes while that DAG runs (counters of unmet needs, the ready queue, running and per-kind counts,
the task group, why the run stopped) lives here, so runs never share state. The design is explained in
executor.py's docstring.
"""

from __future__ import annotations

import enum
import random
import time
from collections import deque
from pathlib import Path
from typing import Any, Protocol

import anyio
from anyio.abc import TaskGroup

from dag_orchestrator.context import PipelineContext, TaskError, current_task
from dag_orchestrator.dag import DAG
from dag_orchestrator.diskspace import explain
from dag_orchestrator.events import Event, EventBus, EventKind
from dag_orchestrator.state import RunResult, StateStore, TaskRun, TaskState
from dag_orchestrator.streams import StreamHub, UpstreamStreamError
from dag_orchestrator.task import Task

__all__ = ["FailurePolicy", "RunConfig", "StopReason", "TaskTimeoutError"]


class FailurePolicy(enum.StrEnum):
    FAIL_FAST = "fail_fast"  # cancel everything on the first failure
    CONTINUE = "continue"  # skip only what depends on the failure


class StopReason(enum.Enum):
    """Why a run stopped starting tasks: decides the run's overall state."""

    NONE = "none"
    FAIL_FAST = "fail_fast"  # a task failed under fail-fast: the run FAILED
    CANCELLED = "cancelled"  # cancel() (a signal, a caller): the run is CANCELLED
    CRASHED = "crashed"  # a task raised a BaseException that is not an Exception: FAILED, then re-raised


class TaskTimeoutError(TimeoutError):
    pass


class RunConfig(Protocol):
    """What a run reads of its executor: limits, policy, observers (the Executor is one)."""

    @property
    def sequential(self) -> bool: ...
    @property
    def max_concurrency(self) -> int: ...
    @property
    def kind_limits(self) -> dict[str, int]: ...
    @property
    def policy(self) -> FailurePolicy: ...
    @property
    def bus(self) -> EventBus: ...
    @property
    def stream_buffer(self) -> float: ...
    @property
    def release_results(self) -> bool: ...
    @property
    def rng(self) -> random.Random: ...


def _root(exc: BaseException) -> BaseException:
    """The error a person needs: task groups wrap a task's real failure in an ExceptionGroup."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException, where: Path | None = None) -> str:
    """``where`` (the run directory) is the place a disk-full error names when the error names no file."""
    exc = _root(exc)
    if isinstance(exc, BaseExceptionGroup):
        text = "; ".join(_describe(e, where) for e in exc.exceptions[:3])
        return text if len(exc.exceptions) <= 3 else f"{text} (+{len(exc.exceptions) - 3} more)"
    text = f"{type(exc).__name__}: {exc}"
    disk = explain(exc, where)
    if disk:
        text = f"{disk} ({text})"
    return text if len(text) <= 2000 else text[:2000] + "... (truncated)"


def _end_attempt(run: TaskRun, begun: float) -> None:
    """Close the current attempt's span once (a cancellation may arrive after it was already closed)."""
    if len(run.attempt_times) < run.attempts:
        run.attempt_times += ((begun, time.time()),)


class _Scheduler:
    """The state of one run of one DAG: counters, queues, the task group, why it stopped."""

    def __init__(self, executor: RunConfig, dag: DAG, ctx: PipelineContext, store: StateStore | None) -> None:
        self.ex, self.dag, self.ctx, self.store = executor, dag, ctx, store
        self.tasks: dict[str, Task] = {t.name: t for t in dag}
        self.runs = {name: TaskRun(name) for name in self.tasks}
        self.needs = {name: dag.needs_of(name) for name in self.tasks}
        dependents: dict[str, list[str]] = {}
        for name, needs in self.needs.items():
            for need in needs:
                dependents.setdefault(need, []).append(name)
        # Tuples (the empty one is shared): the collector drops tuples of strings from its lists, so a
        # 100,000-task DAG does not leave 100,000 lists for every full collection to walk.
        self.dependents: dict[str, tuple[str, ...]] = {n: tuple(dependents.get(n, ())) for n in self.tasks}
        self.tg: TaskGroup | None = None
        self.stop = StopReason.NONE
        self.stop_reason: str | None = None
        self.running = 0
        self.kind_running: dict[str, int] = {}
        self.kind_waiting: dict[str, deque[str]] = {}
        self.exempt: set[str] = set()
        self.unmet: dict[str, int] = {}
        self.users_left: dict[str, int] = {}
        self.ready: deque[str] = deque()

    @property
    def stopping(self) -> bool:
        return self.stop is not StopReason.NONE

    def cancel(self, reason: str, why: StopReason = StopReason.CANCELLED) -> None:
        if not self.stopping:
            self.stop, self.stop_reason = why, reason
        if self.tg is not None:
            self.tg.cancel_scope.cancel()

    # -- the run ----------------------------------------------------------------------------------
    async def run(self, resume: bool) -> RunResult:
        started = time.time()
        self._plan(resume)
        self._emit(EventKind.RUN_STARTED, None, data={"tasks": len(self.runs)})
        if self.store is not None:
            self.store.open()
        crash: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                self.tg = tg
                self._dispatch()
        except BaseException as exc:  # noqa: BLE001 - recorded in the result, then re-raised below
            crash = exc
            if isinstance(_root(exc), anyio.get_cancelled_exc_class()):  # cancelled from outside the run
                self.stop, self.stop_reason = StopReason.CANCELLED, self.stop_reason or "cancelled by the caller"
            else:
                self.stop = StopReason.CRASHED
                self.stop_reason = self.stop_reason or f"crash: {_describe(exc)}"
        finally:
            self.tg = None
            if self.store is not None:
                try:
                    self.store.close()
                except Exception as exc:  # noqa: BLE001 - the journal's last flush: never hides the first crash
                    if crash is None:
                        crash, self.stop = exc, StopReason.CRASHED
                        self.stop_reason = self.stop_reason or f"crash: {_describe(exc)}"
        result = self._result(started)
        self._emit(EventKind.RUN_FINISHED, None, data={"state": result.state.value})
        if crash is not None:
            crash = _root(crash)  # the crash itself, not anyio's one-member group around it
            try:
                crash.run_result = result  # type: ignore[attr-defined]  # carried on any exception, see executor.run
            except AttributeError:
                pass
            raise crash
        return result

    def _plan(self, resume: bool) -> None:
        ctx = self.ctx
        done = self._resumable() if resume and self.store is not None else {}
        for name, value in done.items():
            run = self.runs[name]
            run.state, run.resumed = TaskState.SUCCEEDED, True
            ctx.results[name] = value
            self._emit(EventKind.TASK_RESUMED, name)
        names = list(self.tasks)  # topological order
        self.unmet = {n: sum(1 for d in self.needs[n] if d not in done) for n in names if n not in done}
        self.users_left = {n: len(self.dependents[n]) for n in names}
        self.ready = deque(n for n in names if n not in done and self.unmet[n] == 0)
        now = time.time()
        for n in self.ready:
            self.runs[n].ready_at = now
        ctx.on_progress = self._on_progress if self.ex.bus else None

    def _resumable(self) -> dict[str, Any]:
        assert self.store is not None
        done = {n: v for n, v in self.store.succeeded().items() if n in self.tasks}
        changed = True
        while changed:  # a producer must stream again for any consumer that runs again (unless it replays)
            changed = False
            for name in list(done):
                again = [c for c in self.dependents[name] if c not in done and self._streams(name, c)]
                if any(not getattr(self.tasks[c], "stream_replay", False) for c in again):
                    del done[name]
                    changed = True
        return done

    def _streams(self, producer: str, consumer: str) -> bool:
        return producer in self.tasks[consumer].streams_from

    # -- scheduling -------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        ready, limits = self.ready, self.ex.kind_limits
        while ready and self.running < self.ex.max_concurrency and not self.stopping:
            name = ready.popleft()
            kind = self.tasks[name].kind
            if limits and kind in limits:
                if self.kind_running.get(kind, 0) >= limits[kind]:
                    self.kind_waiting.setdefault(kind, deque()).append(name)
                    continue
                self.kind_running[kind] = self.kind_running.get(kind, 0) + 1
            self.running += 1
            self._start(name)

    def _start(self, name: str) -> None:
        assert self.tg is not None
        task = self.tasks[name]
        self.runs[name].state = TaskState.RUNNING
        consumers = [c for c in self.dependents[name] if self._streams(name, c)] if task.emits_stream else []
        if task.emits_stream:
            pending = [c for c in consumers if self.runs[c].state is TaskState.PENDING]
            spill = {c for c in pending if getattr(self.tasks[c], "stream_spill", False)}
            spill_dir = self.ctx.run_dir / "spill" if self.ctx.run_dir is not None else None
            hub = self.ctx.hubs[name] = StreamHub(name, pending, self.ex.stream_buffer, spill, spill_dir)
            hub.dropped = [c for c in consumers if self.runs[c].state is TaskState.SKIPPED]
        self.tg.start_soon(self._run_task, name, name=f"task:{name}")
        if not self.ex.sequential:  # consumers start with their producer (sequential: after it)
            for consumer in consumers:
                self._satisfy(consumer)

    def _satisfy(self, name: str) -> None:
        """One need of ``name`` is met; start or queue it when none are left."""
        if self.runs[name].state is not TaskState.PENDING:
            return
        self.unmet[name] -= 1
        if self.unmet[name] == 0:
            self.runs[name].ready_at = time.time()
            if self.tasks[name].streams_from and not self.ex.sequential:
                if not self.stopping:
                    self.exempt.add(name)
                    self._start(name)
            else:
                self.ready.append(name)

    # -- running one task -------------------------------------------------------------------------
    async def _attempt(self, task: Task) -> Any:
        if task.timeout is None:
            return await task.run(self.ctx)
        with anyio.CancelScope(deadline=anyio.current_time() + task.timeout) as scope:
            return await task.run(self.ctx)
        if scope.cancelled_caught:  # our deadline, not a TimeoutError of the task's own
            raise TaskTimeoutError(f"task {task.name!r} timed out after {task.timeout:g}s")
        raise RuntimeError(f"task {task.name!r} was cancelled by its deadline scope")  # not reached

    async def _run_task(self, name: str) -> None:
        task, run = self.tasks[name], self.runs[name]
        if self.stopping:  # fail-fast or a signal came between dispatch and this coroutine's start
            self._finish(name, TaskState.CANCELLED, error=self.stop_reason or "run stopped")
            return
        current_task.set(name)
        run.started_at = begun = time.time()
        self._emit(EventKind.TASK_STARTED, name)
        try:
            while True:
                run.attempts += 1
                begun = time.time()
                try:
                    result = await self._attempt(task)
                except Exception as exc:  # noqa: BLE001 - failures are recorded, not raised
                    _end_attempt(run, begun)
                    if isinstance(_root(exc), UpstreamStreamError):  # bare, or alone in the task's own task group
                        self._finish(name, TaskState.CANCELLED, error=str(_root(exc)))
                        return
                    if task.retry.should_retry(run.attempts, exc) and self._replayable(name):
                        delay = task.retry.delay(run.attempts, self.ex.rng)
                        run.retry_errors += (_describe(exc, self.ctx.run_dir),)
                        self._emit(EventKind.TASK_RETRYING, name, error=run.retry_errors[-1], delay=delay)
                        await anyio.sleep(delay)
                        continue
                    self._finish(name, TaskState.FAILED, error=_describe(exc, self.ctx.run_dir), exc=exc)
                    return
                _end_attempt(run, begun)
                resumable = None
                if self.store is not None:
                    with anyio.CancelScope(shield=True):  # the work is done: keep its result
                        resumable = await anyio.to_thread.run_sync(self.store.save_result, name, result)
                self._finish(name, TaskState.SUCCEEDED, result=result, resumable=resumable)
                return
        except anyio.get_cancelled_exc_class():
            _end_attempt(run, begun)
            self._finish(name, TaskState.CANCELLED, error=self.stop_reason or "run cancelled")
            raise
        except BaseException as exc:  # a crash (KeyboardInterrupt, SystemExit...): record, then end the run
            _end_attempt(run, begun)
            self.stop, self.stop_reason = StopReason.CRASHED, f"crash in task {name!r}: {_describe(exc)}"
            self._finish(name, TaskState.FAILED, error=f"crash: {_describe(exc)}", exc=exc)
            raise

    def _replayable(self, name: str) -> bool:
        hubs = self.ctx.hubs
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
        resumable: bool | None = None,
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
        hub = ctx.hubs.get(name)
        if hub is not None:
            hub.close(exc, finished=state is TaskState.SUCCEEDED)
        for producer in task.streams_from:
            if producer in ctx.hubs:
                ctx.hubs[producer].close_reader(name)
        if self.store is not None and run.started_at is not None:
            self.store.record(run, resumable=bool(resumable))
        if state is TaskState.SUCCEEDED:
            self._emit(EventKind.TASK_SUCCEEDED, name)
            for dependent in self.dependents[name]:
                if self.ex.sequential or not self._streams(name, dependent):
                    self._satisfy(dependent)
            self._release_inputs(name)
        elif state is TaskState.FAILED:
            ctx.errors.append(TaskError(name, run.error_type or "", error or "", run.attempts))
            self._emit(EventKind.TASK_FAILED, name, error=error)
            self._on_failure(name)
        else:
            self._emit(EventKind.TASK_CANCELLED, name, error=error)
            if not self.stopping:
                self._on_failure(name)
        self._dispatch()

    def _release_slot(self, name: str) -> None:
        if name in self.exempt:
            self.exempt.discard(name)
            return
        self.running -= 1
        kind = self.tasks[name].kind
        if kind in self.kind_running:
            self.kind_running[kind] -= 1
            waiting = self.kind_waiting.get(kind)
            if waiting:
                self.ready.appendleft(waiting.popleft())

    def _release_inputs(self, name: str) -> None:
        if not self.ex.release_results:
            return
        for need in self.needs[name]:
            self.users_left[need] -= 1
            if self.users_left[need] == 0:
                self.ctx.results.pop(need, None)

    def _on_failure(self, name: str) -> None:
        if self.ex.policy is FailurePolicy.FAIL_FAST:
            self.cancel(f"fail-fast: task {name!r} failed", StopReason.FAIL_FAST)
            return
        stack = list(self.dependents[name])
        while stack:
            dep = stack.pop()
            run = self.runs[dep]
            if run.state is TaskState.PENDING:
                run.state = TaskState.SKIPPED
                run.error = f"skipped: upstream task {name!r} did not succeed"
                self._emit(EventKind.TASK_SKIPPED, dep, error=run.error)
                for producer in self.tasks[dep].streams_from:  # it will never read: nobody waits for it
                    hub = self.ctx.hubs.get(producer)
                    if hub is not None:
                        hub.drop(dep)
                stack.extend(self.dependents[dep])

    # -- reporting --------------------------------------------------------------------------------
    def _emit(self, kind: EventKind, task: str | None, **kw: Any) -> None:
        if self.ex.bus:
            attempt = self.runs[task].attempts if task else 0
            self.ex.bus.emit(Event(kind, self.ctx.run_id, task, attempt, **kw))

    def _on_progress(self, task: str, data: dict[str, Any]) -> None:
        self._emit(EventKind.TASK_PROGRESS, task, data=data)

    def _result(self, started: float) -> RunResult:
        leftover = TaskState.CANCELLED if self.stopping else TaskState.SKIPPED
        for run in self.runs.values():
            if not run.state.is_terminal:
                run.state = leftover
                run.error = run.error or self.stop_reason
        if all(r.state is TaskState.SUCCEEDED for r in self.runs.values()) and not self.stopping:
            overall = TaskState.SUCCEEDED
        elif self.stop is StopReason.CANCELLED:
            overall = TaskState.CANCELLED
        else:
            overall = TaskState.FAILED
        return RunResult(
            run_id=self.ctx.run_id,
            dag=self.dag.name,
            state=overall,
            tasks=self.runs,
            started_at=started,
            ended_at=time.time(),
            results=dict(self.ctx.results),
            reason=self.stop_reason,
        )
