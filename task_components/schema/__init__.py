"""Collection schemas: models for every Milvus field type, the builtin library, type mappings."""

from task_components.schema.library import builtin_names, parse_schema, read_schema_file, resolve_schema
from task_components.schema.models import CollectionSchema, FieldSchema, FieldType, SchemaError

__all__ = [
    "CollectionSchema",
    "FieldSchema",
    "FieldType",
    "SchemaError",
    "builtin_names",
    "parse_schema",
    "read_schema_file",
    "resolve_schema",
]
