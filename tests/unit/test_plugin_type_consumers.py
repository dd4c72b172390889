"""Consumers ask the field-type table, not a list of type names: a plugin type is handled by its row.

A ``Doc`` type whose storage is JSON (JSON text in Arrow, an object in Milvus bulk-import JSON) goes
through the JSON data-file writer and reader as the builtin JSON type does; a ``Rate`` type of the float
family takes the shadow filters' float arithmetic as Float and Double do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from task_components.datafiles import read_table
from task_components.errors import FilterConversionError
from task_components.manifest import FileEntry, Manifest
from task_components.partitioning.writer import DatasetWriter
from task_components.schema import parse_schema
from task_components.schema.arrow import arrow_schema
from task_components.schema.models import CollectionSchema
from task_components.schema.types import FieldType, TypeSpec, register_type, unregister_type
from task_components.schema.types.convert import eq_json, json_objects
from task_components.shadow.filters import to_sql


@pytest.fixture
def plugin_types() -> Iterator[CollectionSchema]:
    doc, rate = FieldType.extend("Doc"), FieldType.extend("Rate")
    register_type(TypeSpec(doc, pa.string(), "jsonb", "JSON", "json", to_milvus=json_objects, equal=eq_json, family="json"))
    register_type(TypeSpec(rate, pa.float64(), "numeric", "DOUBLE", numpy=np.float64, family="float"))
    try:
        yield parse_schema(
            {
                "collection_name": "plugins",
                "fields": [
                    {"name": "id", "type": "Int64", "is_primary": True},
                    {"name": "doc", "type": "Doc", "nullable": True},
                    {"name": "rate", "type": "Rate"},
                    {"name": "v", "type": "FloatVector", "dim": 2},
                ],
            }
        )
    finally:
        unregister_type(doc)
        unregister_type(rate)


def test_a_json_storage_plugin_type_is_an_object_in_json_files_and_json_text_when_read(
    plugin_types: CollectionSchema, tmp_path: Path
) -> None:
    schema = arrow_schema(plugin_types)
    docs = ['{"a": 1, "b": [true, null]}', None, '{"nested": {"x": "y"}}']
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array([1, 2, 3], pa.int64()),
            pa.array(docs, pa.string()),
            pa.array([0.5, 1.5, 2.5]),
            pa.array([[0.0, 1.0]] * 3, pa.list_(pa.float32())),
        ],
        schema=schema,
    )
    writer = DatasetWriter(tmp_path, schema, fmt="json", threads=1)
    writer.write(batch)
    files = writer.close()
    rows = json.loads(Path(tmp_path / files[0].path).read_bytes())["rows"]
    assert [r["doc"] for r in rows] == [{"a": 1, "b": [True, None]}, None, {"nested": {"x": "y"}}]  # not strings
    manifest = Manifest(format="json", schema=plugin_types, files=files, root=str(tmp_path))
    read = read_table(manifest, files[0])
    assert [None if d is None else json.loads(d) for d in read["doc"].to_pylist()] == [None if d is None else json.loads(d) for d in docs]


def test_a_float_family_plugin_type_takes_float_arithmetic_in_shadow_filters(plugin_types: CollectionSchema) -> None:
    assert '"rate" * 2' in to_sql("rate * 2 > 3", plugin_types)
    with pytest.raises(FilterConversionError, match="% to integer fields only"):
        to_sql("rate % 2 == 1", plugin_types)


def test_a_json_storage_plugin_type_read_from_a_json_data_file_is_json_text(plugin_types: CollectionSchema, tmp_path: Path) -> None:
    rows = [{"id": 1, "doc": {"k": [1, 2]}, "rate": 0.5, "v": [0.0, 1.0]}]
    (tmp_path / "rows.json").write_text(json.dumps(rows))  # milvus-ingest's bare list of rows
    entry = FileEntry(path="rows.json", rows=1, bytes=(tmp_path / "rows.json").stat().st_size, sha256="")
    manifest = Manifest(format="json", schema=plugin_types, files=[entry], root=str(tmp_path))
    assert json.loads(read_table(manifest, entry)["doc"][0].as_py()) == {"k": [1, 2]}
