"""``source.kafka``: the streaming driver. Consume batches, run the stages, write every sink, commit.

The stages and sinks are the results of this task's needs (found by type), so one task sees every
sink's outcome for a batch before it commits that batch's offsets:

* Batches close at ``batch_size`` records or ``batch_timeout`` seconds. Stages run in fetch order from
  the consuming loop (the duplicate window sees batches in order) but in a daemon thread, so SIGTERM is
  honoured at once however long a batch's rules take (detached.py); then the batch's sink writes run
  concurrently, up to ``max_in_flight`` batches at once.
* Every record-level failure is the record's: decoding (decode.py: tombstone, size, JSON, depth),
  conversion and rules reject it, and a sink that refuses a record (``RecordsRefused``: too large, not
  encodable, a key it cannot index) writes the others; both go to the dead-letter topic with step, rule
  and reason (a sink's refusal as step ``sink.<label>``) before the batch's offsets are committed.
* Offsets are committed in fetch order once every sink of a batch and of every earlier batch succeeded
  (``OffsetTracker``): at-least-once delivery; the idempotent MongoDB upsert makes the effect exactly once.
* A failing sink is retried with backoff; after ``retry_count`` failures the circuit breaker opens and
  fetching stops until the sink answers again (resilience.py). Nothing is committed meanwhile.
* Rebalance: before partitions are revoked, no new batch starts, in-flight batches are drained and their
  offsets committed; records of partitions no longer ours are dropped before a batch starts, and offsets
  are only committed for partitions still assigned (uncommitted: the new owner reads them again).
* Stop: ``max_records``, ``max_seconds``, ``idle_seconds`` (no record for that long) finish in-flight
  batches and commit; SIGTERM (cancellation) or a failure commit what had finished, then re-raise.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field

from task_components.base import Component
from task_components.connect import kafka_options, missing
from task_components.contracts import (
    BatchSink,
    BatchStage,
    DeadLetterSink,
    Rejection,
    SinkWriter,
    StreamBatch,
    StreamRecord,
    StreamResult,
)
from task_components.sources.decode import MAX_DEPTH, MAX_RECORD_BYTES, decode
from task_components.streaming.detached import run_detached
from task_components.streaming.offsets import OffsetTracker, stream_lag
from task_components.streaming.resilience import CircuitBreaker, PermanentSinkError, RetrySettings, write_with_retry

__all__ = ["KafkaSource", "KafkaSourceParams", "decode"]


class KafkaSourceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topic: str | None = Field(None, description="default: KAFKA__TOPIC_SOURCE")
    group: str | None = Field(None, description="consumer group; default: KAFKA__CONSUMER_GROUP")
    auto_offset_reset: Literal["earliest", "latest"] | None = Field(
        None, description="default: KAFKA__AUTO_OFFSET_RESET"
    )
    batch_size: int | None = Field(None, ge=1, description="default: PIPELINE__BATCH_SIZE")
    batch_timeout: float = Field(1.0, gt=0, description="seconds a partial batch waits for more records")
    max_in_flight: int | None = Field(None, ge=1, description="batches written at once; default: PIPELINE__MAX_WORKERS")
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
    __slots__ = ("batches", "committed", "duplicates", "first_record", "invalid", "records_in", "refused", "started",
                 "valid", "written")  # fmt: skip

    def __init__(self) -> None:
        self.records_in = self.valid = self.invalid = self.duplicates = self.batches = self.refused = 0
        self.written: dict[str, int] = {}
        self.committed: dict[str, int] = {}
        self.started = time.monotonic()
        self.first_record: float | None = None


class _StreamRun:
    """The state of one run of the source (consumer, tracker, breaker, counters): never kept on the task."""

    def __init__(self, ctx: Any, p: KafkaSourceParams, settings: Any, processors: list[Callable[[StreamBatch], None]],
                 sinks: list[tuple[str, SinkWriter]], dlq: tuple[str, SinkWriter]) -> None:  # fmt: skip
        self.ctx, self.p, self.settings = ctx, p, settings
        self.processors, self.sinks, self.dlq = processors, sinks, dlq
        pl = settings.pipeline
        self.retry = RetrySettings(
            retry_count=pl.retry_count if p.retry_count is None else p.retry_count,
            retry_delay=pl.retry_delay_seconds if p.retry_delay is None else p.retry_delay,
            max_delay=p.max_retry_delay,
            max_outage_seconds=p.max_outage_seconds,
        )
        self.breaker = CircuitBreaker(threshold=max(1, self.retry.retry_count))
        self.tracker = OffsetTracker()
        self.stats = _Stats()
        self.batch_size = p.batch_size or pl.batch_size
        self.decode_limits = (p.max_record_bytes, p.max_json_depth)
        self.slots = anyio.Semaphore(p.max_in_flight or pl.max_workers)
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
    async def start_batch(self, tg: Any) -> None:
        """Dispatch the buffer once no rebalance is running, keeping only records of partitions still ours."""
        await self.settled.wait()
        mine = {(tp.topic, tp.partition) for tp in self.consumer.assignment()}
        records = [r for r in self.buffer if (r.topic, r.partition) in mine]
        self.buffer = []
        if records:
            await self.slots.acquire()
            try:
                await self.dispatch(tg, records)
            except BaseException:
                self.slots.release()
                raise

    def run_stages(self, batch: StreamBatch) -> None:
        for process in self.processors:
            process(batch)  # a BatchThresholdError ends the run here; this batch is never committed

    async def dispatch(self, tg: Any, records: list[StreamRecord]) -> None:
        positions: dict[tuple[str, int], int] = {}
        for r in records:
            positions[(r.topic, r.partition)] = max(r.offset + 1, positions.get((r.topic, r.partition), 0))
        batch = StreamBatch(self.tracker.register(positions), records, positions)
        self.idle = anyio.Event() if self.idle.is_set() else self.idle  # a rebalance waits for this batch too
        await run_detached(self.run_stages, batch)  # SIGTERM is honoured while the rules run
        self.stats.batches += 1
        tg.start_soon(self.write_batch, batch)

    async def write_batch(self, batch: StreamBatch) -> None:
        try:
            valid, rejected = batch.valid(), batch.rejected()
            refused: list[StreamRecord] = []  # valid records a sink refused: dead letters too
            async with anyio.create_task_group() as tg:
                for label, writer in self.sinks if valid else ():
                    tg.start_soon(self._write, label, writer, valid, refused)
                if rejected:
                    tg.start_soon(self._write, self.dlq[0], self.dlq[1], rejected, None)
            if refused:
                await self._write(self.dlq[0], self.dlq[1], refused, None)
            self.stats.refused += len(refused)
            log = self.ctx.log
            for r in [*rejected, *refused]:  # correlation ids travel to the logs too (debug: one line per record)
                why = r.rejection
                log.debug("record_rejected", record_id=r.correlation_id, step=why and why.step, rule=why and why.rule,
                          source=f"{r.topic}:{r.partition}@{r.offset}")  # fmt: skip
            self.stats.valid += len(valid)
            self.stats.invalid += len(rejected)
            self.stats.duplicates += sum(r.duplicate for r in batch.records)
            self.tracker.finish(batch.seq)
            await self.commit_ready()
        finally:
            self.slots.release()
            if self.tracker.in_flight == 0:
                self.idle.set()

    async def _write(self, label: str, writer: SinkWriter, records: list[StreamRecord],
                     refused: list[StreamRecord] | None) -> None:  # fmt: skip
        written = await write_with_retry(label, writer, records, self.retry, self.breaker)
        self.stats.written[label] = self.stats.written.get(label, 0) + written.count
        if not written.refused:
            return
        if refused is None:  # the dead-letter topic refusing a dead letter: nowhere left to put it
            first = written.refused[0]
            raise PermanentSinkError(f"{label} refused {len(written.refused)} dead letters; first: {first.reason}")
        first = written.refused[0]
        self.ctx.log.warning("records_refused", sink=label, records=len(written.refused), rule=first.rule,
                             reason=first.reason[:300], first_record_id=first.record.correlation_id)  # fmt: skip
        refused += [dataclasses.replace(f.record, rejection=Rejection(f"sink.{label}", f.rule, f.reason))
                    for f in written.refused]  # fmt: skip

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

    async def consume(self, tg: Any) -> str:
        last_record = time.monotonic()
        batch_started = 0.0
        while True:
            reason = self.stop_reason(last_record)
            if reason:
                if self.buffer:
                    await self.start_batch(tg)
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
            if fetched:
                last_record = time.monotonic()
                self.stats.first_record = self.stats.first_record or last_record
            full = len(self.buffer) >= self.batch_size
            late = self.buffer and time.monotonic() - batch_started >= self.p.batch_timeout
            if full or late:
                await self.start_batch(tg)

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
            figures = {"rate_in": round(rate_in, 1), "rate_out": round(rate_out, 1), "lag": await self.lag(),
                       "invalid_share": share, "paused": self.breaker.is_open}  # fmt: skip
            detail = (f"in {rate_in:,.0f}/s out {rate_out:,.0f}/s invalid {figures['invalid_share']:.1%} "
                      f"lag {figures['lag']:,}" + (" PAUSED (sink down)" if self.breaker.is_open else ""))  # fmt: skip
            self.ctx.progress(done=s.records_in, total=self.p.max_records or None, unit="records", detail=detail,
                              **figures)  # fmt: skip
            if now >= next_log:
                next_log = now + 5
                self.ctx.log.info("stream_progress", records_in=s.records_in, written=out, **figures)

    async def lag(self) -> int:
        return await stream_lag(self.consumer, self.committed_at, self.read_from)


class KafkaSource(Component):
    __slots__ = ()
    component = "source.kafka"
    summary = "streaming driver: Kafka batches -> stages -> all sinks in parallel -> in-order offset commits"
    Params = KafkaSourceParams
    Result = StreamResult
    needs_types = (BatchSink, DeadLetterSink)

    def settings_problem(self, settings: Any) -> str | None:
        return missing(kafka_options, settings)

    async def run(self, ctx: Any) -> StreamResult:
        from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

        p: KafkaSourceParams = self.params  # type: ignore[assignment]
        settings = ctx.services.settings
        stages = [r for r in (ctx.result(n) for n in self.needs) if isinstance(r, BatchStage)]
        sinks = [r for r in (ctx.result(n) for n in self.needs) if isinstance(r, BatchSink)]
        dlqs = [s for s in sinks if isinstance(s, DeadLetterSink)]
        if len(dlqs) != 1:
            raise ValueError(f"source.kafka needs exactly one dead-letter sink among its needs, found {len(dlqs)}")
        topic, group = p.topic or settings.kafka.topic_source, p.group or settings.kafka.consumer_group
        async with AsyncExitStack() as stack:
            writers = [(s.label, await stack.enter_async_context(s.open(settings))) for s in sinks]
            dlq = next(w for w, s in zip(writers, sinks, strict=True) if isinstance(s, DeadLetterSink))
            run = _StreamRun(ctx, p, settings, [s.processor() for s in stages],
                             [w for w, s in zip(writers, sinks, strict=True) if s is not dlqs[0]], dlq)  # fmt: skip

            class Listener(ConsumerRebalanceListener):
                async def on_partitions_revoked(self, revoked: Any) -> None:
                    await run.on_revoked(revoked)

                async def on_partitions_assigned(self, assigned: Any) -> None:
                    run.on_assigned()
                    ctx.log.info("partitions_assigned", partitions=sorted(f"{t.topic}:{t.partition}" for t in assigned))

            run.consumer = AIOKafkaConsumer(
                **kafka_options(settings),
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset=p.auto_offset_reset or settings.kafka.auto_offset_reset,
                session_timeout_ms=p.session_timeout_ms,
                heartbeat_interval_ms=p.heartbeat_interval_ms,
                rebalance_timeout_ms=p.rebalance_timeout_ms,
                max_poll_interval_ms=int(max(300.0, p.max_outage_seconds + 60) * 1000),
            )
            run.consumer.subscribe([topic], listener=Listener())
            await run.consumer.start()
            stopped_by = "cancelled"
            try:
                async with anyio.create_task_group() as tg:
                    reporter = anyio.CancelScope()

                    async def report() -> None:
                        with reporter:
                            await run.report()

                    tg.start_soon(report)
                    stopped_by = await run.consume(tg)
                    reporter.cancel()  # the task group now waits for the batches in flight
            finally:
                run.closing = True
                with anyio.CancelScope(shield=True) as scope:
                    scope.deadline = anyio.current_time() + 15
                    await run.commit_ready()  # whatever finished, even on SIGTERM or a failure
                    await run.consumer.stop()
        s = run.stats
        ctx.log.info("stream_stopped", stopped_by=stopped_by, records_in=s.records_in, committed=s.committed,
                     refused_by_sinks=s.refused)  # fmt: skip
        return StreamResult(
            topic=topic, group=group, records_in=s.records_in, valid=s.valid, invalid=s.invalid,
            duplicates=s.duplicates, batches=s.batches, written=s.written, committed=s.committed,
            stopped_by=stopped_by, seconds=time.monotonic() - s.started, sink_outages=run.breaker.outages,
            refused=s.refused, busy_seconds=time.monotonic() - (s.first_record or time.monotonic()),
        )  # fmt: skip

    def summarize(self, result: StreamResult) -> dict[str, Any]:
        return {
            "records_in": result.records_in, "valid": result.valid, "invalid": result.invalid,
            "duplicates": result.duplicates, "records_per_s": round(result.records_per_second),
            "stopped_by": result.stopped_by, "sink_outages": result.sink_outages, "refused_by_sinks": result.refused,
        }  # fmt: skip
