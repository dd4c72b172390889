"""Canonical content of a row, so an AUTO_ID row can be matched by what it holds rather than by a key.

Milvus assigns AUTO_ID keys, so the source files know none of them: rows can only be matched by
content. Each field value becomes canonical bytes that are the same whichever store it was read from:
the source (an Arrow column), Milvus (pymilvus values: JSON parsed, vectors as lists, bytes or
ndarrays) or the PostgreSQL shadow (asyncpg values: jsonb as text, ``real[]`` as lists, ``bytea``).

- A leading tag byte: 0 for NULL, 1 for a value, so NULL never equals an empty string or zero.
- Integers of every width as int64 little-endian (an Int8 is a ``smallint`` in PostgreSQL).
- FLOAT as float32 bytes and DOUBLE as float64 bytes (each store keeps exactly those), -0.0 as 0.0,
  every NaN as one NaN.
- VarChar as UTF-8.
- JSON re-serialised with sorted keys and no spaces: Python's shortest float repr, and ``1`` stays
  unequal to ``1.0``, as the keyed comparison (``_eq_json``) has it.
- Sparse vectors as (uint32 index, float32 value) pairs sorted by index: Milvus keeps float32.
- Arrays as an element count, then each element by the rules above (text length-prefixed).
- Dense vectors as their exact element bytes: float32 for FloatVector, int8 for Int8Vector, the raw
  bytes for binary, float16 and bfloat16. Milvus stores float32, the shadow ``real[]`` (float4) and
  the source float32, so the bytes are exact on all three sides and nothing is quantised (rounding to
  a grid would split values lying either side of a grid line). The tolerance is applied afterwards,
  when a row missing on one side is paired with the changed row that replaced it.

A row's hash is the first 8 bytes of BLAKE2b over its fields' canonical bytes, each length-prefixed,
in schema order. It is stable across processes and library versions, so a hash printed in a report
can be looked up again later. A type without an encoder here (a plugin's) is refused with its name
(``register_canonical`` teaches it), rather than compared by some accidental ``repr``.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from task_components.schema.models import FieldSchema, FieldType
from task_components.schema.types import matrix, spec, value_matrix

__all__ = ["CANONICAL", "NULL", "canonical_column", "register_canonical", "row_hashes", "vector_values"]

NULL = b"\x00"
_VALUE = b"\x01"
_NAN32 = struct.pack("<f", float("nan"))
_NAN64 = struct.pack("<d", float("nan"))

# (field, the column's non-null values, JSON given as text?) -> each value's canonical bytes, tag included
Encoder = Callable[[FieldSchema, list[Any], bool], list[bytes]]


def _json(v: Any, text: bool) -> Any:
    return json.loads(v) if text or isinstance(v, bytes | bytearray) else v


def _int(f: FieldSchema, values: list[Any], text: bool) -> list[bytes]:
    return [_VALUE + int(v).to_bytes(8, "little", signed=True) for v in values]


def _bool(f: FieldSchema, values: list[Any], text: bool) -> list[bytes]:
    return [_VALUE + (b"\x01" if v else b"\x00") for v in values]


def _floats(dtype: str, nan: bytes) -> Callable[[list[Any]], list[bytes]]:
    def encode(values: list[Any]) -> list[bytes]:
        a = np.asarray(values, dtype=dtype)
        a = np.where(a == 0, np.zeros((), dtype), a)  # -0.0 -> 0.0
        out = [_VALUE + b for b in _split(a.tobytes(), a.dtype.itemsize)]
        for i in np.flatnonzero(np.isnan(a)):
            out[i] = _VALUE + nan
        return out

    return encode


def _split(buf: bytes, width: int) -> list[bytes]:
    return [buf[i : i + width] for i in range(0, len(buf), width)]


_f32, _f64 = _floats("<f4", _NAN32), _floats("<f8", _NAN64)


def _float(f: FieldSchema, values: list[Any], text: bool) -> list[bytes]:
    return _f32(values)


def _double(f: FieldSchema, values: list[Any], text: bool) -> list[bytes]:
    return _f64(values)


def _text(f: FieldSchema, values: list[Any], text: bool) -> list[bytes]:
    return [_VALUE + str(v).encode() for v in values]


def _json_field(f: FieldSchema, values: list[Any], text: bool) -> list[bytes]:
    dump = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
    return [_VALUE + dump(_json(v, text)).encode() for v in values]


def _sparse(f: FieldSchema, values: list[Any], text: bool) -> list[bytes]:
    out = []
    for v in values:
        pairs = sorted((int(k), float(x)) for k, x in _json(v, text).items())
        idx = np.array([k for k, _ in pairs], "<u4")
        val = np.array([x for _, x in pairs], "<f4")
        val[val == 0] = 0
        out.append(_VALUE + len(pairs).to_bytes(4, "little") + np.rec.fromarrays([idx, val]).tobytes())
    return out


def _array(f: FieldSchema, values: list[Any], text: bool) -> list[bytes]:
    """Each element through its scalar encoder (tag dropped); text elements length-prefixed."""
    assert f.element_type is not None
    encode = CANONICAL[f.element_type]
    is_text = f.element_type is FieldType.VARCHAR
    out = []
    for v in values:
        items = encode(f, list(v), text)
        parts = [len(items).to_bytes(4, "little")]
        for b in items:
            parts.append(len(b).to_bytes(4, "little") + b[1:] if is_text else b[1:])
        out.append(_VALUE + b"".join(parts))
    return out


def _dense_rows(f: FieldSchema, m: np.ndarray) -> list[bytes]:
    """An (n, width) matrix of one dense-vector field as each row's canonical bytes."""
    if spec(f).storage == "vector":
        m = np.ascontiguousarray(m, dtype=np.dtype(spec(f).numpy).newbyteorder("<"))
        if m.dtype.kind == "f":
            m = np.where(m == 0, np.zeros((), m.dtype), m)  # -0.0 -> 0.0
    else:
        m = np.ascontiguousarray(m).view(np.uint8).reshape(len(m), -1)
    width = m.shape[1] * m.dtype.itemsize
    return [_VALUE + b for b in _split(m.tobytes(), width)] if width else [_VALUE] * len(m)


