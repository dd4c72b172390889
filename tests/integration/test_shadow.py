"""PostgreSQL shadow and three-way verification on the real PostgreSQL and Milvus servers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import asyncpg
import numpy as np
import pyarrow.parquet as pq
import pytest

from config.settings import Settings
from dag_orchestrator import PipelineContext, RunServices
from task_components.schema.postgres import quote
from task_components.shadow.compare import compare_primary_keys
from task_components.verification import Verify, VerifyParams
from task_components.verification.compare import same_value
from tests.integration.conftest import service_uri
from tests.integration.helpers import run_file, settings_for_services, with_pool, write_pipeline

pytestmark = pytest.mark.integration


def settings_with_pg() -> Settings:
    data = settings_for_services().model_dump()
    data["postgres"]["dsn"] = service_uri("TEST_POSTGRES_DSN")
    for section in ("s3", "milvus"):  # secrets dump as SecretStr objects: hand back their values
        data[section] = {k: v.get_secret_value() if hasattr(v, "get_secret_value") else v for k, v in data[section].items()}
    return Settings.model_validate(data)


def spec(schema: str, rows: int, collection: str) -> dict[str, Any]:
    return {
        "name": collection,
        "tasks": {
            "generate": {"uses": "generate", "with": {"schema": schema, "total_rows": rows, "seed": 9}},
            "partition": {"uses": "partition", "needs": ["generate"], "with": {"rows_per_file": 500}},
            "upload": {"uses": "storage.upload", "needs": ["partition"]},
            "collection": {
                "uses": "milvus.create_collection",
                "with": {
                    "schema": schema,
                    "collection": collection,
                    "drop_if_exists": True,
                    "indexes": {"embedding": {"index_type": "FLAT", "metric_type": "COSINE"}},
                },
            },
            "import": {
                "uses": "milvus.bulk_import",
                "needs": ["upload", "collection"],
                "with": {"poll_interval": 0.5, "insert_below_rows": 0},
            },
            "shadow": {"uses": "shadow.sync", "needs": ["generate"]},
            "verify": {"uses": "verify", "needs": ["import", "shadow"], "with": {"level": "full"}},
        },
    }


def test_injected_divergences_are_found_and_attributed(tmp_path: Path) -> None:
    settings = settings_with_pg()
    result = run_file(write_pipeline(tmp_path / "s.yaml", spec("simple", 1000, "it_shadow")), tmp_path / "r", settings)
    assert result.ok, {n: t.error for n, t in result.tasks.items() if t.error}
    assert [c.name for c in result.results["verify"].checks] == ["count", "shadow count", "full scan", "search"]
    assert "recall@10 1.000 over 1000 queries (COSINE, FLAT)" in result.results["verify"].checks[3].detail
    assert "1,000 rows x 5 fields agree" in result.results["verify"].checks[2].detail

    imported, shadow = result.results["import"], result.results["shadow"]
    assert shadow.table == "shadow_it_shadow"  # the collection's name, not the schema's ("simple")
    client = imported.info.milvus().client()

    async def by_collection_name(pool: asyncpg.Pool) -> Any:
        return await compare_primary_keys(client, pool, "it_shadow")  # finds the table the pipeline wrote

    keys = anyio.run(with_pool, service_uri("TEST_POSTGRES_DSN"), by_collection_name)
    assert keys.ok and keys.table == "shadow_it_shadow" and keys.postgres_count == 1000, str(keys)
    row30 = client.query("it_shadow", filter="id == 30", output_fields=["*"], consistency_level="Strong")[0]
    row30["embedding"] = (np.asarray(row30["embedding"], np.float32) + np.float32(1e-3)).tolist()
    client.upsert("it_shadow", [row30])  # a vector perturbed by 1e-3 in Milvus only
    client.delete("it_shadow", filter="id == 10")  # a row deleted in Milvus only
    client.close()

    async def tamper() -> None:
        conn = await asyncpg.connect(service_uri("TEST_POSTGRES_DSN"))
        await conn.execute(f"UPDATE {quote(shadow.table)} SET name = 'tampered' WHERE id = 20")  # PostgreSQL only
        await conn.close()

    anyio.run(tamper)
    verify = Verify("verify", VerifyParams(level="full", fail_on_mismatch=False), needs=["import", "shadow"])
    ctx = PipelineContext(run_dir=tmp_path / "r", services=RunServices(settings))
    ctx.results.update({"import": imported, "shadow": shadow})
    report = anyio.run(verify.run, ctx)
    assert not report.passed
    found = {(f["key"], f["field"], f["side"]) for f in report.findings}
    assert found == {(10, None, "milvus"), (20, "name", "postgres"), (30, "embedding", "milvus")}
    checks = {c.name: c for c in report.checks}
    assert not checks["count"].passed and checks["shadow count"].passed
    assert "milvus wrong in 2" in checks["full scan"].detail and "postgres wrong in 1" in checks["full scan"].detail


def test_every_field_type_round_trips_through_postgres(tmp_path: Path) -> None:
    settings = settings_with_pg()
    shadow_only = {
        "name": "rt",
        "tasks": {
            "generate": {"uses": "generate", "with": {"schema": "all_types", "total_rows": 700, "seed": 4}},
            "partition": {"uses": "partition", "needs": ["generate"], "with": {"rows_per_file": 1000}},
            "shadow": {"uses": "shadow.sync", "needs": ["generate"]},
        },
    }
    result = run_file(write_pipeline(tmp_path / "rt.yaml", shadow_only), tmp_path / "r", settings)
    assert result.ok, {n: t.error for n, t in result.tasks.items() if t.error}
    manifest, shadow = result.results["partition"], result.results["shadow"]
    source = pq.read_table(manifest.file_path(manifest.files[0]))

    async def fetch() -> list[Any]:
        conn = await asyncpg.connect(service_uri("TEST_POSTGRES_DSN"))
        rows = await conn.fetch(f"SELECT * FROM {quote(shadow.table)} ORDER BY id")
        await conn.close()
        return rows

    rows = anyio.run(fetch)
    assert len(rows) == 700
    schema = manifest.collection_schema
    for f in schema.data_fields():
        want = source.column(f.name).to_pylist()
        for i in range(0, 700, 7):
            assert same_value(f, want[i], rows[i][f.name], 0.0), (f.name, i)
