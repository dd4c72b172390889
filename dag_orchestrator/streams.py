"""Bounded chunk channels from a producing task to the tasks that stream from it.

One hub per producer, one bounded anyio memory stream per consumer. ``emit`` awaits every consumer in
turn, so the slowest consumer sets the pace (backpressure) and memory stays at ``buffer`` chunks per
consumer. Failure travels both ways: a producer that fails closes the hub with its error, and readers
raise ``UpstreamStreamError`` after the last delivered chunk; a consumer that stops reading closes its
end, and the producer's next ``emit`` raises ``StreamConsumerGone``. Either way both ends stop. A
consumer that will never run (skipped under the continue policy: another of its needs failed) is
dropped instead: the producer stops sending to it, even mid-``emit`` on its full buffer, and goes on
with the others; ``dropped`` names it, for a producer that must know who took its chunks.

A consumer whose task sets ``stream_spill`` never holds its producer back: past ``buffer`` chunks in
memory, further chunks wait for it on disk (Arrow batches as IPC files mapped back without a copy,
anything else pickled) and are read back in order. Why: a slow sink that keeps its own pace (a PostgreSQL shadow
at ~45k 768-d rows/s) would otherwise set the pace of generation and of every other consumer; memory
stays bounded and the disk holds only the lag.
"""

from __future__ import annotations

import math
import pickle
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

__all__ = ["Spill", "StreamConsumerGone", "StreamHub", "StreamReader", "UpstreamStreamError"]


class UpstreamStreamError(RuntimeError):
    """The producer of a stream failed or was cancelled before finishing it."""

    def __init__(self, producer: str, cause: BaseException | None) -> None:
        reason = f"{type(cause).__name__}: {cause}" if cause else "cancelled"
        super().__init__(f"stream from task {producer!r} ended early ({reason})")
        self.producer = producer


class StreamConsumerGone(RuntimeError):
    """A consumer stopped reading before the producer finished."""


def _dump(path: Path, chunk: Any) -> None:
    if isinstance(chunk, pa.RecordBatch):  # Arrow IPC: written as its buffers, read back by mapping them
        with pa.OSFile(str(path.with_suffix(".arrow")), "wb") as sink, pa.ipc.new_stream(sink, chunk.schema) as w:
            w.write_batch(chunk)
    else:
        path.with_suffix(".pickle").write_bytes(pickle.dumps(chunk, protocol=5))


def _load(path: Path) -> Any:
    arrow = path.with_suffix(".arrow")
    if arrow.exists():
        # zero-copy: the batch's buffers are the file's pages; unlinking leaves the mapping valid
        with pa.memory_map(str(arrow)) as source:
            chunk = pa.ipc.open_stream(source).read_next_batch()
        arrow.unlink()
        return chunk
    pickled = path.with_suffix(".pickle")
    chunk = pickle.loads(pickled.read_bytes())
    pickled.unlink()
    return chunk


class Spill:
    """One spilling consumer's queue: up to ``buffer`` chunks in memory, the rest in files, in order."""

    def __init__(self, producer: str, consumer: str, buffer: float, base: Path | None) -> None:
        self.buffer = buffer if math.isfinite(buffer) else 4
        self.in_memory = 0
        self.spilled = 0
        self.base, self.prefix = base, f"dag-spill-{producer}-{consumer}-"
        self.directory: Path | None = None
        self.closed = False
        if base is not None and base.is_dir():  # what a killed earlier attempt of this edge left behind
            for stale in base.glob(f"{self.prefix}*"):
                shutil.rmtree(stale, ignore_errors=True)

    async def entry(self, chunk: Any) -> tuple[bool, Any]:
        """(in memory?, the chunk or the file holding it); the consumer gone: BrokenResourceError."""
        if self.closed:
            raise anyio.BrokenResourceError
        if self.in_memory < self.buffer:
            self.in_memory += 1
            return True, chunk
        if self.directory is None:
            if self.base is not None:
                self.base.mkdir(parents=True, exist_ok=True)
            self.directory = Path(tempfile.mkdtemp(prefix=self.prefix, dir=self.base))
        path = self.directory / f"{self.spilled:08d}"
        self.spilled += 1
        try:
            await anyio.to_thread.run_sync(_dump, path, chunk)
        except FileNotFoundError:
            if self.closed:  # the consumer stopped while this chunk was being written
                raise anyio.BrokenResourceError from None
            raise
        except (TypeError, AttributeError, pickle.PicklingError) as exc:
            raise TypeError(f"a {type(chunk).__name__} chunk cannot be spilled to disk (not picklable): {exc}") from exc
        return False, path

    async def take(self, entry: tuple[bool, Any]) -> Any:
        in_memory, value = entry
        if in_memory:
            self.in_memory -= 1
            return value

        return await anyio.to_thread.run_sync(_load, value)

    def discard(self) -> None:
        self.closed = True
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


