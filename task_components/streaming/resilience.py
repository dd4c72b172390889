"""Sink retries with exponential backoff, and the circuit breaker that pauses consumption.

Every sink write of a batch goes through ``write_with_retry``. A failure is retried after
``retry_delay * 2**n`` (capped, lengthened by up to 20%: ``RetryPolicy.delay``, the project's one backoff). After
``retry_count`` consecutive failures of a sink the breaker opens: the source stops fetching (the
consumer keeps heartbeating, so the group does not rebalance) while the failing batches keep probing
the sink. The first success closes the breaker and consumption resumes; nothing is committed for a
batch until every sink took it, so nothing is lost. A sink down for longer than ``max_outage_seconds``
fails the run (offsets of unfinished batches stay uncommitted: a restart re-reads them).

Only a failure to reach the sink is an outage. A sink that answers and refuses *some records* (too
large, not encodable, a key it cannot index) writes the others and raises ``RecordsRefused``: those
records go to the dead-letter topic with the sink's reason, and the batch counts as written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import anyio
import structlog

from dag_orchestrator.retry import RetryPolicy
from task_components.contracts import SinkWriter, StreamRecord

__all__ = [
    "CircuitBreaker",
    "PermanentSinkError",
    "RecordsRefused",
    "Refusal",
    "RetrySettings",
    "SinkDownError",
    "Written",
    "write_with_retry",
]

log = structlog.get_logger("sinks")


class SinkDownError(RuntimeError):
    """A sink stayed unavailable longer than ``max_outage_seconds``."""


class PermanentSinkError(RuntimeError):
    """The sink answered and refused the data (a validation rule, a conflicting unique index): retrying
    cannot help, so the run fails at once with the sink's reason instead of waiting out an outage."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """One record a sink answered no to: ``rule`` names the kind (``too_large``, ``key``...), ``reason`` says why."""

    record: StreamRecord
    rule: str
    reason: str


class RecordsRefused(Exception):
    """Raised by a writer after it wrote every record it could: the others are the records' failure, not the run's."""

    def __init__(self, written: int, refused: list[Refusal]) -> None:
        super().__init__(f"{len(refused)} records refused; first: {refused[0].reason if refused else ''}")
        self.written, self.refused = written, refused


@dataclass(frozen=True, slots=True)
class Written:
    count: int
    refused: list[Refusal] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RetrySettings:
    retry_count: int = 3
    retry_delay: float = 5.0
    max_delay: float = 30.0
    max_outage_seconds: float = 300.0


@dataclass(slots=True)
class CircuitBreaker:
    """Open while any sink is failing; ``wait_closed`` is what the source awaits before fetching.
    ``on_change`` hears each opening (True) and closing (False), e.g. for the run's ``/metrics``."""

    threshold: int
    failing: dict[str, int] = field(default_factory=dict)
    outages: int = 0
    on_change: Callable[[bool], None] | None = None
    _closed: anyio.Event = field(default_factory=anyio.Event)

    def __post_init__(self) -> None:
        self._closed.set()

    @property
    def is_open(self) -> bool:
        return not self._closed.is_set()

    def failure(self, sink: str, exc: BaseException) -> None:
        self.failing[sink] = self.failing.get(sink, 0) + 1
        if self.failing[sink] >= self.threshold and not self.is_open:
            self._closed = anyio.Event()
            self.outages += 1
            log.warning("circuit_open", sink=sink, error=f"{type(exc).__name__}: {exc}"[:300])
            if self.on_change is not None:
                self.on_change(True)

    def success(self, sink: str) -> None:
        self.failing.pop(sink, None)
        if self.is_open and not self.failing:
            self._closed.set()
            log.info("circuit_closed", sink=sink)
            if self.on_change is not None:
                self.on_change(False)

    async def wait_closed(self) -> None:
        await self._closed.wait()


async def write_with_retry(
    label: str, writer: SinkWriter, records: Sequence[StreamRecord], retry: RetrySettings, breaker: CircuitBreaker
) -> Written:
    first_failure: float | None = None
    attempt = 0
    # the project's one backoff arithmetic (dag_orchestrator/retry.py); the loop stays here because an outage
    # is bounded by time since its first failure and every failure feeds the breaker that pauses the source
    backoff = RetryPolicy(backoff=retry.retry_delay, factor=2.0, max_delay=retry.max_delay, jitter=0.2)
    while True:
        try:
            written = Written(await writer.write(records))
        except RecordsRefused as refused:  # the sink answered: not an outage
            written = Written(refused.written, refused.refused)
        except PermanentSinkError:
            raise
        except Exception as exc:  # any other failure (unreachable, timeout) is retried until the outage limit
            now = time.monotonic()
            first_failure = first_failure or now
            attempt += 1
            breaker.failure(label, exc)
            if now - first_failure > retry.max_outage_seconds:
                raise SinkDownError(
                    f"sink {label} failed for {now - first_failure:.0f}s (max_outage_seconds "
                    f"{retry.max_outage_seconds:g}): {type(exc).__name__}: {exc}"
                ) from exc
            delay = backoff.delay(attempt)
            log.warning(
                "sink_retry",
                sink=label,
                attempt=attempt,
                delay=round(delay, 2),
                error=str(exc)[:200],
                records=len(records),
                first_record_id=records[0].correlation_id if records else None,
            )
            await anyio.sleep(delay)
            continue
        breaker.success(label)
        return written
