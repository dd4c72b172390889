"""``sink.kafka`` and ``sink.dead_letter``: keyed JSON records and dead letters to Kafka topics.

The producer batches (``linger_ms``, ``max_batch_bytes``) and compresses (gzip by default: needs no extra
library); a batch's write returns once the broker acknowledged every record of it, so the source commits
only what is really in the topic. Keys are the business key, so a consumer (or a compacted topic) can
tell a redelivered record from a new one: Kafka itself gives at-least-once here (no idempotent producer
or transactions: Tansu has neither), and a crash can leave a record twice, under the same key.

A record the broker or the producer refuses (larger than ``max_request_bytes``) is that record's
failure: the others are written and the refused one goes to the dead-letter topic (``RecordsRefused``).
A broker refuses a whole produce batch for one record, so records of a refused batch are sent again one
at a time and only the ones still refused are dead-lettered. A missing topic or no rights fail the run.

Dead letters carry everything needed to act on them without the source topic: the original message
(text, or base64 when it is not UTF-8), the step and rule that rejected it, the reason, the source
topic/partition/offset and the correlation id, both as headers and in the JSON body. A dead letter
always fits: an original above ``max_original_bytes`` is kept truncated with its size and sha256, and
an original whose JSON escaping would be longer than its base64 (control bytes become ``\\u00XX``, six
times their size) is kept as base64, so the original never takes more than 4/3 of its bytes.
Values are written as strict JSON: a NaN or an infinity is refused (``encode``), never sent as bare ``NaN``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from task_components.clients import kafka_options, kafka_producer
from task_components.connect import missing
from task_components.contracts import BatchSink, DeadLetterSink, StreamRecord
from task_components.streaming.resilience import PermanentSinkError, RecordsRefused, Refusal
from task_components.streaming.steps import StreamDeadLetters, StreamSink

__all__ = ["DeadLetterComponent", "KafkaDeadLetterSink", "KafkaSink", "KafkaSinkComponent", "dead_letter"]

Message = tuple[bytes | None, bytes, list[Any]]
MAX_REASON = 2000  # characters of a reason kept in a dead letter (a reason may quote a value)
ESCAPED = 6  # the most bytes JSON escaping makes of one character (a control byte as \\u00XX)
MAX_KEY = 4096  # bytes of a source key kept in a dead letter; a longer one is named by size and sha256


class ProducerParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    topic: str | None = None
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "gzip"
    linger_ms: int = Field(5, ge=0)
    max_batch_bytes: int = Field(262_144, ge=1024)
    acks: Literal[0, 1, "all"] = 1
    max_request_bytes: int = Field(1_048_576, ge=1024, description="largest record sent; a larger one is dead-lettered (not a failed run)")


class DeadLetterParams(ProducerParams):
    max_original_bytes: int = Field(
        65_536, ge=256, description="original records above this are kept truncated, with their size and sha256"
    )

    @model_validator(mode="after")
    def _fits(self) -> DeadLetterParams:
        if dead_letter_bound(self.max_original_bytes) > self.max_request_bytes:
            raise ValueError(
                f"max_original_bytes {self.max_original_bytes} cannot fit a dead letter within max_request_bytes "
                f"{self.max_request_bytes} (the original may take 4/3 of its size as base64, the reason, rule "
                f"and headers up to {ESCAPED}x theirs escaped)"
            )
        return self


def dead_letter_bound(max_original_bytes: int) -> int:
    """The most bytes a dead letter (body, key and headers) can take: the original as base64 or text no longer
    than that, the reason and rule escaped (body) and raw (headers), the key, source and correlation id."""
    original = (max_original_bytes + 2) // 3 * 4 + 200  # base64 (or text no longer), its size and sha256
    texts = (MAX_REASON + 200 + 200) * ESCAPED + 1000 + 200 + MAX_REASON * 4  # body escaped + headers raw
    return original + texts + MAX_KEY + 255 * ESCAPED * 2 + 4096  # key, topic names, correlation ids, framing


class KafkaSinkParams(ProducerParams):
    key: list[str] = Field(min_length=1, description="business key fields; joined with '|' as the message key")


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str).encode()


@asynccontextmanager
async def _producer(settings: Any, p: ProducerParams) -> AsyncIterator[Any]:
    producer = kafka_producer(
        settings,
        compression_type=None if p.compression == "none" else p.compression,
        linger_ms=p.linger_ms,
        max_batch_size=p.max_batch_bytes,
        acks=p.acks,
        max_request_size=p.max_request_bytes,
        enable_idempotence=False,
        request_timeout_ms=10_000,
    )
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


def _refusals() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """(refusals of one record, refusals of the whole topic): only the first kind is the record's failure."""
    from aiokafka import errors

    record = (errors.MessageSizeTooLargeError, errors.RecordListTooLargeError, errors.CorruptRecordException)
    topic = (errors.InvalidTopicError, errors.TopicAuthorizationFailedError)
    return record, topic


