"""The builtin rows of the field-type table: the sixteen Milvus field types, each fact in one place.

A plugin adds a row the same way (``register_type(TypeSpec(...))``), building on the functions the
other modules of this package export (generators, binary COPY encoders, canonical encoders,
conversions), or on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from task_components.schema.types import canonical as canon
from task_components.schema.types import generate as gen
from task_components.schema.types import pgbinary as pgb
from task_components.schema.types.convert import (
    eq_array,
    eq_bytes,
    eq_float32,
    eq_json,
    eq_sparse,
    eq_vector,
    json_objects,
    nulls_kept,
    row_bytes,
    row_lists,
    rows_as,
    sparse_dicts,
)
from task_components.schema.types.spec import (
    BinaryEncoder,
    Convert,
    Field,
    FieldType,
    Generate,
    Storage,
    TypeSpec,
    register_type,
    seal_builtin_rows,
)

__all__ = ["check_bool", "check_integer", "check_number", "check_text", "dense", "text_row_bytes"]


# -- default_value rules (Milvus accepts a default only on these types, of the field's own type) --------
def _kind(value: Any) -> str:
    return type(value).__name__


def check_bool(f: Field, v: Any) -> None:
    if not isinstance(v, bool):
        raise ValueError(f"default_value of a {f.type.value} field must be true or false, got {_kind(v)} {v!r}")


def check_integer(f: Field, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"default_value of an {f.type.value} field must be an integer, got {_kind(v)} {v!r}")


def check_number(f: Field, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"default_value of a {f.type.value} field must be a number, got {_kind(v)} {v!r}")


def check_text(f: Field, v: Any) -> None:
    if not isinstance(v, str):
        raise ValueError(f"default_value of a {f.type.value} field must be a string, got {_kind(v)} {v!r}")
    if f.max_length is not None and len(v) > f.max_length:
        raise ValueError(f"default_value {v!r} is {len(v)} characters, longer than max_length {f.max_length}")


def text_row_bytes(f: Field) -> int:
    return min(f.max_length or 128, 256) // 2 + 4


def _int(t: FieldType, np_dtype: Any, pg: str, be: str, example: str, key: bool = False) -> TypeSpec:
    info = np.iinfo(np_dtype)
    return TypeSpec(
        t,
        pa.from_numpy_dtype(np_dtype),
        pg,
        t.name,
        numpy=np_dtype,
        family="integer",
        value_range=(int(info.min), int(info.max)),
        generate=gen.number_column,
        copy=pgb.scalar(be),
        canonical=canon.int_bytes,
        default=check_integer,
        key=key,
        array_element=True,
        example=example,
    )


def dense(
    t: FieldType,
    arrow_elem: pa.DataType,
    pg: str,
    storage: Storage,
    np_dtype: Any,
    width: Callable[[int], int],
    to_milvus: Convert,
    to_copy: Convert,
    generate: Generate,
    copy: BinaryEncoder,
    example: str,
    **extra: Any,
) -> TypeSpec:
    """A dense vector type: a list column of ``width(dim)`` elements per row."""
    itemsize = np.dtype(np_dtype).itemsize
    return TypeSpec(
        t,
        pa.list_(arrow_elem),
        pg,
        t.name,
        storage,
        np_dtype,
        extra.pop("view", None),
        width,
        nulls_kept(to_milvus),
        nulls_kept(to_copy),
        row_bytes=lambda f: width(f.dim or 0) * itemsize + 4,
        equal=eq_vector if storage == "vector" else eq_bytes,
        family="vector",
        generate=generate,
        copy=copy,
        canonical=canon.dense_bytes,
        example=example,
        **extra,
    )


_F32_MAX = float(np.finfo(np.float32).max)
_F64_MAX = float(np.finfo(np.float64).max)
_JSONB: BinaryEncoder = pgb.text(b"\x01")

for _s in (
    TypeSpec(
        FieldType.BOOL,
        pa.bool_(),
        "boolean",
        "BOOL",
        numpy=np.bool_,
        family="bool",
        generate=gen.boolean,
        copy=pgb.scalar("?"),
        canonical=canon.bool_bytes,
        default=check_bool,
        array_element=True,
        example='{"name": "in_stock", "type": "Bool"}',
    ),
    # PostgreSQL has no 1-byte integer: Int8 is a smallint
    _int(FieldType.INT8, np.int8, "smallint", ">i2", '{"name": "rating", "type": "Int8", "min": 1, "max": 5}'),
    _int(FieldType.INT16, np.int16, "smallint", ">i2", '{"name": "year", "type": "Int16", "min": 1900, "max": 2100}'),
    _int(FieldType.INT32, np.int32, "integer", ">i4", '{"name": "views", "type": "Int32", "min": 0}'),
    _int(FieldType.INT64, np.int64, "bigint", ">i8", '{"name": "id", "type": "Int64", "is_primary": true, "auto_id": true}', key=True),
    TypeSpec(
        FieldType.FLOAT,
        pa.float32(),
        "real",
        "FLOAT",
        numpy=np.float32,
        equal=eq_float32,
        family="float",
        value_range=(-_F32_MAX, _F32_MAX),
        generate=gen.number_column,
        copy=pgb.scalar(">f4"),
        canonical=canon.float_bytes,
        default=check_number,
        array_element=True,
        example='{"name": "price", "type": "Float", "min": 0.01, "max": 9999.99}',
    ),
    TypeSpec(
        FieldType.DOUBLE,
        pa.float64(),
        "double precision",
        "DOUBLE",
        numpy=np.float64,
        family="float",
        value_range=(-_F64_MAX, _F64_MAX),
        generate=gen.number_column,
        copy=pgb.scalar(">f8"),
        canonical=canon.double_bytes,
        default=check_number,
        array_element=True,
        example='{"name": "score", "type": "Double", "min": 0, "max": 1}',
    ),
    TypeSpec(
        FieldType.VARCHAR,
        pa.string(),
        "text",
        "VARCHAR",
        row_bytes=text_row_bytes,
        family="text",
        generate=gen.varchar,
        copy=pgb.text(),
        canonical=canon.text_bytes,
        default=check_text,
        key=True,
        array_element=True,
        example='{"name": "title", "type": "VarChar", "max_length": 200}   (also "String")',
    ),
    TypeSpec(
        FieldType.JSON,
        pa.string(),
        "jsonb",
        "JSON",
        "json",
        to_milvus=json_objects,
        row_bytes=text_row_bytes,
        equal=eq_json,
        family="json",
        generate=gen.json_column,
        copy=_JSONB,
        canonical=canon.json_bytes,
        example='{"name": "metadata", "type": "JSON", "nullable": true}',
    ),
    TypeSpec(
        FieldType.SPARSE_FLOAT_VECTOR,
        pa.string(),
        "jsonb",
        "SPARSE_FLOAT_VECTOR",
        "json",
        to_milvus=sparse_dicts,
        row_bytes=lambda f: (f.nnz or 16) * 20,
        equal=eq_sparse,
        family="sparse",
        generate=gen.sparse,
        copy=_JSONB,
        canonical=canon.sparse_bytes,
        index={"index_type": "SPARSE_INVERTED_INDEX", "metric_type": "IP", "params": {}},
        example='{"name": "sparse", "type": "SparseFloatVector"}   (optional dim, nnz)',
    ),
    # ARRAY's Arrow/PG types come from its element type (see convert.arrow_type / pg_type); ragged
    # typed arrays have no binary COPY encoder: such batches take the record path
    TypeSpec(
        FieldType.ARRAY,
        pa.null(),
        "",
        "ARRAY",
        row_bytes=lambda f: (f.max_capacity or 4) * 8 // 2 + 4,
        equal=eq_array,
        family="array",
        generate=gen.array,
        canonical=canon.array_bytes,
        example='{"name": "tags", "type": "Array", "element_type": "Int64", "max_capacity": 9}',
    ),
    dense(
        FieldType.FLOAT_VECTOR,
        pa.float32(),
        "real[]",
        "vector",
        np.float32,
        lambda d: d,
        rows_as(None),
        row_lists,
        gen.float_vector,
        pgb.pg_array("real", ">f4"),
        '{"name": "embedding", "type": "FloatVector", "dim": 768}',
    ),
    dense(
        FieldType.INT8_VECTOR,
        pa.int8(),
        "smallint[]",
        "vector",
        np.int8,
        lambda d: d,
        rows_as(None),
        row_lists,
        gen.int8_vector,
        pgb.pg_array("smallint", ">i2"),
        '{"name": "emb8", "type": "Int8Vector", "dim": 128}',
    ),
    dense(
        FieldType.BINARY_VECTOR,
        pa.uint8(),
        "bytea",
        "bytes",
        np.uint8,
        lambda d: d // 8,
        row_bytes,
        row_bytes,
        gen.binary_vector,
        pgb.bytea,
        '{"name": "hash", "type": "BinaryVector", "dim": 256}   (dim: a multiple of 8)',
        dim_multiple=8,
        index={"index_type": "BIN_FLAT", "metric_type": "HAMMING", "params": {}},
    ),
    dense(
        FieldType.FLOAT16_VECTOR,
        pa.uint8(),
        "bytea",
        "bytes",
        np.uint8,
        lambda d: d * 2,
        rows_as(np.float16),
        row_bytes,
        gen.float16_vector,
        pgb.bytea,
        '{"name": "emb16", "type": "Float16Vector", "dim": 384}',
        view=np.float16,
    ),
    dense(
        FieldType.BFLOAT16_VECTOR,
        pa.uint8(),
        "bytea",
        "bytes",
        np.uint8,
        lambda d: d * 2,
        row_bytes,
        row_bytes,
        gen.bfloat16_vector,
        pgb.bytea,
        '{"name": "embbf", "type": "BFloat16Vector", "dim": 384}',
    ),
):
    register_type(_s)
seal_builtin_rows()
