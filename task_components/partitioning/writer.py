"""Streaming dataset writer: batches in, closed files (with rows, bytes, sha256) out.

Files go through DirectSink (O_DIRECT, hashed on the way out), so the kernel's page cache, the
single most expensive step on the machines we measured, is bypassed.

Limits: ``rows_per_file`` is exact (batches are sliced at the
boundary); ``file_size`` slices batches by their in-memory size per row, which bounds a file from
above because encoding only shrinks data. Shards split rows by a hash of the primary key, each shard
writing its own files, as Milvus would route them to vchannels.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from task_components.manifest import FileEntry
from task_components.schema.arrow import META_COLUMN, schema_of
from task_components.schema.types import spec


class DirectSink:
    """Write-only file that bypasses the page cache (O_DIRECT) and hashes what it writes.

    Large dataset files are written once and read later by another process or machine, so caching
    them only costs: on the VMs we measured, buffered writes of 3 GB took 9 s of kernel CPU, O_DIRECT
    0.3 s. Data is staged in a page-aligned buffer and written in aligned blocks; the unaligned tail
    is written after clearing O_DIRECT. Where the filesystem refuses O_DIRECT (tmpfs), it writes
    buffered. The sha256 is computed on the way out, so files are never read back to be hashed.
    """

    BLOCK = 8 << 20

    def __init__(self, path: Path) -> None:
        self.path = path
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        try:
            self.fd = os.open(path, flags | getattr(os, "O_DIRECT", 0), 0o644)
            self.direct = hasattr(os, "O_DIRECT")
        except OSError:
            self.fd = os.open(path, flags, 0o644)
            self.direct = False
        self.buf = mmap.mmap(-1, self.BLOCK)
        self.view = memoryview(self.buf)
        self.fill = 0
        self.size = 0
        self.sha = hashlib.sha256()
        self.closed = False

    def write(self, data: Any) -> int:
        src = memoryview(data).cast("B")
        n = len(src)
        while src:
            take = min(len(src), self.BLOCK - self.fill)
            self.view[self.fill : self.fill + take] = src[:take]
            self.fill += take
            src = src[take:]
            if self.fill == self.BLOCK:
                self._flush_block(self.BLOCK)
        self.size += n
        return n

    def _flush_block(self, length: int) -> None:
        block = self.view[:length]
        self.sha.update(block)
        written = 0
        while written < length:
            written += os.write(self.fd, block[written:])
        self.fill = 0

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        return None

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if self.closed:
            return
        try:
            tail = self.fill
            if tail:
                aligned = tail - tail % 4096 if self.direct else tail
                if aligned:
                    self.sha.update(self.view[:aligned])
                    os.write(self.fd, self.view[:aligned])
                if aligned < tail:
                    fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                    self.sha.update(self.view[aligned:tail])
                    os.write(self.fd, self.view[aligned:tail])
        finally:
            self.view.release()
            self.buf.close()
            os.close(self.fd)
            self.closed = True

    def hexdigest(self) -> str:
        return self.sha.hexdigest()


ROW_GROUP_BYTES = 64 << 20


class _ParquetFile:
    """Batches gathered into row groups of ~``row_group_bytes`` before they are encoded.

    Why: Milvus 2.3's bulk import parses a Parquet file row group by row group, and small groups cost it
    dearly: 100k 768-d rows took 40 s to persist in 2.6k-row groups (one per generated chunk), 14 s in
    32k-row groups and 12 s in one group (measured on the local server). 64 MB keeps a few tens of
    thousands of wide rows per group while bounding what a writer lane holds in memory.
    """

    def __init__(self, path: Path, schema: pa.Schema, compression: str, row_group_bytes: int = ROW_GROUP_BYTES) -> None:
        self.sink = DirectSink(path)
        cs = schema_of(schema)
        strings = [f.name for f in cs.data_fields() if spec(f).family == "text" and not f.is_primary]
        scalars = [f.name for f in cs.data_fields() if spec(f).family not in ("vector", "sparse", "array")]
        self.writer = pq.ParquetWriter(
            self.sink,
            schema,
            compression=compression,
            use_dictionary=strings or False,
            write_statistics=scalars or False,
        )
        self.row_group_bytes = row_group_bytes
        self.pending: list[pa.RecordBatch] = []
        self.pending_bytes = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self.pending.append(batch)
        self.pending_bytes += batch.nbytes
        if self.pending_bytes >= self.row_group_bytes:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            table = pa.Table.from_batches(self.pending)
            self.writer.write_table(table, row_group_size=table.num_rows)
            self.pending, self.pending_bytes = [], 0

    def close(self) -> None:
        try:
            self._flush()
            self.writer.close()
        finally:
            self.sink.close()


class _JsonFile:
    """Milvus bulk-import JSON: ``{"rows": [{...}, ...]}`` with JSON and sparse columns as objects."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.sink = DirectSink(path)
        cs = schema_of(schema)
        self.raw_json = [f.name for f in cs.data_fields() if spec(f).storage == "json"]  # JSON text in Arrow
        self.has_meta = cs.enable_dynamic_field
        self.first = True
        self.sink.write(b'{"rows": [\n')

    def write(self, batch: pa.RecordBatch) -> None:
        rows = batch.to_pylist()
        for row in rows:
            for name in self.raw_json:
                if row[name] is not None:
                    row[name] = orjson.Fragment(row[name])
            if self.has_meta:
                meta = row.pop(META_COLUMN, None)
                if meta:
                    row.update(orjson.loads(meta))
        body = b",\n".join(orjson.dumps(r) for r in rows)
        if body:
            self.sink.write(body if self.first else b",\n" + body)
            self.first = False

    def close(self) -> None:
        self.sink.write(b"\n]}\n")
        self.sink.close()


