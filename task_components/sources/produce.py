"""``testdata.produce``: send generated test records to Kafka (or print them), at a steady rate.

Behind ``run_pipeline.py produce-test-data``; a component so the command runs through the runner like
every other (run directory, report, signals). ``partitions`` creates the topic first when it does not
exist: create topics explicitly (auto-created ones get the broker's default partition count).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field

from dag_orchestrator.context import PipelineContext
from task_components.base import Component
from task_components.clients import kafka_options, kafka_producer
from task_components.connect import ensure_topics, missing
from task_components.contracts import ProducedTestData
from task_components.sources.testdata import records

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
        try:
            pending = []
            for n, rec in enumerate(gen, 1):
                if p.rate:
                    ahead = started + n / p.rate - time.monotonic()
                    if ahead > 0:
                        await anyio.sleep(ahead)
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
        finally:
            if producer is not None:
                await producer.stop()
            sys.stdout.flush()
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

    def summarize(self, result: ProducedTestData) -> dict[str, Any]:
        return {
            "produced": result.produced,
            "valid": result.valid,
            "invalid": result.invalid,
            "duplicates": result.duplicates,
            "topic": result.topic or "stdout",
        }
