"""PostgreSQL binary COPY payloads built straight from Arrow buffers, for the shadow.

Why: ``copy_records_to_table`` needs a Python object per value, so a 768-d vector row costs 768 floats
boxed, listed and encoded one by one (5-8k rows/s), and by backpressure the shadow slowed a whole DAG.
Here every column is turned into its binary COPY field bytes with numpy, a column at a time (int32
length prefix + big-endian payload; ``-1`` for NULL from the Arrow validity bitmap), and the rows are
laid out in one buffer sent with ``copy_to_table(format='binary')``: no Python object per value.

Each field type's encoder is in its field-type table row (``TypeSpec.copy``, written in
``schema/types/pgbinary.py``): Bool, Int8/16/32/64, Float, Double, VarChar (text, from Arrow offsets),
JSON and SparseFloatVector (jsonb: version byte + JSON text), FloatVector (``real[]``), Int8Vector
(``smallint[]``), Binary/Float16/BFloat16 vectors (``bytea``), plus the AUTO_ID ``_row`` key and the
dynamic ``$meta`` column (jsonb) here. Not covered, so the batch goes through the record path
(``arrow_records``): ARRAY fields (ragged typed arrays) and any type registered without an encoder;
a dense vector batch whose rows are not all ``dim`` long falls back too, rather than writing shifted rows.

Row layout: columns whose fields are the same width in every row (no NULLs, not text) are moved to the
front (the COPY column list says the order), so each row is a fixed-width prefix matrix plus a
variable tail. Narrow rows are gathered in one numpy fancy-index; wide rows (vectors) are joined from
one buffer view per row and part (the prefix row, then each tail part's run), which costs a memcpy per
piece instead of an index per byte.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pyarrow as pa

from task_components.schema.arrow import META_COLUMN
from task_components.schema.models import CollectionSchema
from task_components.schema.postgres import ROW_KEY
from task_components.schema.types import spec
from task_components.schema.types.pgbinary import Fixed, Part, Runs, Unencodable, scalar, text

__all__ = ["HEADER", "TRAILER", "covered", "encode_batch"]

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)  # signature, flags, no header extension
TRAILER = struct.pack(">h", -1)
# rows at most this wide are gathered by one fancy-index; wider ones joined row by row (see module doc)
_GATHER_MAX_WIDTH = 128


def _one_chunk(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return pa.concat_arrays(col.chunks) if col.num_chunks != 1 else col.chunk(0)
    return col


_ROW_KEY_ENCODER = scalar(">i8")  # the AUTO_ID ``_row`` key: bigint
_META_ENCODER = text(b"\x01")  # the dynamic ``$meta`` column: jsonb


def covered(schema: CollectionSchema) -> bool:
    """Can every column of this schema's shadow table be written by ``encode_batch``?

    A type's encoder sits in its field-type table row next to the PostgreSQL type it writes, so a type
    registered (or re-registered) without one takes the record path instead of failing.
    """
    return all(spec(f).copy is not None for f in schema.data_fields())


# -- row assembly ---------------------------------------------------------------------------------------
def _as_runs(p: Part) -> Runs:
    if isinstance(p, Runs):
        return p
    n, w = p.rows.shape
    return Runs(np.ascontiguousarray(p.rows).reshape(-1), np.arange(n, dtype=np.int64) * w, np.full(n, w, np.int64))


def _gather(parts: list[Runs], out: np.ndarray) -> None:
    """Row-major concatenation of several columns' runs into ``out`` by one fancy-index (narrow rows)."""
    bases = np.cumsum([0] + [len(p.source) for p in parts[:-1]])
    source = np.concatenate([p.source for p in parts]) if len(parts) > 1 else parts[0].source
    sizes = np.stack([p.sizes for p in parts], axis=1).astype(np.int64).reshape(-1)  # row-major: row, part
    starts = np.stack([p.starts + b for p, b in zip(parts, bases, strict=True)], axis=1).astype(np.int64)
    placed = np.cumsum(sizes) - sizes  # where each run starts in the output
    index = np.repeat(starts.reshape(-1) - placed, sizes)
    index += np.arange(len(out), dtype=np.int64)
    np.take(source, index, out=out)


