"""Write a collection, from Milvus or from its shadow, to one Parquet file in our Arrow layout.

The file has ``arrow_schema(schema)``'s columns and carries the schema in its metadata, so it can be
imported, compared or inspected like any file this tool generates. Rows stream a batch at a time
(Milvus key walk, fenced by a Strong count(*) so rows written just before the export are in it
(``keyexpr.Walk``) / PostgreSQL server-side cursor) into a ``ParquetWriter``, both in key order,
so two exports of agreeing sides hold the same rows in the same order. Values are turned into Arrow
through the field-type table (``value_matrix`` for dense vectors), whichever store they came from.
AUTO_ID collections: the layout has no primary-key column (Milvus assigns ids on import), so the
ids are not in the file.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Literal

import anyio
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from task_components.errors import ShadowValidationError
from task_components.schema.arrow import arrow_schema
from task_components.schema.models import CollectionSchema, FieldSchema
from task_components.schema.postgres import table_name
from task_components.schema.types import arrow_type, spec, value_matrix

__all__ = ["arrow_batch", "arrow_column", "export"]


def _json_text(v: Any) -> str | None:
    return None if v is None else v if isinstance(v, str) else json.dumps(v)


def arrow_column(values: list[Any], f: FieldSchema) -> pa.Array:
    """One field's values as either store returns them -> the field's Arrow column."""
    t, storage = arrow_type(f), spec(f).storage
    if storage == "json":
        return pa.array([_json_text(v) for v in values], pa.string())
    if storage not in ("vector", "bytes"):
        return pa.array(values, t)
    valid = [v is not None for v in values]
    present = [v for v in values if v is not None]
    m = value_matrix(present, f) if present else np.empty((0, 0), spec(f).numpy)
    width = m.shape[1] if m.ndim == 2 else 0
    sizes = np.array([width if ok else 0 for ok in valid], dtype=np.int32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32))
    mask = None if all(valid) else pa.array([not ok for ok in valid])
    flat = pa.array(m.reshape(-1).astype(t.value_type.to_pandas_dtype(), copy=False), t.value_type)
    return pa.ListArray.from_arrays(offsets, flat, type=t, mask=mask)


def arrow_batch(rows: list[dict[str, Any]], schema: CollectionSchema, side: str) -> pa.RecordBatch:
    """Rows (dicts) of either side -> a record batch of ``arrow_schema(schema)``."""
    from task_components.shadow.diff import dynamic_part

    target = arrow_schema(schema)
    cols = [arrow_column([r.get(f.name) for r in rows], f) for f in schema.data_fields()]
    if schema.enable_dynamic_field:
        metas = [dynamic_part(r, schema, side) for r in rows]
        cols.append(pa.array([json.dumps(m) if m else None for m in metas], pa.string()))
    return pa.RecordBatch.from_arrays(cols, schema=target)


async def export(
    source: Any,
    collection: str | CollectionSchema,
    path: Path | str,
    *,
    side: Literal["postgres", "milvus"] = "postgres",
    batch_size: int = 2000,
    table: str | None = None,
) -> int:
    """Write one side of a collection to ``path`` (Parquet); the number of rows written.

    ``source`` is the ``MilvusClient`` for ``side="milvus"`` and the ``asyncpg.Pool`` for
    ``side="postgres"``. PostgreSQL alone does not know the collection's schema, so that side needs
    ``collection`` as a ``CollectionSchema`` (``from_milvus(client.describe_collection(name))``).
    """
    from task_components.connect import ensure_loaded
    from task_components.shadow import sides

    if side not in ("postgres", "milvus"):
        raise ShadowValidationError(f"side must be 'postgres' or 'milvus', got {side!r}")
    if side == "milvus":
        name = collection if isinstance(collection, str) else collection.collection_name
        schema = await sides.describe(source, name)
        await anyio.to_thread.run_sync(ensure_loaded, source, name)
        shadow = sides.Shadow(name, schema, table or table_name(schema))
        output = sides.milvus_output(shadow, [f for f in schema.data_fields() if not f.is_primary], schema.enable_dynamic_field)
        batches: Any = sides.milvus_batches(source, shadow, "", output, batch_size)
    else:
        if isinstance(collection, str):
            raise ShadowValidationError(
                f"exporting {collection!r} from PostgreSQL needs its CollectionSchema "
                "(from_milvus(client.describe_collection(name))), not just the name"
            )
        schema = collection
        shadow = sides.Shadow(schema.collection_name, schema, table or table_name(schema))
        if not await sides.check_table(source, schema, shadow.table):
            raise ShadowValidationError(
                f"shadow table {shadow.table!r} has no vector columns (created with ignore_vector): a file of it would "
                "lack the collection's vectors; export the collection from Milvus (side='milvus') instead"
            )
        cols = sides.pg_columns(shadow, [f for f in schema.data_fields() if not f.is_primary], schema.enable_dynamic_field)
        batches = sides.pg_batches(source, shadow, cols, "TRUE", batch_size)
    rows = 0
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    writer = pq.ParquetWriter(target, arrow_schema(schema))
    try:
        async with contextlib.aclosing(batches):
            async for batch in batches:
                records = [dict(r) for r in batch]
                arrow = await anyio.to_thread.run_sync(arrow_batch, records, schema, side)
                await anyio.to_thread.run_sync(writer.write_batch, arrow)
                rows += arrow.num_rows
    finally:
        writer.close()
    return rows