def open_file(
    path: Path, schema: pa.Schema, fmt: str, compression: str, row_group_bytes: int = ROW_GROUP_BYTES
) -> _ParquetFile | _JsonFile:
    """One dataset file, written through DirectSink (hashed on the way out): ``write(batch)`` then ``close()``,
    then ``.sink.size`` and ``.sink.hexdigest()``. The fused path (``generate.upload``) writes each file with
    this on a worker, fed the same batch pieces in the same order, so its files are byte-identical to these."""
    return _ParquetFile(path, schema, compression, row_group_bytes) if fmt == "parquet" else _JsonFile(path, schema)


@dataclass(slots=True)
class _Open:
    handle: _ParquetFile | _JsonFile
    path: Path
    rel: str
    shard: int
    lane: ThreadPoolExecutor
    rows: int = 0
    planned_bytes: int = 0


def shard_ids(batch: pa.RecordBatch, shards: int, pk: str | None, offset: int) -> np.ndarray:
    """Shard of each row: a hash of the primary key (row position for auto_id collections)."""
    if pk is None:
        keys = np.arange(offset, offset + batch.num_rows, dtype=np.uint64)
    elif pa.types.is_integer(batch.schema.field(pk).type):
        keys = batch.column(pk).to_numpy().astype(np.uint64)
    else:
        import polars as pl  # only VarChar keys need it: keep it out of every run's memory

        return (pl.Series(batch.column(pk)).hash(seed=0).to_numpy() % np.uint64(shards)).astype(np.int64)
    with np.errstate(over="ignore"):
        z = (keys ^ (keys >> np.uint64(33))) * np.uint64(0xFF51AFD7ED558CCD)
        z ^= z >> np.uint64(33)
    return (z % np.uint64(shards)).astype(np.int64)


