"""AUTO_ID collections verified by content on the real Milvus and PostgreSQL servers.

The pipeline loads an AUTO_ID collection and its shadow; then one divergence at a time is injected
(in Milvus: a row deleted, a row duplicated, a field changed, a vector moved within and beyond the
tolerance; in PostgreSQL: the same; in a source file: a field), ``verify`` must find it and blame the
side, and the injection is undone (a row re-inserted gets a new id but the same content, so the sides
agree again). Sparse vectors and nullable fields, which the 2.3 server lacks, run on Milvus Lite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from config.settings import Settings
from dag_orchestrator import PipelineContext, RunServices
from task_components.schema.postgres import quote
from task_components.verification import Verify, VerifyParams, VerifyResult
from task_components.verification.task import AUTO_ID_SAMPLE
from tests.integration.conftest import service_uri
from tests.integration.helpers import run_file, write_pipeline
from tests.integration.test_shadow import settings_with_pg

pytestmark = pytest.mark.integration

COLLECTION = "autoid_it_content"
SCHEMA = {
    "collection_name": COLLECTION,
    "fields": [
        {"name": "id", "type": "Int64", "is_primary": True, "auto_id": True},
        {"name": "name", "type": "VarChar", "max_length": 40, "pattern": "name"},
        {"name": "score", "type": "Float", "min": -1, "max": 1},
        {"name": "price", "type": "Double", "min": 0, "max": 1e6},
        {"name": "qty", "type": "Int16", "min": 0, "max": 500},
        {"name": "active", "type": "Bool"},
        {"name": "meta", "type": "JSON"},
        {"name": "tags", "type": "Array", "element_type": "VarChar", "max_capacity": 4, "max_length": 16},
        {"name": "ratios", "type": "Array", "element_type": "Float", "max_capacity": 3},
        {"name": "embedding", "type": "FloatVector", "dim": 16},
    ],
}
ROWS = 1000


def pipeline() -> dict[str, Any]:
    return {
        "name": "autoid_content",
        "tasks": {
            "generate": {"uses": "generate", "with": {"schema": SCHEMA, "total_rows": ROWS, "seed": 21}},
            "partition": {"uses": "partition", "needs": ["generate"], "with": {"rows_per_file": 400}},
            "upload": {"uses": "storage.upload", "needs": ["partition"]},
            "collection": {
                "uses": "milvus.create_collection",
                "with": {"schema": SCHEMA, "drop_if_exists": True, "indexes": {"embedding": {"index_type": "FLAT", "metric_type": "L2"}}},
            },
            "import": {
                "uses": "milvus.bulk_import",
                "needs": ["upload", "collection"],
                "with": {"poll_interval": 0.5, "insert_below_rows": 0},
            },
            "shadow": {"uses": "shadow.sync", "needs": ["generate"], "with": {"table": "autoid_shadow_it_content"}},
            "verify": {"uses": "verify", "needs": ["import", "shadow"], "with": {"level": "full"}},
        },
    }


class Sides:
    """The loaded run, and ways to tamper with (and verify) each store."""

    def __init__(self, tmp_path: Path, result: Any) -> None:
        self.run_dir, self.settings = tmp_path / "r", settings_with_pg()
        self.imported, self.shadow = result.results["import"], result.results["shadow"]
        self.milvus = self.imported.info.milvus().client()
        self.table = quote(self.shadow.table)

    def verify(self, level: str = "full") -> VerifyResult:
        verify = Verify("verify", VerifyParams(level=level, fail_on_mismatch=False), needs=["import", "shadow"])
        ctx = PipelineContext(run_dir=self.run_dir, services=RunServices(self.settings))
        ctx.results.update({"import": self.imported, "shadow": self.shadow})
        return anyio.run(verify.run, ctx)

    def rows(self, n: int) -> list[dict[str, Any]]:
        return self.milvus.query(COLLECTION, filter="id > 0", limit=n, output_fields=["*"], consistency_level="Strong")

    def insert(self, row: dict[str, Any]) -> int:
        return self.milvus.insert(COLLECTION, [{k: v for k, v in row.items() if k != "id"}])["ids"][0]

    def delete(self, key: int) -> None:
        self.milvus.delete(COLLECTION, ids=[key])

    def sql(self, query: str, *args: Any) -> Any:
        async def run() -> Any:
            conn = await asyncpg.connect(service_uri("TEST_POSTGRES_DSN"))
            try:
                return await conn.fetch(query.replace("{t}", self.table), *args)
            finally:
                await conn.close()

        return anyio.run(run)


def found(report: VerifyResult) -> set[tuple[Any, str | None, str, str]]:
    return {(f["key"], f["field"], f["side"], f["problem"]) for f in report.findings}


@pytest.fixture(scope="module")
def sides(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sides]:
    tmp_path = tmp_path_factory.mktemp("autoid")
    result = run_file(write_pipeline(tmp_path / "p.yaml", pipeline()), tmp_path / "r", settings_with_pg())
    assert result.ok, {n: t.error for n, t in result.tasks.items() if t.error}
    s = Sides(tmp_path, result)
    yield s
    s.milvus.drop_collection(COLLECTION)
    s.sql("DROP TABLE IF EXISTS {t}")
    s.milvus.close()


def assert_clean(sides: Sides) -> None:
    report = sides.verify()
    assert report.passed and not report.findings, report.checks
    assert f"{ROWS:,} rows x 9 fields agree by content" in {c.name: c for c in report.checks}["full scan"].detail


def test_the_loaded_collection_agrees_by_content(sides: Sides) -> None:
    checks = {c.name: c for c in sides.verify().checks}
    assert list(checks) == ["count", "shadow count", "full scan"]
    assert all(c.passed for c in checks.values()) and "agree by content" in checks["full scan"].detail
    scalar = {c.name: c for c in sides.verify("scalar").checks}["scalar scan"]
    assert scalar.passed and f"{ROWS:,} rows x 8 fields agree by content" in scalar.detail
    sample = {c.name: c for c in sides.verify("sample").checks}  # no source key to sample by: counts only
    assert list(sample) == ["count", "shadow count", "sample", "three-way"]
    assert sample["sample"].detail == sample["three-way"].detail == AUTO_ID_SAMPLE


def test_milvus_missing_extra_and_changed_rows_are_blamed_on_milvus(sides: Sides) -> None:
    gone, twin, changed = sides.rows(3)
    sides.delete(gone["id"])
    report = sides.verify()
    ((key, field, side, problem),) = found(report)
    assert (field, side, problem) == (None, "milvus", "row missing") and key.startswith("hash:")
    assert {"source_row", "postgres_row"} <= set(report.findings[0]) and "milvus_id" not in report.findings[0]
    sides.insert(gone)  # a new id, the same content
    assert_clean(sides)

    copy = sides.insert(twin)
    report = sides.verify()
    ((key, field, side, problem),) = found(report)  # either copy is the extra one
    assert (field, side, problem) == (None, "milvus", "extra row") and key in {copy, twin["id"]}
    assert sorted(report.findings[0]["copies"]) == sorted([copy, twin["id"]])
    sides.delete(copy)
    assert_clean(sides)

    sides.delete(changed["id"])
    new = sides.insert({**changed, "name": "tampered"})
    report = sides.verify()
    assert found(report) == {(new, "name", "milvus", "value differs")}
    assert {c.name: c.passed for c in report.checks} == {"count": True, "shadow count": True, "full scan": False}
    sides.delete(new)
    sides.insert(changed)
    assert_clean(sides)


def test_a_vector_is_compared_within_the_tolerance(sides: Sides) -> None:
    (row,) = sides.rows(1)
    vector = np.asarray(row["embedding"], np.float32)

    def moved(by: float) -> int:
        nudged = vector.copy()
        nudged[3] += np.float32(by)
        assert nudged[3] != vector[3]
        sides.delete(row["id"])
        return sides.insert({**row, "embedding": nudged.tolist()})

    key = moved(5e-7)  # default tolerance 1e-6: the same vector
    assert_clean(sides)
    sides.delete(key)
    key = moved(1e-3)
    assert found(sides.verify()) == {(key, "embedding", "milvus", "value differs")}
    sides.delete(key)
    sides.insert(row)
    assert_clean(sides)


COLUMNS = ", ".join(quote(c) for c in ["_row", *(f["name"] for f in SCHEMA["fields"][1:])])  # type: ignore[index]


def shadow_row(sides: Sides, position: int) -> tuple[Any, int]:
    """The shadow's row at a stream position and the id Milvus gave the same row."""
    saved = sides.sql(f"SELECT {COLUMNS} FROM {{t}} WHERE _row = $1", position)[0]
    twins = sides.milvus.query(COLLECTION, filter=f'name == "{saved["name"]}"', output_fields=["price", "qty"], consistency_level="Strong")
    (milvus_id,) = [r["id"] for r in twins if (r["price"], r["qty"]) == (saved["price"], saved["qty"])]
    return saved, milvus_id


