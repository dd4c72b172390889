"""Milvus filter -> SQL: each expression selects the same rows in real Milvus and the real PostgreSQL shadow."""

from __future__ import annotations

from typing import Any

import anyio
import asyncpg
import pytest

from task_components.schema import parse_schema
from task_components.schema.postgres import quote
from task_components.shadow.filters import to_sql
from tests.integration.conftest import service_uri
from tests.integration.helpers import run_file, write_pipeline
from tests.integration.test_shadow import settings_with_pg

pytestmark = pytest.mark.integration

SCHEMA = {
    "collection_name": "it_filters",
    "enable_dynamic_field": True,
    "fields": [
        {"name": "id", "type": "Int64", "is_primary": True},
        {"name": "name", "type": "VarChar", "max_length": 64, "pattern": "name"},
        {"name": "city", "type": "VarChar", "max_length": 32, "enum_values": ["Paris", "Tokyo", "Lima", "Oslo"]},
        {"name": "age", "type": "Int32", "min": 18, "max": 80},
        {"name": "score", "type": "Float", "min": 0, "max": 1},
        {"name": "active", "type": "Bool"},
        {"name": "meta", "type": "JSON"},
        {"name": "tags", "type": "Array", "element_type": "VarChar", "max_capacity": 4, "max_length": 20},
        {"name": "nums", "type": "Array", "element_type": "Int64", "max_capacity": 5, "min": 0, "max": 20},
        {"name": "embedding", "type": "FloatVector", "dim": 8},
    ],
    "dynamic_fields": [{"name": "extra", "type": "Int", "probability": 0.7, "min_value": 0, "max_value": 100}],
}

EXPRESSIONS = [
    "age > 40",
    "age >= 30 and age < 50",
    'city in ["Paris", "Tokyo"]',
    'city not in ["Paris"]',
    'name like "J%"',
    "active == false",
    "score < 0.25 or age == 33",
    "not (age > 30)",
    "id in [1, 5, 9, 2999]",
    'meta["category"] == "cloud"',
    'meta["score"] > 0.5',
    'meta["id"] < 50000 && city == "Lima"',
    "array_contains(nums, 7)",
    'array_contains_any(tags, ["cloud", "data"])',
    "array_contains_all(nums, [1, 2])",
    "extra > 50",
]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("filters")
    spec = {"name": "filters", "tasks": {
        "generate": {"uses": "generate", "with": {"schema": SCHEMA, "total_rows": 3000, "seed": 21}},
        "partition": {"uses": "partition", "needs": ["generate"]},
        "upload": {"uses": "storage.upload", "needs": ["partition"]},
        "collection": {"uses": "milvus.create_collection", "with": {"schema": SCHEMA, "drop_if_exists": True,
                       "indexes": {"embedding": {"index_type": "FLAT", "metric_type": "COSINE"}}}},
        "import": {"uses": "milvus.bulk_import", "needs": ["upload", "collection"], "with": {"poll_interval": 0.5}},
        "shadow": {"uses": "shadow.sync", "needs": ["generate"]},
    }}  # fmt: skip
    result = run_file(write_pipeline(tmp / "f.yaml", spec), tmp / "runs", settings_with_pg())
    assert result.ok, {n: t.error for n, t in result.tasks.items() if t.error}
    return result.results["import"], result.results["shadow"]


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_filter_selects_the_same_rows_in_milvus_and_postgres(loaded: Any, expr: str) -> None:
    imported, shadow = loaded
    client = imported.info.milvus().client()
    try:
        rows = client.query("it_filters", filter=expr, output_fields=["id"], consistency_level="Strong", limit=16384)
    finally:
        client.close()
    in_milvus = {r["id"] for r in rows}
    sql = to_sql(expr, parse_schema(SCHEMA))

    async def select() -> set[int]:
        conn = await asyncpg.connect(service_uri("TEST_POSTGRES_DSN"))
        try:
            return {r["id"] for r in await conn.fetch(f"SELECT id FROM {quote(shadow.table)} WHERE {sql}")}
        finally:
            await conn.close()

    in_postgres = anyio.run(select)
    assert in_milvus == in_postgres, f"{expr} -> {sql}"
    assert 0 < len(in_milvus) < 3000, f"{expr} should select some rows but not all"
