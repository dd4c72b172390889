"""Batches down the stream edges, acknowledgements back to the source (task_components/streaming/flow.py).

Real engine, real stage/sink/dead-letter task classes, in-memory writers: a batch is acknowledged only
once the sink wrote its valid records and the dead-letter sink took every record rejected or refused;
a task failing downstream ends the source's wait instead of leaving it waiting for ever.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest

from dag_orchestrator.context import PipelineContext
from dag_orchestrator.dag import DAG
from dag_orchestrator.executor import Executor, FailurePolicy
from dag_orchestrator.state import TaskState
from task_components.base import Component, NoParams
from task_components.contracts import BatchSink, BatchStage, StreamBatch, StreamRecord
from task_components.streaming.flow import AckLedger, DownstreamFailed, Flowing, StepResult, open_ledger, pass_on
from task_components.streaming.resilience import (
    CircuitBreaker,
    PermanentSinkError,
    RecordsRefused,
    Refusal,
    RetrySettings,
)
from task_components.streaming.steps import StreamDeadLetters, StreamSink, StreamStage

pytestmark = pytest.mark.anyio

BATCHES, SIZE = 8, 10
written: set[int] = set()
dead: dict[int, str] = {}
acks: list[tuple[int, set[int], dict[int, str]]] = []  # (batch, what the sinks held when it was acknowledged)
fail_batch: int | None = None


class _Source(Component[NoParams]):
    __slots__ = ()
    component = "test.flow_source"
    emits = True

    async def run(self, ctx: PipelineContext) -> int:
        def done(seq: int) -> None:
            acks.append((seq, set(written), dict(dead)))

        ledger = AckLedger(RetrySettings(retry_count=1, retry_delay=0.01), CircuitBreaker(threshold=1), on_done=done)
        async with open_ledger(ctx, ledger):
            for seq in range(BATCHES):
                records = [StreamRecord("in", 0, n, b"{}", {"n": n}, f"cid-{n}") for n in range(seq * SIZE, (seq + 1) * SIZE)]
                ledger.hold(seq, 1)
                await pass_on(ctx, Flowing(StreamBatch(seq, records), ledger, []))
                ledger.release(seq)
            with anyio.fail_after(20):
                while len(acks) < BATCHES:
                    if ledger.broken.is_set():
                        raise DownstreamFailed(ledger.error or "")
                    await anyio.sleep(0.01)
        return len(acks)


class _Sevens(BatchStage):
    def processor(self) -> Any:
        def process(batch: StreamBatch) -> None:
            for r in batch.records:
                if r.value is not None and r.value["n"] % 7 == 0:
                    r.reject("quality", "sevens", "a multiple of seven")

        return process


class _Stage(StreamStage[NoParams]):
    __slots__ = ()
    component = "test.flow_stage"

    def stage(self) -> BatchStage:
        return _Sevens()


class _Writer:
    def __init__(self, into: str) -> None:
        self.into = into

    async def write(self, records: Sequence[StreamRecord]) -> int:
        await anyio.sleep(0.02)  # the source must not acknowledge while this is under way
        if self.into == "dead":
            for r in records:
                dead[r.offset] = r.rejection.step if r.rejection else "?"
            return len(records)
        if fail_batch is not None and any(r.offset // SIZE == fail_batch for r in records):
            raise PermanentSinkError("this sink refuses the whole batch")
        refused = [Refusal(r, "fives", "a multiple of five") for r in records if r.offset % 5 == 0]
        written.update(r.offset for r in records if r.offset % 5)
        if refused:
            raise RecordsRefused(len(records) - len(refused), refused)
        return len(records)


class _Memory(BatchSink):
    def __init__(self, into: str) -> None:
        self.into = into
        self.label = into

    @asynccontextmanager
    async def open(self, settings: Any) -> AsyncIterator[_Writer]:
        yield _Writer(self.into)


class _Sink(StreamSink[NoParams]):
    __slots__ = ()
    component = "test.flow_sink"

    def sink(self) -> BatchSink:
        return _Memory("store")


class _Dead(StreamDeadLetters[NoParams]):
    __slots__ = ()
    component = "test.flow_dead"

    def sink(self) -> BatchSink:
        return _Memory("dead")


def _dag() -> DAG:
    return DAG(
        "flow",
        [
            _Source("source"),
            _Stage("stage", needs=["source"], streams_from=["source"]),
            _Sink("store", needs=["stage"], streams_from=["stage"]),
            _Dead("dead", needs=["source", "stage", "store"], streams_from=["source", "stage", "store"]),
        ],
    )


@pytest.fixture(autouse=True)
def _clean() -> None:
    global fail_batch
    written.clear()
    dead.clear()
    acks.clear()
    fail_batch = None


async def test_a_batch_is_acknowledged_only_once_every_sink_and_the_dead_letters_took_it() -> None:
    result = await Executor().run(_dag())
    assert result.ok, result
    assert sorted(seq for seq, _, _ in acks) == list(range(BATCHES))
    for seq, stored, lettered in acks:
        for n in range(seq * SIZE, (seq + 1) * SIZE):
            if n % 7 == 0:
                assert lettered.get(n) == "quality", (seq, n)
            elif n % 5 == 0:
                assert lettered.get(n) == "sink.store", (seq, n)
            else:
                assert n in stored, (seq, n)
    figures = result.results["store"]
    assert isinstance(figures, StepResult) and figures.batches == BATCHES
    assert figures.refused == sum(1 for n in range(BATCHES * SIZE) if n % 5 == 0 and n % 7)


@pytest.mark.parametrize("policy", [FailurePolicy.FAIL_FAST, FailurePolicy.CONTINUE])
async def test_a_sink_failing_downstream_never_leaves_its_batch_acknowledged_nor_the_source_waiting(
    policy: FailurePolicy,
) -> None:
    global fail_batch
    fail_batch = 3
    with anyio.fail_after(30):
        result = await Executor(policy=policy).run(_dag())
    assert not result.ok
    assert result.tasks["store"].state is TaskState.FAILED
    assert result.tasks["source"].state in (TaskState.FAILED, TaskState.CANCELLED)
    if policy is FailurePolicy.CONTINUE:
        assert "DownstreamFailed" in (result.tasks["source"].error or ""), result.tasks["source"].error
    assert 3 not in {seq for seq, _, _ in acks}
