"""``testdata.produce``: send generated test records to Kafka (or print them), at a steady rate.

Behind ``run_pipeline.py produce-test-data``; a component so the command runs through the runner like
every other (run directory, report, signals). ``partitions`` creates the topic first when it does not
exist: create topics explicitly (auto-created ones get the broker's default partition count).

``stop_on_signal`` (the command's unlimited mode, ``total`` 0): SIGINT/SIGTERM end the sending as its
normal end, not as a cancelled run: what was sent is flushed to the broker and counted, and the task
succeeds with that count (the run exits 0). It takes those two signals from the runner for as long as
it sends; a SIGHUP still cancels the run. Without it an unlimited run ends only by cancellation (a
daemon's stop, say), counted nowhere.
"""

from __future__ import annotations

import signal
import sys
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any, Literal

import anyio
import anyio.abc
import anyio.lowlevel
from pydantic import BaseModel, ConfigDict, Field

from dag_orchestrator.context import PipelineContext
from task_components.base import Component
from task_components.clients import kafka_options, kafka_producer
from task_components.connect import ensure_topics, missing
from task_components.contracts import ProducedTestData
from task_components.sources.testdata import TestRecord, records

__all__ = ["ProduceParams", "ProduceTestData"]


class ProduceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    total: int = Field(100, ge=0, description="0: unlimited, until SIGTERM")
    rate: float = Field(0, ge=0, description="records per second (0: as fast as possible)")
    pattern: Literal["valid", "invalid", "mixed"] = "mixed"
    invalid_ratio: float = Field(0.1, ge=0, le=1)
    duplicate_ratio: float = Field(0.0, ge=0, le=1, description="share of re-sent earlier valid records (mixed)")
    seed: int = 7
    output: Literal["kafka", "console"] = "kafka"
    topic: str | None = Field(None, description="default: KAFKA__TOPIC_SOURCE")
    partitions: int | None = Field(None, ge=1, description="create the topic with this many partitions if missing")
    stop_on_signal: bool = Field(False, description="SIGINT/SIGTERM end the sending normally: flushed, counted, succeeded")


class ProduceTestData(Component[ProduceParams]):
    __slots__ = ()
    component = "testdata.produce"
    summary = "send realistic test records (valid / invalid / mixed, with duplicates) to Kafka or stdout"
    Params = ProduceParams
    Result = ProducedTestData

    def settings_problem(self, settings: Any) -> str | None:
        if self.params.output == "console":
            return None
        return missing(kafka_options, settings)

    async def run(self, ctx: PipelineContext) -> ProducedTestData:
        p = self.params
        settings = ctx.services.settings
        topic = p.topic or settings.kafka.topic_source
        kinds: Counter[str] = Counter()
        started = time.monotonic()
        gen = records(p.total or None, pattern=p.pattern, invalid_ratio=p.invalid_ratio, duplicate_ratio=p.duplicate_ratio, seed=p.seed)
        producer: Any = None
        if p.output == "kafka":
            if p.partitions:
                await ensure_topics(settings, topic, p.partitions)
            producer = kafka_producer(settings, linger_ms=5, enable_idempotence=False)
            await producer.start()
        stop, stopped_by = anyio.Event(), ""

        async def stop_on_signal(*, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            nonlocal stopped_by
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                task_status.started()  # from here on, a signal stops the sending instead of cancelling the run
                async for signum in signals:
                    stopped_by = signal.Signals(signum).name
                    stop.set()
                    return

        try:
            async with anyio.create_task_group() as tg:
                if p.stop_on_signal:
                    await tg.start(stop_on_signal)
                await self._send(ctx, gen, producer, topic, started, kinds, stop)
                tg.cancel_scope.cancel()
        finally:
            if producer is not None:
                await producer.stop()
            sys.stdout.flush()
        if stopped_by:
            ctx.log.info("produce_stopped", stopped_by=stopped_by, produced=sum(kinds.values()), topic=topic if producer else "stdout")
        valid = kinds["valid"]
        return ProducedTestData(
            output=p.output,
            topic=topic if p.output == "kafka" else None,
            produced=sum(kinds.values()),
            valid=valid,
            invalid=sum(kinds.values()) - valid - kinds["duplicate"],
            duplicates=kinds["duplicate"],
            kinds=dict(kinds),
            seconds=time.monotonic() - started,
        )

    async def _send(
        self,
        ctx: PipelineContext,
        gen: Iterable[TestRecord],
        producer: Any,
        topic: str,
        started: float,
        kinds: Counter[str],
        stop: anyio.Event,
    ) -> None:
        """Send (or print) until ``gen`` ends or ``stop`` is set, each record counted in ``kinds`` as it is handed
        over; every send is awaited (delivered) before this returns."""
        p = self.params
        pending = []
        for n, rec in enumerate(gen, 1):
            if stop.is_set():
                break
            if p.rate:
                ahead = started + n / p.rate - time.monotonic()
                if ahead > 0:
                    await anyio.sleep(ahead)
            elif n % 100 == 0:
                await anyio.lowlevel.checkpoint()  # as fast as possible, yet a signal is still heard
            if producer is None:
                sys.stdout.write(rec.raw.decode() + "\n")
            else:
                headers = [("correlation_id", f"tdg-{p.seed}-{rec.index}".encode())]
                pending.append(await producer.send(topic, rec.raw, key=rec.key.encode(), headers=headers))
                if len(pending) >= 1000:
                    for f in pending:
                        await f
                    pending.clear()
            kinds[rec.kind] += 1
            if n % 1000 == 0 or n == p.total:
                ctx.progress(done=n, total=p.total or None, unit="records")
        for f in pending:
            await f

    def summarize(self, result: ProducedTestData) -> dict[str, Any]:
        return {
            "produced": result.produced,
            "valid": result.valid,
            "invalid": result.invalid,
            "duplicates": result.duplicates,
            "topic": result.topic or "stdout",
        }
