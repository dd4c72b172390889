"""Schema -> Arrow types: the in-memory and on-disk (Parquet) layout Milvus bulk import reads.

Vectors are ``list<float32>`` (FloatVector), ``list<uint8>`` bytes (Binary, Float16, BFloat16),
``list<int8>`` (Int8Vector); sparse vectors and JSON are JSON text; dynamic fields go to a ``$meta``
JSON text column. The collection schema rides along in the Arrow schema metadata, so any consumer of
a batch or a file knows exactly what it holds.
"""

from __future__ import annotations

import pyarrow as pa

from task_components.schema.models import CollectionSchema, FieldSchema, FieldType

SCHEMA_KEY = b"collection_schema"
META_COLUMN = "$meta"

_SCALARS: dict[FieldType, pa.DataType] = {
    FieldType.BOOL: pa.bool_(),
    FieldType.INT8: pa.int8(),
    FieldType.INT16: pa.int16(),
    FieldType.INT32: pa.int32(),
    FieldType.INT64: pa.int64(),
    FieldType.FLOAT: pa.float32(),
    FieldType.DOUBLE: pa.float64(),
    FieldType.VARCHAR: pa.string(),
    FieldType.JSON: pa.string(),
    FieldType.SPARSE_FLOAT_VECTOR: pa.string(),
    FieldType.FLOAT_VECTOR: pa.list_(pa.float32()),
    FieldType.BINARY_VECTOR: pa.list_(pa.uint8()),
    FieldType.FLOAT16_VECTOR: pa.list_(pa.uint8()),
    FieldType.BFLOAT16_VECTOR: pa.list_(pa.uint8()),
    FieldType.INT8_VECTOR: pa.list_(pa.int8()),
}


def arrow_type(field: FieldSchema) -> pa.DataType:
    if field.type is FieldType.ARRAY:
        assert field.element_type is not None
        return pa.list_(_SCALARS[field.element_type])
    return _SCALARS[field.type]


def vector_width(field: FieldSchema) -> int:
    """Values per row in the list column of a dense vector field."""
    assert field.dim is not None
    return {
        FieldType.BINARY_VECTOR: field.dim // 8,
        FieldType.FLOAT16_VECTOR: field.dim * 2,
        FieldType.BFLOAT16_VECTOR: field.dim * 2,
    }.get(field.type, field.dim)


def arrow_schema(schema: CollectionSchema) -> pa.Schema:
    cols = [pa.field(f.name, arrow_type(f), nullable=f.nullable) for f in schema.data_fields()]
    if schema.enable_dynamic_field:
        cols.append(pa.field(META_COLUMN, pa.string()))
    return pa.schema(cols, metadata={SCHEMA_KEY: schema.model_dump_json(exclude_defaults=True).encode()})


def schema_of(arrow: pa.Schema) -> CollectionSchema:
    meta = arrow.metadata or {}
    if SCHEMA_KEY not in meta:
        raise ValueError("this Arrow data carries no collection schema (was it written by this tool?)")
    return CollectionSchema.model_validate_json(meta[SCHEMA_KEY])


def row_bytes(schema: CollectionSchema) -> int:
    """A rough size of one row, to size chunks so each holds a few MB whatever the schema."""
    total = 0
    for f in schema.data_fields():
        t = f.type
        if t.is_vector and t is not FieldType.SPARSE_FLOAT_VECTOR:
            total += vector_width(f) * (4 if t is FieldType.FLOAT_VECTOR else 1) + 4
        elif t is FieldType.SPARSE_FLOAT_VECTOR:
            total += (f.nnz or 16) * 20
        elif t in (FieldType.VARCHAR, FieldType.JSON):
            total += min(f.max_length or 128, 256) // 2 + 4
        elif t is FieldType.ARRAY:
            total += (f.max_capacity or 4) * 8 // 2 + 4
        else:
            total += 8
    return max(total, 8)