def _row_pieces(p: Part) -> list[Any]:
    """One buffer view per row of a part (memoryviews, or ndarray rows: both buffers to ``bytes.join``)."""
    if isinstance(p, Fixed):
        return list(p.rows)
    view = p.source.data
    ends = p.starts + p.sizes
    return [view[a:b] for a, b in zip(p.starts.tolist(), ends.tolist(), strict=True)]


def _is_fixed(parts: list[Part]) -> bool:
    return all(isinstance(p, Fixed) for p in parts)


def _assemble(cols: list[list[Part]], n: int) -> memoryview:
    """The whole COPY payload (header, rows, trailer) from the columns' parts, fixed-width columns first."""
    count = Fixed(np.frombuffer(struct.pack(">h", len(cols)), np.uint8)[None, :].repeat(n, axis=0))
    fixed: list[Fixed] = [count] + [p for c in cols if _is_fixed(c) for p in c if isinstance(p, Fixed)]
    tail = [p for c in cols if not _is_fixed(c) for p in c]
    prefix = np.concatenate([p.rows for p in fixed], axis=1) if len(fixed) > 1 else count.rows
    if not tail:
        return memoryview(b"".join((HEADER, prefix.data, TRAILER)))
    if prefix.shape[1] <= _GATHER_MAX_WIDTH:  # narrow rows: one index for every byte
        runs = [_as_runs(p) for p in [Fixed(prefix), *tail]]
        total = int(sum(int(r.sizes.sum()) for r in runs))
        buf = np.empty(len(HEADER) + total + len(TRAILER), np.uint8)
        buf[: len(HEADER)] = np.frombuffer(HEADER, np.uint8)
        buf[len(buf) - len(TRAILER) :] = np.frombuffer(TRAILER, np.uint8)
        _gather(runs, buf[len(HEADER) : len(buf) - len(TRAILER)])
        return buf.data
    # wide rows (vectors): a view per row and part, one join: a memcpy per piece instead of an index per byte
    width = 1 + len(tail)
    pieces: list[Any] = [HEADER] + [None] * (width * n) + [TRAILER]
    for j, p in enumerate([Fixed(prefix), *tail]):
        pieces[1 + j : 1 + width * n : width] = _row_pieces(p)
    return memoryview(b"".join(pieces))


def encode_batch(batch: pa.RecordBatch, schema: CollectionSchema, offset: int) -> tuple[memoryview, list[str]] | None:
    """A batch as one binary COPY payload and the column order it is written in; None: use the record path.

    ``offset`` is the batch's first row position in the source (the AUTO_ID ``_row`` key). The payload
    is a memoryview (asyncpg takes ``bytes`` for a file path).
    """
    if not covered(schema):
        return None
    n = batch.num_rows
    named: list[tuple[str, list[Part]]] = []
    try:
        if schema.primary.auto_id:
            named.append((ROW_KEY, _ROW_KEY_ENCODER(pa.array(np.arange(offset, offset + n, dtype=np.int64)), None)))
        for f in schema.data_fields():
            encode = spec(f).copy
            assert encode is not None  # covered() checked it
            named.append((f.name, encode(_one_chunk(batch.column(f.name)), f)))
        if schema.enable_dynamic_field:
            named.append((META_COLUMN, _META_ENCODER(_one_chunk(batch.column(META_COLUMN)), None)))
    except Unencodable:
        return None
    # fixed-width columns first: the order _assemble writes them in
    named.sort(key=lambda c: not all(isinstance(p, Fixed) for p in c[1]))
    return _assemble([parts for _, parts in named], n), [name for name, _ in named]
