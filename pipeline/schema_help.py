"""The text of ``schema help``: every field type and every schema key, each with an example.

Kept apart from the commands so a test can check that no key of the models is left undocumented:
the key lists are read from the pydantic models, the explanations live here, and each field type's
example is its field-type table row's ``example`` (a registered type documents itself).
"""

from __future__ import annotations

from task_components.schema.functions import FunctionSchema
from task_components.schema.models import PATTERNS, CollectionSchema, DynamicFieldSchema, FieldSchema, FieldType
from task_components.schema.types import TYPES

__all__ = ["schema_help", "type_examples"]

FIELD_KEYS: dict[str, str] = {
    "name": '"name": "title" - letters, digits, underscores',
    "type": '"type": "VarChar" - one of the types above',
    "description": '"description": "product title"',
    "is_primary": '"is_primary": true - exactly one field (synonym: "is_primary_key": true); Int64 or VarChar',
    "auto_id": '"auto_id": true - Milvus assigns the Int64 primary key; it is not generated',
    "is_partition_key": '"is_partition_key": true - Int64/VarChar; --partitions N gives it N x 10 values',
    "is_clustering_key": '"is_clustering_key": true - at most one field',
    "nullable": '"nullable": true - about 10% of rows are null',
    "null_ratio": '"null_ratio": 0.25 - share of nulls when nullable',
    "default_value": '"default_value": "active" - scalar non-primary fields; ~30% of non-null rows take it',
    "force_all_default": '"force_all_default": true - every row takes default_value',
    "force_all_null": '"force_all_null": true - every row is null (needs "nullable": true)',
    "min": '"min": 0 - numeric fields (and Arrays of numbers)',
    "max": '"max": 100',
    "max_length": '"max_length": 256 - VarChar (and VarChar Array elements), 1..65535',
    "min_length": '"min_length": 20 - VarChar',
    "pattern": f'"pattern": "email" - VarChar text: {", ".join(PATTERNS)}',
    "dim": '"dim": 768 - vector dimension, 1..32768',
    "nnz": '"nnz": 16 - non-zeros per SparseFloatVector row',
    "normalize": '"normalize": false - float vectors are unit length unless false',
    "distribution": '"distribution": "uniform" - vector components: "normal" (default) or "uniform"',
    "element_type": '"element_type": "Int64" - Array element: a scalar type',
    "max_capacity": '"max_capacity": 16 - Array elements per row, 1..4096',
    "cardinality_ratio": '"cardinality_ratio": 0.01 - distinct values = max(1, int(rows x ratio))',
    "cardinality": '"cardinality": 50 - exactly this many distinct values',
    "enum_values": '"enum_values": ["a", "b"] - pick from these (synonym "choices"); overrides cardinality',
}
COLLECTION_KEYS: dict[str, str] = {
    "collection_name": '"collection_name": "products" [default: the file name for a fields-only list]',
    "description": '"description": "product catalog"',
    "fields": '"fields": [ ... ] - at least one; a file may also be just this list',
    "enable_dynamic_field": '"enable_dynamic_field": true - extra keys go to $meta',
    "dynamic_fields": '"dynamic_fields": [{"name": "color", "type": "String", "probability": 0.5}]',
    "num_partitions": '"num_partitions": 16 - 1..4096 (set by --partitions)',
    "num_shards": '"num_shards": 2 - 1..64 (set by --shards)',
    "functions": '"functions": [ ... ] - see Functions below',
}
DYNAMIC_KEYS = (
    "name, type (Bool, Int, Float, String, Array, JSON), description, probability, min_value, max_value, "
    "min_length, max_length, values, array_min_length, array_max_length"
)
FUNCTIONS = """\
  BM25 (full-text search; the output SparseFloatVector is computed by Milvus, never generated):
    {"name": "content_bm25", "type": "BM25", "input_field_names": ["content"],
     "output_field_names": ["content_sparse"], "params": {}}
    input: a VarChar field (created with enable_analyzer); output: a SparseFloatVector field (BM25 metric)
  TextEmbedding (Milvus calls the provider; the output vector is not generated):
    {"name": "embed", "type": "TextEmbedding", "input_field_names": ["content"],
     "output_field_names": ["embedding"], "params": {"provider": "openai", "model_name": "text-embedding-3-small"}}
  keys: name, type, input_field_names, output_field_names, params, description"""


def type_examples() -> dict[FieldType, str]:
    """Each registered type's example field, in the order the type names were made (builtins first)."""
    return {t: TYPES[t].example for t in FieldType if t in TYPES and TYPES[t].example}


def schema_help() -> str:
    lines = ["Collection schema format (milvus-ingest's JSON/YAML, read as-is)", "", "Example:"]
    lines += [
        '  {"collection_name": "products", "fields": [',
        '    {"name": "id", "type": "Int64", "is_primary": true},',
        '    {"name": "title", "type": "VarChar", "max_length": 200},',
        '    {"name": "embedding", "type": "FloatVector", "dim": 768}]}',
        "",
        "Field types (names match loosely: FloatVector, FLOAT_VECTOR, float_vector):",
    ]
    lines += [f"  {t.value:<18} {example}" for t, example in type_examples().items()]
    lines += ["", "Field keys:"]
    lines += [f"  {k:<20} {v}" for k, v in FIELD_KEYS.items()]
    lines += ["", "Collection keys:"]
    lines += [f"  {k:<20} {v}" for k, v in COLLECTION_KEYS.items()]
    lines += ["", f"Dynamic field keys: {DYNAMIC_KEYS}", "", "Functions:", FUNCTIONS, ""]
    lines += ["Unknown keys are errors (exit 2) naming the key; `generate --validate-only` checks a file."]
    return "\n".join(lines)


def undocumented() -> list[str]:
    """Model keys the help leaves out (a test keeps this empty)."""
    missing = [k for k in FieldSchema.model_fields if k not in FIELD_KEYS]
    missing += [k for k in CollectionSchema.model_fields if k not in COLLECTION_KEYS]
    missing += [k for k in DynamicFieldSchema.model_fields if k not in DYNAMIC_KEYS]
    missing += [k for k in FunctionSchema.model_fields if k not in FUNCTIONS]
    missing += [t.value for t in FieldType if t not in type_examples()]
    return missing
