"""Milvus Lite takes one write at a time per collection, so the client serializes them.

Milvus Lite 3.2.2 appends every insert/upsert/delete to its collection's write-ahead log (an Arrow IPC
stream) from whichever gRPC worker thread took the call, with no lock: two concurrent inserts into one
collection interleave their bytes. Nothing shows while the process lives (the rows are in memory too),
but the next open replays a corrupt WAL only up to the first broken batch and silently drops every
acknowledged row after it: a killed run resumed from the insert journal then misses those rows.
Serializing writes (and flushes, which swap the WAL) per database file in this process removes the
interleaving; reads stay concurrent.
Another process cannot open the same file (Lite holds a flock on it), so a process-wide lock is enough.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from pymilvus import MilvusClient

__all__ = ["LiteClient", "held", "lite_write_lock", "write_lock"]

_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()


def write_lock(uri: str) -> threading.Lock:
    """The one lock every client of this Lite database file in this process writes under."""
    key = str(Path(uri).resolve())
    with _guard:
        return _locks.setdefault(key, threading.Lock())


def lite_write_lock(uri: str) -> threading.Lock | None:
    """The write lock of ``uri`` when it is a Lite database file (pymilvus' own test: a ``.db`` path), else None;
    for clients that are not a LiteClient (the drop-in shadow clients) but write to the same file."""
    return write_lock(uri) if uri.endswith(".db") else None


@contextlib.asynccontextmanager
async def held(lock: threading.Lock | None) -> AsyncIterator[None]:
    """``lock`` taken from async code: polled, so the event loop never blocks and a cancelled wait holds nothing."""
    if lock is None:
        yield
        return
    while not lock.acquire(blocking=False):
        await anyio.sleep(0.005)
    try:
        yield
    finally:
        lock.release()


class LiteClient(MilvusClient):
    """A MilvusClient for a Lite ``.db`` file whose writes never overlap (see the module docstring)."""

    def __init__(self, uri: str, **kwargs: Any) -> None:
        super().__init__(uri=uri, **kwargs)
        self._write_lock = write_lock(uri)

    def insert(self, *args: Any, **kwargs: Any) -> Any:
        with self._write_lock:
            return super().insert(*args, **kwargs)

    def upsert(self, *args: Any, **kwargs: Any) -> Any:
        with self._write_lock:
            return super().upsert(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        with self._write_lock:
            return super().delete(*args, **kwargs)

    def flush(self, *args: Any, **kwargs: Any) -> Any:  # swaps the WAL under a write that may be appending
        with self._write_lock:
            return super().flush(*args, **kwargs)