def _dense(f: FieldSchema, values: list[Any], text: bool) -> list[bytes]:
    try:
        return _dense_rows(f, value_matrix(values, f))
    except ValueError:  # rows of different lengths (a corrupted store): each row on its own, still comparable
        return [_dense_rows(f, value_matrix([v], f))[0] for v in values]


CANONICAL: dict[FieldType, Encoder] = {
    FieldType.BOOL: _bool,
    FieldType.INT8: _int,
    FieldType.INT16: _int,
    FieldType.INT32: _int,
    FieldType.INT64: _int,
    FieldType.FLOAT: _float,
    FieldType.DOUBLE: _double,
    FieldType.VARCHAR: _text,
    FieldType.JSON: _json_field,
    FieldType.SPARSE_FLOAT_VECTOR: _sparse,
    FieldType.ARRAY: _array,
    FieldType.FLOAT_VECTOR: _dense,
    FieldType.INT8_VECTOR: _dense,
    FieldType.BINARY_VECTOR: _dense,
    FieldType.FLOAT16_VECTOR: _dense,
    FieldType.BFLOAT16_VECTOR: _dense,
}


def register_canonical(t: FieldType, encoder: Encoder) -> None:
    """Teach content matching a type (a plugin's): ``encoder(field, non-null values, json_as_text)``."""
    CANONICAL[t] = encoder


def canonical_column(f: FieldSchema, values: pa.Array | pa.ChunkedArray | list[Any], *, json_text: bool) -> list[bytes]:
    """Every value of one column as canonical bytes.

    ``values`` is a source Arrow column, or the list a store returned; ``json_text`` says whether JSON
    and sparse values arrive as text (source files, the shadow's jsonb) or parsed (Milvus).
    """
    encode = CANONICAL.get(f.type)
    if encode is None:
        raise ValueError(f"field {f.name!r}: type {f.type.value} has no canonical encoding for content matching "
                         "(register_canonical)")  # fmt: skip
    if isinstance(values, pa.ChunkedArray | pa.Array):
        if encode is _dense and values.null_count == 0:  # the whole column as one matrix, no list per row
            return _dense_rows(f, matrix(values, f)) if len(values) else []
        values = values.to_pylist()
    present = [i for i, v in enumerate(values) if v is not None]
    if len(present) == len(values):
        return encode(f, values, json_text) if values else []
    out = [NULL] * len(values)
    for i, b in zip(present, encode(f, [values[i] for i in present], json_text) if present else [], strict=True):
        out[i] = b
    return out


def row_hashes(columns: list[list[bytes]], n: int) -> np.ndarray:
    """One uint64 per row: BLAKE2b-64 over the row's length-prefixed canonical field bytes."""
    out = np.empty(n, np.uint64)
    for i, fields in enumerate(zip(*columns, strict=True)) if columns else enumerate([()] * n):
        h = hashlib.blake2b(digest_size=8)
        for b in fields:
            h.update(len(b).to_bytes(4, "little"))
            h.update(b)
        out[i] = int.from_bytes(h.digest(), "little")
    return out


def vector_values(f: FieldSchema, canon: bytes) -> np.ndarray | None:
    """A dense float/int vector back from its canonical bytes (for the tolerance check); None if NULL."""
    if canon == NULL:
        return None
    return np.frombuffer(canon[1:], np.dtype(spec(f).numpy).newbyteorder("<")).astype(np.float64)
