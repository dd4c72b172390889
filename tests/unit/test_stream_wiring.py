"""Streaming wirings that would lose records, share a batch or hang are refused, at validate or at run start.

Each test names one defect of the data-order rework (issue 23 item 5): ``--only`` leaving the dead-letter
sink out, a stage's rejects reaching no dead-letter sink, a skipped consumer, a producer feeding two
stages, a sink reading a sink, spilling, the sequential executor, a step reading two producers, retries
on a step, and one failure breaking the ledgers of sources it does not read.
"""

from __future__ import annotations

import pickle
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from typer.testing import CliRunner

from dag_orchestrator.context import PipelineContext
from dag_orchestrator.dag import DAG, DAGValidationError
from dag_orchestrator.executor import Executor, FailurePolicy, SequentialExecutor
from dag_orchestrator.state import TaskState
from pipeline.cli import app
from pipeline.registry import build_dag
from pipeline.spec import SpecError, load_spec
from task_components.base import Component, NoParams
from task_components.contracts import StreamBatch, StreamRecord
from task_components.sources.kafka import KafkaSource
from task_components.streaming.flow import AckLedger, DownstreamFailed, Flowing, open_ledger, pass_on
from task_components.streaming.resilience import CircuitBreaker, RetrySettings
from tests.unit import test_stream_flow as flow  # the flow tests' source, stage, sinks and in-memory writers

pytestmark = pytest.mark.anyio
SHIPPED = Path(__file__).resolve().parents[2] / "pipelines" / "streaming.yaml"


@pytest.fixture(autouse=True)
def _clean() -> None:
    flow.written.clear()
    flow.dead.clear()
    flow.acks.clear()
    flow.fail_batch = None


def _variant(tmp_path: Path, change: Any) -> Path:
    """The shipped streaming pipeline with one change applied to its tasks."""
    doc = yaml.safe_load(SHIPPED.read_text())
    change(doc["tasks"])
    path = tmp_path / "variant.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _refusal(path: Path) -> str:
    with pytest.raises(SpecError) as caught:
        build_dag(load_spec(path), path)
    return " ".join(str(caught.value).split())


class _Fast(flow._Sink):
    """A sink writing every record (the dead-letter writer refuses nothing)."""

    __slots__ = ()

    def sink(self) -> Any:
        return flow._Memory("dead")


# -- 1: --only ------------------------------------------------------------------------------------
def test_only_a_sink_is_refused_because_the_rejects_would_reach_no_dead_letter_sink() -> None:
    dag = build_dag(load_spec(SHIPPED), SHIPPED)
    with pytest.raises(DAGValidationError) as caught:
        dag.subgraph(["mongodb"])
    assert "dead-letter sink" in str(caught.value) and "--only leaves out" in str(caught.value)


