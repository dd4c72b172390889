"""Client rows on their way into the shadow table: defaults filled, vectors left out when the table has
none (``ignore_vector``), and COPY (binary from Arrow buffers when every column converts, records otherwise).

Split from ``mirror`` (the ordering rules) so each stays readable; ``mirror`` re-exports these names.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import pyarrow as pa

from task_components.schema.models import CollectionSchema
from task_components.schema.postgres import columns, row_record
from task_components.shadow.binary_copy import encode_batch
from task_components.shadow.export import arrow_batch
from task_components.shadow.sides import Shadow, vector_columns

__all__ = ["as_rows", "copy_rows", "prepare_copy", "rows_batch", "with_defaults"]


def as_rows(data: dict[str, Any] | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """MilvusClient takes one dict or a list of them."""
    return [data] if isinstance(data, dict) else list(data)


def with_defaults(rows: list[dict[str, Any]], schema: CollectionSchema) -> list[dict[str, Any]]:
    """Milvus stores a field's default where a row leaves it out or sets None; the shadow must too."""
    defaults = {f.name: f.default_value for f in schema.data_fields() if f.default_value is not None}
    if not defaults:
        return rows
    return [{**r, **{k: v for k, v in defaults.items() if r.get(k) is None}} for r in rows]


def rows_batch(rows: list[dict[str, Any]], schema: CollectionSchema) -> pa.RecordBatch | None:
    """Client rows as an Arrow batch in our layout; None when a column does not convert cleanly.

    Rows shaped like Milvus' own query results, so the export path's converter reads them; a ragged or
    mistyped value (one Milvus is about to refuse) sends the batch down the record path instead.
    """
    try:
        return arrow_batch(rows, schema, "milvus")
    except (ValueError, TypeError, OverflowError, KeyError, pa.ArrowException):
        return None


def _scalars(rows: list[dict[str, Any]], schema: CollectionSchema) -> list[dict[str, Any]]:
    """Rows without their vector values (an ``ignore_vector`` shadow): nothing of them is encoded or sent,
    and they cannot be mistaken for dynamic fields."""
    drop = set(vector_columns(schema))
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def prepare_copy(sh: Shadow, rows: list[dict[str, Any]], ids: list[Any] | None) -> Callable[[Any, str], Awaitable[Any]]:
    """Everything a COPY of ``rows`` needs CPU for, done now; the returned call only sends it.

    Why split: the send runs beside Milvus' call while pymilvus converts the same rows in another
    thread; converting ours at the same time only trades the GIL back and forth (5 ms slices), so it is
    done first and what overlaps is the I/O. ``ids`` are Milvus' keys of AUTO_ID rows.
    """
    schema = sh.stored
    if not sh.vectors:
        rows = _scalars(rows, sh.schema)
    if ids is None:
        batch = rows_batch(rows, schema)
        encoded = encode_batch(batch, schema, 0) if batch is not None else None
        if encoded is not None:
            payload, cols = encoded
            return lambda conn, table: conn.copy_to_table(table, source=payload, format="binary", columns=cols)
    records = [row_record(r, schema) for r in rows]
    if ids is not None:
        records = [(k, *rec) for k, rec in zip(ids, records, strict=True)]
    names = columns(schema)
    return lambda conn, table: conn.copy_records_to_table(table, records=records, columns=names)


async def copy_rows(conn: Any, table: str, sh: Shadow, rows: list[dict[str, Any]], ids: list[Any] | None) -> None:
    """COPY rows into ``table`` (the shadow or a staging twin), converted in a worker thread."""
    send = await anyio.to_thread.run_sync(prepare_copy, sh, rows, ids)
    await send(conn, table)