class StreamHub:
    def __init__(
        self,
        producer: str,
        consumers: list[str],
        buffer: float = 4,
        spill: set[str] | frozenset[str] = frozenset(),
        spill_dir: Path | None = None,
    ) -> None:
        self.producer = producer
        self._sends: dict[str, MemoryObjectSendStream[Any]] = {}
        self._readers: dict[str, StreamReader] = {}
        self._spills: dict[str, Spill] = {}
        for consumer in consumers:
            if consumer in spill:
                self._spills[consumer] = Spill(producer, consumer, buffer, spill_dir)
            size = math.inf if consumer in spill else buffer
            send, receive = anyio.create_memory_object_stream[Any](max_buffer_size=size)
            self._sends[consumer] = send
            self._readers[consumer] = StreamReader(self, consumer, receive, self._spills.get(consumer))
        self.error: BaseException | None = None
        self.finished = False
        self.emitted = 0
        self.dropped: list[str] = []  # consumers that will never run: not sent to
        self._drop_watchers: dict[object, Callable[[str], None]] = {}

    @property
    def consumers(self) -> list[str]:
        return list(self._sends)

    def feeds(self, consumer: str) -> bool:
        """Whether ``consumer`` reads (or was meant to read) this stream, dropped or not."""
        return consumer in self._readers or consumer in self.dropped

    def drop(self, consumer: str) -> None:
        """``consumer`` will never run: stop sending to it (a send waiting on its full buffer ends)."""
        send = self._sends.pop(consumer, None)
        if send is None:
            return
        self.dropped.append(consumer)
        self.close_reader(consumer)
        send.close()
        for watcher in tuple(self._drop_watchers.values()):
            watcher(consumer)

    def on_drop(self, key: object, watcher: Callable[[str], None]) -> None:
        """Call ``watcher(consumer)`` when a consumer is dropped (at once for one dropped already); one per ``key``.

        For a producer whose chunks must be accounted for by their consumers: chunks already sitting in
        a dropped consumer's buffer will never be read, and the producer may never send another one to
        find that out by itself.
        """
        if key in self._drop_watchers:
            return
        self._drop_watchers[key] = watcher
        for consumer in self.dropped:
            watcher(consumer)

    async def emit(self, chunk: Any) -> None:
        for consumer, send in tuple(self._sends.items()):  # a consumer may be dropped while this waits
            try:
                spill = self._spills.get(consumer)
                if spill is None:
                    await send.send(chunk)
                else:
                    send.send_nowait(await spill.entry(chunk))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                if consumer in self.dropped:
                    continue
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
            raise LookupError(f"task {consumer!r} does not stream from {self.producer!r}: add it to streams_from") from None

    def reader_started(self, consumer: str) -> bool:
        reader = self._readers.get(consumer)
        return reader is not None and reader.consumed > 0

    def close_reader(self, consumer: str) -> None:
        reader = self._readers.get(consumer)
        if reader is not None:
            reader.receive.close()
            if reader.spill is not None:
                reader.spill.discard()


class StreamReader:
    """What ``ctx.stream(name)`` returns: iterate it with ``async for``."""

    def __init__(self, hub: StreamHub, consumer: str, receive: MemoryObjectReceiveStream[Any], spill: Spill | None = None) -> None:
        self.hub = hub
        self.consumer = consumer
        self.receive = receive
        self.spill = spill
        self.consumed = 0

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        try:
            async for item in self.receive:
                chunk = item if self.spill is None else await self.spill.take(item)
                self.consumed += 1
                yield chunk
        except anyio.ClosedResourceError:
            pass
        finally:
            if self.spill is not None:
                self.spill.discard()
        if not self.hub.finished:
            raise UpstreamStreamError(self.hub.producer, self.hub.error)