async def _send_all(producer: Any, topic: str, messages: list[Message | None]) -> tuple[int, dict[int, str]]:
    """Send every message (None: refused before sending); returns (sent, {index: reason} of refused ones)."""
    record_refusals, topic_refusals = _refusals()
    refused: dict[int, str] = {}
    pending: list[tuple[int, Any]] = []
    try:
        for i, message in enumerate(messages):
            if message is None:
                continue
            try:
                pending.append((i, await producer.send(topic, value=message[1], key=message[0], headers=message[2])))
            except record_refusals as exc:  # the producer's own size check
                refused[i] = f"{type(exc).__name__}: {exc}"
        alone: list[int] = []
        for i, future in pending:
            try:
                await future  # delivered (acknowledged per `acks`) or raises
            except record_refusals:
                alone.append(i)
        for i in alone:  # the broker refused a batch: find its refused records by sending each alone
            message = messages[i]
            assert message is not None
            try:
                await (await producer.send(topic, value=message[1], key=message[0], headers=message[2]))
            except record_refusals as exc:
                refused[i] = f"{type(exc).__name__}: {exc}"
    except topic_refusals as exc:  # the broker answered no for the topic: retrying cannot help
        raise PermanentSinkError(f"Kafka refused records for {topic!r}: {type(exc).__name__}: {exc}") from exc
    return sum(m is not None for m in messages) - len(refused), refused


def _cid(r: StreamRecord) -> list[tuple[str, bytes]]:
    return [("correlation_id", r.correlation_id.encode())]


class KafkaWriter:
    __slots__ = ("params", "producer", "topic")

    def __init__(self, producer: Any, topic: str, params: KafkaSinkParams) -> None:
        self.producer, self.topic, self.params = producer, topic, params

    def message(self, r: StreamRecord) -> Message:
        value = r.value or {}
        return "|".join(str(value.get(k)) for k in self.params.key).encode(), _dumps(value), _cid(r)

    async def write(self, records: Sequence[StreamRecord]) -> int:
        messages: list[Message | None] = []
        refusals: list[Refusal] = []
        for r in records:
            try:
                messages.append(self.message(r))
            except (ValueError, TypeError, RecursionError) as exc:  # a value JSON cannot carry
                messages.append(None)
                refusals.append(Refusal(r, "encode", f"not encodable as JSON: {type(exc).__name__}: {exc}"))
        sent, refused = await _send_all(self.producer, self.topic, messages)
        refusals += [Refusal(records[i], "too_large", reason) for i, reason in refused.items()]
        if refusals:
            raise RecordsRefused(sent, refusals)
        return sent


@dataclass(frozen=True, slots=True)
class KafkaSink(BatchSink):
    params: KafkaSinkParams
    label = "kafka"

    @asynccontextmanager
    async def open(self, settings: Any) -> AsyncIterator[KafkaWriter]:
        async with _producer(settings, self.params) as producer:
            yield KafkaWriter(producer, self.params.topic or settings.kafka.topic_sink, self.params)


