"""Arrow batches turned into the rows pymilvus inserts (value conversion comes from the type table).

pymilvus is synchronous, so callers run this and every client call in worker threads.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from task_components.schema.arrow import META_COLUMN
from task_components.schema.models import CollectionSchema
from task_components.schema.types import milvus_values

__all__ = ["arrow_to_rows"]


def arrow_to_rows(batch: pa.RecordBatch | pa.Table, schema: CollectionSchema) -> list[dict[str, Any]]:
    """Rows for MilvusClient.insert: numpy row views for vectors, dicts for JSON/sparse, merged $meta."""
    columns: dict[str, list[Any]] = {}
    for f in schema.data_fields():
        col = batch.column(f.name)
        if isinstance(col, pa.ChunkedArray):
            col = pa.concat_arrays(col.chunks) if col.num_chunks != 1 else col.chunk(0)
        columns[f.name] = milvus_values(col, f)
    names = list(columns)
    rows = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    if schema.enable_dynamic_field and META_COLUMN in batch.schema.names:
        for row, meta in zip(rows, batch.column(META_COLUMN).to_pylist(), strict=True):
            if meta:
                row.update(json.loads(meta))
    return rows
