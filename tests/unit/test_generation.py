"""Generated values obey the schema, per field type; output is identical for any worker count."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from dag_orchestrator.backends import LocalBackend
from task_components.generation import GenerateParams, generate_batches
from task_components.generation.columns import generate_chunk, to_bfloat16_bytes
from task_components.schema import FieldType, parse_schema, resolve_schema

ROWS = 20_000


@pytest.fixture(scope="module")
def all_types() -> pl.DataFrame:
    s = resolve_schema("all_types")
    return pl.from_arrow(generate_chunk(s.model_dump_json(), 3, 0, 1000, ROWS, ROWS))  # type: ignore[return-value]


def test_primary_keys_are_unique_and_positioned(all_types: pl.DataFrame) -> None:
    assert all_types["id"].to_list()[:3] == [1000, 1001, 1002]
    assert all_types["id"].n_unique() == ROWS


def test_integer_and_float_ranges(all_types: pl.DataFrame) -> None:
    assert all_types["f_int8"].min() >= -100 and all_types["f_int8"].max() <= 100
    assert all_types["f_int16"].min() >= -30000 and all_types["f_int16"].max() <= 30000
    assert all_types["f_float"].min() >= -1 and all_types["f_float"].max() <= 1
    assert all_types["f_float"].dtype == pl.Float32 and all_types["f_double"].dtype == pl.Float64
    assert all_types["f_int8"].dtype == pl.Int8


def test_nullability_ratio(all_types: pl.DataFrame) -> None:
    assert abs(all_types["f_int64"].null_count() / ROWS - 0.3) < 0.02  # null_ratio 0.3
    assert abs(all_types["f_bool"].null_count() / ROWS - 0.1) < 0.02  # default 0.1
    assert all_types["f_int8"].null_count() == 0


def test_varchar_lengths_patterns_and_enums(all_types: pl.DataFrame) -> None:
    assert all_types["f_varchar"].str.len_bytes().max() <= 64
    assert all_types["f_varchar"].str.contains("@").all()  # email pattern
    assert set(all_types["f_category"].unique().to_list()) == {"a", "b", "c"}


def test_cardinality_controls_distinct_values() -> None:
    raw = {
        "fields": [
            {"name": "id", "type": "Int64", "is_primary": True},
            {"name": "city", "type": "VarChar", "max_length": 64, "cardinality": 37, "pattern": "city"},
            {"name": "user", "type": "VarChar", "max_length": 64, "cardinality_ratio": 0.01},
            {"name": "n", "type": "Int32", "cardinality": 5, "min": 0, "max": 100},
            {"name": "v", "type": "FloatVector", "dim": 4},
        ]
    }
    s = parse_schema(raw)
    df = pl.from_arrow(generate_chunk(s.model_dump_json(), 1, 0, 0, ROWS, ROWS))
    assert df["city"].n_unique() <= 37 and df["user"].n_unique() <= 200 and df["user"].n_unique() > 150
    assert df["n"].n_unique() == 5 and df["n"].min() == 0 and df["n"].max() == 100


def test_json_and_dynamic_fields_are_valid_json(all_types: pl.DataFrame) -> None:
    docs = [json.loads(x) for x in all_types["f_json"].head(200).to_list()]
    assert all({"id", "score", "category", "active", "tags"} <= d.keys() for d in docs)
    metas = [json.loads(x) for x in all_types["$meta"].to_list()]
    share = sum("extra_note" in m for m in metas) / ROWS
    assert abs(share - 0.5) < 0.03 and all(set(m) <= {"extra_note", "extra_score"} for m in metas)
    assert any(m == {} for m in metas)  # rows with no dynamic key are still valid objects


def test_arrays_respect_capacity_and_element_type(all_types: pl.DataFrame) -> None:
    assert all_types["f_array_int"].list.len().max() == 6 and all_types["f_array_int"].list.len().min() == 0
    assert all_types["f_array_int"].dtype == pl.List(pl.Int64)
    assert all_types["f_array_str"].list.len().max() <= 4
    assert all_types["f_array_str"].explode().drop_nulls().str.len_bytes().max() <= 20


def test_dense_vectors_are_normalized_and_sized(all_types: pl.DataFrame) -> None:
    v = np.array(all_types["v_float"].to_list(), dtype=np.float32)
    assert v.shape == (ROWS, 32)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert all_types["v_binary"].list.len().unique().to_list() == [8]  # 64 bits
    half = np.array(all_types["v_fp16"].to_list(), dtype=np.uint8).view(np.float16).astype(np.float32)
    np.testing.assert_allclose(np.linalg.norm(half, axis=1), 1.0, atol=2e-3)
    bf = np.array(all_types["v_bf16"].to_list(), dtype=np.uint8).view(np.uint16).astype(np.uint32) << 16
    np.testing.assert_allclose(np.linalg.norm(bf.view(np.float32), axis=1), 1.0, atol=2e-2)
    assert all_types["v_int8"].dtype == pl.List(pl.Int8) and all_types["v_int8"].list.len().unique().to_list() == [16]


def test_sparse_vectors_have_sorted_unique_indices(all_types: pl.DataFrame) -> None:
    for text in all_types["v_sparse"].head(500).to_list():
        d = json.loads(text)
        idx = [int(k) for k in d]
        assert len(idx) == 8 and idx == sorted(set(idx)) and max(idx) < 30_000
        assert all(0 < v <= 1 for v in d.values())


def test_bfloat16_rounds_to_nearest() -> None:
    x = np.array([1.0, 1.00390625, -2.5, 3.14159], dtype=np.float32)
    back = (to_bfloat16_bytes(x).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_allclose(back, x, rtol=2**-8)


def test_every_builtin_schema_generates() -> None:
    from task_components.schema import builtin_names

    for name in builtin_names():
        s = resolve_schema(name)
        batch = generate_chunk(s.model_dump_json(), 1, 0, 0, 50, 50)
        assert batch.num_rows == 50, name
        assert {f.name for f in s.data_fields()} <= set(batch.schema.names)


def _stream(workers: int, rows: int = 30_000) -> list[pa.RecordBatch]:
    async def collect() -> list[pa.RecordBatch]:
        params = GenerateParams(schema="all_types", total_rows=rows, seed=11, chunk_rows=4096)
        async with LocalBackend(workers, preload=["task_components.generation.columns"]) as backend:
            return [b async for b in generate_batches(params, backend)]

    return anyio.run(collect)


def test_output_is_identical_for_any_worker_count() -> None:
    baseline = _stream(0)
    assert sum(b.num_rows for b in baseline) == 30_000 and len(baseline) == 8
    for workers in (1, 2):
        other = _stream(workers)
        assert len(other) == len(baseline)
        for a, b in zip(baseline, other, strict=True):
            assert a.equals(b)


def test_different_seeds_differ_and_types_match_schema() -> None:
    s = resolve_schema("simple")
    a = generate_chunk(s.model_dump_json(), 1, 0, 0, 100, 100)
    b = generate_chunk(s.model_dump_json(), 2, 0, 0, 100, 100)
    assert not a.column("embedding").equals(b.column("embedding"))
    assert a.schema.field("embedding").type == pa.list_(pa.float32())
    assert s.field("in_stock").type is FieldType.BOOL and a.schema.field("in_stock").type == pa.bool_()


def test_sweep_shm_removes_only_results_whose_owner_is_gone(tmp_path: Path) -> None:
    """A SIGKILLed run cannot unlink its /dev/shm results; the next backend start does, never a live one's."""
    import subprocess
    import sys
    import uuid

    from dag_orchestrator.backends import local

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f"dag-pipeline-{gone.pid}-{uuid.uuid4().hex}.arrow"
    live = tmp_path / f"dag-pipeline-{os.getpid()}-{uuid.uuid4().hex}.arrow"
    other = tmp_path / f"dag-pipeline-{gone.pid}-notours.arrow"
    for f in (dead, live, other):
        f.write_bytes(b"x")
    original = local.SHM_DIR
    local.SHM_DIR = str(tmp_path)
    try:
        assert local.sweep_shm() == 1
    finally:
        local.SHM_DIR = original
    assert not dead.exists() and live.exists() and other.exists()