def test_postgres_missing_extra_and_changed_rows_are_blamed_on_postgres(sides: Sides) -> None:
    saved, milvus_id = shadow_row(sides, 7)

    sides.sql("DELETE FROM {t} WHERE _row = 7")
    report = sides.verify()
    assert found(report) == {(milvus_id, None, "postgres", "row missing")}
    assert report.findings[0]["source_row"].endswith(":7") and "postgres_row" not in report.findings[0]
    values = ", ".join(f"${i}" for i in range(1, len(saved) + 1))
    sides.sql(f"INSERT INTO {{t}} ({COLUMNS}) VALUES ({values})", *saved.values())
    assert_clean(sides)

    sides.sql(f"INSERT INTO {{t}} ({COLUMNS}) VALUES ({values})", 100_000, *list(saved.values())[1:])
    report = sides.verify()
    assert found(report) == {(milvus_id, None, "postgres", "extra row")}
    assert sorted(report.findings[0]["copies"]) == [7, 100_000]
    sides.sql("DELETE FROM {t} WHERE _row = 100000")
    assert_clean(sides)

    sides.sql("UPDATE {t} SET qty = qty + 1 WHERE _row = 7")
    report = sides.verify()
    assert found(report) == {(milvus_id, "qty", "postgres", "value differs")}
    assert report.findings[0]["postgres_row"] == 7
    scalar = sides.verify("scalar")
    assert found(scalar) == {(milvus_id, "qty", "postgres", "value differs")}
    sides.sql("UPDATE {t} SET qty = qty - 1 WHERE _row = 7")
    assert_clean(sides)


