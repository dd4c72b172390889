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
    "collection_name": "filters_it",
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
        {"name": "delta", "type": "Int64", "min": -50, "max": 50},  # negatives: / and % semantics
        {"name": "small", "type": "Int8", "min": -100, "max": 100},  # arithmetic must not overflow Int8
        {"name": "embedding", "type": "FloatVector", "dim": 8},
    ],
    "dynamic_fields": [
        {"name": "extra", "type": "Int", "probability": 0.7, "min_value": 0, "max_value": 100},
        {"name": "extra_list", "type": "Array", "probability": 0.6, "array_min_length": 0, "array_max_length": 4},
    ],
}
COLLECTION = SCHEMA["collection_name"]

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
    # ranges (both signs one way) and reversed comparisons
    "30 < age < 50",
    "60 >= age > 45",
    "0.25 <= score < 0.5",
    "10 < extra <= 40",
    '1000 < meta["id"] < 20000',
    "40 > age",
    # one arithmetic step: Milvus 2.3 allows only == and != after it
    "age + 2 == 40",
    "age - 18 == 0",
    "age * 2 == 60",
    "2 * age != 60",
    "age % 3 == 0",
    "delta / 7 == -3",  # truncation toward zero: floor division would select -15..-21 instead
    "delta % 7 == -3",  # the dividend's sign: a floor modulo is never negative here
    "delta % -4 == 1",
    "small * 100 == -5000",  # computed in 64 bits, as Milvus does
    "extra * 2 == 100",
    'meta["id"] - 1 != 7 and city == "Lima"',
    "extra + 1 != 51",
    "extra - 50 == 0",
    "nums[0] % 2 == 1",
    "extra / 10 == 5",  # JSON integers divide as integers...
    'meta["id"] / 1000 == 5',
    'meta["score"] % 2 != 0',  # ...and % truncates a JSON float first (0.42 % 2 is 0 in Milvus)
    'meta["category"] + 1 != 0 and age > 70',  # a JSON string in arithmetic reads as absent
    'meta["score"] * 10000 == 6513',  # JSON floats in double precision (0.6513 occurs 4 times)
    'meta["score"] * 10000 != 6513 and age == 30',
    # a JSON value of another type than the literal reads as absent (not an error, not a text match)
    'meta["category"] != 1 and age > 70',
    'meta["category"] like "c%"',
    'meta["category"] in ["cloud", "data"]',
    'meta["category"] not in ["cloud"] and meta["id"] not in [1, 2]',
    'meta["active"] == true',
    # json_contains family (also on Array fields), upper-case spellings, array_contains on JSON
    'json_contains(meta["tags"], "data")',
    'JSON_CONTAINS(meta["tags"], "cloud")',
    'not json_contains(meta["tags"], "data")',
    'json_contains_all(meta["tags"], ["deluxe", "premium"])',
    'json_contains_all(meta["tags"], ["data", "cloud"]) or json_contains_all(meta["tags"], ["quiet", "coffee"])',
    'json_contains_any(meta["tags"], ["data", "cloud", "search"])',
    'JSON_CONTAINS_ANY(meta["tags"], ["model"])',
    'array_contains(meta["tags"], "vector")',
    "json_contains(extra_list, 7)",
    "json_contains(nums, 7)",
    "ARRAY_CONTAINS(nums, 7)",
    "JSON_CONTAINS_ALL(nums, [1, 2])",
    # exists: the key is there (dynamic fields too)
    "exists extra",
    "EXISTS extra_list",
    "not exists extra",
    "(exists extra) and age > 40",
    # array_length: a missing key or a non-array JSON value counts as 0
    "array_length(nums) == 3",
    "ARRAY_LENGTH(tags) != 0",
    "array_length(extra_list) == 2",
    "array_length(extra_list) == 0",
    'array_contains_any(tags, ["late", "team"])',
    # Milvus is two-valued: a missing JSON key fails a comparison but passes != and not in; an index past
    # an array's end fails even !=; and `not` turns each of those around (SQL NULL would select nothing)
    "extra != 50",
    "extra not in [50, 51]",
    "not (extra > 50)",
    "not (1 < extra < 40)",
    'meta["missing"] != 1 and age > 70',
    "nums[4] != 3",
    "not (nums[4] == 3)",
    "extra_list[0] != 3",
    "not (extra_list[0] % 2 == 1)",
    "not (array_length(extra_list) == 2)",
    "not json_contains(extra_list, 7)",
]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("filters")
    spec = {
        "name": "filters",
        "tasks": {
            "generate": {"uses": "generate", "with": {"schema": SCHEMA, "total_rows": 3000, "seed": 21}},
            "partition": {"uses": "partition", "needs": ["generate"]},
            "upload": {"uses": "storage.upload", "needs": ["partition"]},
            "collection": {
                "uses": "milvus.create_collection",
                "with": {
                    "schema": SCHEMA,
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
        },
    }
    result = run_file(write_pipeline(tmp / "f.yaml", spec), tmp / "runs", settings_with_pg())
    assert result.ok, {n: t.error for n, t in result.tasks.items() if t.error}
    return result.results["import"], result.results["shadow"]


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_filter_selects_the_same_rows_in_milvus_and_postgres(loaded: Any, expr: str) -> None:
    imported, shadow = loaded
    client = imported.info.milvus().client()
    try:
        rows = client.query(COLLECTION, filter=expr, output_fields=["id"], consistency_level="Strong", limit=16384)
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
