"""Bounded chunk channels from a producing task to the tasks that stream from it.

One hub per producer, one bounded anyio memory stream per consumer. ``emit`` awaits every consumer in
turn, so the slowest consumer sets the pace (backpressure) and memory stays at ``buffer`` chunks per
consumer. Failure travels both ways: a producer that fails closes the hub with its error, and readers
raise ``UpstreamStreamError`` after the last delivered chunk; a consumer that stops reading closes its
end, and the producer's next ``emit`` raises ``StreamConsumerGone``. Either way both ends stop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["StreamConsumerGone", "StreamHub", "StreamReader", "UpstreamStreamError"]


class UpstreamStreamError(RuntimeError):
    """The producer of a stream failed or was cancelled before finishing it."""

    def __init__(self, producer: str, cause: BaseException | None) -> None:
        reason = f"{type(cause).__name__}: {cause}" if cause else "cancelled"
        super().__init__(f"stream from task {producer!r} ended early ({reason})")
        self.producer = producer


class StreamConsumerGone(RuntimeError):
    """A consumer stopped reading before the producer finished."""


class StreamHub:
    def __init__(self, producer: str, consumers: list[str], buffer: int = 4) -> None:
        self.producer = producer
        self._sends: dict[str, MemoryObjectSendStream[Any]] = {}
        self._readers: dict[str, StreamReader] = {}
        for consumer in consumers:
            send, receive = anyio.create_memory_object_stream[Any](max_buffer_size=buffer)
            self._sends[consumer] = send
            self._readers[consumer] = StreamReader(self, consumer, receive)
        self.error: BaseException | None = None
        self.finished = False
        self.emitted = 0

    @property
    def consumers(self) -> list[str]:
        return list(self._sends)

    async def emit(self, chunk: Any) -> None:
        for consumer, send in self._sends.items():
            try:
                await send.send(chunk)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                raise StreamConsumerGone(f"task {consumer!r} stopped reading the stream of {self.producer!r}") from None
        self.emitted += 1

    def close(self, error: BaseException | None = None, *, finished: bool = False) -> None:
        """Called by the executor when the producer ends, whatever the outcome."""
        self.error = error
        self.finished = finished
        for send in self._sends.values():
            send.close()

    def reader(self, consumer: str) -> StreamReader:
        try:
            return self._readers[consumer]
        except KeyError:
            raise LookupError(
                f"task {consumer!r} does not stream from {self.producer!r}: add it to streams_from"
            ) from None

    def reader_started(self, consumer: str) -> bool:
        reader = self._readers.get(consumer)
        return reader is not None and reader.consumed > 0

    def close_reader(self, consumer: str) -> None:
        reader = self._readers.get(consumer)
        if reader is not None:
            reader.receive.close()


class StreamReader:
    """What ``ctx.stream(name)`` returns: iterate it with ``async for``."""

    def __init__(self, hub: StreamHub, consumer: str, receive: MemoryObjectReceiveStream[Any]) -> None:
        self.hub = hub
        self.consumer = consumer
        self.receive = receive
        self.consumed = 0

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        try:
            async for chunk in self.receive:
                self.consumed += 1
                yield chunk
        except anyio.ClosedResourceError:
            pass
        if not self.hub.finished:
            raise UpstreamStreamError(self.hub.producer, self.hub.error)