def test_a_changed_source_file_is_blamed_on_the_source(sides: Sides) -> None:
    """Both stores agree against the files: the files are the odd side (a file edited after loading)."""
    _, milvus_id = shadow_row(sides, 7)
    path = sides.imported.manifest.file_path(sides.imported.manifest.files[0])
    original = path.read_bytes()
    table = pq.read_table(path)
    qty = table.column("qty").to_pylist()
    qty[7] += 1
    edited = table.set_column(table.schema.get_field_index("qty"), table.schema.field("qty"), pa.array(qty, pa.int16()))
    try:
        pq.write_table(edited, path)
        report = sides.verify()
        assert found(report) == {(milvus_id, "qty", "source", "value differs")}
        assert report.findings[0]["source_row"].endswith(":7")
    finally:
        path.write_bytes(original)
    assert_clean(sides)


LITE = {
    "collection_name": "autoid_it_lite",
    "fields": [
        {"name": "id", "type": "Int64", "is_primary": True, "auto_id": True},
        {"name": "text", "type": "VarChar", "max_length": 64},
        {"name": "meta", "type": "JSON", "nullable": True},
        {"name": "score", "type": "Float", "nullable": True},
        {"name": "dense", "type": "FloatVector", "dim": 8},
        {"name": "sparse", "type": "SparseFloatVector", "nnz": 12},
    ],
}


def test_sparse_vectors_and_nulls_on_milvus_lite(tmp_path: Path) -> None:
    """The 2.3 server has no sparse vectors or nullable fields; Milvus Lite has both."""
    settings = Settings.model_validate({"postgres": {"dsn": service_uri("TEST_POSTGRES_DSN")}})  # Lite + local store
    spec = pipeline()
    spec["tasks"]["generate"]["with"]["schema"] = spec["tasks"]["collection"]["with"]["schema"] = LITE
    spec["tasks"]["collection"]["with"].pop("indexes")
    spec["tasks"]["shadow"]["with"]["table"] = "autoid_shadow_it_lite"
    result = run_file(write_pipeline(tmp_path / "p.yaml", spec), tmp_path / "r", settings)
    assert result.ok, {n: t.error for n, t in result.tasks.items() if t.error}
    assert "1,000 rows x 5 fields agree by content" in result.results["verify"].checks[-1].detail
    imported, shadow = result.results["import"], result.results["shadow"]
    client = imported.info.milvus().client()
    try:
        (row,) = client.query("autoid_it_lite", filter="id > 0", limit=1, output_fields=["*"])
        assert row["sparse"] and any(
            r["meta"] is None for r in client.query("autoid_it_lite", filter="id > 0", limit=200, output_fields=["meta"])
        )
        client.delete("autoid_it_lite", ids=[row["id"]])
        index = next(iter(row["sparse"]))
        moved = {**row["sparse"], index: row["sparse"][index] + 0.5}
        (key,) = client.insert("autoid_it_lite", [{**{k: v for k, v in row.items() if k != "id"}, "sparse": moved}])["ids"]
    finally:
        client.close()
    verify = Verify("verify", VerifyParams(level="full", fail_on_mismatch=False), needs=["import", "shadow"])
    ctx = PipelineContext(run_dir=tmp_path / "r", services=RunServices(settings))
    ctx.results.update({"import": imported, "shadow": shadow})
    try:
        report = anyio.run(verify.run, ctx)
    finally:
        anyio.run(_drop_table, shadow.table)
    assert found(report) == {(key, "sparse", "milvus", "value differs")}


async def _drop_table(table: str) -> None:
    conn = await asyncpg.connect(service_uri("TEST_POSTGRES_DSN"))
    try:
        await conn.execute(f"DROP TABLE IF EXISTS {quote(table)}")
    finally:
        await conn.close()
