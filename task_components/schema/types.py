"""The one field-type table: for each Milvus field type, how it looks in every store we touch.

Each ``TypeSpec`` says what a column of that type is in Arrow (batches and Parquet), in PostgreSQL
(the shadow), in pymilvus, and as numpy (the dense view used to compare vectors), and how values move
between them: Arrow -> Milvus insert values, Arrow -> COPY values, values a store returned -> a numpy
matrix. Every other module asks this table instead of writing its own ``if type is ...`` ladder, so
adding a type is one ``register_type`` call (a plugin can do it without touching other modules).

Values are converted a column at a time (numpy/Arrow C loops), never per value with type branches.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from task_components.schema.models import FieldSchema, FieldType

__all__ = [
    "TYPES",
    "TypeSpec",
    "arrow_type",
    "copy_values",
    "matrix",
    "milvus_dtype",
    "milvus_values",
    "pg_type",
    "pg_value",
    "register_type",
    "same_value",
    "spec",
    "unwrap_bytes",
    "value_matrix",
    "vector_width",
]

# How a type's values are compared and carried: plain scalars; JSON text (JSON, sparse vectors);
# dense numeric vectors (compared with a tolerance); dense vectors kept as exact bytes.
Storage = Literal["scalar", "json", "vector", "bytes"]
Convert = Callable[[pa.Array, FieldSchema], list[Any]]


def unwrap_bytes(value: Any) -> Any:
    """pymilvus returns some vectors as ``[b'...']`` (a one-element list of bytes): the bytes alone."""
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], bytes | bytearray):
        return bytes(value[0])
    return value


def matrix(col: pa.Array | pa.ChunkedArray, f: FieldSchema) -> np.ndarray:
    """A dense-vector list column as an (n, width) numpy array of the type's element dtype (zero-copy when it can)."""
    s = spec(f)
    col = _one_chunk(col)
    if col.null_count:  # a null row has no values: the reshape would shift every row after it
        raise ValueError(f"field {f.name!r}: matrix() of a column with nulls; convert the valid rows only")
    values = col.flatten().to_numpy(zero_copy_only=False)  # flatten(): honours a sliced array's offset
    return np.asarray(values, dtype=s.numpy).reshape(len(col), -1)