class DatasetWriter:
    """Plans files on the calling thread; encodes and hashes them on ``threads`` writer lanes.

    File k of the dataset is written by lane k mod ``threads``: each file's batches stay in order on
    one lane while different files encode concurrently (pyarrow releases the GIL). Rolling decisions
    use only row counts and the batches' in-memory size, never the encoded size, so the split is the
    same whatever the timing. At most one batch waits per lane, and each open Parquet file gathers up to
    ``ROW_GROUP_BYTES`` into its current row group: memory is bounded by lanes + open files x 64 MB.
    """

    def __init__(
        self,
        out: Path,
        schema: pa.Schema,
        *,
        fmt: str = "parquet",
        rows_per_file: int | None = None,
        file_size: int | None = None,
        compression: str = "snappy",
        threads: int = 2,
    ) -> None:
        self.out, self.schema, self.fmt = out, schema, fmt
        self.rows_per_file, self.compression = rows_per_file, compression
        self.file_size = int(file_size * 0.98) if file_size else None  # room for page headers and footer
        cs = schema_of(schema)
        self.shards = cs.num_shards or 1
        self.pk = None if cs.primary.auto_id else cs.primary.name
        self._lanes = [ThreadPoolExecutor(1, thread_name_prefix=f"writer{i}") for i in range(max(1, threads))]
        self._files_opened = 0
        self._open: dict[int, _Open] = {}
        self._counts: dict[int, int] = {}
        self._closing: list[Future[FileEntry]] = []
        self._in_flight: deque[Future[None]] = deque()
        self._taken = 0
        self._seen = 0

    def write(self, batch: pa.RecordBatch) -> None:
        batch = batch.replace_schema_metadata(self.schema.metadata)
        if self.shards == 1:
            self._write_shard(0, batch)
        else:
            ids = shard_ids(batch, self.shards, self.pk, self._seen)
            for shard in range(self.shards):
                rows = np.flatnonzero(ids == shard)
                if len(rows):
                    self._write_shard(shard, batch.take(pa.array(rows)))
        self._seen += batch.num_rows

    def _write_shard(self, shard: int, batch: pa.RecordBatch) -> None:
        row_cost = max(1, batch.nbytes // max(batch.num_rows, 1))
        while batch.num_rows:
            current = self._open.get(shard) or self._new_file(shard)
            room = batch.num_rows
            if self.rows_per_file:
                room = min(room, self.rows_per_file - current.rows)
            if self.file_size:
                room = min(room, max(1, (self.file_size - current.planned_bytes) // row_cost))
            piece = batch.slice(0, room)
            self._wait_for_room()
            self._in_flight.append(current.lane.submit(current.handle.write, piece))
            current.rows += room
            current.planned_bytes += room * row_cost
            batch = batch.slice(room)
            full_rows = self.rows_per_file and current.rows >= self.rows_per_file
            full_size = self.file_size and current.planned_bytes + row_cost > self.file_size
            if full_rows or full_size:
                self._close(shard)

    def _wait_for_room(self) -> None:
        while len(self._in_flight) > len(self._lanes):  # one queued batch per lane keeps it busy
            self._in_flight.popleft().result()
        while self._in_flight and self._in_flight[0].done():
            self._in_flight.popleft().result()

    def _new_file(self, shard: int) -> _Open:
        n = self._counts[shard] = self._counts.get(shard, 0) + 1
        rel = f"data-{n:05d}.{self.fmt}" if self.shards == 1 else f"shard-{shard:02d}/data-{n:05d}.{self.fmt}"
        path = self.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open_file(path, self.schema, self.fmt, self.compression, max(ROW_GROUP_BYTES // self.shards, 8 << 20))
        lane = self._lanes[self._files_opened % len(self._lanes)]
        self._files_opened += 1
        self._open[shard] = _Open(handle, path, rel, shard, lane)
        return self._open[shard]

    def _close(self, shard: int) -> None:
        f = self._open.pop(shard)
        self._closing.append(f.lane.submit(_finish_file, f, self.shards > 1))

    def finished(self) -> list[FileEntry]:
        """Files closed and hashed since the last call, in the order they were planned."""
        out = []
        while self._taken < len(self._closing) and self._closing[self._taken].done():
            out.append(self._closing[self._taken].result())
            self._taken += 1
        return out

    def close(self) -> list[FileEntry]:
        try:
            for shard in sorted(self._open):
                self._close(shard)
            for fut in self._in_flight:
                fut.result()
            return [fut.result() for fut in self._closing]
        finally:
            for lane in self._lanes:
                lane.shutdown(wait=True)


def _finish_file(f: _Open, sharded: bool) -> FileEntry:
    f.handle.close()
    return FileEntry(
        path=f.rel,
        rows=f.rows,
        bytes=f.handle.sink.size,
        sha256=f.handle.sink.hexdigest(),
        shard=f.shard if sharded else None,
    )
