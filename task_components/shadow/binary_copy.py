"""PostgreSQL binary COPY payloads built straight from Arrow buffers, for the shadow.

Why: ``copy_records_to_table`` needs a Python object per value, so a 768-d vector row costs 768 floats
boxed, listed and encoded one by one (5-8k rows/s), and by backpressure the shadow slowed a whole DAG.
Here every column is turned into its binary COPY field bytes with numpy, a column at a time (int32
length prefix + big-endian payload; ``-1`` for NULL from the Arrow validity bitmap), and the rows are
laid out in one buffer sent with ``copy_to_table(format='binary')``: no Python object per value.

Covered (``BINARY_ENCODERS``, keyed like the field-type table): Bool, Int8/16/32/64, Float, Double,
VarChar (text, from Arrow offsets), JSON and SparseFloatVector (jsonb: version byte + JSON text),
FloatVector (``real[]``), Int8Vector (``smallint[]``), Binary/Float16/BFloat16 vectors (``bytea``),
the AUTO_ID ``_row`` key and the dynamic ``$meta`` column (jsonb). Not covered, so the batch goes
through the record path (``arrow_records``): ARRAY fields (ragged typed arrays) and any type a plugin
registers without a binary encoder (``register_binary``); a dense vector batch whose rows are not all
``dim`` long falls back too, rather than writing shifted rows.

Row layout: columns whose fields are the same width in every row (no NULLs, not text) are moved to the
front (the COPY column list says the order), so each row is a fixed-width prefix matrix plus a
variable tail. Narrow rows are gathered in one numpy fancy-index; wide rows (vectors) are joined from
one buffer view per row and part (the prefix row, then each tail part's run), which costs a memcpy per
piece instead of an index per byte.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from task_components.schema.arrow import META_COLUMN
from task_components.schema.models import CollectionSchema, FieldSchema, FieldType
from task_components.schema.postgres import ROW_KEY
from task_components.schema.types import spec

__all__ = ["BINARY_ENCODERS", "HEADER", "TRAILER", "covered", "encode_batch", "register_binary"]

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)  # signature, flags, no header extension
TRAILER = struct.pack(">h", -1)
_NULL = np.frombuffer(struct.pack(">i", -1), np.uint8)
_OID = {"real": 700, "smallint": 21}  # built-in type OIDs: fixed across PostgreSQL versions
# rows at most this wide are gathered by one fancy-index; wider ones joined row by row (see module doc)
_GATHER_MAX_WIDTH = 128


class Unencodable(ValueError):
    """This batch's values cannot be written as binary fields (e.g. ragged vectors): use the record path."""


@dataclass(frozen=True, slots=True)
class Fixed:
    """Field bytes of the same width in every row: an ``(n, width)`` uint8 matrix."""

    rows: np.ndarray


@dataclass(frozen=True, slots=True)
class Runs:
    """Field bytes of varying width: row i's bytes are ``source[starts[i]:starts[i] + sizes[i]]``."""

    source: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray


Part = Fixed | Runs
Encoder = Callable[[pa.Array, FieldSchema | None], list[Part]]


