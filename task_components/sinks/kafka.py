"""``sink.kafka`` and ``sink.dead_letter``: keyed JSON records and dead letters to Kafka topics.

The producer batches (``linger_ms``, ``max_batch_bytes``) and compresses (gzip by default: needs no extra
library); a batch's write returns once the broker acknowledged every record of it, so the source commits
only what is really in the topic. Keys are the business key, so a consumer (or a compacted topic) can
tell a redelivered record from a new one: Kafka itself gives at-least-once here (no idempotent producer
or transactions: Tansu has neither), and a crash can leave a record twice, under the same key.

Dead letters carry everything needed to act on them without the source topic: the original message
(text, or base64 when it is not UTF-8), the step and rule that rejected it, the reason, the source
topic/partition/offset and the correlation id, both as headers and in the JSON body.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from task_components.base import ConfiguredComponent
from task_components.connect import kafka_options, missing
from task_components.contracts import BatchSink, DeadLetterSink, StreamRecord
from task_components.sinks.resilience import PermanentSinkError

__all__ = ["DeadLetterComponent", "KafkaDeadLetterSink", "KafkaSink", "KafkaSinkComponent"]


class ProducerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topic: str | None = None
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "gzip"
    linger_ms: int = Field(5, ge=0)
    max_batch_bytes: int = Field(262_144, ge=1024)
    acks: Literal[0, 1, "all"] = 1


class KafkaSinkParams(ProducerParams):
    key: list[str] = Field(min_length=1, description="business key fields; joined with '|' as the message key")


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode()


@asynccontextmanager
async def _producer(settings: Any, p: ProducerParams) -> AsyncIterator[Any]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        **kafka_options(settings),
        compression_type=None if p.compression == "none" else p.compression,
        linger_ms=p.linger_ms,
        max_batch_size=p.max_batch_bytes,
        acks=p.acks,
        enable_idempotence=False,
        request_timeout_ms=10_000,
    )
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def _send_all(producer: Any, topic: str, messages: list[tuple[bytes | None, bytes, list[Any]]]) -> int:
    from aiokafka import errors

    refusals = (errors.MessageSizeTooLargeError, errors.RecordListTooLargeError, errors.InvalidTopicError,
                errors.TopicAuthorizationFailedError)  # fmt: skip
    try:
        futures = [await producer.send(topic, value=v, key=k, headers=h) for k, v, h in messages]
        for f in futures:
            await f  # delivered (acknowledged per `acks`) or raises
    except refusals as exc:  # the broker answered no: retrying the same records cannot help
        raise PermanentSinkError(f"Kafka refused a record for {topic!r}: {type(exc).__name__}: {exc}") from exc
    return len(futures)


def _cid(r: StreamRecord) -> list[tuple[str, bytes]]:
    return [("correlation_id", r.correlation_id.encode())]


class KafkaWriter:
    __slots__ = ("params", "producer", "topic")

    def __init__(self, producer: Any, topic: str, params: KafkaSinkParams) -> None:
        self.producer, self.topic, self.params = producer, topic, params

    async def write(self, records: Sequence[StreamRecord]) -> int:
        messages = [
            ("|".join(str((r.value or {}).get(k)) for k in self.params.key).encode(), _dumps(r.value), _cid(r))
            for r in records
        ]
        return await _send_all(self.producer, self.topic, messages)


@dataclass(frozen=True, slots=True)
class KafkaSink(BatchSink):
    params: KafkaSinkParams
    label = "kafka"

    @asynccontextmanager
    async def open(self, settings: Any) -> AsyncIterator[KafkaWriter]:
        async with _producer(settings, self.params) as producer:
            yield KafkaWriter(producer, self.params.topic or settings.kafka.topic_sink, self.params)


def dead_letter(r: StreamRecord) -> tuple[bytes | None, bytes, list[Any]]:
    rej = r.rejection
    step, rule, reason = (rej.step, rej.rule, rej.reason) if rej else ("unknown", "unknown", "no reason recorded")
    try:
        original: Any = {"text": r.raw.decode()}
    except UnicodeDecodeError:
        original = {"base64": base64.b64encode(r.raw).decode()}
    body = {
        "original": original,
        "step": step,
        "rule": rule,
        "reason": reason,
        "source": {"topic": r.topic, "partition": r.partition, "offset": r.offset},
        "correlation_id": r.correlation_id,
    }
    headers = [
        *_cid(r),
        ("dlq.step", step.encode()),
        ("dlq.rule", rule.encode()),
        ("dlq.reason", reason.encode()[:1000]),
        ("source.topic", r.topic.encode()),
        ("source.partition", str(r.partition).encode()),
        ("source.offset", str(r.offset).encode()),
    ]
    return r.key, _dumps(body), headers


class DeadLetterWriter:
    __slots__ = ("producer", "topic")

    def __init__(self, producer: Any, topic: str) -> None:
        self.producer, self.topic = producer, topic

    async def write(self, records: Sequence[StreamRecord]) -> int:
        return await _send_all(self.producer, self.topic, [dead_letter(r) for r in records])


@dataclass(frozen=True, slots=True)
class KafkaDeadLetterSink(DeadLetterSink):
    params: ProducerParams
    label = "dead_letter"

    @asynccontextmanager
    async def open(self, settings: Any) -> AsyncIterator[DeadLetterWriter]:
        async with _producer(settings, self.params) as producer:
            yield DeadLetterWriter(producer, self.params.topic or settings.kafka.dead_letter_topic)


class _KafkaComponent(ConfiguredComponent):
    """A component that writes to Kafka: a missing or half-configured broker is exit 2 before the run."""

    __slots__ = ()

    def settings_problem(self, settings: Any) -> str | None:
        return missing(kafka_options, settings)


class KafkaSinkComponent(_KafkaComponent):
    __slots__ = ()
    component = "sink.kafka"
    summary = "streaming sink: keyed JSON records to a Kafka topic (batched, compressed)"
    Params = KafkaSinkParams
    Result = KafkaSink


class DeadLetterComponent(_KafkaComponent):
    __slots__ = ()
    component = "sink.dead_letter"
    summary = "streaming dead-letter topic: original record, step, rule, reason, source position, correlation id"
    Params = ProducerParams
    Result = KafkaDeadLetterSink
