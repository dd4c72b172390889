"""Collection schema -> PostgreSQL table, for every Milvus field type (column types from the type table).

Vectors become ``real[]`` (float), ``smallint[]`` (int8) or ``bytea`` (binary, float16, bfloat16: the
exact bytes, so comparison is exact); sparse vectors, JSON and the dynamic ``$meta`` become ``jsonb``;
arrays become typed arrays. AUTO_ID collections get a ``_row`` key (the row's position in the source),
because Milvus assigns their ids and rows are matched by order.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from task_components.schema.arrow import META_COLUMN
from task_components.schema.models import CollectionSchema
from task_components.schema.types import copy_values, pg_type, pg_value

__all__ = [
    "ROW_KEY",
    "arrow_records",
    "columns",
    "create_table_sql",
    "key_column",
    "pg_type",
    "quote",
    "row_record",
    "table_name",
]

ROW_KEY = "_row"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_name(schema: CollectionSchema | str) -> str:
    """The shadow table of a collection (its schema or just its name)."""
    name = schema if isinstance(schema, str) else schema.collection_name
    return f"shadow_{name}"


def key_column(schema: CollectionSchema) -> str:
    return ROW_KEY if schema.primary.auto_id else schema.primary.name


def columns(schema: CollectionSchema) -> list[str]:
    names = [f.name for f in schema.data_fields()]
    if schema.primary.auto_id:
        names.insert(0, ROW_KEY)
    if schema.enable_dynamic_field:
        names.append(META_COLUMN)
    return names


def create_table_sql(schema: CollectionSchema, table: str | None = None, *, if_not_exists: bool = False) -> str:
    cols = []
    if schema.primary.auto_id:
        cols.append(f"{quote(ROW_KEY)} bigint NOT NULL")
    for f in schema.data_fields():
        null = "" if f.nullable else " NOT NULL"
        cols.append(f"{quote(f.name)} {pg_type(f)}{null}")
    if schema.enable_dynamic_field:
        cols.append(f"{quote(META_COLUMN)} jsonb")
    cols.append(f"PRIMARY KEY ({quote(key_column(schema))})")
    create = "CREATE TABLE IF NOT EXISTS" if if_not_exists else "CREATE TABLE"
    name = quote(table or table_name(schema))
    sql = f"{create} {name} (\n  " + ",\n  ".join(cols) + "\n)"
    # vectors are random bytes: PostgreSQL would try to compress every one (pglz, in vain) before
    # storing it out of line; EXTERNAL skips that, which is most of COPY's cost for 768-d rows
    external = [f"ALTER COLUMN {quote(f.name)} SET STORAGE EXTERNAL" for f in schema.data_fields() if f.type.is_vector]
    return sql + (f";\nALTER TABLE {name} " + ", ".join(external) if external else "")


def arrow_records(batch: pa.RecordBatch, schema: CollectionSchema, offset: int) -> list[tuple[Any, ...]]:
    """Records for COPY, one column at a time through the type table (no per-value type branching).

    ``offset`` is the batch's first row position in the source: AUTO_ID collections key rows by it.
    """
    n = batch.num_rows
    cols: list[Any] = []
    if schema.primary.auto_id:
        cols.append(range(offset, offset + n))
    cols += [copy_values(batch.column(f.name), f) for f in schema.data_fields()]
    if schema.enable_dynamic_field:
        cols.append(batch.column(META_COLUMN).to_pylist())
    return list(zip(*cols, strict=True))


def row_record(row: dict[str, Any], schema: CollectionSchema) -> tuple[Any, ...]:
    """One Milvus row dict as a shadow-table record (same column order as ``columns(schema)``)."""
    names = {f.name for f in schema.fields}
    values: list[Any] = [pg_value(row.get(f.name), f) for f in schema.data_fields()]
    if schema.enable_dynamic_field:
        extra = {k: v for k, v in row.items() if k not in names}
        values.append(json.dumps(extra) if extra else None)
    return tuple(values)
