"""Streams between tasks, stated with hand-made DAGs: spilling to disk, replaying on resume, a skipped reader."""

from __future__ import annotations

from typing import Any

import anyio
import pyarrow as pa
import pytest

from dag_orchestrator import (
    DAG,
    Executor,
    PipelineContext,
    Task,
    TaskState,
    task,
)
from tests.unit.dagtools import stream_dag

pytestmark = pytest.mark.anyio


class SpillingReader(Task):
    """A slow consumer that declares it must not hold its producer back."""

    __slots__ = ("seen", "started_at_producer_end")
    stream_spill = True

    def __init__(self, name: str, producer: str, seen: list[Any]) -> None:
        super().__init__(name, [producer], streams_from=[producer])
        self.seen = seen

    async def run(self, ctx: Any) -> int:
        async for chunk in ctx.stream(self.needs[0]):
            await anyio.sleep(0.01)
            self.seen.append(chunk)
        return len(self.seen)


async def test_a_spilling_consumer_lags_on_disk_without_slowing_the_producer(tmp_path: Any) -> None:
    emitted: list[int] = []
    seen: list[Any] = []
    lag: list[int] = []
    spill_dirs: list[list[str]] = []

    @task(emits_stream=True)
    async def produce(ctx: PipelineContext) -> int:
        for i in range(40):
            # Arrow batches spill as IPC files, anything else pickled
            await ctx.emit(pa.record_batch({"chunk": [i] * i}) if i % 2 else {"chunk": i, "payload": list(range(i))})
            emitted.append(i)
        lag.append(len(emitted) - len(seen))  # how far ahead the producer got
        spill_dirs.append(sorted(p.name for p in (tmp_path / "spill").iterdir()))
        return 40

    @task(needs=["produce"], streams_from=["produce"])
    async def fast(ctx: PipelineContext) -> int:
        return len([c async for c in ctx.stream("produce")])

    dag = DAG("spill", [produce, fast, SpillingReader("slow", "produce", seen)])
    result = await Executor(max_concurrency=4, stream_buffer=2).run(dag, PipelineContext(run_dir=tmp_path))
    assert result.ok, result.reason
    order = [c.column("chunk")[0].as_py() if isinstance(c, pa.RecordBatch) else c["chunk"] for c in seen[1:]]
    assert order == list(range(1, 40)) and seen[8]["payload"] == list(range(8))  # in order, whole
    assert seen[39].column("chunk").to_pylist() == [39] * 39
    assert lag[0] > 30  # the producer finished long before the slow reader: it never waited for it
    assert len(spill_dirs[0]) == 1 and spill_dirs[0][0].startswith("dag-spill-produce-slow-")
    assert list((tmp_path / "spill").iterdir()) == []  # the lag on disk is gone once read


async def test_without_spill_the_slow_consumer_sets_the_pace() -> None:
    log: list[tuple[str, int]] = []
    await Executor(max_concurrency=4, stream_buffer=2).run(stream_dag(20, seen=log, slow_consumer=True))
    ahead = max(sum(k == "emitted" for k, _ in log[: i + 1]) - sum(k == "consumed" for k, _ in log[: i + 1]) for i in range(len(log)))
    assert ahead <= 4  # the contrast to the spilling test above


class QuittingReader(SpillingReader):
    """A spilling consumer that fails after three chunks, while its lag sits on disk."""

    __slots__ = ()

    async def run(self, ctx: Any) -> int:
        async for chunk in ctx.stream(self.needs[0]):
            self.seen.append(chunk)
            if len(self.seen) == 3:
                raise ValueError("consumer broke")
            await anyio.sleep(0.01)
        return len(self.seen)


async def test_a_spilling_consumer_that_fails_stops_its_producer_and_leaves_no_files(tmp_path: Any) -> None:
    @task(emits_stream=True)
    async def produce(ctx: PipelineContext) -> int:
        for i in range(200):
            await ctx.emit({"chunk": i})
            await anyio.sleep(0.001)
        return 200

    dag = DAG("spill-fail", [produce, QuittingReader("slow", "produce", [])])
    with anyio.fail_after(10):
        result = await Executor(policy="continue", stream_buffer=2).run(dag, PipelineContext(run_dir=tmp_path))
    assert result.tasks["slow"].state is TaskState.FAILED
    assert result.tasks["produce"].state is TaskState.FAILED
    assert "stopped reading the stream" in (result.tasks["produce"].error or "")  # not a FileNotFoundError
    assert list((tmp_path / "spill").iterdir()) == []


class Replaying(Task):
    """Streams from its producer on a fresh run; on a resume after the producer finished, reads its result."""

    __slots__ = ("fail", "saw")
    stream_replay = True

    def __init__(self, name: str, producer: str, fail: bool) -> None:
        super().__init__(name, [producer], streams_from=[producer])
        self.fail, self.saw = fail, ""

    async def run(self, ctx: Any) -> int:
        producer = self.needs[0]
        if producer in ctx.results:
            self.saw, chunks = "result", list(ctx.result(producer))
        else:
            self.saw, chunks = "stream", [c async for c in ctx.stream(producer)]
        if self.fail:
            raise ValueError("consumer broke")
        return len(chunks)


async def test_a_replaying_consumer_resumes_without_rerunning_its_finished_producer(tmp_path: Any) -> None:
    from dag_orchestrator import StateStore

    runs: list[int] = []

    @task(emits_stream=True)
    async def produce(ctx: PipelineContext) -> list[int]:
        runs.append(1)
        for i in range(5):
            await ctx.emit(i)
        return list(range(5))

    store = StateStore(tmp_path)
    first = Replaying("consume", "produce", fail=True)
    r1 = await Executor(policy="continue").run(DAG("r", [produce, first]), store=store)
    assert r1.tasks["produce"].state is TaskState.SUCCEEDED and first.saw == "stream"
    second = Replaying("consume", "produce", fail=False)
    r2 = await Executor().run(DAG("r", [produce, second]), store=store, resume=True)
    assert r2.ok and r2.tasks["produce"].resumed and runs == [1]  # the producer ran once, in the first attempt
    assert second.saw == "result" and r2.results["consume"] == 5


@pytest.mark.parametrize("setup_delay", [0.0, 0.2])  # skipped before the producer starts, or while it emits
async def test_a_producer_whose_consumer_is_skipped_under_continue_finishes(setup_delay: float) -> None:
    @task()
    async def setup(ctx: PipelineContext) -> None:
        await anyio.sleep(setup_delay)
        raise RuntimeError("setup broke")

    @task(emits_stream=True)
    async def produce(ctx: PipelineContext) -> int:
        for i in range(50):
            await ctx.emit(i)
        return 50

    @task(needs=["produce"], streams_from=["produce"])
    async def kept(ctx: PipelineContext) -> int:
        return len([c async for c in ctx.stream("produce")])

    @task(needs=["produce", "setup"], streams_from=["produce"])
    async def skipped(ctx: PipelineContext) -> int:
        return len([c async for c in ctx.stream("produce")])

    with anyio.fail_after(10):
        result = await Executor(policy="continue", stream_buffer=1).run(DAG("s", [setup, produce, kept, skipped]))
    assert result.tasks["skipped"].state is TaskState.SKIPPED
    assert result.tasks["produce"].state is TaskState.SUCCEEDED and result.results["kept"] == 50
