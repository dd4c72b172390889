"""Value comparison between the source files and what a database returns, per field type.

Vectors are compared with a tolerance (allclose), FLOAT fields at float32 precision (what Milvus
stores), JSON and sparse vectors as parsed objects. Each mismatch names the primary key and field.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from task_components.schema.models import FieldSchema, FieldType


def _as_array(value: Any, dtype: Any) -> np.ndarray:
    if isinstance(value, bytes | bytearray):
        return np.frombuffer(value, dtype=np.uint8).view(dtype)
    if isinstance(value, list) and value and isinstance(value[0], bytes | bytearray):  # pymilvus wraps some vectors
        return np.frombuffer(value[0], dtype=np.uint8).view(dtype)
    return np.asarray(value, dtype=dtype).ravel()


def same_value(f: FieldSchema, source: Any, got: Any, tolerance: float) -> bool:
    t = f.type
    if source is None or got is None:
        return source is None and got is None
    if isinstance(got, str) and t in (FieldType.SPARSE_FLOAT_VECTOR, FieldType.JSON):
        got = json.loads(got)  # PostgreSQL returns jsonb as text
    if t is FieldType.FLOAT_VECTOR:
        return np.allclose(_as_array(source, np.float32), _as_array(got, np.float32), atol=tolerance, rtol=0)
    if t in (FieldType.FLOAT16_VECTOR, FieldType.BFLOAT16_VECTOR):
        want = np.asarray(source, dtype=np.uint8).tobytes()
        have = _as_array(got, np.uint8).tobytes() if not isinstance(got, np.ndarray) else got.tobytes()
        return want == have
    if t is FieldType.BINARY_VECTOR:
        return np.asarray(source, dtype=np.uint8).tobytes() == _as_array(got, np.uint8).tobytes()
    if t is FieldType.INT8_VECTOR:
        return np.array_equal(_as_array(source, np.int8), _as_array(got, np.int8))
    if t is FieldType.SPARSE_FLOAT_VECTOR:
        want = {int(k): v for k, v in (json.loads(source) if isinstance(source, str) else source).items()}
        have = {int(k): v for k, v in got.items()}
        return want.keys() == have.keys() and all(math.isclose(want[k], have[k], abs_tol=1e-6) for k in want)
    if t is FieldType.JSON:
        want = json.loads(source) if isinstance(source, str) else source
        return want == (json.loads(got) if isinstance(got, str) else got)
    if t is FieldType.FLOAT:
        return bool(np.float32(source) == np.float32(got))
    if t is FieldType.DOUBLE:
        return math.isclose(source, got, rel_tol=0, abs_tol=0) or source == got
    if t is FieldType.ARRAY and f.element_type is FieldType.FLOAT:
        return np.array_equal(np.asarray(source, np.float32), np.asarray(got, np.float32))
    return bool(source == got)
