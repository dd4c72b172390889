"""Schema -> Arrow types: the in-memory and on-disk (Parquet) layout Milvus bulk import reads.

Vectors are ``list<float32>`` (FloatVector), ``list<uint8>`` bytes (Binary, Float16, BFloat16),
``list<int8>`` (Int8Vector); sparse vectors and JSON are JSON text; dynamic fields go to a ``$meta``
JSON text column. The collection schema rides along in the Arrow schema metadata, so any consumer of
a batch or a file knows exactly what it holds.
"""

from __future__ import annotations

import pyarrow as pa

from task_components.schema.models import CollectionSchema
from task_components.schema.types import arrow_type, spec, vector_width

__all__ = ["META_COLUMN", "SCHEMA_KEY", "arrow_schema", "arrow_type", "row_bytes", "schema_of", "vector_width"]

SCHEMA_KEY = b"collection_schema"
META_COLUMN = "$meta"


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
    return max(sum(spec(f).row_bytes(f) for f in schema.data_fields()), 8)