def _one_chunk(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return pa.concat_arrays(col.chunks) if col.num_chunks != 1 else col.chunk(0)
    return col


def _nulls_kept(convert: Convert) -> Convert:
    """Run a dense-vector conversion on the valid rows only; null rows stay None (nullable vectors)."""

    def wrapped(col: pa.Array, f: FieldSchema) -> list[Any]:
        col = _one_chunk(col)
        if not col.null_count:
            return convert(col, f)
        valid = col.is_valid()
        out: list[Any] = [None] * len(col)
        for i, v in zip(np.flatnonzero(valid.to_numpy(zero_copy_only=False)), convert(col.filter(valid), f),
                        strict=True):  # fmt: skip
            out[i] = v
        return out

    return wrapped


def value_matrix(values: list[Any], f: FieldSchema) -> np.ndarray:
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
def _pylist(col: pa.Array, f: FieldSchema) -> list[Any]:
    return col.to_pylist()


def _json_objects(col: pa.Array, f: FieldSchema) -> list[Any]:
    return [None if s is None else json.loads(s) for s in col.to_pylist()]


def _sparse_dicts(col: pa.Array, f: FieldSchema) -> list[Any]:
    return [None if s is None else {int(k): float(v) for k, v in json.loads(s).items()} for s in col.to_pylist()]


def _rows_as(view: Any) -> Convert:
    """Numpy row views (optionally re-viewed, e.g. uint8 bytes as float16) for pymilvus."""

    def convert(col: pa.Array, f: FieldSchema) -> list[Any]:
        m = matrix(col, f)
        return list(m.view(view) if view is not None else m)

    return convert


def _row_bytes(col: pa.Array, f: FieldSchema) -> list[Any]:
    return [r.tobytes() for r in matrix(col, f)]


def _row_lists(col: pa.Array, f: FieldSchema) -> list[Any]:
    return matrix(col, f).tolist()


# -- equality (source value vs what a store returned), used by verification ---------------------------
Equal = Callable[[FieldSchema, Any, Any, float], bool]


def _parsed(v: Any) -> Any:
    """PostgreSQL returns jsonb as text; Milvus returns it parsed (a JSON string value stays a str)."""
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _eq_plain(f: FieldSchema, a: Any, b: Any, tol: float) -> bool:
    return bool(a == b)


def _eq_float32(f: FieldSchema, a: Any, b: Any, tol: float) -> bool:
    return bool(np.float32(a) == np.float32(b))  # what Milvus stores


def _eq_array(f: FieldSchema, a: Any, b: Any, tol: float) -> bool:
    assert f.element_type is not None
    elem = spec(f.element_type)
    if elem.numpy is not None and np.dtype(elem.numpy).kind == "f":
        return np.array_equal(np.asarray(a, elem.numpy), np.asarray(b, elem.numpy))
    return bool(list(a) == list(b))


def _eq_json(f: FieldSchema, a: Any, b: Any, tol: float) -> bool:
    want, have = _parsed(a), _parsed(b)
    return type(want) is type(have) and bool(want == have)  # 1 == True == 1.0 in Python, not in JSON


def _eq_sparse(f: FieldSchema, a: Any, b: Any, tol: float) -> bool:
    want = {int(k): float(v) for k, v in _parsed(a).items()}
    have = {int(k): float(v) for k, v in _parsed(b).items()}
    return want.keys() == have.keys() and all(abs(want[k] - have[k]) <= max(tol, 1e-6) for k in want)


def _eq_vector(f: FieldSchema, a: Any, b: Any, tol: float) -> bool:
    x, y = value_matrix([a], f), value_matrix([b], f)
    return x.shape == y.shape and bool(np.all(np.abs(x.astype(np.float64) - y) <= tol))


def _eq_bytes(f: FieldSchema, a: Any, b: Any, tol: float) -> bool:
    x, y = value_matrix([a], f), value_matrix([b], f)
    return x.shape == y.shape and bool(np.all(x == y))


@dataclass(frozen=True, slots=True)
class TypeSpec:
    """One row of the table. ``width`` maps a field's ``dim`` to list values per row (dense vectors)."""

    type: FieldType
    arrow: pa.DataType
    pg: str
    milvus: str  # pymilvus DataType member name: pymilvus is imported only where a client is made
    storage: Storage = "scalar"
    numpy: Any = None  # element dtype of the dense view (vectors) or of the Arrow values (scalars)
    view: Any = None  # dtype pymilvus wants rows viewed as, when not the Arrow element dtype
    width: Callable[[int], int] = field(default=lambda dim: dim)
    to_milvus: Convert = _pylist
    to_copy: Convert = _pylist
    row_bytes: Callable[[FieldSchema], int] = field(default=lambda f: 8)
    equal: Equal = _eq_plain

    @property
    def is_dense(self) -> bool:
        return self.storage in ("vector", "bytes")


def _dense(
    t: FieldType, arrow_elem: pa.DataType, pg: str, milvus: str, storage: Storage, np_dtype: Any,
    width: Callable[[int], int], to_milvus: Convert, to_copy: Convert, view: Any = None,
) -> TypeSpec:  # fmt: skip
    itemsize = np.dtype(np_dtype).itemsize
    return TypeSpec(
        t, pa.list_(arrow_elem), pg, milvus, storage, np_dtype, view, width, _nulls_kept(to_milvus),
        _nulls_kept(to_copy),
        row_bytes=lambda f: width(f.dim or 0) * itemsize + 4, equal=_eq_vector if storage == "vector" else _eq_bytes,
    )  # fmt: skip


def _text_bytes(f: FieldSchema) -> int:
    return min(f.max_length or 128, 256) // 2 + 4


TYPES: dict[FieldType, TypeSpec] = {}


def register_type(s: TypeSpec) -> TypeSpec:
    """Add (or replace) a row of the table; plugins call this to teach every store a new type."""
    TYPES[s.type] = s
    return s


for _s in (
    TypeSpec(FieldType.BOOL, pa.bool_(), "boolean", "BOOL", numpy=np.bool_),
    TypeSpec(FieldType.INT8, pa.int8(), "smallint", "INT8", numpy=np.int8),
    TypeSpec(FieldType.INT16, pa.int16(), "smallint", "INT16", numpy=np.int16),
    TypeSpec(FieldType.INT32, pa.int32(), "integer", "INT32", numpy=np.int32),
    TypeSpec(FieldType.INT64, pa.int64(), "bigint", "INT64", numpy=np.int64),
    TypeSpec(FieldType.FLOAT, pa.float32(), "real", "FLOAT", numpy=np.float32, equal=_eq_float32),
    TypeSpec(FieldType.DOUBLE, pa.float64(), "double precision", "DOUBLE", numpy=np.float64),
    TypeSpec(FieldType.VARCHAR, pa.string(), "text", "VARCHAR", row_bytes=_text_bytes),
    TypeSpec(FieldType.JSON, pa.string(), "jsonb", "JSON", "json", to_milvus=_json_objects,
             row_bytes=_text_bytes, equal=_eq_json),
    TypeSpec(FieldType.SPARSE_FLOAT_VECTOR, pa.string(), "jsonb", "SPARSE_FLOAT_VECTOR", "json",
             to_milvus=_sparse_dicts, row_bytes=lambda f: (f.nnz or 16) * 20, equal=_eq_sparse),
    # ARRAY's Arrow/PG types come from its element type (see arrow_type / pg_type)
    TypeSpec(FieldType.ARRAY, pa.null(), "", "ARRAY", row_bytes=lambda f: (f.max_capacity or 4) * 8 // 2 + 4,
             equal=_eq_array),
    _dense(FieldType.FLOAT_VECTOR, pa.float32(), "real[]", "FLOAT_VECTOR", "vector", np.float32,
           lambda d: d, _rows_as(None), _row_lists),
    _dense(FieldType.INT8_VECTOR, pa.int8(), "smallint[]", "INT8_VECTOR", "vector", np.int8,
           lambda d: d, _rows_as(None), _row_lists),
    _dense(FieldType.BINARY_VECTOR, pa.uint8(), "bytea", "BINARY_VECTOR", "bytes", np.uint8,
           lambda d: d // 8, _row_bytes, _row_bytes),
    _dense(FieldType.FLOAT16_VECTOR, pa.uint8(), "bytea", "FLOAT16_VECTOR", "bytes", np.uint8,
           lambda d: d * 2, _rows_as(np.float16), _row_bytes, view=np.float16),
    _dense(FieldType.BFLOAT16_VECTOR, pa.uint8(), "bytea", "BFLOAT16_VECTOR", "bytes", np.uint8,
           lambda d: d * 2, _row_bytes, _row_bytes),
):  # fmt: skip
    register_type(_s)


def spec(f: FieldSchema | FieldType) -> TypeSpec:
    t = f if isinstance(f, FieldType) else f.type
    try:
        return TYPES[t]
    except KeyError:
        raise KeyError(f"field type {t} has no entry in the field-type table (register_type)") from None


def arrow_type(f: FieldSchema) -> pa.DataType:
    if f.type is FieldType.ARRAY:
        assert f.element_type is not None
        return pa.list_(spec(f.element_type).arrow)
    return spec(f).arrow


def pg_type(f: FieldSchema) -> str:
    if f.type is FieldType.ARRAY:
        assert f.element_type is not None
        return spec(f.element_type).pg + "[]"
    return spec(f).pg


def milvus_dtype(t: FieldType) -> Any:
    """The pymilvus DataType (imported here, not at module load: most commands never talk to Milvus)."""
    from pymilvus import DataType

    name = spec(t).milvus
    return getattr(DataType, name) if isinstance(name, str) else name


def vector_width(f: FieldSchema) -> int:
    """Values per row in the list column of a dense vector field."""
    assert f.dim is not None
    return spec(f).width(f.dim)


def milvus_values(col: pa.Array, f: FieldSchema) -> list[Any]:
    """An Arrow column as the per-row values MilvusClient.insert takes."""
    return spec(f).to_milvus(col, f)


def pg_value(value: Any, f: FieldSchema) -> Any:
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


def same_value(f: FieldSchema, source: Any, got: Any, tolerance: float) -> bool:
    """Does a store's value equal the source's? Vectors within ``tolerance``, FLOAT at float32 precision."""
    if source is None or got is None:
        return source is None and got is None
    return spec(f).equal(f, source, got, tolerance)


def copy_values(col: pa.Array, f: FieldSchema) -> list[Any]:
    """An Arrow column as the per-row values asyncpg's COPY takes for the type's PostgreSQL column."""
    return spec(f).to_copy(col, f)
