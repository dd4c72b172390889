"""Binary COPY field encoders, one per PostgreSQL column type the field-type table uses.

Why apart from the shadow's row assembly (``shadow/binary_copy.py``): each ``TypeSpec`` holds its
encoder, and the table must not import the shadow. An encoder turns a whole Arrow column into its
binary COPY field bytes with numpy (int32 length prefix + big-endian payload; ``-1`` for NULL from the
Arrow validity bitmap): no Python object per value. It returns ``Part``s: ``Fixed`` (same width every
row) or ``Runs`` (varying width), which the assembly lays out row by row.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from task_components.schema.types.spec import BinaryEncoder, Field, spec

__all__ = ["Fixed", "Part", "Runs", "Unencodable", "bytea", "framed", "pg_array", "scalar", "text", "validity"]

_NULL = np.frombuffer(struct.pack(">i", -1), np.uint8)
_OID = {"real": 700, "smallint": 21}  # built-in type OIDs: fixed across PostgreSQL versions


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


def validity(col: pa.Array) -> np.ndarray | None:
    """Per-row validity from the Arrow bitmap, or None when the column has no NULLs (the common case)."""
    return col.is_valid().to_numpy(zero_copy_only=False) if col.null_count else None


def _u8(a: np.ndarray) -> np.ndarray:
    """A contiguous array's bytes as an ``(n, itemsize * values per row)`` uint8 matrix."""
    a = np.ascontiguousarray(a)
    return a.view(np.uint8).reshape(len(a), a.dtype.itemsize * int(np.prod(a.shape[1:])))  # 0 rows too


def framed(payload: np.ndarray, valid: np.ndarray | None) -> Part:
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
def scalar(be: str) -> BinaryEncoder:
    """Numbers and booleans: the Arrow values cast to the PostgreSQL column's big-endian type."""

    def encode(col: pa.Array, f: Field | None) -> list[Part]:
        valid = validity(col)
        values = col.fill_null(False if pa.types.is_boolean(col.type) else 0) if valid is not None else col
        return [framed(_u8(values.to_numpy(zero_copy_only=False).astype(be)), valid)]

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


def text(version: bytes = b"") -> BinaryEncoder:
    """text (and jsonb: a version byte before the JSON text): the UTF-8 bytes where Arrow keeps them."""
    extra = len(version)

    def encode(col: pa.Array, f: Field | None) -> list[Part]:
        n = len(col)
        offsets, data = _string_buffers(col)
        sizes = np.diff(offsets)
        valid = validity(col)
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


def _dense_matrix(col: pa.Array, f: Field | None, valid: np.ndarray | None) -> np.ndarray:
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


def pg_array(elem_pg: str, elem_be: str) -> BinaryEncoder:
    """Dense vectors as a one-dimensional PostgreSQL array: header, then (length, value) per element."""
    oid, elem_size = _OID[elem_pg], np.dtype(elem_be).itemsize

    def encode(col: pa.Array, f: Field | None) -> list[Part]:
        valid = validity(col)
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


def bytea(col: pa.Array, f: Field | None) -> list[Part]:
    """Byte vectors (binary, float16, bfloat16) as bytea: the row's bytes as they are."""
    valid = validity(col)
    return [framed(_dense_matrix(col, f, valid).astype(np.uint8, copy=False), valid)]
