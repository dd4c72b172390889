"""Engine guarantees: per-run state, crash reporting, one source of edges, timeouts, the debug executor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from dag_orchestrator import (
    DAG,
    EventKind,
    Executor,
    PipelineContext,
    SequentialExecutor,
    TaskState,
    TaskTimeoutError,
    task,
)
from task_components.base import Component, wiring_errors
from task_components.demo import DemoCrash

pytestmark = pytest.mark.anyio


def _pair(name: str, seconds: float) -> DAG:
    @task(name=f"{name}_a")
    async def a(ctx: PipelineContext) -> str:
        await anyio.sleep(seconds)
        return name

    @task(name=f"{name}_b", needs=[f"{name}_a"])
    async def b(ctx: PipelineContext) -> str:
        return ctx.result(f"{name}_a") + "!"

    return DAG(name, [a, b])


async def test_one_executor_runs_two_dags_at_once() -> None:
    ex = Executor(max_concurrency=2)
    results: dict[str, Any] = {}

    async def go(dag: DAG) -> None:
        results[dag.name] = await ex.run(dag)

    async with anyio.create_task_group() as tg:
        tg.start_soon(go, _pair("one", 0.05))
        tg.start_soon(go, _pair("two", 0.01))
    assert results["one"].ok and results["two"].ok
    assert results["one"].results["one_b"] == "one!" and results["two"].results["two_b"] == "two!"
    assert set(results["one"].tasks) == {"one_a", "one_b"}


async def test_cancel_stops_every_run_in_flight_as_cancelled() -> None:
    ex = Executor()
    results: list[Any] = []

    async def go(dag: DAG) -> None:
        results.append(await ex.run(dag))

    async with anyio.create_task_group() as tg:
        tg.start_soon(go, _pair("x", 10))
        tg.start_soon(go, _pair("y", 10))
        await anyio.sleep(0.05)
        ex.cancel("stop both")
    assert [r.state for r in results] == [TaskState.CANCELLED, TaskState.CANCELLED]
    assert all(r.reason == "stop both" for r in results)


async def test_a_crash_still_finishes_the_run_and_carries_its_result() -> None:
    @task
    async def boom(ctx: PipelineContext) -> None:
        raise DemoCrash("not an Exception")

    @task
    async def other(ctx: PipelineContext) -> None:
        await anyio.sleep(5)

    events: list[Any] = []
    with pytest.raises(BaseException) as info:
        await Executor(observers=[events.append]).run(DAG("crash", [boom, other]))
    assert events[-1].kind is EventKind.RUN_FINISHED
    crash = info.value
    while isinstance(crash, BaseExceptionGroup):
        crash = crash.exceptions[0]
    assert isinstance(crash, DemoCrash)
    result = crash.run_result  # type: ignore[attr-defined]
    assert result.state is TaskState.FAILED
    assert result.tasks["boom"].state is TaskState.FAILED and "crash" in (result.tasks["boom"].error or "")
    assert result.tasks["other"].state is TaskState.CANCELLED


async def test_a_timeout_error_raised_by_the_task_is_its_own_error() -> None:
    @task(timeout=30)
    async def talks(ctx: PipelineContext) -> None:
        raise TimeoutError("the socket timed out")

    @task(timeout=0.05)
    async def slow(ctx: PipelineContext) -> None:
        await anyio.sleep(5)

    own = await Executor().run(DAG("own", [talks]))
    assert own.tasks["talks"].error_type == "TimeoutError"
    assert "the socket timed out" in (own.tasks["talks"].error or "")
    deadline = await Executor().run(DAG("deadline", [slow]))
    assert deadline.tasks["slow"].error_type == TaskTimeoutError.__name__
    assert "timed out after 0.05s" in (deadline.tasks["slow"].error or "")


class _Number(Component):
    __slots__ = ()
    component = "test.number"
    Result = int

    async def run(self, ctx: Any) -> int:
        return 41


class _Plus(Component):
    __slots__ = ()
    component = "test.plus"
    Result = int
    needs_types = (int,)

    async def run(self, ctx: Any) -> int:
        value = self.upstream(ctx, int)
        assert value is not None, "input not found among needs"
        return value + 1


async def test_a_component_wired_with_rshift_finds_its_input() -> None:
    with DAG("shift") as dag:
        number, plus = _Number("number"), _Plus("plus")
        number >> plus
    assert plus.needs == ("number",) and dag.needs_of("plus") == ("number",)
    result = await Executor().run(dag)
    assert result.ok and result.results["plus"] == 42


def test_wiring_check_names_the_task_and_the_missing_type() -> None:
    lonely = _Plus("plus")
    problems = wiring_errors({"plus": lonely})
    assert problems == [("plus", "needs a task producing int among its needs (has: no needs)")]
    assert wiring_errors({"number": _Number("number"), "plus": _Plus("plus", needs=["number"])}) == []


def _streaming_dag() -> DAG:
    @task(emits_stream=True)
    async def numbers(ctx: PipelineContext) -> int:
        for i in range(50):  # more chunks than the concurrent executor's buffer holds
            await ctx.emit([i] * 10)
        return 50

    @task(needs=["numbers"], streams_from=["numbers"])
    async def total(ctx: PipelineContext) -> int:
        return sum([sum(chunk) async for chunk in ctx.stream("numbers")])

    @task(needs=["numbers"], streams_from=["numbers"])
    async def count(ctx: PipelineContext) -> int:
        return sum([len(chunk) async for chunk in ctx.stream("numbers")])

    @task(needs=["total", "count"])
    async def mean(ctx: PipelineContext) -> float:
        return ctx.result("total") / ctx.result("count")

    return DAG("streams", [numbers, total, count, mean])


async def test_sequential_executor_gives_the_same_results_one_task_at_a_time() -> None:
    events: list[Any] = []
    concurrent = await Executor().run(_streaming_dag())
    sequential = await SequentialExecutor(observers=[events.append]).run(_streaming_dag())
    assert sequential.ok and sequential.results == concurrent.results
    starts_ends = [(e.kind, e.task) for e in events if e.kind in (EventKind.TASK_STARTED, EventKind.TASK_SUCCEEDED)]
    for i in range(0, len(starts_ends), 2):  # strictly start, end, start, end...
        assert starts_ends[i][0] is EventKind.TASK_STARTED and starts_ends[i + 1] == (EventKind.TASK_SUCCEEDED, starts_ends[i][1])
    assert [t for k, t in starts_ends if k is EventKind.TASK_STARTED] == ["numbers", "total", "count", "mean"]


def test_runner_writes_the_report_when_a_task_crashes(tmp_path: Path) -> None:
    import json

    from config.settings import Settings
    from pipeline.runner import RunOptions, execute, prepare_spec
    from pipeline.spec import PipelineSpec

    spec = PipelineSpec.model_validate({"name": "crashing", "tasks": {"boom": {"uses": "demo.fail", "with": {"crash": True}}}})
    options = RunOptions(run_dir=tmp_path)
    prepared = prepare_spec(spec, "inline.yaml", {}, options)
    with pytest.raises(BaseException):  # noqa: B017 - the crash itself propagates
        anyio.run(lambda: execute(prepared, Settings(), options, handle_signals=False))
    report = json.loads((prepared.path / "report.json").read_text())
    assert report["state"] == "failed" and report["tasks"]["boom"]["state"] == "failed"
    assert "crash" in report["tasks"]["boom"]["error"]