def test_run_only_a_sink_exits_2_before_anything_is_consumed(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", str(SHIPPED), "--only", "mongodb", "--run-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "dead-letter sink" in " ".join(result.output.split())


def test_only_the_source_is_refused_nothing_reads_its_batches() -> None:
    dag = build_dag(load_spec(SHIPPED), SHIPPED)
    with pytest.raises(DAGValidationError, match="no task reads its batches"):
        dag.subgraph(["consume"])


async def test_the_source_with_no_reader_refuses_to_start() -> None:
    result = await Executor().run(DAG("alone", [KafkaSource("consume")]))
    assert result.tasks["consume"].state is TaskState.FAILED
    assert "no task reads its batches" in (result.tasks["consume"].error or "")


async def test_rejects_no_dead_letter_sink_wrote_are_never_acknowledged() -> None:
    dag = DAG(
        "no_dead",
        [
            flow._Source("source"),
            flow._Stage("stage", needs=["source"], streams_from=["source"]),
            _Fast("store", needs=["stage"], streams_from=["stage"]),
        ],
    )
    flow.fail_batch = None
    with anyio.fail_after(30):
        result = await Executor(policy=FailurePolicy.CONTINUE).run(dag)
    assert not result.ok
    assert "reached no dead-letter sink" in (result.tasks["source"].error or ""), result.tasks["source"].error
    assert flow.acks == []  # batch 0 holds 0 and 7: rejected, written nowhere: not acknowledged


def test_only_a_stage_is_refused_its_valid_records_would_reach_no_sink(tmp_path: Path) -> None:
    def no_sink(tasks: dict[str, Any]) -> None:
        del tasks["mongodb"], tasks["kafka_out"]
        tasks["dead_letter"]["needs"] = ["consume", "standardize", "quality"]

    assert "no stage or sink reads its batches" in _refusal(_variant(tmp_path, no_sink))


async def test_a_stage_no_task_reads_refuses_to_start_and_stops_the_source() -> None:
    dag = DAG(
        "no_sink",
        [
            flow._Source("source"),
            flow._Stage("stage", needs=["source"], streams_from=["source"]),
            flow._Dead("dead", needs=["source"], streams_from=["source"]),
        ],
    )
    with anyio.fail_after(30):
        result = await Executor(policy=FailurePolicy.CONTINUE).run(dag)
    assert "no stage or sink reads its batches" in (result.tasks["stage"].error or "")
    assert "DownstreamFailed" in (result.tasks["source"].error or ""), result.tasks["source"].error
    assert flow.acks == []


# -- 2: a skipped consumer -------------------------------------------------------------------------
class _Boom(Component[NoParams]):
    __slots__ = ()
    component = "test.wiring_boom"

    async def run(self, ctx: PipelineContext) -> None:
        await anyio.sleep(0.05)
        raise RuntimeError("boom")


@pytest.mark.parametrize("buffer", [4, 16], ids=["batches-wait-to-be-sent", "all-batches-already-in-its-buffer"])
async def test_a_skipped_dead_letter_sink_ends_the_source_with_downstream_failed(buffer: int) -> None:
    """With a large buffer every batch sits in the skipped reader's buffer before the skip, and the source
    sends nothing more that could find out: the drop itself must break the ledger."""
    dag = DAG(
        "skip",
        [
            flow._Source("source"),
            _Boom("setup"),
            flow._Stage("stage", needs=["source"], streams_from=["source"]),
            flow._Sink("store", needs=["stage"], streams_from=["stage"]),
            flow._Dead("dead", needs=["source", "stage", "store", "setup"], streams_from=["source", "stage", "store"]),
        ],
    )
    started = time.monotonic()
    with anyio.fail_after(30):
        result = await Executor(policy=FailurePolicy.CONTINUE, stream_buffer=buffer).run(dag)
    assert time.monotonic() - started < 10  # not the test source's own 20 s guard
    assert result.tasks["dead"].state is TaskState.SKIPPED
    assert "DownstreamFailed" in (result.tasks["source"].error or ""), result.tasks["source"].error
    assert "task 'dead' downstream of the source ended" in (result.tasks["source"].error or "")
    # the sink's stream ended early inside its own task group: cancelled like a bare UpstreamStreamError
    assert result.tasks["store"].state is TaskState.CANCELLED, result.tasks["store"].error


# -- 3, 4, 7, 8: validate --------------------------------------------------------------------------
def test_validate_refuses_a_producer_feeding_two_stages(tmp_path: Path) -> None:
    def fan(tasks: dict[str, Any]) -> None:
        tasks["quality2"] = {**tasks["quality"], "needs": ["standardize"]}
        tasks["kafka_out"]["needs"] = ["quality2"]
        tasks["dead_letter"]["needs"].append("quality2")

    assert "a stage changes the batch's records in place" in _refusal(_variant(tmp_path, fan))


def test_validate_refuses_a_sink_reading_a_sink(tmp_path: Path) -> None:
    def chain(tasks: dict[str, Any]) -> None:
        tasks["kafka_out"]["needs"] = ["mongodb"]

    message = _refusal(_variant(tmp_path, chain))
    assert "task 'kafka_out'" in message and ("StageResult" in message or "reads sink" in message), message


def test_validate_refuses_a_sink_reading_two_batch_producers(tmp_path: Path) -> None:
    def two(tasks: dict[str, Any]) -> None:
        tasks["mongodb"]["needs"] = ["quality", "standardize"]

    message = _refusal(_variant(tmp_path, two))
    assert "task 'mongodb'" in message and "reads 2 batch producers" in message, message


def test_validate_refuses_retries_on_a_streaming_step(tmp_path: Path) -> None:
    def retries(tasks: dict[str, Any]) -> None:
        tasks["mongodb"]["retries"] = 3

    assert "retries do nothing on streaming steps" in _refusal(_variant(tmp_path, retries))


def test_the_old_wiring_is_refused_saying_the_wiring_changed(tmp_path: Path) -> None:
    def old(tasks: dict[str, Any]) -> None:
        for name in ("standardize", "quality", "mongodb", "kafka_out", "dead_letter"):
            tasks[name].pop("needs", None)
        tasks["consume"]["needs"] = ["standardize", "quality", "mongodb", "kafka_out", "dead_letter"]

    message = _refusal(_variant(tmp_path, old))
    assert "the wiring changed" in message and "docs/streaming.md" in message, message


def test_the_shipped_pipeline_still_validates() -> None:
    assert len(build_dag(load_spec(SHIPPED), SHIPPED)) == 6


async def test_a_sink_reading_two_producers_at_run_time_stops_the_source_instead_of_hanging() -> None:
    dag = DAG(
        "two",
        [
            flow._Source("source"),
            flow._Stage("stage", needs=["source"], streams_from=["source"]),
            flow._Sink("store", needs=["stage", "source"], streams_from=["stage", "source"]),
            flow._Dead("dead", needs=["source", "stage", "store"], streams_from=["source", "stage", "store"]),
        ],
    )
    with anyio.fail_after(30):
        result = await Executor(policy=FailurePolicy.CONTINUE).run(dag)
    assert "exactly one batch producer" in (result.tasks["store"].error or "")
    assert "DownstreamFailed" in (result.tasks["source"].error or ""), result.tasks["source"].error


# -- 5: spill --------------------------------------------------------------------------------------
def test_a_streaming_step_cannot_spill_and_a_batch_cannot_be_pickled() -> None:
    with pytest.raises(TypeError, match="cannot set stream_spill"):

        class _Spilling(flow._Stage):
            __slots__ = ()
            stream_spill = True

    ledger = AckLedger(RetrySettings(retry_count=1, retry_delay=0), CircuitBreaker(threshold=1), on_done=print)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(Flowing(StreamBatch(0, []), ledger))


# -- 6: the sequential executor --------------------------------------------------------------------
async def test_the_sequential_executor_refuses_the_streaming_source() -> None:
    dag = build_dag(load_spec(SHIPPED), SHIPPED)
    with anyio.fail_after(10), pytest.raises(DAGValidationError, match="run it with Executor"):
        await SequentialExecutor().run(dag)


# -- 9: a failure breaks only the ledgers of the sources it reads ----------------------------------
class _Counting(Component[NoParams]):
    """A source of 4 batches of 10 records, none rejected; records its acknowledgements by its own name."""

    __slots__ = ()
    component = "test.wiring_source"
    emits = True
    acked: dict[str, list[int]] = {}

    async def run(self, ctx: PipelineContext) -> int:
        done = self.acked.setdefault(self.name, [])
        ledger = AckLedger(RetrySettings(retry_count=1, retry_delay=0.01), CircuitBreaker(threshold=1), on_done=done.append)
        async with open_ledger(ctx, ledger):
            for seq in range(4):
                records = [StreamRecord("in", 0, n, b"{}", {"n": n + 1}, f"c{n}") for n in range(seq * 10, seq * 10 + 9)]
                ledger.hold(seq, 1)
                await pass_on(ctx, Flowing(StreamBatch(seq, records), ledger, []))
                ledger.release(seq)
                await anyio.sleep(0.1 if self.name == "b" else 0)  # b still runs when a's sink fails
                if ledger.broken.is_set():
                    raise DownstreamFailed(ledger.error or "")
            with anyio.fail_after(20):
                while len(done) < 4:
                    if ledger.broken.is_set():
                        raise DownstreamFailed(ledger.error or "")
                    await anyio.sleep(0.01)
        return len(done)


async def test_a_failure_downstream_of_one_source_leaves_the_other_source_running() -> None:
    flow.fail_batch = 0  # the sink of source a fails; source b's sink writes everything
    _Counting.acked.clear()

    dag = DAG(
        "two_sources",
        [
            _Counting("a"),
            flow._Sink("store_a", needs=["a"], streams_from=["a"]),
            flow._Dead("dead_a", needs=["a", "store_a"], streams_from=["a", "store_a"]),
            _Counting("b"),
            _Fast("store_b", needs=["b"], streams_from=["b"]),
            flow._Dead("dead_b", needs=["b", "store_b"], streams_from=["b", "store_b"]),
        ],
    )
    with anyio.fail_after(30):
        result = await Executor(policy=FailurePolicy.CONTINUE).run(dag)
    flow.fail_batch = None
    assert result.tasks["store_a"].state is TaskState.FAILED
    assert "DownstreamFailed" in (result.tasks["a"].error or "")
    assert result.tasks["b"].state is TaskState.SUCCEEDED, result.tasks["b"].error
    assert sorted(_Counting.acked["b"]) == [0, 1, 2, 3]
