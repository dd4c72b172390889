"""Collection schema -> PostgreSQL table, for every Milvus field type.

Vectors become ``real[]`` (float), ``smallint[]`` (int8) or ``bytea`` (binary, float16, bfloat16: the
exact bytes, so comparison is exact); sparse vectors, JSON and the dynamic ``$meta`` become ``jsonb``;
arrays become typed arrays. AUTO_ID collections get a ``_row`` key (the row's position in the source),
because Milvus assigns their ids and rows are matched by order.
"""

from __future__ import annotations

from task_components.schema.arrow import META_COLUMN
from task_components.schema.models import CollectionSchema, FieldSchema, FieldType

ROW_KEY = "_row"

_SCALAR = {
    FieldType.BOOL: "boolean",
    FieldType.INT8: "smallint",
    FieldType.INT16: "smallint",
    FieldType.INT32: "integer",
    FieldType.INT64: "bigint",
    FieldType.FLOAT: "real",
    FieldType.DOUBLE: "double precision",
    FieldType.VARCHAR: "text",
    FieldType.JSON: "jsonb",
    FieldType.SPARSE_FLOAT_VECTOR: "jsonb",
    FieldType.FLOAT_VECTOR: "real[]",
    FieldType.INT8_VECTOR: "smallint[]",
    FieldType.BINARY_VECTOR: "bytea",
    FieldType.FLOAT16_VECTOR: "bytea",
    FieldType.BFLOAT16_VECTOR: "bytea",
}


def pg_type(f: FieldSchema) -> str:
    if f.type is FieldType.ARRAY:
        assert f.element_type is not None
        return _SCALAR[f.element_type] + "[]"
    return _SCALAR[f.type]


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def table_name(schema: CollectionSchema) -> str:
    return f"shadow_{schema.collection_name}"


def key_column(schema: CollectionSchema) -> str:
    return ROW_KEY if schema.primary.auto_id else schema.primary.name


def columns(schema: CollectionSchema) -> list[str]:
    names = [f.name for f in schema.data_fields()]
    if schema.primary.auto_id:
        names.insert(0, ROW_KEY)
    if schema.enable_dynamic_field:
        names.append(META_COLUMN)
    return names


def create_table_sql(schema: CollectionSchema) -> str:
    cols = []
    if schema.primary.auto_id:
        cols.append(f"{quote(ROW_KEY)} bigint NOT NULL")
    for f in schema.data_fields():
        null = "" if f.nullable else " NOT NULL"
        cols.append(f"{quote(f.name)} {pg_type(f)}{null}")
    if schema.enable_dynamic_field:
        cols.append(f"{quote(META_COLUMN)} jsonb")
    cols.append(f"PRIMARY KEY ({quote(key_column(schema))})")
    return f"CREATE TABLE {quote(table_name(schema))} (\n  " + ",\n  ".join(cols) + "\n)"
