"""Value comparison between the source files and what a database returns, per field type.

The per-type rules (vectors within a tolerance, FLOAT at float32 precision, JSON and sparse vectors as
parsed objects, byte vectors exactly) live in the field-type table; this module is the column-wise
form the full scan uses, so a batch of thousands of rows is compared with a few numpy calls.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from task_components.schema.models import FieldSchema, FieldType
from task_components.schema.types import matrix, same_value, spec, value_matrix

__all__ = ["column_ok", "same_value"]


def column_ok(f: FieldSchema, source: pa.Array, other: list[Any], tolerance: float) -> np.ndarray:
    """Per-row agreement of one field between the source column and another side's values."""
    n = len(source)
    storage = spec(f).storage
    if storage in ("vector", "bytes") and source.null_count == 0 and all(v is not None for v in other):
        a, b = matrix(source, f), value_matrix(other, f)
        if a.shape != b.shape:
            return np.array([same_value(f, s, o, tolerance) for s, o in zip(source.to_pylist(), other, strict=True)])
        if storage == "bytes":
            return np.all(a == b, axis=1)
        return np.abs(a.astype(np.float64) - b).max(axis=1, initial=0) <= tolerance
    if storage != "scalar" or n == 0:
        return np.array([same_value(f, s, o, tolerance) for s, o in zip(source.to_pylist(), other, strict=True)], dtype=bool)
    s = pl.Series(source)
    o = pl.Series(other, dtype=s.dtype, strict=False)
    if f.type is FieldType.ARRAY:
        o = o.cast(s.dtype)
    if o.null_count() != sum(v is None for v in other):  # a value that does not fit became null: no false match
        return np.array([same_value(f, a, b, tolerance) for a, b in zip(source.to_pylist(), other, strict=True)], dtype=bool)
    return s.eq_missing(o).to_numpy()