def _one_chunk(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return pa.concat_arrays(col.chunks) if col.num_chunks != 1 else col.chunk(0)
    return col


def _valid(col: pa.Array) -> np.ndarray | None:
    """Per-row validity from the Arrow bitmap, or None when the column has no NULLs (the common case)."""
    return col.is_valid().to_numpy(zero_copy_only=False) if col.null_count else None


def _u8(a: np.ndarray) -> np.ndarray:
    """A contiguous array's bytes as an ``(n, itemsize * values per row)`` uint8 matrix."""
    a = np.ascontiguousarray(a)
    return a.view(np.uint8).reshape(len(a), a.dtype.itemsize * int(np.prod(a.shape[1:])))  # 0 rows too


def _framed(payload: np.ndarray, valid: np.ndarray | None) -> Part:
    """Prefix every row's payload (an (n, w) uint8 matrix) with its length; NULL rows become ``-1``."""
    n, w = payload.shape
    rows = np.empty((n, 4 + w), np.uint8)
    rows[:, :4] = np.frombuffer(struct.pack(">i", w), np.uint8)
    rows[:, 4:] = payload
    return _nulls(rows, valid)


def _nulls(rows: np.ndarray, valid: np.ndarray | None) -> Part:
    """A framed fixed-width matrix with NULL rows cut to their 4-byte ``-1`` length."""
    if valid is None:
        return Fixed(rows)
    n, w = rows.shape
    rows[~valid, :4] = _NULL
    return Runs(rows.reshape(-1), np.arange(n, dtype=np.int64) * w, np.where(valid, w, 4).astype(np.int64))


# -- per-type encoders (Arrow column -> field bytes) ----------------------------------------------------
def _scalar(be: str) -> Encoder:
    """Numbers and booleans: the Arrow values cast to the PostgreSQL column's big-endian type."""

    def encode(col: pa.Array, f: FieldSchema | None) -> list[Part]:
        valid = _valid(col)
        values = col.fill_null(False if pa.types.is_boolean(col.type) else 0) if valid is not None else col
        return [_framed(_u8(values.to_numpy(zero_copy_only=False).astype(be)), valid)]

    return encode


def _string_buffers(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (n + 1, int64) and the UTF-8 data buffer of a (large_)string array, sliced arrays included."""
    n = len(col)
    large = pa.types.is_large_string(col.type)
    if not (large or pa.types.is_string(col.type)):
        raise Unencodable(f"expected a string column, got {col.type}")
    _, offsets_buf, data_buf = col.buffers()
    width = 8 if large else 4
    offsets = np.frombuffer(offsets_buf, np.int64 if large else np.int32, n + 1, col.offset * width)
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None and data_buf.size else np.zeros(1, np.uint8)
    return offsets.astype(np.int64), data


def _text(version: bytes = b"") -> Encoder:
    """text (and jsonb: a version byte before the JSON text): the UTF-8 bytes where Arrow keeps them."""
    extra = len(version)

    def encode(col: pa.Array, f: FieldSchema | None) -> list[Part]:
        n = len(col)
        offsets, data = _string_buffers(col)
        sizes = np.diff(offsets)
        valid = _valid(col)
        lengths = (sizes + extra).astype(">i4")
        if valid is not None:
            lengths[~valid] = -1
            sizes = np.where(valid, sizes, 0)
        parts: list[Part] = [Fixed(_u8(lengths))]
        if extra:
            flag = np.frombuffer(version, np.uint8)
            parts.append(Runs(flag, np.zeros(n, np.int64), np.full(n, extra) if valid is None else valid * extra))
        parts.append(Runs(data, offsets[:-1], sizes))
        return parts

    return encode


def _dense_matrix(col: pa.Array, f: FieldSchema | None, valid: np.ndarray | None) -> np.ndarray:
    """An (n, width) matrix of a dense-vector column (NULL rows zero), refusing ragged rows."""
    assert f is not None
    width = spec(f).width(f.dim or 0)
    rows = col if valid is None else col.filter(pa.array(valid))
    lengths = pc.list_value_length(rows).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths.min() != width or lengths.max() != width):
        raise Unencodable(f"field {f.name!r}: vectors not all {width} values long")
    values = rows.flatten().to_numpy(zero_copy_only=False).reshape(len(rows), width)
    if valid is None:
        return values
    out = np.zeros((len(col), width), values.dtype)
    out[valid] = values
    return out


def _pg_array(elem_pg: str, elem_be: str) -> Encoder:
    """Dense vectors as a one-dimensional PostgreSQL array: header, then (length, value) per element."""
    oid, elem_size = _OID[elem_pg], np.dtype(elem_be).itemsize

    def encode(col: pa.Array, f: FieldSchema | None) -> list[Part]:
        valid = _valid(col)
        m = _dense_matrix(col, f, valid)
        dim = m.shape[1]
        elem = np.dtype([("len", ">i4"), ("v", elem_be)])
        field = np.dtype([("len", ">i4"), ("header", ">i4", (5,)), ("el", elem, (dim,))])
        out = np.empty(len(m), field)
        out["len"] = 20 + (4 + elem_size) * dim
        out["header"] = (1, 0, oid, dim, 1)  # ndim, has nulls, element type, dim length, lower bound
        out["el"]["len"] = elem_size
        out["el"]["v"] = m
        return [_nulls(_u8(out), valid)]

    return encode


def _bytea(col: pa.Array, f: FieldSchema | None) -> list[Part]:
    """Byte vectors (binary, float16, bfloat16) as bytea: the row's bytes as they are."""
    valid = _valid(col)
    return [_framed(_dense_matrix(col, f, valid).astype(np.uint8, copy=False), valid)]


BINARY_ENCODERS: dict[FieldType, Encoder] = {
    FieldType.BOOL: _scalar("?"),
    FieldType.INT8: _scalar(">i2"),  # PostgreSQL has no 1-byte integer: smallint, as in the type table
    FieldType.INT16: _scalar(">i2"),
    FieldType.INT32: _scalar(">i4"),
    FieldType.INT64: _scalar(">i8"),
    FieldType.FLOAT: _scalar(">f4"),
    FieldType.DOUBLE: _scalar(">f8"),
    FieldType.VARCHAR: _text(),
    FieldType.JSON: _text(b"\x01"),
    FieldType.SPARSE_FLOAT_VECTOR: _text(b"\x01"),
    FieldType.FLOAT_VECTOR: _pg_array("real", ">f4"),
    FieldType.INT8_VECTOR: _pg_array("smallint", ">i2"),
    FieldType.BINARY_VECTOR: _bytea,
    FieldType.FLOAT16_VECTOR: _bytea,
    FieldType.BFLOAT16_VECTOR: _bytea,
}
_PG_OF = {FieldType.BOOL: "boolean", FieldType.INT8: "smallint", FieldType.INT16: "smallint",
          FieldType.INT32: "integer", FieldType.INT64: "bigint", FieldType.FLOAT: "real",
          FieldType.DOUBLE: "double precision", FieldType.VARCHAR: "text", FieldType.JSON: "jsonb",
          FieldType.SPARSE_FLOAT_VECTOR: "jsonb", FieldType.FLOAT_VECTOR: "real[]",
          FieldType.INT8_VECTOR: "smallint[]", FieldType.BINARY_VECTOR: "bytea",
          FieldType.FLOAT16_VECTOR: "bytea", FieldType.BFLOAT16_VECTOR: "bytea"}  # fmt: skip


def register_binary(t: FieldType, encoder: Encoder) -> None:
    """Teach the binary path a type (a plugin's): ``encoder(column, field)`` returns its field bytes."""
    BINARY_ENCODERS[t] = encoder
    _PG_OF.pop(t, None)  # a plugin's encoder answers for its own column type


def covered(schema: CollectionSchema) -> bool:
    """Can every column of this schema's shadow table be written by ``encode_batch``?

    A built-in encoder is used only while the type table still maps the type to the PostgreSQL type it
    writes, so a plugin that re-registers a type with another column type falls back instead of failing.
    """
    return all(f.type in BINARY_ENCODERS and _PG_OF.get(f.type, spec(f).pg) == spec(f).pg
               for f in schema.data_fields())  # fmt: skip


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


def _row_pieces(p: Part) -> list[object]:
    """One buffer view per row of a part, for the row-by-row join of wide rows."""
    if isinstance(p, Fixed):
        return list(p.rows)
    view = memoryview(p.source)
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
        return memoryview(buf)
    # wide rows (vectors): a view per row and part, one join: a memcpy per piece instead of an index per byte
    width = 1 + len(tail)
    pieces: list[object] = [HEADER] + [None] * (width * n) + [TRAILER]
    for j, p in enumerate([Fixed(prefix), *tail]):
        pieces[1 + j : 1 + width * n : width] = _row_pieces(p)
    return memoryview(b"".join(pieces))  # type: ignore[arg-type]


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
            named.append((ROW_KEY, _scalar(">i8")(pa.array(np.arange(offset, offset + n, dtype=np.int64)), None)))
        for f in schema.data_fields():
            named.append((f.name, BINARY_ENCODERS[f.type](_one_chunk(batch.column(f.name)), f)))
        if schema.enable_dynamic_field:
            named.append((META_COLUMN, _text(b"\x01")(_one_chunk(batch.column(META_COLUMN)), None)))
    except Unencodable:
        return None
    # fixed-width columns first: the order _assemble writes them in
    named.sort(key=lambda c: not all(isinstance(p, Fixed) for p in c[1]))
    return _assemble([parts for _, parts in named], n), [name for name, _ in named]
