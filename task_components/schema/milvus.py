"""Our collection schema -> a pymilvus schema, and the default index for each vector type.

Functions (BM25, TextEmbedding) go to Milvus with the schema; a BM25 input field gets
``enable_analyzer`` (Milvus refuses BM25 on a field without it) and a BM25 output gets the BM25 metric.

Index defaults differ by target: Milvus Lite builds HNSW/AUTOINDEX very slowly and answers FLAT
exactly and quickly at the sizes it serves, so it gets FLAT; a server gets HNSW for float vectors.
Every default can be overridden per field with ``indexes: {field: {index_type, metric_type, params}}``.
"""

from __future__ import annotations

from typing import Any

from pymilvus import Function, MilvusClient
from pymilvus import FunctionType as MilvusFunctionType

from task_components.schema.functions import FunctionSchema, FunctionType
from task_components.schema.models import CollectionSchema, FieldSchema, FieldType, SchemaError
from task_components.schema.types import TYPES, milvus_dtype, spec


def _field_kwargs(f: FieldSchema, analyzed: set[str]) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    family = spec(f).family
    if f.name in analyzed:
        kw["enable_analyzer"] = True
    if f.is_primary:
        kw["is_primary"] = True
        if f.auto_id:
            kw["auto_id"] = True
    if f.max_length is not None and family in ("text", "array"):
        kw["max_length"] = f.max_length
    if f.dim is not None and family == "vector":  # dense only: a sparse vector's dim is ours, not Milvus's
        kw["dim"] = f.dim
    if family == "array":
        assert f.element_type is not None
        kw["element_type"] = milvus_dtype(f.element_type)
        kw["max_capacity"] = f.max_capacity
    if f.nullable:
        kw["nullable"] = True
    if f.default_value is not None:
        kw["default_value"] = float(f.default_value) if family == "float" else f.default_value
    if f.is_partition_key:
        kw["is_partition_key"] = True
    if f.is_clustering_key:
        kw["is_clustering_key"] = True
    if f.description:
        kw["description"] = f.description
    return kw


def to_milvus_schema(schema: CollectionSchema) -> Any:
    if not any(f.type.is_vector for f in schema.fields):
        raise SchemaError(f"collection {schema.collection_name!r} has no vector field; Milvus needs one (e.g. FloatVector with dim)")
    ms = MilvusClient.create_schema(
        auto_id=schema.primary.auto_id,
        enable_dynamic_field=schema.enable_dynamic_field,
        description=schema.description,
    )
    analyzed = {n for fn in schema.functions if fn.type is FunctionType.BM25 for n in fn.input_field_names}
    for f in schema.fields:
        ms.add_field(f.name, milvus_dtype(f.type), **_field_kwargs(f, analyzed))
    for fn in schema.functions:
        ms.add_function(milvus_function(fn))
    return ms


def milvus_function(fn: FunctionSchema) -> Any:
    """Our function -> a pymilvus Function (BM25 params, e.g. analyzer settings, ride along as given)."""
    kind = MilvusFunctionType.BM25 if fn.type is FunctionType.BM25 else MilvusFunctionType.TEXTEMBEDDING
    return Function(
        name=fn.name,
        function_type=kind,
        input_field_names=fn.input_field_names,
        output_field_names=fn.output_field_names,
        description=fn.description,
        params=fn.params or None,
    )


def default_index(f: FieldSchema, lite: bool) -> dict[str, Any]:
    """The type's fixed index when it has one (binary: BIN_FLAT/HAMMING, sparse), else by target."""
    fixed = spec(f).index
    if fixed is not None:
        return {**fixed, "params": dict(fixed.get("params", {}))}
    if lite:
        return {"index_type": "FLAT", "metric_type": "COSINE", "params": {}}
    return {"index_type": "HNSW", "metric_type": "COSINE", "params": {"M": 16, "efConstruction": 128}}


def index_params(schema: CollectionSchema, lite: bool, overrides: dict[str, dict[str, Any]]) -> tuple[Any, dict]:
    unknown = sorted(set(overrides) - {f.name for f in schema.fields if f.type.is_vector})
    if unknown:
        raise SchemaError(f"indexes name {', '.join(unknown)}, which are not vector fields of the collection")
    params = MilvusClient.prepare_index_params()
    chosen: dict[str, dict[str, Any]] = {}
    bm25 = {n for fn in schema.functions if fn.type is FunctionType.BM25 for n in fn.output_field_names}
    for f in schema.fields:
        if f.type.is_vector:
            base = default_index(f, lite) | ({"metric_type": "BM25"} if f.name in bm25 else {})
            spec = {**base, **overrides.get(f.name, {})}
            params.add_index(field_name=f.name, **spec)
            chosen[f.name] = spec
    return params, chosen


def _default(raw: Any) -> Any:
    """describe_collection hands the default back as a protobuf ValueField; we keep the plain value."""
    which = getattr(raw, "WhichOneof", None)
    if which is None:
        return raw
    kind = which("data")
    return getattr(raw, kind) if kind else None


def from_milvus(description: dict[str, Any]) -> CollectionSchema:
    """A collection as Milvus describes it -> our schema, for a shadow of a collection we did not create.

    Why: the drop-in client and the ``shadow`` commands meet collections made by the user's own code
    (quick-setup ``dimension=``, a pymilvus schema, another tool); the shadow table is built from this.
    """
    by_dtype: dict[Any, FieldType] = {}
    for t in TYPES:  # builtin rows first: a plugin type stored as an existing DataType does not claim it
        by_dtype.setdefault(milvus_dtype(t), t)
    fields: list[dict[str, Any]] = []
    for raw in description["fields"]:
        if raw.get("is_function_output"):
            continue  # computed by Milvus (BM25 sparse output): not written, not shadowed
        try:
            ftype = by_dtype[raw["type"]]
        except KeyError:
            raise SchemaError(f"field {raw['name']!r}: Milvus type {raw['type']!r} has no shadow mapping") from None
        params = raw.get("params") or {}
        f: dict[str, Any] = {"name": raw["name"], "type": ftype, "description": raw.get("description", "")}
        for key in ("is_primary", "auto_id", "is_partition_key", "is_clustering_key", "nullable"):
            if raw.get(key):
                f[key] = True
        for key in ("max_length", "dim", "max_capacity"):
            if key in params and not (key == "dim" and spec(ftype).family == "sparse"):
                f[key] = int(params[key])
        if raw.get("element_type") is not None:
            f["element_type"] = by_dtype[raw["element_type"]]
        if raw.get("default_value") is not None:
            f["default_value"] = _default(raw["default_value"])
        fields.append(f)
    return CollectionSchema.model_validate(
        {
            "collection_name": description["collection_name"],
            "description": description.get("description", ""),
            "fields": fields,
            "enable_dynamic_field": bool(description.get("enable_dynamic_field")),
        }
    )
