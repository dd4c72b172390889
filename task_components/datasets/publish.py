"""Publishing a dataset's events to Kafka behind a circuit breaker, with a dead-letter topic.

An event is *refused* (the broker or the producer answered no: too large, not encodable) or *lost to an
outage* (the broker unreachable: a timeout, a connection error, any error aiokafka marks retriable).
A refused event goes to the dead-letter topic with the reason and its trace id, once. An outage feeds
the streaming plumbing's ``CircuitBreaker`` (task_components/streaming/resilience.py): after
``breaker_threshold`` failed attempts in a row it opens, the caller stops producing (``settle`` does not
return, so a realtime run draws no new events and a historical run reads no new day) while the failed
events are re-sent after an exponential backoff; the first delivered attempt closes it. An outage
longer than ``max_outage_seconds`` fails the task (a realtime run saves its state first), so nothing is
dropped silently. Only events in flight when an outage starts can land behind later ones of their key.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from pydantic import BaseModel, ConfigDict, Field

from config.settings import Settings
from dag_orchestrator.retry import RetryPolicy
from task_components.clients import kafka_producer
from task_components.streaming.resilience import CircuitBreaker

__all__ = ["Outgoing", "PublishDownError", "PublishParams", "Publisher", "is_outage"]

log = structlog.get_logger("datasets.publish")
LABEL = "kafka"


class PublishParams(BaseModel):
    """What every task publishing a pack's events takes: topics, the producer's limits, the breaker."""

    model_config = ConfigDict(extra="forbid")
    topic: str = "retail-events"
    dead_letter_topic: str = "retail-events-dlq"
    retry_delay: float = Field(0.5, ge=0, description="producer retry backoff, seconds")
    max_event_bytes: int = Field(1_000_000, ge=64)
    breaker_threshold: int = Field(3, ge=1, description="failed send attempts in a row that open the circuit breaker")
    request_timeout: float = Field(40.0, gt=0, description="after this a send counts as undelivered (an outage)")
    max_outage_seconds: float = Field(300.0, gt=0, description="a broker unreachable this long fails the task")
    schema_version: str = "1.0"
    source: str = "dag-pipeline/retail"

    def producer(self, settings: Settings) -> Any:
        """Acks from every replica, no idempotence (the local broker lacks it), sized for the largest event."""
        return kafka_producer(
            settings,
            enable_idempotence=False,
            acks="all",
            linger_ms=5,
            max_request_size=max(self.max_event_bytes * 2, 1_048_576),
            retry_backoff_ms=int(self.retry_delay * 1000),
            request_timeout_ms=int(self.request_timeout * 1000),
        )

    def publisher(self, producer: Any) -> Publisher:
        return Publisher(
            producer,
            self.topic,
            self.dead_letter_topic,
            max_event_bytes=self.max_event_bytes,
            breaker_threshold=self.breaker_threshold,
            retry_delay=self.retry_delay,
            max_outage_seconds=self.max_outage_seconds,
        )


class PublishDownError(RuntimeError):
    """The broker stayed unreachable for longer than max_outage_seconds."""


def is_outage(exc: BaseException) -> bool:
    """The broker did not answer (retry later), as opposed to refusing this one event (dead-letter it)."""
    from aiokafka.errors import KafkaTimeoutError

    return isinstance(exc, KafkaTimeoutError) or bool(getattr(exc, "retriable", False))


@dataclass(frozen=True, slots=True)
class Outgoing:
    key: bytes
    value: bytes
    event_type: str
    trace_id: str
    day: str


@dataclass(slots=True)
class Publisher:
    producer: Any  # AIOKafkaProducer (or a stand-in with send / send_and_wait)
    topic: str
    dead_letter_topic: str
    max_event_bytes: int = 1_000_000
    breaker_threshold: int = 3
    retry_delay: float = 0.5
    max_outage_seconds: float = 300.0
    breaker: CircuitBreaker = field(init=False)
    sent: int = 0
    dead_lettered: int = 0
    _pending: list[tuple[Outgoing, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.breaker = CircuitBreaker(self.breaker_threshold)

    async def submit(self, ev: Outgoing) -> None:
        """Hand one event to the producer (its acknowledgement is collected by ``settle``)."""
        if len(ev.value) > self.max_event_bytes:
            await self.dead_letter(ev, f"event is {len(ev.value):,} bytes; max_event_bytes is {self.max_event_bytes:,}")
            return
        try:
            self._pending.append((ev, await self.producer.send(self.topic, ev.value, key=ev.key)))
        except Exception as exc:  # noqa: BLE001 - classified: an outage is retried, a refusal dead-lettered
            if is_outage(exc):
                self._pending.append((ev, exc))
            else:
                await self.dead_letter(ev, f"{type(exc).__name__}: {exc}")

    async def settle(self) -> None:
        """Collect every acknowledgement; re-send what an outage lost (in order) until it is delivered."""
        first_failure: float | None = None
        attempt = 0
        backoff = RetryPolicy(backoff=self.retry_delay, factor=2.0, max_delay=30.0, jitter=0.2)
        while self._pending:
            pending, self._pending = self._pending, []
            lost: list[tuple[Outgoing, BaseException]] = []
            for ev, fut in pending:
                if isinstance(fut, BaseException):
                    lost.append((ev, fut))
                    continue
                try:
                    await fut
                    self.sent += 1
                except Exception as exc:  # noqa: BLE001 - the producer's own retries are spent
                    if is_outage(exc):
                        lost.append((ev, exc))
                    else:
                        await self.dead_letter(ev, f"{type(exc).__name__}: {exc}")
            if not lost:
                self.breaker.success(LABEL)
                return
            now = time.monotonic()
            first_failure = first_failure or now
            attempt += 1
            self.breaker.failure(LABEL, lost[0][1])
            if now - first_failure > self.max_outage_seconds:
                raise PublishDownError(
                    f"Kafka unreachable for {now - first_failure:.0f}s (max_outage_seconds {self.max_outage_seconds:g}); "
                    f"{len(lost)} events undelivered: {type(lost[0][1]).__name__}: {lost[0][1]}"
                )
            delay = backoff.delay(attempt)
            log.warning("publish_retry", attempt=attempt, delay=round(delay, 2), events=len(lost), breaker_open=self.breaker.is_open)
            await anyio.sleep(delay)
            for ev, _ in lost:
                await self.submit(ev)

    async def dead_letter(self, ev: Outgoing, reason: str) -> None:
        letter = {
            "reason": reason,
            "topic": self.topic,
            "event_type": ev.event_type,
            "day": ev.day,
            "trace_id": ev.trace_id,
            "event": ev.value.decode(),
        }
        await self.producer.send_and_wait(self.dead_letter_topic, json.dumps(letter).encode(), key=ev.key)
        self.dead_lettered += 1
