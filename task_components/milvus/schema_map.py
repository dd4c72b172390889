"""Our collection schema -> a pymilvus schema, and the default index for each vector type.

Index defaults differ by target: Milvus Lite builds HNSW/AUTOINDEX very slowly and answers FLAT
exactly and quickly at the sizes it serves, so it gets FLAT; a server gets HNSW for float vectors.
Every default can be overridden per field with ``indexes: {field: {index_type, metric_type, params}}``.
"""

from __future__ import annotations

from typing import Any

from pymilvus import MilvusClient

from task_components.schema.models import CollectionSchema, FieldSchema, FieldType, SchemaError
from task_components.schema.types import milvus_dtype


def _field_kwargs(f: FieldSchema) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if f.is_primary:
        kw["is_primary"] = True
        if f.auto_id:
            kw["auto_id"] = True
    if f.max_length is not None and f.type in (FieldType.VARCHAR, FieldType.ARRAY):
        kw["max_length"] = f.max_length
    if f.dim is not None and f.type.is_vector and f.type is not FieldType.SPARSE_FLOAT_VECTOR:
        kw["dim"] = f.dim
    if f.type is FieldType.ARRAY:
        assert f.element_type is not None
        kw["element_type"] = milvus_dtype(f.element_type)
        kw["max_capacity"] = f.max_capacity
    if f.nullable:
        kw["nullable"] = True
    if f.default_value is not None:
        kw["default_value"] = f.default_value
    if f.is_partition_key:
        kw["is_partition_key"] = True
    if f.is_clustering_key:
        kw["is_clustering_key"] = True
    if f.description:
        kw["description"] = f.description
    return kw


def to_milvus_schema(schema: CollectionSchema) -> Any:
    if not any(f.type.is_vector for f in schema.fields):
        raise SchemaError(
            f"collection {schema.collection_name!r} has no vector field; Milvus needs one (e.g. FloatVector with dim)"
        )
    ms = MilvusClient.create_schema(
        auto_id=schema.primary.auto_id, enable_dynamic_field=schema.enable_dynamic_field,
        description=schema.description,
    )  # fmt: skip
    for f in schema.fields:
        ms.add_field(f.name, milvus_dtype(f.type), **_field_kwargs(f))
    return ms


# types whose only sensible index and metric do not depend on the target
_FIXED_INDEX: dict[FieldType, dict[str, Any]] = {
    FieldType.BINARY_VECTOR: {"index_type": "BIN_FLAT", "metric_type": "HAMMING", "params": {}},
    FieldType.SPARSE_FLOAT_VECTOR: {"index_type": "SPARSE_INVERTED_INDEX", "metric_type": "IP", "params": {}},
}


def default_index(f: FieldSchema, lite: bool) -> dict[str, Any]:
    if f.type in _FIXED_INDEX:
        return dict(_FIXED_INDEX[f.type])
    if lite:
        return {"index_type": "FLAT", "metric_type": "COSINE", "params": {}}
    return {"index_type": "HNSW", "metric_type": "COSINE", "params": {"M": 16, "efConstruction": 128}}


def index_params(schema: CollectionSchema, lite: bool, overrides: dict[str, dict[str, Any]]) -> tuple[Any, dict]:
    unknown = sorted(set(overrides) - {f.name for f in schema.fields if f.type.is_vector})
    if unknown:
        raise SchemaError(f"indexes name {', '.join(unknown)}, which are not vector fields of the collection")
    params = MilvusClient.prepare_index_params()
    chosen: dict[str, dict[str, Any]] = {}
    for f in schema.fields:
        if f.type.is_vector:
            spec = {**default_index(f, lite), **overrides.get(f.name, {})}
            params.add_index(field_name=f.name, **spec)
            chosen[f.name] = spec
    return params, chosen
