"""Every field type each available Milvus supports: source == Milvus == PostgreSQL, every row.

Milvus 2.3.5 (the local server) predates Float16/BFloat16/SparseFloat vectors (2.4), Int8 vectors
(2.5), nullable fields, default values and a second vector field per collection (2.4); Milvus Lite
3.2 supports sparse but no binary, float16, bfloat16 or int8 vectors. Those types round-trip through
PostgreSQL (test_shadow.py) and are skipped for Milvus here, for that reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from tests.integration.conftest import service_uri
from tests.integration.helpers import run_file, write_pipeline
from tests.integration.test_shadow import settings_with_pg

pytestmark = pytest.mark.integration

ELEMENTS = ["Bool", "Int8", "Int16", "Int32", "Int64", "Float", "Double", "VarChar"]
SERVER_TYPES = {
    "collection_name": "it_roundtrip",
    "enable_dynamic_field": True,
    "fields": [
        {"name": "id", "type": "Int64", "is_primary": True},
        {"name": "f_bool", "type": "Bool"},
        {"name": "f_int8", "type": "Int8"},
        {"name": "f_int16", "type": "Int16"},
        {"name": "f_int32", "type": "Int32"},
        {"name": "f_float", "type": "Float", "min": -5, "max": 5},
        {"name": "f_double", "type": "Double", "min": -1e9, "max": 1e9},
        {"name": "f_varchar", "type": "VarChar", "max_length": 40, "pattern": "address"},
        {"name": "f_json", "type": "JSON"},
        *({"name": f"a_{e.lower()}", "type": "Array", "element_type": e, "max_capacity": 5, "max_length": 16} for e in ELEMENTS),
        {"name": "v_float", "type": "FloatVector", "dim": 16},
    ],
    "dynamic_fields": [{"name": "d_note", "type": "String", "probability": 0.5, "values": ["a", "b"]}],
}
BINARY = {
    "collection_name": "it_roundtrip_binary",
    "fields": [
        {"name": "id", "type": "Int64", "is_primary": True},
        {"name": "label", "type": "VarChar", "max_length": 8},
        {"name": "v_binary", "type": "BinaryVector", "dim": 64},
    ],
}
LITE_TYPES = {
    "collection_name": "it_roundtrip_lite",
    "fields": [
        {"name": "id", "type": "Int64", "is_primary": True},
        {"name": "text", "type": "VarChar", "max_length": 64},
        {"name": "dense", "type": "FloatVector", "dim": 8},
        {"name": "sparse", "type": "SparseFloatVector", "nnz": 12},
    ],
}


def pipeline(schema: dict[str, Any], rows: int) -> dict[str, Any]:
    return {
        "name": "roundtrip",
        "tasks": {
            "generate": {"uses": "generate", "with": {"schema": schema, "total_rows": rows, "seed": 13}},
            "partition": {"uses": "partition", "needs": ["generate"], "with": {"rows_per_file": 1500}},
            "upload": {"uses": "storage.upload", "needs": ["partition"]},
            "collection": {"uses": "milvus.create_collection", "with": {"schema": schema, "drop_if_exists": True}},
            "import": {
                "uses": "milvus.bulk_import",
                "needs": ["upload", "collection"],
                "with": {"poll_interval": 0.5, "insert_below_rows": 0},
            },
            "shadow": {"uses": "shadow.sync", "needs": ["generate"]},
            "verify": {"uses": "verify", "needs": ["import", "shadow"], "with": {"level": "full", "search": 200}},
        },
    }


def check(result: Any, rows: int) -> None:
    assert result.ok, {n: t.error for n, t in result.tasks.items() if t.error}
    checks = {c.name: c for c in result.results["verify"].checks}
    assert checks["full scan"].passed and f"{rows:,} rows" in checks["full scan"].detail
    assert checks["count"].passed and checks["shadow count"].passed


@pytest.mark.parametrize("schema", [SERVER_TYPES, BINARY], ids=["scalars-arrays-float-vector", "binary-vector"])
def test_server_types_round_trip(tmp_path: Path, schema: dict[str, Any]) -> None:
    file = write_pipeline(tmp_path / "rt.yaml", pipeline(schema, 3000))
    check(run_file(file, tmp_path / "runs", settings_with_pg()), 3000)


def test_sparse_vectors_round_trip_on_milvus_lite(tmp_path: Path) -> None:
    settings = Settings.model_validate({"postgres": {"dsn": service_uri("TEST_POSTGRES_DSN")}})  # Lite + local store
    file = write_pipeline(tmp_path / "rt.yaml", pipeline(LITE_TYPES, 2000))
    check(run_file(file, tmp_path / "runs", settings), 2000)
