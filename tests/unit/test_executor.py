"""Executor behaviour that is easier to state with a hand-made DAG than with random ones."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from dag_orchestrator import (
    DAG,
    EventKind,
    Executor,
    PipelineContext,
    RetryPolicy,
    Task,
    TaskState,
    task,
)
from tests.unit.dagtools import Recorder, build, stream_dag

pytestmark = pytest.mark.anyio


async def test_retries_wait_growing_delays_then_succeed() -> None:
    rec, events = Recorder(), []
    policy = RetryPolicy(attempts=4, backoff=0.01, factor=2.0, jitter=0.1)
    dag = build({"a": []}, rec, a={"fails": 3, "retry": policy})
    result = await Executor(observers=[events.append]).run(dag)
    assert result.ok and result.tasks["a"].attempts == 4
    delays = [e.delay for e in events if e.kind is EventKind.TASK_RETRYING]
    assert len(delays) == 3
    assert delays[0] < delays[1] < delays[2]
    assert delays[0] >= 0.01 and delays[2] <= 0.04 * 1.1


async def test_retry_gives_up_after_attempts_and_only_for_listed_errors() -> None:
    rec = Recorder()
    dag = build({"a": []}, rec, a={"fails": 5, "retry": RetryPolicy(attempts=2, backoff=0)})
    result = await Executor().run(dag)
    assert result.tasks["a"].state is TaskState.FAILED and result.tasks["a"].attempts == 2
    assert "failed on purpose" in (result.tasks["a"].error or "")

    rec = Recorder()
    dag = build({"b": []}, rec, b={"fails": 5, "retry": RetryPolicy(attempts=3, backoff=0, retry_on=(KeyError,))})
    result = await Executor().run(dag)
    assert result.tasks["b"].attempts == 1


async def test_timeout_fails_the_task_and_names_it() -> None:
    @task(timeout=0.05)
    async def slow(ctx: Any) -> None:
        await anyio.sleep(5)

    with anyio.fail_after(2):
        result = await Executor().run(DAG("t", [slow]))
    run = result.tasks["slow"]
    assert run.state is TaskState.FAILED
    assert run.error_type == "TaskTimeoutError" and "'slow' timed out after 0.05s" in (run.error or "")


async def test_kind_limits_hold_beside_the_global_limit() -> None:
    rec = Recorder()
    spec = {f"m{i}": [] for i in range(6)} | {f"o{i}": [] for i in range(6)}
    dag = build(spec, rec, **{f"m{i}": {"kind": "milvus", "steps": 3} for i in range(6)})
    result = await Executor(max_concurrency=5, kind_limits={"milvus": 2}).run(dag)
    assert result.ok
    assert rec.kind_peak["milvus"] == 2 and rec.peak <= 5


class Crash(BaseException):
    """Stands for KeyboardInterrupt/SystemExit, which would stop pytest itself."""


async def test_crash_is_not_retried_and_ends_the_run() -> None:
    calls = []

    @task(retry=RetryPolicy(attempts=3, backoff=0))
    async def crash(ctx: Any) -> None:
        calls.append(1)
        raise Crash("boom")

    with pytest.raises(BaseException) as info:  # anyio re-raises the crash (possibly grouped)
        await Executor().run(DAG("t", [crash]))
    assert "Crash" in repr(info.value) and calls == [1]


async def test_cancel_marks_running_and_waiting_tasks_cancelled() -> None:
    ex = Executor()

    @task
    async def slow(ctx: Any) -> None:
        await anyio.sleep(10)

    @task(needs=["slow"])
    async def after(ctx: Any) -> None:
        return None

    async def stop_soon() -> None:
        await anyio.sleep(0.05)
        ex.cancel("test stop")

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_soon)
        result = await ex.run(DAG("t", [slow, after]))
    assert result.state is TaskState.CANCELLED and result.reason == "test stop"
    assert result.tasks["slow"].state is TaskState.CANCELLED
    assert result.tasks["after"].state is TaskState.CANCELLED


# -- streams ----------------------------------------------------------------------------------------
async def test_stream_fans_out_to_every_consumer_with_bounded_buffer() -> None:
    log: list[tuple[str, int]] = []
    result = await Executor(max_concurrency=1, stream_buffer=2).run(stream_dag(20, seen=log, slow_consumer=True))
    assert result.ok and result.results["after"] == (20, 20)
    # backpressure: the producer is never more than buffer+1 chunks ahead of the slowest consumer
    emitted = consumed = 0
    for kind, _ in log:
        emitted += kind == "emitted"
        consumed += kind == "consumed"
        assert emitted - consumed <= 3


async def test_producer_failure_cancels_consumers_and_skips_the_rest() -> None:
    result = await Executor(policy="continue").run(stream_dag(10, fail_producer_at=4))
    assert result.tasks["produce"].state is TaskState.FAILED
    for name in ("fast", "slow"):
        assert result.tasks[name].state is TaskState.CANCELLED
        assert "stream from task 'produce' ended early (ValueError: producer broke)" in (result.tasks[name].error or "")
    assert result.tasks["after"].state is TaskState.SKIPPED


async def test_consumer_failure_stops_the_producer() -> None:
    with anyio.fail_after(5):
        result = await Executor(policy="continue", stream_buffer=1).run(stream_dag(50, fail_consumer_at=3))
    assert result.tasks["slow"].state is TaskState.FAILED
    assert result.tasks["produce"].state is TaskState.FAILED
    assert "stopped reading the stream" in (result.tasks["produce"].error or "")


async def test_stream_producer_is_not_retried_after_emitting() -> None:
    calls = []

    @task(emits_stream=True, retry=RetryPolicy(attempts=3, backoff=0))
    async def produce(ctx: PipelineContext) -> None:
        calls.append(1)
        await ctx.emit(1)
        raise RuntimeError("after first chunk")

    @task(needs=["produce"], streams_from=["produce"])
    async def consume(ctx: PipelineContext) -> int:
        return len([c async for c in ctx.stream("produce")])

    result = await Executor().run(DAG("s", [produce, consume]))
    assert len(calls) == 1 and result.tasks["produce"].state is TaskState.FAILED


async def test_emit_without_declaring_a_stream_is_a_clear_error() -> None:
    @task
    async def sneaky(ctx: PipelineContext) -> None:
        await ctx.emit(1)

    result = await Executor().run(DAG("s", [sneaky]))
    assert "was not declared with emits_stream=True" in (result.tasks["sneaky"].error or "")


async def test_context_passes_results_params_and_metrics() -> None:
    class Plus(Task):
        async def run(self, ctx: PipelineContext) -> int:
            ctx.metric("calls", 1)
            return sum(ctx.result(n) for n in self.needs) + ctx.params["bonus"]

    dag = DAG("c", [Plus("a"), Plus("b", ["a"]), Plus("c", ["a", "b"])])
    ctx = PipelineContext(params={"bonus": 1})
    result = await Executor().run(dag, ctx)
    assert result.results == {"a": 1, "b": 2, "c": 4}
    assert ctx.metrics["c"] == {"calls": 1}


async def test_results_are_released_once_every_dependent_finished() -> None:
    rec = Recorder()
    ctx = PipelineContext()
    result = await Executor(release_results=True).run(build({"a": [], "b": ["a"], "c": ["b"]}, rec), ctx)
    assert result.ok and set(ctx.results) == {"c"}


async def test_stream_consumer_is_not_retried_after_reading() -> None:
    calls = []

    @task(emits_stream=True)
    async def produce(ctx: PipelineContext) -> None:
        for i in range(3):
            await ctx.emit(i)

    @task(needs=["produce"], streams_from=["produce"], retry=RetryPolicy(attempts=3, backoff=0))
    async def consume(ctx: PipelineContext) -> None:
        calls.append(1)
        async for _ in ctx.stream("produce"):
            raise RuntimeError("fails after reading one chunk")

    result = await Executor(policy="continue").run(DAG("s", [produce, consume]))
    assert len(calls) == 1 and result.tasks["consume"].state is TaskState.FAILED


async def test_producer_result_is_readable_when_its_stream_ends() -> None:
    @task(emits_stream=True)
    async def produce(ctx: PipelineContext) -> str:
        await ctx.emit(1)
        return "manifest"

    @task(needs=["produce"], streams_from=["produce"])
    async def consume(ctx: PipelineContext) -> str:
        async for _ in ctx.stream("produce"):
            pass
        return ctx.result("produce")

    result = await Executor().run(DAG("s", [produce, consume]))
    assert result.results["consume"] == "manifest"


async def test_errors_inside_task_groups_are_reported_by_their_cause() -> None:
    @task
    async def grouped(ctx: PipelineContext) -> None:
        async def boom() -> None:
            raise ValueError("the real cause")

        async with anyio.create_task_group() as tg:
            tg.start_soon(boom)

    result = await Executor().run(DAG("g", [grouped]))
    run = result.tasks["grouped"]
    assert run.error == "ValueError: the real cause" and run.error_type == "ValueError"


async def test_the_process_pool_starts_without_blocking_the_event_loop() -> None:
    """The forkserver imports its preload before the first worker exists (~0.5 s); on the loop that froze
    every other task, the progress view and signal handling for that long before the first generate."""
    import time

    from dag_orchestrator.backends.local import LocalBackend

    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await anyio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    from multiprocessing import forkserver

    forkserver._forkserver._stop()  # one per process: an earlier test's would already have its preload loaded
    backend = LocalBackend(workers=1, preload=["numpy", "pyarrow", "pyarrow.parquet", "pyarrow.compute"])
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            await anyio.sleep(0.05)
            started = time.monotonic()
            assert await backend.run(abs, -3) == 3
            took = time.monotonic() - started
            tg.cancel_scope.cancel()
    finally:
        backend.close()
    assert took > 0.2  # the start is slow, so the check below is about where it waited
    assert max(gaps) < 0.15, f"the event loop stood still for {max(gaps):.2f}s while the pool started"
