"""Partitioning: file limits, shards, manifest checksums, and files polars reads back with their types."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import polars as pl
import pytest

from dag_orchestrator import DAG, Executor, PipelineContext
from task_components.generation import Generate, GenerateParams
from task_components.manifest import parse_size, sha256_file
from task_components.partitioning import Manifest, Partition, PartitionParams
from task_components.schema.models import FieldType


def make(tmp: Path, schema: str, rows: int, **partition: object) -> Manifest:
    layout = {k: partition.pop(k) for k in ("partitions", "shards") if k in partition}
    gen = Generate("generate", GenerateParams(schema=schema, total_rows=rows, seed=3, workers=0, **layout))
    part = Partition("partition", PartitionParams(out=str(tmp / "ds"), **partition), needs=["generate"], streams_from=["generate"])
    result = anyio.run(lambda: Executor().run(DAG("p", [gen, part]), PipelineContext()))
    assert result.ok, {n: t.error for n, t in result.tasks.items()}
    return result.results["partition"]


def test_rows_per_file_is_exact_and_manifest_checksums_match(tmp_path: Path) -> None:
    m = make(tmp_path, "simple", 25_000, rows_per_file=10_000)
    assert [f.rows for f in m.files] == [10_000, 10_000, 5_000]
    for f in m.files:
        path = m.file_path(f)
        assert path.stat().st_size == f.bytes and sha256_file(path) == f.sha256
    saved = json.loads((tmp_path / "ds" / "meta.json").read_text())
    assert saved["total_rows"] == 25_000 and saved["generation"]["seed"] == 3
    assert Manifest.load(tmp_path / "ds").files == m.files


def test_file_size_limit_is_respected(tmp_path: Path) -> None:
    m = make(tmp_path, "vector_bench", 6_000, file_size="2MB")
    assert len(m.files) > 3
    assert all(f.bytes <= 2 << 20 for f in m.files)
    assert m.total_rows == 6_000


def test_file_count_splits_rows_evenly(tmp_path: Path) -> None:
    m = make(tmp_path, "simple", 10_001, file_count=4)
    assert len(m.files) == 4 and sum(f.rows for f in m.files) == 10_001


def test_shards_split_by_primary_key_hash(tmp_path: Path) -> None:
    m = make(tmp_path, "simple", 20_000, shards=3, rows_per_file=100_000)
    assert sorted({f.shard for f in m.files}) == [0, 1, 2]
    assert all(f.path.startswith(f"shard-{f.shard:02d}/") for f in m.files)
    ids = [pl.read_parquet(m.file_path(f))["id"] for f in m.files]
    assert sum(len(i) for i in ids) == 20_000 and pl.concat(ids).n_unique() == 20_000
    assert m.collection_config == {"num_shards": 3}


def test_partitions_set_partition_key_cardinality(tmp_path: Path) -> None:
    m = make(tmp_path, "ecommerce_partitioned", 8_000, partitions=16)
    df = pl.read_parquet(m.file_path(m.files[0]))
    assert df["tenant_id"].n_unique() == 160  # milvus-ingest: partition key values = partitions x 10
    assert m.collection_config == {"num_partitions": 16, "partition_key_field": "tenant_id"}


POLARS = {
    FieldType.BOOL: pl.Boolean,
    FieldType.INT8: pl.Int8,
    FieldType.INT16: pl.Int16,
    FieldType.INT32: pl.Int32,
    FieldType.INT64: pl.Int64,
    FieldType.FLOAT: pl.Float32,
    FieldType.DOUBLE: pl.Float64,
    FieldType.VARCHAR: pl.String,
    FieldType.JSON: pl.String,
    FieldType.SPARSE_FLOAT_VECTOR: pl.String,
    FieldType.FLOAT_VECTOR: pl.List(pl.Float32),
    FieldType.BINARY_VECTOR: pl.List(pl.UInt8),
    FieldType.FLOAT16_VECTOR: pl.List(pl.UInt8),
    FieldType.BFLOAT16_VECTOR: pl.List(pl.UInt8),
    FieldType.INT8_VECTOR: pl.List(pl.Int8),
}


def test_polars_reads_every_file_with_the_declared_types(tmp_path: Path) -> None:
    m = make(tmp_path, "all_types", 9_000, rows_per_file=4_000)
    for f in m.files:
        df = pl.read_parquet(m.file_path(f))
        for field in m.collection_schema.data_fields():
            expected = POLARS.get(field.type)
            if field.type is FieldType.ARRAY:
                expected = pl.List(POLARS[field.element_type])  # type: ignore[index]
            assert df.schema[field.name] == expected, field.name


def test_json_format_is_milvus_row_layout(tmp_path: Path) -> None:
    m = make(tmp_path, "dynamic_example", 300, format="json")
    doc = json.loads(m.file_path(m.files[0]).read_text())
    assert len(doc["rows"]) == 300
    row = doc["rows"][0]
    assert "$meta" not in row and isinstance(row["embedding"], list) and "title" in row


@pytest.mark.parametrize(("text", "size"), [("256MB", 256 << 20), ("1.5GB", int(1.5 * (1 << 30))), ("512", 512 << 20)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_parse_size_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="not a size like 256MB"):
        parse_size("lots")
