"""The retail facts' Parquet I/O, threads and the draws numpy makes slow, for a day partition at a time.

A year of the pack is ~18 s of CPU, of which ~11 s is the Parquet writer (the same cost the plain
numpy + pyarrow baseline pays for the same rows), ~2 s reading the receipts back (four tables need
them) and the rest drawing. So the pack's speed is how well it keeps both cores writing and drawing,
and its memory is mostly allocators keeping per-thread high-water marks resident:

- ``Writer`` hands partitions to the process's ``WRITERS`` writer threads, at most ``depth`` of its
  own tables pending, so a table draws day d+1 while day d is encoded; ``gated`` runs every fact
  build on one of ``BUILDS_AT_ONCE`` builder threads. The graph would start four tables at once when
  the receipts are written, which on two cores gains no time, and each thread that allocates keeps
  its own arena (glibc) and heap (mimalloc) resident: the same few threads do all the work instead.
- Writes use the system allocator where pyarrow lets them (``memory_pool``); the column encoders
  still allocate from Arrow's default pool (mimalloc), so a writer thread hands its freed pages back
  every few files (``release_unused``). The bytes are exactly those of ``pack.write_parquet``: same
  writer, same options, same temp file then rename.
- Reads (facts and, via ``read_dim``, dimensions) map the file and decode on the calling thread into
  the system allocator: ``pq.read_table`` goes through the dataset layer and Arrow's thread pools,
  2-3x slower for a small file and ~60 MB more peak RSS.
- ``strings`` builds a string column by taking from a small Arrow dictionary instead of converting
  a numpy array of Python strings; ``Choice`` is ``Generator.choice(n, size, p=p)`` with the same
  draws and the same result, 5x faster.

The threads are per process (a forked child makes its own) and never block on each other: a build
waits only for its own writes, so builds cannot deadlock whatever the graph starts.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow._parquet import ParquetReader

from task_components.datasets.pack import PackRun

__all__ = ["POOL", "Choice", "Writer", "gated", "read_columns", "read_dim", "strings", "write_table"]

POOL = pa.system_memory_pool()
T = TypeVar("T")
R = TypeVar("R")


def write_table(table: pa.Table, path: Path) -> int:
    """``pack.write_parquet`` with the system allocator: the same bytes, atomically (temp file, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with pq.ParquetWriter(str(tmp), table.schema, compression="zstd", memory_pool=POOL) as writer:
        writer.write_table(table)
    os.replace(tmp, path)
    return int(table.num_rows)


def read_dim(run: PackRun, table: str) -> pa.Table:
    """A whole dimension table, without Arrow's thread pools (see ``read_columns``)."""
    return read_columns(run.dim_path(table), None)


def read_columns(path: Path, columns: list[str] | None) -> pa.Table:
    """Some columns of one partition, decoded on this thread into the system allocator.

    ``ParquetFile(path, memory_map=True).read(columns, use_threads=False)``, except that
    ``ParquetFile`` has no ``memory_pool``: its reader class does."""
    reader = ParquetReader(memory_pool=POOL)
    reader.open(str(path), use_memory_map=True)
    indices = None if columns is None else [reader.column_name_idx(c) for c in columns]
    return reader.read_all(column_indices=indices, use_threads=False)


WRITERS = 2  # threads encoding partitions: with the builders, both cores stay busy
BUILDS_AT_ONCE = 2  # fact tables drawing at a time
TRIM_EVERY = 8  # files a writer thread writes between handing mimalloc's freed pages back
_pools: dict[str, tuple[int, ThreadPoolExecutor]] = {}
_pools_lock = threading.Lock()
_files = itertools.count(1)


def _pool(name: str, threads: int) -> ThreadPoolExecutor:
    """The process's pool ``name`` (a forked child's copy has no threads: it makes its own)."""
    with _pools_lock:
        held = _pools.get(name)
        if held is None or held[0] != os.getpid():
            held = _pools[name] = (os.getpid(), ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"retail-{name}"))
        return held[1]


def _write_and_trim(table: pa.Table, path: Path) -> int:
    rows = write_table(table, path)
    if next(_files) % TRIM_EVERY == 0:
        pa.default_memory_pool().release_unused()  # this thread's mimalloc heap (the encoders' buffers)
    return rows


class Writer:
    """A table's partitions, written by the shared writer threads, at most ``depth`` of them pending
    (memory stays at a few days' tables whatever the run's length).

    Used as a context manager: leaving it waits for every write it was given and raises the first
    failure (a failure is also raised at the next ``put``), so a build returns only once all its
    files are in place."""

    def __init__(self, depth: int = 2) -> None:
        self._pending: deque[Future[int]] = deque()
        self._depth = depth

    def put(self, table: pa.Table, path: Path) -> int:
        while len(self._pending) >= self._depth:
            self._pending.popleft().result()
        self._pending.append(_pool("writer", WRITERS).submit(_write_and_trim, table, path))
        return int(table.num_rows)

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        errors = [e for e in (f.exception() for f in self._pending) if e is not None]
        self._pending.clear()
        if errors and kind is None:
            raise errors[0]


def gated(build: Callable[[T], R]) -> Callable[[T], R]:
    """``build`` run on one of the process's ``BUILDS_AT_ONCE`` builder threads; the caller waits."""

    @functools.wraps(build)
    def run(arg: T) -> R:
        return _pool("build", BUILDS_AT_ONCE).submit(build, arg).result()

    return run


def strings(dictionary: pa.Array, index: np.ndarray) -> pa.Array:
    """``dictionary[index]`` as a plain string column."""
    return pc.take(dictionary, pa.array(index, pa.int32(), memory_pool=POOL), memory_pool=POOL)


class Choice:
    """``rng.choice(len(p), size, p=p)`` for a fixed ``p``, drawing the same uniforms and returning
    the same indexes.

    numpy computes ``cdf = p.cumsum(); cdf /= cdf[-1]`` and returns ``cdf.searchsorted(rng.random(size),
    side="right")``. Here the uniforms are bucketed by their top ``bits`` bits (exact: a uniform is a
    multiple of 2**-53); the answer for a bucket lies between the answers for its two edges, so a
    bucket whose edges agree answers from the table and only the few draws in buckets that hold a cdf
    step are searched. ``p`` is checked as numpy checks it (a real ``choice`` of no draws)."""

    def __init__(self, p: np.ndarray, bits: int = 16) -> None:
        p = np.asarray(p, dtype=np.float64)
        np.random.default_rng(0).choice(p.size, 0, p=p)  # numpy's own validation of p
        cdf = p.cumsum()
        cdf /= cdf[-1]
        self.cdf = cdf
        self.scale = float(1 << bits)
        edges = np.arange((1 << bits) + 1, dtype=np.float64) / self.scale
        at = cdf.searchsorted(edges, side="right")
        self.low = at[:-1].astype(np.int64)
        self.exact = at[:-1] == at[1:]

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        u = rng.random(size)
        bucket = (u * self.scale).astype(np.int64)
        out = self.low[bucket]
        unsure = np.nonzero(~self.exact[bucket])[0]
        out[unsure] = self.cdf.searchsorted(u[unsure], side="right")
        return out
