"""A field type defined in this file alone flows through the whole load: one ``register_type`` call.

The type is ``Money``: an amount with exactly two decimals (a bounded-precision float). Milvus stores it
as a DOUBLE, Arrow and Parquet as float64, and the PostgreSQL shadow as ``numeric(15,2)``, an exact
decimal, written by a binary COPY encoder defined here (PostgreSQL's numeric wire format, built with
numpy a column at a time). Its generator draws whole cents, its comparison and its canonical bytes (the
AUTO_ID content hash) are in cents, so a float from Milvus and a ``Decimal`` from PostgreSQL agree.

Nothing else in the project knows the type: the pipeline generates it (in worker processes, which learn
the type from the job), partitions it to Parquet, inserts it into Milvus Lite, copies it into the
shadow by binary COPY (the record path is made to fail), and ``verify`` checks it at level full, by
key and, for an AUTO_ID collection, by content; a cent changed in the shadow is then found.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from decimal import Decimal
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
from task_components.schema import parse_schema
from task_components.schema.postgres import quote
from task_components.schema.types import Distinct, Field, FieldType, TypeSpec, register_type, unregister_type
from task_components.schema.types.pgbinary import Part, framed, validity
from task_components.verification import Verify, VerifyParams, VerifyResult
from tests.integration.conftest import service_uri
from tests.integration.helpers import run_file, write_pipeline

pytestmark = pytest.mark.integration

LIMIT = 1e9  # |amount| below this: two base-10000 digits before the point always suffice


# -- the type's facts: module-level functions, so worker processes can receive them by reference ------------
def cents(values: Any) -> np.ndarray:
    """Amounts (floats, or Decimals from PostgreSQL) as whole cents."""
    return np.rint(np.asarray([float(v) for v in values], np.float64) * 100).astype(np.int64)


def generate_money(f: Field, rng: np.random.Generator, n: int, distinct: Distinct | None) -> pa.Array:
    lo = math.ceil((f.min if f.min is not None else 0.0) * 100)
    hi = math.floor((f.max if f.max is not None else 10_000.0) * 100)
    if distinct is not None:  # equal ids, equal amounts, spread over the range
        drawn = lo + (distinct.ids * (hi - lo)) // max(distinct.cardinality - 1, 1)
    else:
        drawn = rng.integers(lo, hi, n, endpoint=True)
    return pa.array(drawn / 100.0, pa.float64())


_NUMERIC = np.dtype([("ndigits", ">i2"), ("weight", ">i2"), ("sign", ">u2"), ("dscale", ">i2"), ("digits", ">i2", 3)])


def copy_money(col: pa.Array, f: Field | None) -> list[Part]:
    """PostgreSQL's binary numeric: digit count, weight, sign, scale, then base-10000 digits (here three)."""
    valid = validity(col)
    amount = np.rint(col.fill_null(0).to_numpy(zero_copy_only=False) * 100).astype(np.int64)
    whole, frac = np.abs(amount) // 100, np.abs(amount) % 100
    out = np.zeros(len(col), _NUMERIC)
    out["ndigits"], out["weight"], out["dscale"] = 3, 1, 2
    out["sign"] = np.where(amount < 0, 0x4000, 0)
    out["digits"] = np.stack([whole // 10_000, whole % 10_000, frac * 100], axis=1)
    return [framed(out.view(np.uint8).reshape(len(col), _NUMERIC.itemsize), valid)]


def copy_records(col: pa.Array, f: Field) -> list[Any]:
    return [None if v is None else Decimal(f"{v:.2f}") for v in col.to_pylist()]


def equal_money(f: Field, a: Any, b: Any, tolerance: float) -> bool:
    return bool(cents([a])[0] == cents([b])[0])


def canonical_money(f: Field, values: list[Any], json_text: bool) -> list[bytes]:
    return [b"\x01" + c.tobytes() for c in cents(values).astype("<i8")]


def check_default(f: Field, v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float) or round(v * 100) != v * 100:
        raise ValueError(f"default_value of a Money field must be an amount in cents, e.g. 9.99, got {v!r}")


def money_spec(t: FieldType) -> TypeSpec:
    return TypeSpec(
        t,
        pa.float64(),
        "numeric(15,2)",
        "DOUBLE",
        numpy=np.float64,
        family="float",
        value_range=(-LIMIT, LIMIT),
        to_copy=copy_records,
        equal=equal_money,
        generate=generate_money,
        copy=copy_money,
        canonical=canonical_money,
        default=check_default,
        example='{"name": "price", "type": "Money", "min": 0, "max": 500}',
    )


@pytest.fixture
def money() -> Iterator[FieldType]:
    t = FieldType.extend("Money")
    register_type(money_spec(t))
    try:
        yield t
    finally:
        unregister_type(t)


# -- the load -----------------------------------------------------------------------------------------------
ROWS = 3000


def schema(name: str, auto_id: bool) -> dict[str, Any]:
    return {
        "collection_name": name,
        "fields": [
            {"name": "id", "type": "Int64", "is_primary": True, "auto_id": auto_id},
            {"name": "price", "type": "Money", "min": -50, "max": 5000},
            {"name": "fee", "type": "Money", "nullable": True},
            {"name": "tier", "type": "Money", "cardinality": 7, "min": 0, "max": 30, "default_value": 2.5},
            {"name": "title", "type": "VarChar", "max_length": 32},
            {"name": "embedding", "type": "FloatVector", "dim": 8},
        ],
    }


def pipeline(name: str, auto_id: bool) -> dict[str, Any]:
    s = schema(name, auto_id)
    return {
        "name": name,
        "tasks": {
            "generate": {"uses": "generate", "with": {"schema": s, "total_rows": ROWS, "seed": 5, "workers": 2, "chunk_rows": 500}},
            "partition": {"uses": "partition", "needs": ["generate"], "with": {"rows_per_file": 1000}},
            "upload": {"uses": "storage.upload", "needs": ["partition"]},
            "collection": {"uses": "milvus.create_collection", "with": {"schema": s, "drop_if_exists": True}},
            "import": {"uses": "milvus.bulk_import", "needs": ["upload", "collection"]},
            "shadow": {"uses": "shadow.sync", "needs": ["generate"], "with": {"table": f"shadow_{name}"}},
            "verify": {"uses": "verify", "needs": ["import", "shadow"], "with": {"level": "full"}},
        },
    }


async def _sql(query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(service_uri("TEST_POSTGRES_DSN"))
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


def reverify(run_dir: Path, settings: Settings, result: Any) -> VerifyResult:
    verify = Verify("verify", VerifyParams(level="full", fail_on_mismatch=False), needs=["import", "shadow"])
    ctx = PipelineContext(run_dir=run_dir, services=RunServices(settings))
    ctx.results.update({"import": result.results["import"], "shadow": result.results["shadow"]})
    return anyio.run(verify.run, ctx)


@pytest.mark.parametrize("auto_id", [False, True], ids=["by-key", "auto-id-content"])
def test_a_type_defined_here_flows_generate_parquet_milvus_shadow_verify(
    money: FieldType, auto_id: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_records(*args: Any) -> None:
        raise AssertionError("the Money columns went through the record path, not binary COPY")

    monkeypatch.setattr("task_components.shadow.sync.arrow_records", no_records)
    name = f"money_{'auto' if auto_id else 'keyed'}"
    table = quote(f"shadow_{name}")
    settings = Settings.model_validate({"postgres": {"dsn": service_uri("TEST_POSTGRES_DSN")}})  # Lite + local store
    assert parse_schema(schema(name, auto_id)).field("price").type is money
    result = run_file(write_pipeline(tmp_path / "p.yaml", pipeline(name, auto_id)), tmp_path / "r", settings)
    client = None
    try:
        assert result.ok, {n: t.error for n, t in result.tasks.items() if t.error}
        assert result.results["shadow"].rows == ROWS
        checks = {c.name: c.detail for c in result.results["verify"].checks}
        how = "by content " if auto_id else ""  # AUTO_ID: Milvus chose the keys, rows match by content hash
        assert f"{ROWS:,} rows x 5 fields agree {how}on source, milvus, postgres" in checks["full scan"], checks

        # each store holds the type as the table says: Parquet float64, Milvus DOUBLE, PostgreSQL numeric
        files = sorted((tmp_path / "r").rglob("*.parquet"))
        assert files and pq.read_schema(files[0]).field("price").type == pa.float64()
        client = result.results["import"].info.milvus().client()
        fields = {f["name"]: f for f in client.describe_collection(name)["fields"]}
        assert fields["price"]["type"].name == "DOUBLE"
        rows = client.query(name, filter="id >= 0", limit=50, output_fields=["price", "fee", "tier"])
        assert len(rows) == 50 and all(-50 <= r["price"] <= 5000 and abs(r["price"] * 100 - round(r["price"] * 100)) < 1e-6 for r in rows)
        tiers = {r["tier"] for r in client.query(name, filter="id >= 0", limit=ROWS, output_fields=["tier"])}
        assert 2.5 in tiers and len(tiers) <= 8  # seven values, and the default in about 30% of the rows
        kinds = anyio.run(
            _sql,
            "SELECT data_type, numeric_scale FROM information_schema.columns WHERE table_name = $1 AND column_name = 'price'",
            f"shadow_{name}",
        )
        assert [tuple(k) for k in kinds] == [("numeric", 2)]
        stored = anyio.run(_sql, f"SELECT price, fee, tier FROM {table} LIMIT 200")
        assert all(isinstance(r["price"], Decimal) and r["price"] == r["price"].quantize(Decimal("0.01")) for r in stored)
        assert any(r["fee"] is None for r in stored) and any(r["tier"] == Decimal("2.50") for r in stored)

        # the type is compared, not skipped: one cent off in the shadow is found and blamed on PostgreSQL
        key = "_row" if auto_id else "id"
        (changed,) = anyio.run(
            _sql,
            f"UPDATE {table} SET price = price + 0.01 WHERE {quote(key)} = (SELECT min({quote(key)}) FROM {table}) RETURNING {quote(key)}",
        )
        report = reverify(tmp_path / "r", settings, result)
        assert report.findings, "a changed amount went unnoticed"
        assert {f["side"] for f in report.findings} == {"postgres"}, report.findings
        if not auto_id:
            assert {(f["key"], f["field"]) for f in report.findings} == {(changed[0], "price")}
    finally:
        if client is not None:
            client.drop_collection(name)
            client.close()
        anyio.run(_sql, f"DROP TABLE IF EXISTS {table}")


def test_the_type_leaves_no_trace_once_unregistered(money: FieldType) -> None:
    """The fixture's unregister_type: the name no longer parses and the help no longer lists it."""
    from pipeline.schema_help import schema_help

    assert "Money" in schema_help()
    unregister_type(money)
    with pytest.raises(ValueError, match="unknown type 'Money'"):
        FieldType.parse("Money")
    assert "Money" not in schema_help()