def _original(raw: bytes, limit: int) -> dict[str, Any]:
    """The original message for a dead letter: text or base64, at most ``limit`` bytes of it."""
    cut = len(raw) > limit
    head = raw[:limit] if cut else raw
    as_base64 = {"base64": base64.b64encode(head).decode()}
    try:
        original: dict[str, Any] = {"text": head.decode()}
    except UnicodeDecodeError as exc:
        if cut and exc.start >= len(head) - 3 and exc.reason == "unexpected end of data":
            original = {"text": head[: exc.start].decode()}  # the cut split a character: drop its first bytes
        else:
            original = as_base64
    if "text" in original and len(_dumps(original["text"])) > len(as_base64["base64"]) + 2:
        original = as_base64  # escaping would make it longer (control bytes): base64 is bounded at 4/3
    if cut:
        original |= {"truncated": True, "size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    return original


def dead_letter(r: StreamRecord, max_original_bytes: int = 65_536) -> Message:
    rej = r.rejection
    step, rule, reason = (rej.step, rej.rule, rej.reason) if rej else ("unknown", "unknown", "no reason recorded")
    reason = reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 3] + "..."
    body: dict[str, Any] = {
        "original": _original(r.raw, max_original_bytes),
        "step": step,
        "rule": rule[:200],
        "reason": reason,
        "source": {"topic": r.topic, "partition": r.partition, "offset": r.offset},
        "correlation_id": r.correlation_id,
    }
    key = r.key
    if key is not None and len(key) > MAX_KEY:
        body["key"] = {"size": len(key), "sha256": hashlib.sha256(key).hexdigest()}
        key = None
    headers = [
        *_cid(r),
        ("dlq.step", step.encode()),
        ("dlq.rule", rule[:200].encode()),
        ("dlq.reason", reason.encode()[:1000]),
        ("source.topic", r.topic.encode()),
        ("source.partition", str(r.partition).encode()),
        ("source.offset", str(r.offset).encode()),
    ]
    return key, _dumps(body), headers


class DeadLetterWriter:
    __slots__ = ("max_original", "producer", "topic")

    def __init__(self, producer: Any, topic: str, max_original: int) -> None:
        self.producer, self.topic, self.max_original = producer, topic, max_original

    async def write(self, records: Sequence[StreamRecord]) -> int:
        sent, refused = await _send_all(self.producer, self.topic, [dead_letter(r, self.max_original) for r in records])
        if refused:  # cannot happen by construction (DeadLetterParams._fits); never drop a record silently
            i, reason = next(iter(refused.items()))
            r = records[i]
            raise PermanentSinkError(f"the dead letter of {r.topic}:{r.partition}@{r.offset} was refused: {reason}")
        return sent


@dataclass(frozen=True, slots=True)
class KafkaDeadLetterSink(DeadLetterSink):
    params: DeadLetterParams
    label = "dead_letter"

    @asynccontextmanager
    async def open(self, settings: Any) -> AsyncIterator[DeadLetterWriter]:
        p = self.params
        async with _producer(settings, p) as producer:
            yield DeadLetterWriter(producer, p.topic or settings.kafka.dead_letter_topic, p.max_original_bytes)


class KafkaSinkComponent(StreamSink[KafkaSinkParams]):
    __slots__ = ()
    component = "sink.kafka"
    summary = "streaming sink: keyed JSON records to a Kafka topic (batched, compressed)"
    Params = KafkaSinkParams

    def sink(self) -> KafkaSink:
        return KafkaSink(self.params)

    def settings_problem(self, settings: Any) -> str | None:  # a half-configured broker: exit 2 before the run
        return missing(kafka_options, settings)


class DeadLetterComponent(StreamDeadLetters[DeadLetterParams]):
    __slots__ = ()
    component = "sink.dead_letter"
    summary = "streaming dead-letter topic: original record, step, rule, reason, source position, correlation id"
    Params = DeadLetterParams

    def sink(self) -> KafkaDeadLetterSink:
        return KafkaDeadLetterSink(self.params)

    def settings_problem(self, settings: Any) -> str | None:
        return missing(kafka_options, settings)
