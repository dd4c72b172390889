"""Status events, keyed by request_id, in order per request.

Every event of every request goes through one queue and one sending loop, so the events of a request
reach the producer in the order they happened; with one key they land on one partition, and aiokafka
keeps one batch in flight per partition, so they stay in that order on the topic. Each carries the
ledger's ``attempt`` (a takeover after a crash is attempt 2) and a ``seq`` within the attempt, so a
reader can check the order without trusting the broker.

A final event (succeeded/failed/rejected) is awaited until the broker acknowledges it: only then may the
request's offset be committed. The sending loop itself never waits for the broker (acknowledgements
arrive as callbacks), so events of many requests share the producer's batches. Losing a progress event
to a broker outage is logged, not fatal.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

if TYPE_CHECKING:
    from pipeline.daemon.ledger import LedgerRow

__all__ = ["StatusPublisher"]

log = structlog.get_logger("pipeline.daemon")


class StatusPublisher:
    def __init__(self, producer: Any, topic: str, daemon_id: str) -> None:
        self.producer, self.topic, self.daemon_id = producer, topic, daemon_id
        self._seq: dict[tuple[str, int], int] = {}
        send, receive = anyio.create_memory_object_stream[tuple[str, list[str], bytes, anyio.Event | None]](max_buffer_size=100_000)
        self._send: MemoryObjectSendStream[tuple[str, list[str], bytes, anyio.Event | None]] = send
        self._receive: MemoryObjectReceiveStream[tuple[str, list[str], bytes, anyio.Event | None]] = receive
        self._errors: dict[int, BaseException] = {}
        self.drained = anyio.Event()  # set when close() was called and everything queued before it was sent

    def _encode(self, request_id: str, event: str, attempt: int, fields: dict[str, Any]) -> bytes:
        key = (request_id, attempt)
        seq = self._seq[key] = self._seq.get(key, 0) + 1
        body = {
            "request_id": request_id,
            "event": event,
            "attempt": attempt,
            "seq": seq,
            "at": time.time(),
            "daemon": self.daemon_id,
            **fields,
        }
        return json.dumps(body, default=str).encode()

    def emit(self, request_id: str, event: str, *, attempt: int, reply_topic: str | None = None, **fields: Any) -> None:
        """Queue an event (callable from the executor's synchronous observers)."""
        topics = [self.topic] + ([reply_topic] if reply_topic and reply_topic != self.topic else [])
        self._send.send_nowait((request_id, topics, self._encode(request_id, event, attempt, fields), None))

    def emit_acked(
        self, request_id: str, event: str, *, attempt: int, reply_topic: str | None = None, **fields: Any
    ) -> Callable[[], Awaitable[None]]:
        """Queue an event now (its place in the order is taken here); the returned ``wait()`` returns once the
        broker has it, or raises why not."""
        topics = [self.topic] + ([reply_topic] if reply_topic and reply_topic != self.topic else [])
        done = anyio.Event()
        self._send.send_nowait((request_id, topics, self._encode(request_id, event, attempt, fields), done))

        async def wait() -> None:
            await done.wait()
            error = self._errors.pop(id(done), None)
            if error is not None:
                raise error

        return wait

    async def emit_final(self, request_id: str, event: str, *, attempt: int, reply_topic: str | None = None, **fields: Any) -> None:
        """Queue the request's last event and wait until the broker has it (raises if it could not)."""
        try:
            await self.emit_acked(request_id, event, attempt=attempt, reply_topic=reply_topic, **fields)()
        finally:  # that attempt has ended: forget its counter and "accepted"'s (a long-lived daemon keeps none)
            self._seq.pop((request_id, attempt), None)
            self._seq.pop((request_id, 0), None)

    async def replay(self, request_id: str, row: LedgerRow, reply_topic: str | None) -> None:
        """A finished request delivered again: say its recorded outcome again (marked replay), run nothing.
        The ledger's JSON is passed on as stored, so a replay reads exactly like the first telling."""
        stored = row.outcome or {}
        body = {k: v for k, v in stored.items() if k != "event"}
        await self.emit_final(
            request_id, stored.get("event", row.state), attempt=row.attempts, reply_topic=reply_topic, replay=True, **body
        )

    def close(self) -> None:
        self._send.close()

    async def run(self) -> None:
        """The one sending loop; runs for the daemon's life, then drains what close() left queued."""
        try:
            await self._send_all()
            await self.producer.flush()
        finally:
            self.drained.set()

    async def _send_all(self) -> None:
        """Hand each event to the producer and go on: nothing here waits for the broker, so one request's
        acknowledgement never holds up another's events. ``send`` only appends to the partition's batch
        (aiokafka keeps one batch in flight per partition, so the order holds); a final event's waiter is
        woken by the acknowledgement's callback."""
        async with self._receive:
            async for request_id, topics, value, done in self._receive:
                try:
                    futures = [await self.producer.send(t, value, key=request_id.encode()) for t in topics]
                except Exception as exc:  # noqa: BLE001 - a final event's waiter gets it; others are logged
                    if done is not None:
                        self._errors[id(done)] = exc
                        done.set()
                    else:
                        error = f"{type(exc).__name__}: {exc}"
                        log.warning("status event not sent", request_id=request_id, error=error)
                    continue
                callback = _log_failure if done is None else self._acked(done, len(futures))  # one count for all
                for fut in futures:
                    fut.add_done_callback(callback)

    def _acked(self, done: anyio.Event, expected: int) -> Callable[[Any], None]:
        """A callback for each of an event's sends (status and reply topic): ``done`` is set after the last."""
        left = [expected]

        def callback(fut: Any) -> None:
            error = fut.exception() if not fut.cancelled() else anyio.get_cancelled_exc_class()("send cancelled")
            if error is not None:
                self._errors.setdefault(id(done), error)
            left[0] -= 1
            if left[0] == 0:
                done.set()

        return callback


def _log_failure(fut: Any) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("status event not sent", error=f"{type(fut.exception()).__name__}: {fut.exception()}")
