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
can be looked up again later. Each type's encoder is in its field-type table row (``TypeSpec.canonical``,
the builtin ones in ``schema/types/canonical.py``); a type registered without one is refused with its
name rather than compared by some accidental ``repr``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa

from task_components.schema.models import FieldSchema
from task_components.schema.types import TYPES, matrix, spec
from task_components.schema.types.canonical import NULL, dense_bytes, dense_rows

__all__ = ["NULL", "canonical_column", "row_hashes", "vector_values"]


def canonical_column(f: FieldSchema, values: pa.Array | pa.ChunkedArray | list[Any], *, json_text: bool) -> list[bytes]:
    """Every value of one column as canonical bytes.

    ``values`` is a source Arrow column, or the list a store returned; ``json_text`` says whether JSON
    and sparse values arrive as text (source files, the shadow's jsonb) or parsed (Milvus).
    """
    row = TYPES.get(f.type)
    encode = row.canonical if row is not None else None
    if encode is None:
        raise ValueError(f"field {f.name!r}: type {f.type.value} has no canonical encoding for content matching (its TypeSpec.canonical)")
    if isinstance(values, pa.ChunkedArray | pa.Array):
        if encode is dense_bytes and values.null_count == 0:  # the whole column as one matrix, no list per row
            return dense_rows(f, matrix(values, f)) if len(values) else []
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
