"""milvus-ingest's schema keys: synonyms, defaults, force modes, cardinality, functions, and their errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from pipeline.schema_help import schema_help, undocumented
from task_components.generation.columns import generate_chunk
from task_components.generation.sizing import rows_for_files
from task_components.generation.task import apply_layout
from task_components.schema import SchemaError, parse_schema, read_schema_file

ROOT = Path(__file__).resolve().parents[2]
VEC = {"name": "v", "type": "FloatVector", "dim": 4}
PK = {"name": "id", "type": "Int64", "is_primary": True}


def schema(*fields: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"collection_name": "c", "fields": [PK, *fields, VEC], **extra}


def rows(raw: dict[str, Any], n: int = 2000) -> pa.RecordBatch:
    return generate_chunk(parse_schema(raw).model_dump_json(), 7, 0, 0, n, n)


def test_is_primary_key_is_a_synonym_of_is_primary() -> None:
    cs = parse_schema({"fields": [{"name": "pk", "type": "VarChar", "max_length": 9, "is_primary_key": True}, VEC]})
    assert cs.primary.name == "pk"
    with pytest.raises(SchemaError, match=r"field 'pk': is_primary .* is_primary_key .* disagree"):
        parse_schema({"fields": [{"name": "pk", "type": "Int64", "is_primary": True, "is_primary_key": False}, VEC]})


def test_fields_only_list_is_a_schema_named_after_its_file(tmp_path: Path) -> None:
    path = tmp_path / "docs_only.json"
    path.write_text(json.dumps([PK, VEC]))
    cs = read_schema_file(path)
    assert cs.collection_name == "docs_only" and [f.name for f in cs.fields] == ["id", "v"]
    path.write_text(json.dumps({"fields": [PK, VEC]}))
    assert read_schema_file(path).collection_name == "docs_only"


BAD_DEFAULTS = [
    ({**PK, "default_value": 1}, "field 'id': a primary key cannot have a default_value"),
    ({"name": "j", "type": "JSON", "default_value": {}}, "field 'j': JSON fields cannot have a default_value"),
    (
        {"name": "a", "type": "Array", "element_type": "Int64", "max_capacity": 2, "default_value": [1]},
        "field 'a': Array fields cannot have a default_value",
    ),
    ({"name": "w", "type": "FloatVector", "dim": 2, "default_value": [0, 0]}, "field 'w': FloatVector fields cannot have a default_value"),
    ({"name": "b", "type": "Bool", "default_value": "yes"}, "field 'b': default_value of a Bool field must be true"),
    ({"name": "i", "type": "Int32", "default_value": True}, "default_value of an Int32 field must be an int"),
    ({"name": "i", "type": "Int8", "default_value": 200}, "field 'i': default_value 200 does not fit Int8"),
    ({"name": "i", "type": "Int64", "min": 0, "max": 9, "default_value": 10}, "greater than max (9.0)"),
    ({"name": "f", "type": "Float", "default_value": "0"}, "field 'f': default_value of a Float field must be a num"),
    ({"name": "s", "type": "VarChar", "max_length": 3, "default_value": "long"}, "longer than max_length 3"),
    ({"name": "s", "type": "VarChar", "max_length": 3, "default_value": 3}, "must be a string, got int 3"),
    ({"name": "s", "type": "VarChar", "max_length": 3, "force_all_default": True}, "force_all_default needs a defau"),
    ({"name": "s", "type": "VarChar", "max_length": 3, "force_all_null": True}, 'force_all_null needs "nullable"'),
    (
        {"name": "s", "type": "Int8", "nullable": True, "default_value": 1, "force_all_null": True, "force_all_default": True},
        "exclude each other",
    ),
    ({"name": "j", "type": "JSON", "cardinality_ratio": 0.5}, "cardinality_ratio/cardinality apply to scalar"),
]


@pytest.mark.parametrize(("field", "message"), BAD_DEFAULTS)
def test_default_and_force_errors_name_the_field(field: dict[str, Any], message: str) -> None:
    raw = {"collection_name": "c", "fields": [field, VEC] if field.get("is_primary") else [PK, field, VEC]}
    with pytest.raises(SchemaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_schema(raw)


def test_unknown_key_still_fails_naming_it() -> None:
    with pytest.raises(SchemaError, match="field 'x', key 'defualt_value': unknown key"):
        parse_schema(schema({"name": "x", "type": "Int8", "defualt_value": 1}))
    with pytest.raises(SchemaError, match="function 'f', key 'inputs': unknown key"):
        parse_schema(schema(TEXT, SPARSE, functions=[bm25(name="f", inputs=["t"])]))


def test_default_value_lands_in_about_30_percent_of_non_null_rows() -> None:
    batch = rows(
        schema(
            {"name": "s", "type": "VarChar", "max_length": 20, "nullable": True, "default_value": "dflt"},
            {"name": "n", "type": "Double", "default_value": 2},
        )
    )
    s, n = batch.column("s").to_pylist(), batch.column("n").to_pylist()
    nulls, defaults = s.count(None), s.count("dflt")
    assert 100 < nulls < 300, nulls  # 10% nulls, and the default never replaces a null
    assert 0.25 < defaults / (len(s) - nulls) < 0.35, defaults
    assert 0.25 < n.count(2.0) / len(n) < 0.35


def test_force_all_default_and_force_all_null_cover_every_row() -> None:
    batch = rows(
        schema(
            {"name": "st", "type": "VarChar", "max_length": 9, "default_value": "on", "force_all_default": True},
            {"name": "p", "type": "Int16", "default_value": -3, "force_all_default": True},
            {"name": "b", "type": "Bool", "default_value": False, "force_all_default": True},
            {"name": "o", "type": "Float", "nullable": True, "force_all_null": True},
            {"name": "j", "type": "JSON", "nullable": True, "force_all_null": True},
        )
    )
    assert set(batch.column("st").to_pylist()) == {"on"}
    assert set(batch.column("p").to_pylist()) == {-3}
    assert set(batch.column("b").to_pylist()) == {False}
    assert batch.column("o").null_count == batch.column("j").null_count == batch.num_rows


@pytest.mark.parametrize(("ratio", "want"), [(0.01, 20), (0.0, 1), (0.0004, 1), (0.0126, 25)])
def test_cardinality_ratio_is_int_of_rows_times_ratio(ratio: float, want: int) -> None:
    batch = rows(
        schema(
            {"name": "s", "type": "VarChar", "max_length": 30, "cardinality_ratio": ratio},
            {"name": "i", "type": "Int64", "cardinality_ratio": ratio},
        )
    )
    for col in ("s", "i"):
        distinct = len(set(batch.column(col).to_pylist()))
        assert 1 <= distinct <= want and distinct >= min(want, 0.8 * want), (col, distinct, want)


def test_short_varchar_keeps_its_cardinality_within_max_length() -> None:
    codes = rows(schema({"name": "cc", "type": "VarChar", "max_length": 2, "cardinality_ratio": 0.05})).column("cc")
    values = set(codes.to_pylist())
    assert 80 <= len(values) <= 100 and max(map(len, values)) <= 2  # int(2000 x 0.05) = 100 codes


def test_partitions_give_the_partition_key_n_times_10_values() -> None:
    cs = parse_schema(schema({"name": "k", "type": "VarChar", "max_length": 20, "is_partition_key": True}))
    laid = apply_layout(cs, 4, None)
    assert laid.num_partitions == 4 and laid.partition_key.cardinality == 40  # type: ignore[union-attr]
    keys = set(generate_chunk(laid.model_dump_json(), 1, 0, 0, 5000, 5000).column("k").to_pylist())
    assert 30 <= len(keys) <= 40
    with pytest.raises(SchemaError, match="needs a partition key"):
        apply_layout(parse_schema(schema()), 4, None)


def bm25(**over: Any) -> dict[str, Any]:
    fn = {"name": "fts", "type": "BM25", "input_field_names": ["t"], "output_field_names": ["sp"], "params": {}}
    return fn | over


TEXT, SPARSE = {"name": "t", "type": "VarChar", "max_length": 99}, {"name": "sp", "type": "SparseFloatVector"}


def test_function_output_is_not_generated() -> None:
    cs = parse_schema(schema(TEXT, SPARSE, functions=[bm25()]))
    assert cs.function_outputs == {"sp"} and "sp" not in [f.name for f in cs.data_fields()]
    assert "sp" not in rows(schema(TEXT, SPARSE, functions=[bm25(type="bm25")]), 10).schema.names


@pytest.mark.parametrize(
    ("fields", "fn", "message"),
    [
        ([TEXT, SPARSE], bm25(type="BM52"), "function 'fts', key 'type': unknown function type 'BM52'"),
        ([TEXT, SPARSE], bm25(input_field_names=["nope"]), "input field 'nope' is not in fields"),
        ([TEXT, SPARSE], bm25(output_field_names=["nope"]), "output field 'nope' must be defined in fields"),
        ([TEXT, SPARSE], bm25(input_field_names=["t", "t"]), "exactly one input and one output"),
        ([{"name": "t", "type": "Int64"}, SPARSE], bm25(), "input field 't' must be VarChar, not Int64"),
        ([TEXT], bm25(output_field_names=["v"]), "output field 'v' must be SparseFloatVector, not FloatVector"),
        ([TEXT], bm25(type="TextEmbedding", output_field_names=["v"]), "TextEmbedding needs params.provider"),
    ],
)
def test_function_errors_name_the_function(fields: list[dict[str, Any]], fn: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        parse_schema(schema(*fields, functions=[fn]))


def test_functions_and_defaults_reach_the_milvus_schema() -> None:
    from pymilvus import FunctionType

    from task_components.schema.milvus import index_params, to_milvus_schema

    emb = bm25(name="emb", type="TextEmbedding", output_field_names=["v"], params={"provider": "openai"})
    raw = schema(TEXT, SPARSE, {"name": "n", "type": "Float", "default_value": 1}, functions=[bm25(), emb])
    cs = parse_schema(raw)
    ms = to_milvus_schema(cs)
    kinds = {f.name: f.type for f in ms.functions}
    assert kinds == {"fts": FunctionType.BM25, "emb": FunctionType.TEXTEMBEDDING}
    by_name = {f.name: f for f in ms.fields}
    assert by_name["t"].params.get("enable_analyzer") is True and by_name["n"].default_value is not None
    _, chosen = index_params(cs, True, {})
    assert chosen["sp"]["metric_type"] == "BM25"


def test_rows_for_files() -> None:
    assert rows_for_files(10, 1000, 100.0) == (10, 100)
    assert rows_for_files(3, 10, 100.0) == (1, 3)  # a row bigger than the file: still one row per file


def test_schema_help_documents_every_type_and_key() -> None:
    assert undocumented() == []
    text = schema_help()
    for word in ("force_all_default", "is_primary_key", "BM25", "TextEmbedding", "SparseFloatVector"):
        assert word in text


def cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "run_pipeline.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def test_bad_key_in_a_schema_file_exits_2_naming_file_field_and_key(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(schema({"name": "x", "type": "Int8", "force_all_defaults": True})))
    proc = cli("generate", "--schema", str(path), "--validate-only")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    text = " ".join(proc.stderr.split())
    assert str(path) in text and "field 'x', key 'force_all_defaults': unknown key" in text


def test_file_count_with_rows_per_file_exits_2(tmp_path: Path) -> None:
    proc = cli("generate", "--builtin", "simple", "--file-count", "2", "--rows-per-file", "9", "--out", str(tmp_path))
    assert proc.returncode == 2 and "give --file-count or --rows-per-file, not both" in proc.stderr
    assert "Traceback" not in proc.stderr and not any(tmp_path.iterdir())


def test_clean_asks_then_removes_only_generated_datasets_and_runs(tmp_path: Path) -> None:
    data, runs, keep = tmp_path / "ds", tmp_path / "runs", tmp_path / "mine"
    for d in (data, runs / "r1", keep):
        d.mkdir(parents=True)
    (data / "meta.json").write_text(json.dumps({"schema": {}, "files": []}))
    (keep / "meta.json").write_text("{}")  # not a dataset: never touched
    args = ("clean", "--path", str(tmp_path), "--run-dir", str(runs))
    refused = cli(*args, cwd=tmp_path)
    assert refused.returncode == 1 and "nothing removed" in refused.stdout and data.exists() and runs.exists()
    done = cli(*args, "--yes", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not data.exists() and not runs.exists() and keep.exists()
