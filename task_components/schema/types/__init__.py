"""The one field-type table: for each field type, every fact any module needs, in one record.

Each ``TypeSpec`` (``spec.py``) says what a column of that type is in Arrow (batches and Parquet),
numpy, PostgreSQL (the shadow) and Milvus; how it is generated; how its values move between stores and
compare; its binary COPY encoder and its canonical bytes for content hashing; the values it can hold,
whether it takes a ``default_value``, its fixed Milvus index, its ``schemas help`` example. Every other
module asks this table instead of writing its own ``if type is ...`` ladder, so adding a type is one
``register_type`` call (a plugin can do it without touching other modules), undone by ``unregister_type``.

Layout: ``spec`` (the record and the table, importing nothing of the project), the per-fact function
modules over it (``convert``, ``generate`` with ``text``/``vocab``, ``pgbinary``, ``canonical``), and
``builtin`` (the sixteen Milvus types), imported here so the table is full once the package is loaded.
"""

from task_components.schema.types import builtin as _builtin  # noqa: F401  (fills the table)
from task_components.schema.types.convert import (
    arrow_type,
    copy_values,
    matrix,
    milvus_dtype,
    milvus_values,
    pg_type,
    pg_value,
    same_value,
    unwrap_bytes,
    value_matrix,
    vector_width,
)
from task_components.schema.types.spec import (
    TYPES,
    Distinct,
    Family,
    Field,
    FieldType,
    TypeSpec,
    register_type,
    spec,
    unregister_type,
)

__all__ = [
    "TYPES",
    "Distinct",
    "Family",
    "Field",
    "FieldType",
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
    "unregister_type",
    "unwrap_bytes",
    "value_matrix",
    "vector_width",
]
