"""How values move between stores, read from the field-type table: Arrow -> Milvus insert values,
Arrow -> COPY records, a store's values -> a numpy matrix, and equality of a source and a store value.

The builtin rows use the conversions defined here; the table's consumers call the functions at the end
(``milvus_values``, ``copy_values``, ``same_value``...), which look the type up instead of branching on it.
Values are converted a column at a time (numpy/Arrow C loops), never per value with type branches.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from task_components.schema.types.spec import Convert, Field, FieldType, spec

__all__ = [
    "arrow_type",
    "copy_values",
    "eq_array",
    "eq_bytes",
    "eq_float32",
    "eq_json",
    "eq_sparse",
    "eq_vector",
    "json_objects",
    "matrix",
    "milvus_dtype",
    "milvus_values",
    "nulls_kept",
    "one_chunk",
    "pg_type",
    "pg_value",
    "row_bytes",
    "row_lists",
    "rows_as",
    "same_value",
    "sparse_dicts",
    "unwrap_bytes",
    "value_matrix",
    "vector_width",
]


def unwrap_bytes(value: Any) -> Any:
    """pymilvus returns some vectors as ``[b'...']`` (a one-element list of bytes): the bytes alone."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], bytes | bytearray):
        return bytes(value[0])
    return value


def matrix(col: pa.Array | pa.ChunkedArray, f: Field) -> np.ndarray:
    """A dense-vector list column as an (n, width) numpy array of the type's element dtype (zero-copy when it can)."""
    s = spec(f)
    col = one_chunk(col)
    if col.null_count:  # a null row has no values: the reshape would shift every row after it
        raise ValueError(f"field {f.name!r}: matrix() of a column with nulls; convert the valid rows only")
    values = col.flatten().to_numpy(zero_copy_only=False)  # flatten(): honours a sliced array's offset
    return np.asarray(values, dtype=s.numpy).reshape(len(col), -1)


