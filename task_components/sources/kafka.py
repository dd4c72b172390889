"""``source.kafka``: consume Kafka in batches, send them down the stream edges, commit once acknowledged.

The pipeline reads the way data flows: ``consume -> standardize -> quality -> sinks``, each a task
streaming from the one before, and ``dead_letter`` streaming from every step (pipelines/streaming.yaml).
The design keeps the old guarantee on the engine's plain streams: they carry batches
forward (bounded hubs, backpressure, failure both ways), and acknowledgements come back outside them,
through the ``AckLedger`` each batch carries (streaming/flow.py: a count of the batch's copies still on
their way, Storm's acker). Batches are in-process objects, so nothing is copied or pickled; the stream
edges need the concurrent executor (the default; the sequential one starts consumers after the source).

* Batches close at ``batch_size`` records or ``batch_timeout`` seconds. At most ``max_in_flight``
  batches are out (emitted, not yet acknowledged): past that the source stops fetching.
* Each stage handles batches one at a time in arrival order, in a detached thread (SIGTERM is honoured
  however long a batch's rules take); each sink writes up to ``max_in_flight`` batches at once.
* Every record-level failure is the record's: decoding (decode.py: tombstone, size, JSON, depth),
  conversion and rules reject it, and a sink that refuses a record (``RecordsRefused``: too large, not
  encodable, a key it cannot index) writes the others; each step hands its rejects to the dead-letter
  sink with step, rule and reason (a sink's refusal as step ``sink.<label>``).
* A batch is acknowledged once every task downstream finished with it (sinks wrote it, the dead-letter
  topic took its rejects); offsets are committed in fetch order once a batch and every earlier batch are
  acknowledged (``OffsetTracker``): at-least-once delivery; the idempotent MongoDB upsert makes the
  effect exactly once.
* A failing sink is retried with backoff; after ``retry_count`` failures the circuit breaker (shared by
  the sinks through the ledger) opens and fetching stops until the sink answers again (resilience.py).
  Nothing is committed meanwhile.
* Rebalance: before partitions are revoked, no new batch starts, in-flight batches are drained and their
  offsets committed; records of partitions no longer ours are dropped before a batch starts, and offsets
  are only committed for partitions still assigned (uncommitted: the new owner reads them again).
* ``run --metrics-port``: the figures go to ``/metrics`` too (streaming/metrics.py), counted where the
  result counts them, with the lag per partition, each batch's latency and the breaker's state.
* Stop: ``max_records``, ``max_seconds``, ``idle_seconds`` (no record for that long) wait for the batches
  in flight to be acknowledged and commit; SIGTERM (cancellation) or a failure anywhere downstream (the
  ledger breaks: ``DownstreamFailed``) commit what was acknowledged, then end the run.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field

from dag_orchestrator.context import PipelineContext
from dag_orchestrator.task import Task
from task_components.base import Component
from task_components.clients import kafka_consumer, kafka_options
from task_components.connect import missing
from task_components.contracts import StreamBatch, StreamRecord, StreamResult
from task_components.sources.decode import MAX_DEPTH, MAX_RECORD_BYTES, decode
from task_components.streaming.flow import (
    AckLedger,
    DownstreamFailed,
    Flowing,
    StreamWiringError,
    consumers,
    open_ledger,
    pass_on,
)
from task_components.streaming.metrics import for_source
from task_components.streaming.offsets import OffsetTracker, stream_lags
from task_components.streaming.resilience import CircuitBreaker, RetrySettings
from task_components.streaming.steps import dead_letter_problem, streams_from_source

if TYPE_CHECKING:
    from config.settings import Settings

__all__ = ["KafkaSource", "KafkaSourceParams", "decode"]


class KafkaSourceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topic: str | None = Field(None, description="default: KAFKA__TOPIC_SOURCE")
    group: str | None = Field(None, description="consumer group; default: KAFKA__CONSUMER_GROUP")
    auto_offset_reset: Literal["earliest", "latest"] | None = Field(None, description="default: KAFKA__AUTO_OFFSET_RESET")
    batch_size: int | None = Field(None, ge=1, description="default: PIPELINE__BATCH_SIZE")
    batch_timeout: float = Field(1.0, gt=0, description="seconds a partial batch waits for more records")
    max_in_flight: int | None = Field(None, ge=1, description="batches not yet acknowledged; default: PIPELINE__MAX_WORKERS")
    max_records: int = Field(0, ge=0, description="stop after this many records (0: no limit)")
    max_seconds: float = Field(0, ge=0, description="stop after this many seconds (0: no limit)")
    idle_seconds: float = Field(0, ge=0, description="stop when no record came for this long (0: never)")
    retry_count: int | None = Field(None, ge=0, description="default: PIPELINE__RETRY_COUNT")
    retry_delay: float | None = Field(None, ge=0, description="default: PIPELINE__RETRY_DELAY_SECONDS")
    max_retry_delay: float = Field(30.0, ge=0)
    max_outage_seconds: float = Field(300.0, gt=0, description="a sink down longer than this fails the run")
    session_timeout_ms: int = Field(10_000, ge=1000)
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    rebalance_timeout_ms: int = Field(30_000, ge=1000, description="how long members may take to rejoin")
    progress_every: float = Field(1.0, gt=0, description="seconds between live figures")
    max_record_bytes: int = Field(MAX_RECORD_BYTES, ge=1, description="a larger message is dead-lettered unread")
    max_json_depth: int = Field(MAX_DEPTH, ge=1, le=500, description="deeper JSON nesting is dead-lettered")


class _Stats:
    __slots__ = ("batches", "committed", "duplicates", "first_record", "invalid", "records_in", "started", "valid")

    def __init__(self) -> None:
        self.records_in = self.valid = self.invalid = self.duplicates = self.batches = 0
        self.committed: dict[str, int] = {}
        self.started = time.monotonic()
        self.first_record: float | None = None


class _StreamRun:
    """The state of one run of the source (consumer, tracker, ledger, counters): never kept on the task."""

    def __init__(self, ctx: PipelineContext, p: KafkaSourceParams, settings: Settings) -> None:
        self.ctx, self.p, self.settings = ctx, p, settings
        pl = settings.pipeline
        retry = RetrySettings(
            retry_count=pl.retry_count if p.retry_count is None else p.retry_count,
            retry_delay=pl.retry_delay_seconds if p.retry_delay is None else p.retry_delay,
            max_delay=p.max_retry_delay,
            max_outage_seconds=p.max_outage_seconds,
        )
        self.metrics = for_source(ctx.services, ctx.task_name)  # None: the run serves no /metrics
        self.breaker = CircuitBreaker(threshold=max(1, retry.retry_count), on_change=self.metrics.circuit if self.metrics else None)
        acked, self.acknowledged = anyio.create_memory_object_stream[int](max_buffer_size=math.inf)
        self.ledger = AckLedger(retry, self.breaker, on_done=acked.send_nowait, on_broken=self._on_broken, metrics=self.metrics)
        self.tracker = OffsetTracker()
        self.stats = _Stats()
        self.batch_size = p.batch_size or pl.batch_size
        self.decode_limits = (p.max_record_bytes, p.max_json_depth)
        self.slots = anyio.Semaphore(p.max_in_flight or pl.max_workers)
        self.in_flight: dict[int, StreamBatch] = {}  # emitted, not yet acknowledged by every task downstream
        self.emitted_at: dict[int, float] = {}  # per batch in flight: when it was emitted (its latency's start)
        self.idle = anyio.Event()
        self.idle.set()
        self.commit_lock = anyio.Lock()
        self.buffer: list[StreamRecord] = []
        self.read_from: dict[tuple[str, int], int] = {}  # first offset this run fetched, per partition still ours
        self.committed_at: dict[tuple[str, int], int] = {}  # last offset this run committed, per partition
        self.uncommitted: dict[tuple[str, int], int] = {}  # positions whose commit failed, retried next time
        self.consumer: Any = None
        self.closing = False
        self.settled = anyio.Event()  # set while no rebalance is in progress
        self.settled.set()

    def _on_broken(self) -> None:
        self.idle.set()  # a rebalance or the stop waiting for in-flight batches must not wait for ever

    # -- commits --------------------------------------------------------------------------------
    async def commit_ready(self) -> None:
        from aiokafka import TopicPartition
        from aiokafka.errors import CommitFailedError, KafkaError

        async with self.commit_lock:
            ready = {**self.uncommitted, **self.tracker.ready()}  # later positions of a partition win
            mine = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
            ready = {tp: off for tp, off in ready.items() if tp in mine}  # the others' new owner re-reads them
            self.uncommitted = {}
            if not ready:
                return
            try:
                await self.consumer.commit({TopicPartition(t, p): off for (t, p), off in ready.items()})
            except CommitFailedError as exc:  # rebalanced away: the new owner re-reads (idempotent sinks)
                self.ctx.log.warning("commit_failed_after_rebalance", error=str(exc))
                return
            except KafkaError as exc:  # broker trouble: try again with the next commit (or re-read after a restart)
                self.uncommitted = ready
                self.ctx.log.warning("commit_failed", error=f"{type(exc).__name__}: {exc}")
                return
            for (t, p), off in ready.items():
                self.stats.committed[f"{t}:{p}"] = off
                self.committed_at[(t, p)] = off

    async def on_revoked(self, revoked: Any) -> None:
        """Before the group moves partitions: finish what is in flight, commit it, drop the rest."""
        if self.settled.is_set():
            self.settled = anyio.Event()  # no new batch starts until the new assignment is known
        if not self.closing:  # when closing, in-flight batches were cancelled: commit what finished
            await self.idle.wait()
        await self.commit_ready()
        gone = {(tp.topic, tp.partition) for tp in revoked}
        self.buffer = [r for r in self.buffer if (r.topic, r.partition) not in gone]
        for tp in gone:
            self.read_from.pop(tp, None)
            self.committed_at.pop(tp, None)
        self.ctx.log.info("partitions_revoked", partitions=sorted(f"{t}:{p}" for t, p in gone))

    def on_assigned(self) -> None:
        self.settled.set()

    # -- batches --------------------------------------------------------------------------------
    async def start_batch(self) -> None:
        """Emit the buffer once no rebalance is running, keeping only records of partitions still ours."""
        await self.settled.wait()
        mine = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        records = [r for r in self.buffer if (r.topic, r.partition) in mine]
        self.buffer = []
        if not records:
            return
        await self.slots.acquire()  # released when the batch is acknowledged: at most max_in_flight batches
        positions: dict[tuple[str, int], int] = {}
        for r in records:
            positions[(r.topic, r.partition)] = max(r.offset + 1, positions.get((r.topic, r.partition), 0))
        batch = StreamBatch(self.tracker.register(positions), records, positions)
        self.in_flight[batch.seq] = batch
        self.emitted_at[batch.seq] = time.monotonic()
        self.idle = anyio.Event() if self.idle.is_set() else self.idle  # a rebalance waits for this batch too
        self.stats.batches += 1
        self.ledger.hold(batch.seq, 1)  # the source's own copy: released once every consumer holds theirs
        await pass_on(self.ctx, Flowing(batch, self.ledger, [r for r in records if r.rejection is not None]))
        self.ledger.release(batch.seq)

    async def commit_acknowledged(self) -> None:
        """Every task downstream finished a batch: count it, and commit what is committable in order."""
        async for seq in self.acknowledged:
            batch = self.in_flight.pop(seq)
            valid, invalid, duplicates = len(batch.valid()), len(batch.rejected()), sum(r.duplicate for r in batch.records)
            self.stats.valid += valid
            self.stats.invalid += invalid
            self.stats.duplicates += duplicates
            emitted = self.emitted_at.pop(seq)
            if self.metrics is not None:
                self.metrics.records_out.inc(valid)
                self.metrics.invalid.inc(invalid)
                self.metrics.duplicates.inc(duplicates)
                self.metrics.batch_seconds.observe(time.monotonic() - emitted)
            self.tracker.finish(seq)
            self.slots.release()
            await self.commit_ready()
            if not self.in_flight:
                self.idle.set()

    async def drained(self) -> None:
        """Wait until every emitted batch is acknowledged; a failed task downstream ends the wait with its error."""
        while self.in_flight and not self.ledger.broken.is_set():
            await self.idle.wait()
        if self.ledger.broken.is_set():
            raise DownstreamFailed(self.ledger.error or "a task downstream of the source failed")

    async def watch_downstream(self) -> None:
        await self.ledger.broken.wait()
        raise DownstreamFailed(self.ledger.error or "a task downstream of the source failed")

    # -- the loop -------------------------------------------------------------------------------
    def stop_reason(self, last_record: float) -> str | None:
        p, now = self.p, time.monotonic()
        if p.max_records and self.stats.records_in >= p.max_records:
            return "max_records"
        if p.max_seconds and now - self.stats.started >= p.max_seconds:
            return "max_seconds"
        if p.idle_seconds and not self.buffer and self.tracker.in_flight == 0 and now - last_record >= p.idle_seconds:
            return "idle_seconds"
        return None

    async def consume(self) -> str:
        last_record = time.monotonic()
        batch_started = 0.0
        while True:
            reason = self.stop_reason(last_record)
            if reason:
                if self.buffer:
                    await self.start_batch()
                return reason
            await self.breaker.wait_closed()
            wanted = self.batch_size - len(self.buffer)
            if self.p.max_records:
                wanted = min(wanted, self.p.max_records - self.stats.records_in)
            wait = self.p.batch_timeout - (time.monotonic() - batch_started) if self.buffer else self.p.batch_timeout
            fetched = await self.consumer.getmany(timeout_ms=int(max(0.0, min(wait, 0.5)) * 1000), max_records=wanted)
            for msgs in fetched.values():
                if not self.buffer and msgs:
                    batch_started = time.monotonic()
                for msg in msgs:
                    self.buffer.append(decode(msg, *self.decode_limits))
                    self.read_from.setdefault((msg.topic, msg.partition), msg.offset)
                self.stats.records_in += len(msgs)
                if self.metrics is not None:
                    self.metrics.records_in.inc(len(msgs))
            if fetched:
                last_record = time.monotonic()
                self.stats.first_record = self.stats.first_record or last_record
            full = len(self.buffer) >= self.batch_size
            late = self.buffer and time.monotonic() - batch_started >= self.p.batch_timeout
            if full or late:
                await self.start_batch()

    async def report(self) -> None:
        prev_in, prev_out, prev_t = 0, 0, time.monotonic()
        next_log = prev_t + 5
        while True:
            await anyio.sleep(self.p.progress_every)
            s, now = self.stats, time.monotonic()
            out = s.valid + s.invalid + s.duplicates
            rate_in, rate_out = (s.records_in - prev_in) / (now - prev_t), (out - prev_out) / (now - prev_t)
            prev_in, prev_out, prev_t = s.records_in, out, now
            share = round(s.invalid / out, 4) if out else 0.0
            figures = {
                "rate_in": round(rate_in, 1),
                "rate_out": round(rate_out, 1),
                "lag": await self.lag(),
                "invalid_share": share,
                "paused": self.breaker.is_open,
            }
            detail = f"in {rate_in:,.0f}/s out {rate_out:,.0f}/s invalid {figures['invalid_share']:.1%} lag {figures['lag']:,}" + (
                " PAUSED (sink down)" if self.breaker.is_open else ""
            )
            self.ctx.progress(done=s.records_in, total=self.p.max_records or None, unit="records", detail=detail, **figures)
            if now >= next_log:
                next_log = now + 5
                self.ctx.log.info("stream_progress", records_in=s.records_in, written=out, **figures)

    async def lag(self) -> int:
        """The progress line's lag; each partition's goes to /metrics when the run serves it."""
        lags = await stream_lags(self.consumer, self.committed_at, self.read_from)
        if self.metrics is not None:
            self.metrics.lag(lags)
        return sum(lags.values())


class KafkaSource(Component[KafkaSourceParams]):
    __slots__ = ()
    component = "source.kafka"
    summary = "streaming source: Kafka batches down the stream edges; offsets committed in order once acknowledged"
    Params = KafkaSourceParams
    Result = StreamResult
    emits = True
    needs_concurrent_consumers = True  # waits for their acknowledgements: the SequentialExecutor refuses it

    def settings_problem(self, settings: Any) -> str | None:
        return missing(kafka_options, settings)

    def needs_problem(self, tasks: dict[str, Task]) -> str | None:
        if self.needs:
            return (
                "needs tasks, as streaming pipelines were wired before: the wiring changed, data order now: "
                "the source needs nothing and each stage and sink needs the step before it; see "
                "docs/streaming.md"
            )
        if not streams_from_source(self.name, tasks):
            return "no task reads its batches (a stage or sink needing it): nothing would take what it consumes"
        return dead_letter_problem(self.name, tasks)  # records that fail to decode are dead-lettered here

    async def run(self, ctx: PipelineContext) -> StreamResult:
        from aiokafka import ConsumerRebalanceListener

        if not consumers(ctx):  # before anything is consumed: nothing downstream would take the batches
            raise StreamWiringError(f"task {self.name!r}: no task reads its batches; see docs/streaming.md")
        p = self.params
        settings = ctx.services.settings
        topic, group = p.topic or settings.kafka.topic_source, p.group or settings.kafka.consumer_group
        run = _StreamRun(ctx, p, settings)

        class Listener(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked: Any) -> None:
                await run.on_revoked(revoked)

            async def on_partitions_assigned(self, assigned: Any) -> None:
                run.on_assigned()
                ctx.log.info("partitions_assigned", partitions=sorted(f"{t.topic}:{t.partition}" for t in assigned))

        run.consumer = kafka_consumer(
            settings,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset=p.auto_offset_reset or settings.kafka.auto_offset_reset,
            session_timeout_ms=p.session_timeout_ms,
            heartbeat_interval_ms=p.heartbeat_interval_ms,
            rebalance_timeout_ms=p.rebalance_timeout_ms,
            max_poll_interval_ms=int(max(300.0, p.max_outage_seconds + 60) * 1000),
        )
        run.consumer.subscribe([topic], listener=Listener())
        stopped_by = "cancelled"
        async with open_ledger(ctx, run.ledger):
            await run.consumer.start()
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(run.report)
                    tg.start_soon(run.commit_acknowledged)
                    tg.start_soon(run.watch_downstream)
                    stopped_by = await run.consume()
                    await run.drained()  # every emitted batch acknowledged (and committed) by every sink
                    tg.cancel_scope.cancel()
            except BaseException as exc:
                if stopped_by == "cancelled" and not isinstance(exc, anyio.get_cancelled_exc_class()):
                    stopped_by = f"failed: {type(exc).__name__}"
                raise
            finally:
                run.closing = True
                with anyio.CancelScope(shield=True) as scope:
                    scope.deadline = anyio.current_time() + 15
                    await run.commit_ready()  # whatever was acknowledged, even on SIGTERM or a failure
                    await run.consumer.stop()
                s = run.stats  # logged however the run ended (SIGTERM included), with what was committed
                ctx.log.info(
                    "stream_stopped",
                    stopped_by=stopped_by,
                    records_in=s.records_in,
                    committed=s.committed,
                    refused_by_sinks=run.ledger.refused,
                )
        s = run.stats
        return StreamResult(
            topic=topic,
            group=group,
            records_in=s.records_in,
            valid=s.valid,
            invalid=s.invalid,
            duplicates=s.duplicates,
            batches=s.batches,
            written=dict(run.ledger.written),
            committed=s.committed,
            stopped_by=stopped_by,
            seconds=time.monotonic() - s.started,
            sink_outages=run.breaker.outages,
            refused=run.ledger.refused,
            busy_seconds=time.monotonic() - (s.first_record or time.monotonic()),
        )

    def summarize(self, result: StreamResult) -> dict[str, Any]:
        return {
            "records_in": result.records_in,
            "valid": result.valid,
            "invalid": result.invalid,
            "duplicates": result.duplicates,
            "records_per_s": round(result.records_per_second),
            "stopped_by": result.stopped_by,
            "sink_outages": result.sink_outages,
            "refused_by_sinks": result.refused,
        }
