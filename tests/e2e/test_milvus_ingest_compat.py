"""Acceptance: every milvus-ingest builtin schema and documentation example validates and generates.

The schemas are copies in tests/fixtures/milvus_ingest (MIT, see its README), so milvus-ingest need
not be installed. Every row of the output is checked against default_value / force_all_* / nullable,
and a BM25 schema becomes a Milvus Lite collection whose full-text search finds the document.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import pipeline.clean_cli
import pipeline.datagen_cli
from pipeline.cli import app
from task_components.manifest import Manifest
from task_components.schema import CollectionSchema, FieldType, read_schema_file

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "milvus_ingest"
SCHEMAS = sorted((FIXTURES / "builtin").glob("*.json")) + sorted((FIXTURES / "docs").glob("*.*[ln]"))
ROWS = 60
assert pipeline.clean_cli


def test_fixtures_hold_every_builtin_and_doc_schema() -> None:
    assert len(list((FIXTURES / "builtin").glob("*.json"))) == 17
    assert len(list((FIXTURES / "docs").glob("*.*[ln]"))) == 10


def generate(tmp_path: Path, schema: Path, *args: str) -> Any:
    out = tmp_path / "out"
    base = ["generate", "--schema", str(schema), "--workers", "0", "--no-progress", "--run-dir", str(tmp_path / "r")]
    return CliRunner().invoke(app, [*base, "--out", str(out), *args]), out


@pytest.mark.parametrize("path", SCHEMAS, ids=[p.stem for p in SCHEMAS])
def test_schema_validates(path: Path, tmp_path: Path) -> None:
    result, out = generate(tmp_path, path, "--validate-only")
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and not out.exists()


def table(out: Path) -> tuple[Manifest, pa.Table]:
    manifest = Manifest.load(out)
    return manifest, pa.concat_tables(pq.read_table(manifest.file_path(f)) for f in manifest.files)


def check_every_row(schema: CollectionSchema, data: pa.Table) -> None:
    """Forced columns hold exactly the forced value; nulls only where nullable; defaults appear."""
    expected = [f.name for f in schema.data_fields()] + (["$meta"] if schema.enable_dynamic_field else [])
    assert data.column_names == expected
    for f in schema.data_fields():
        values = data.column(f.name).to_pylist()
        if f.force_all_null:
            assert all(v is None for v in values), f.name
        elif f.force_all_default:
            assert all(v == f.default_value for v in values), (f.name, set(map(str, values)))
        else:
            if not f.nullable:
                assert None not in values, f.name
            if f.default_value is not None:
                share = sum(v == f.default_value for v in values) / len(values)
                top = 0.8 if f.type is FieldType.BOOL else 0.6  # a random Bool is the default half the time anyway
                assert 0.1 < share < top, (f.name, share)  # ~30% of the rows, as milvus-ingest writes


@pytest.mark.parametrize("path", SCHEMAS, ids=[p.stem for p in SCHEMAS])
def test_schema_generates(path: Path, tmp_path: Path) -> None:
    result, out = generate(tmp_path, path, "--total-rows", str(ROWS))
    assert result.exit_code == 0, result.output
    manifest, data = table(out)
    assert data.num_rows == ROWS == manifest.total_rows
    schema = read_schema_file(path)
    check_every_row(schema, data)
    for name in schema.function_outputs:
        assert name not in data.column_names  # Milvus computes it


def test_force_and_default_demos_are_exact(tmp_path: Path) -> None:
    path = FIXTURES / "builtin" / "force_modes_demo.json"
    result, out = generate(tmp_path, path, "--total-rows", "500", "--rows-per-file", "200")
    assert result.exit_code == 0, result.output
    manifest, data = table(out)
    assert len(manifest.files) == 3
    assert set(data.column("status").to_pylist()) == {"active"}
    assert set(data.column("priority").to_pylist()) == {1}
    assert set(data.column("is_verified").to_pylist()) == {False}
    assert data.column("optional_desc").null_count == data.column("optional_score").null_count == 500
    category = data.column("category").to_pylist()
    assert 0 < category.count(None) < 100 and 100 < category.count("general") < 220


def test_partitions_in_collection_config_and_key_values(tmp_path: Path) -> None:
    path = FIXTURES / "builtin" / "ecommerce_partitioned.json"
    result, out = generate(tmp_path, path, "--total-rows", "3000", "--partitions", "4")
    assert result.exit_code == 0, result.output
    manifest, data = table(out)
    key = read_schema_file(path).partition_key
    assert key is not None
    assert manifest.collection_config["num_partitions"] == 4
    assert 30 <= len(set(data.column(key.name).to_pylist())) <= 40


def test_file_count_and_size_derive_the_rows(tmp_path: Path) -> None:
    result, out = generate(tmp_path, FIXTURES / "builtin" / "simple.json", "--file-count", "2", "--file-size", "1MB")
    assert result.exit_code == 0, result.output
    manifest, _ = table(out)
    sizes = [manifest.file_path(f).stat().st_size for f in manifest.files]
    assert len(sizes) == 2 and manifest.total_rows != 1000  # --total-rows' default is ignored
    assert all(0.6 * 2**20 < s < 1.1 * 2**20 for s in sizes), sizes


def test_batch_size_sets_the_chunk_and_verbose_prints_the_plan(tmp_path: Path) -> None:
    args = ("--total-rows", "20", "--batch-size", "7", "--verbose")
    result, out = generate(tmp_path, FIXTURES / "builtin" / "simple.json", *args)
    assert result.exit_code == 0, result.output
    assert "plan: 20 rows, chunks of 7 rows" in " ".join(result.output.split())
    manifest, data = table(out)
    assert manifest.generation["chunk_rows"] == 7 and data.num_rows == 20


def test_bm25_collection_on_milvus_lite_finds_the_document(tmp_path: Path) -> None:
    from task_components.contracts import MilvusTarget
    from task_components.milvus.client import arrow_to_rows
    from task_components.schema.milvus import index_params, to_milvus_schema

    path = FIXTURES / "builtin" / "full_text_search.json"
    result, out = generate(tmp_path, path, "--total-rows", "200")
    assert result.exit_code == 0, result.output
    schema = read_schema_file(path)
    _, data = table(out)
    rows = arrow_to_rows(data, schema)
    needle = dict(rows[0], content="the zyzzogeton quasar guide", title="needle")
    client = MilvusTarget(str(tmp_path / "milvus.db"), None, "default", lite=True).client()
    name = "mischema_bm25"
    try:
        client.create_collection(name, schema=to_milvus_schema(schema), index_params=index_params(schema, True, {})[0])
        functions = client.describe_collection(name).get("functions") or []
        assert [(f["name"], f["input_field_names"], f["output_field_names"]) for f in functions] == [
            ("content_to_sparse", ["content"], ["content_sparse"])
        ]
        client.insert(name, [*rows, needle])
        hits = client.search(name, data=["zyzzogeton"], anns_field="content_sparse", limit=3, output_fields=["title"])
        assert hits[0] and hits[0][0]["entity"]["title"] == "needle", hits
    finally:
        client.drop_collection(name)
        client.close()
