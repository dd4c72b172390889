"""Schema models: milvus-ingest files read as-is; errors name the field and suggest the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from task_components.schema import FieldType, SchemaError, builtin_names, parse_schema, read_schema_file, resolve_schema
from task_components.schema.arrow import arrow_schema, schema_of

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "schemas"


def test_milvus_ingest_json_and_yaml_read_as_is() -> None:
    s = read_schema_file(FIXTURES / "milvus_ingest_products.json")
    assert s.field("brand").type is FieldType.VARCHAR  # "String" alias
    assert s.partition_key is not None and s.partition_key.name == "tenant"
    assert [d.name for d in s.dynamic_fields] == ["color", "weight"]
    y = read_schema_file(FIXTURES / "milvus_ingest_products.yaml")
    assert y.field("vec").type is FieldType.FLOAT_VECTOR and y.primary.auto_id


def test_builtin_library_has_16_plus_valid_schemas_covering_every_type() -> None:
    names = builtin_names()
    assert len(names) >= 16
    seen = {f.type for n in names for f in resolve_schema(n).fields}
    assert seen == set(FieldType)


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ({"name": "v", "type": "FloatVector"}, "field 'v': FloatVector needs dim, e.g. \"dim\": 768"),
        ({"name": "b", "type": "BinaryVector", "dim": 12}, "multiple of 8, got 12 (try 16)"),
        ({"name": "s", "type": "VarChar"}, "field 's': VarChar needs max_length, e.g. \"max_length\": 256"),
        ({"name": "a", "type": "Array", "element_type": "Int64"}, "Array needs element_type and max_capacity"),
        ({"name": "n", "type": "Int8", "min": 0, "max": 1000}, "does not fit Int8"),
        ({"name": "p", "type": "Float", "min": 5, "max": 1}, "min (5.0) is greater than max (1.0); swap them"),
        ({"name": "t", "type": "Vectorr", "dim": 3}, "unknown type 'Vectorr'"),
        ({"name": "x", "type": "VarChar", "max_length": 9, "pattern": "zip"}, "unknown pattern 'zip'"),
        ({"name": "x", "type": "Int64", "auto_id": True}, "auto_id is only for the primary key"),
    ],
)
def test_field_errors_name_the_field_and_the_fix(field: dict, message: str) -> None:
    raw = {"fields": [{"name": "id", "type": "Int64", "is_primary": True}, field]}
    with pytest.raises(SchemaError) as info:
        parse_schema(raw, "my.json")
    assert str(info.value).startswith("my.json: ")
    assert message in str(info.value)


def test_collection_level_errors() -> None:
    with pytest.raises(SchemaError, match='exactly one field needs "is_primary": true'):
        parse_schema({"fields": [{"name": "v", "type": "FloatVector", "dim": 4}]})
    with pytest.raises(SchemaError, match="repeated: v"):
        parse_schema({"fields": [{"name": "v", "type": "Int64", "is_primary": True}, {"name": "v", "type": "Bool"}]})
    with pytest.raises(SchemaError, match=r"bad_vector_no_dim\.json: field 'embedding': FloatVector needs dim"):
        read_schema_file(FIXTURES / "bad_vector_no_dim.json")


def test_unknown_schema_name_lists_known_ones() -> None:
    with pytest.raises(SchemaError, match=r"neither a builtin/library name nor a file.*ecommerce"):
        resolve_schema("no_such_schema")


def test_arrow_schema_round_trips_the_collection_schema() -> None:
    s = resolve_schema("all_types")
    arrow = arrow_schema(s)
    assert schema_of(arrow) == s
    assert "$meta" in arrow.names and "id" in arrow.names