def one_chunk(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return pa.concat_arrays(col.chunks) if col.num_chunks != 1 else col.chunk(0)
    return col


def nulls_kept(convert: Convert) -> Convert:
    """Run a dense-vector conversion on the valid rows only; null rows stay None (nullable vectors)."""

    def wrapped(col: pa.Array, f: Field) -> list[Any]:
        col = one_chunk(col)
        if not col.null_count:
            return convert(col, f)
        valid = col.is_valid()
        out: list[Any] = [None] * len(col)
        for i, v in zip(np.flatnonzero(valid.to_numpy(zero_copy_only=False)), convert(col.filter(valid), f), strict=True):
            out[i] = v
        return out

    return wrapped


def value_matrix(values: list[Any], f: Field) -> np.ndarray:
    """What a store returned for a dense-vector field (lists, ndarrays, bytes, wrapped bytes) as a matrix."""
    s = spec(f)
    rows = []
    for v in values:
        v = unwrap_bytes(v)
        if isinstance(v, bytes | bytearray | memoryview):
            rows.append(np.frombuffer(v, dtype=np.uint8).view(s.numpy))
        elif isinstance(v, np.ndarray) and s.storage == "bytes":  # e.g. float16 rows: their bytes
            rows.append(np.ascontiguousarray(v).ravel().view(np.uint8))
        else:
            rows.append(np.asarray(v, s.numpy))
    return np.stack(rows) if rows else np.empty((0, 0), s.numpy)


# -- conversions (Arrow column -> values for a store) --------------------------------------------------
def json_objects(col: pa.Array, f: Field) -> list[Any]:
    return [None if s is None else json.loads(s) for s in col.to_pylist()]


def sparse_dicts(col: pa.Array, f: Field) -> list[Any]:
    return [None if s is None else {int(k): float(v) for k, v in json.loads(s).items()} for s in col.to_pylist()]


def rows_as(view: Any) -> Convert:
    """Numpy row views (optionally re-viewed, e.g. uint8 bytes as float16) for pymilvus."""

    def convert(col: pa.Array, f: Field) -> list[Any]:
        m = matrix(col, f)
        return list(m.view(view) if view is not None else m)

    return convert


def row_bytes(col: pa.Array, f: Field) -> list[Any]:
    return [r.tobytes() for r in matrix(col, f)]


def row_lists(col: pa.Array, f: Field) -> list[Any]:
    return matrix(col, f).tolist()


# -- equality (source value vs what a store returned), used by verification ---------------------------


def _parsed(v: Any) -> Any:
    """PostgreSQL returns jsonb as text; Milvus returns it parsed (a JSON string value stays a str)."""
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def eq_float32(f: Field, a: Any, b: Any, tol: float) -> bool:
    return bool(np.float32(a) == np.float32(b))  # what Milvus stores


def eq_array(f: Field, a: Any, b: Any, tol: float) -> bool:
    assert f.element_type is not None
    elem = spec(f.element_type)
    if elem.numpy is not None and np.dtype(elem.numpy).kind == "f":
        return np.array_equal(np.asarray(a, elem.numpy), np.asarray(b, elem.numpy))
    return bool(list(a) == list(b))


def eq_json(f: Field, a: Any, b: Any, tol: float) -> bool:
    want, have = _parsed(a), _parsed(b)
    return type(want) is type(have) and bool(want == have)  # 1 == True == 1.0 in Python, not in JSON


def eq_sparse(f: Field, a: Any, b: Any, tol: float) -> bool:
    want = {int(k): float(v) for k, v in _parsed(a).items()}
    have = {int(k): float(v) for k, v in _parsed(b).items()}
    return want.keys() == have.keys() and all(abs(want[k] - have[k]) <= max(tol, 1e-6) for k in want)


def eq_vector(f: Field, a: Any, b: Any, tol: float) -> bool:
    x, y = value_matrix([a], f), value_matrix([b], f)
    return x.shape == y.shape and bool(np.all(np.abs(x.astype(np.float64) - y) <= tol))


def eq_bytes(f: Field, a: Any, b: Any, tol: float) -> bool:
    x, y = value_matrix([a], f), value_matrix([b], f)
    return x.shape == y.shape and bool(np.all(x == y))


def arrow_type(f: Field) -> pa.DataType:
    if spec(f).family == "array":
        assert f.element_type is not None
        return pa.list_(spec(f.element_type).arrow)
    return spec(f).arrow


def pg_type(f: Field) -> str:
    if spec(f).family == "array":
        assert f.element_type is not None
        return spec(f.element_type).pg + "[]"
    return spec(f).pg


def milvus_dtype(t: FieldType) -> Any:
    """The pymilvus DataType (imported here, not at module load: most commands never talk to Milvus)."""
    from pymilvus import DataType

    name = spec(t).milvus
    return getattr(DataType, name) if isinstance(name, str) else name


def vector_width(f: Field) -> int:
    """Values per row in the list column of a dense vector field."""
    assert f.dim is not None
    return spec(f).width(f.dim)


def milvus_values(col: pa.Array, f: Field) -> list[Any]:
    """An Arrow column as the per-row values MilvusClient.insert takes."""
    return spec(f).to_milvus(col, f)


def pg_value(value: Any, f: Field) -> Any:
    """One value as a client wrote it to Milvus (lists, ndarrays, bytes, dicts) -> its PostgreSQL column value."""
    if value is None:
        return None
    storage = spec(f).storage
    if storage == "json":
        return value if isinstance(value, str) else json.dumps(value)
    if storage == "bytes":
        value = unwrap_bytes(value)
        return value.tobytes() if isinstance(value, np.ndarray) else bytes(value)
    if storage == "vector":
        return np.asarray(value, dtype=spec(f).numpy).tolist()
    return value


def same_value(f: Field, source: Any, got: Any, tolerance: float) -> bool:
    """Does a store's value equal the source's? Vectors within ``tolerance``, FLOAT at float32 precision."""
    if source is None or got is None:
        return source is None and got is None
    return spec(f).equal(f, source, got, tolerance)


def copy_values(col: pa.Array, f: Field) -> list[Any]:
    """An Arrow column as the per-row values asyncpg's COPY takes for the type's PostgreSQL column."""
    return spec(f).to_copy(col, f)
