"""A new field type needs one row in the type table: Arrow and the PostgreSQL COPY path follow from it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import anyio
import asyncpg
import numpy as np
import pyarrow as pa
import pytest

from task_components.schema import parse_schema
from task_components.schema.arrow import arrow_schema, schema_of
from task_components.schema.models import FieldType
from task_components.schema.postgres import arrow_records, columns, create_table_sql, quote, table_name
from task_components.schema.types import TYPES, TypeSpec, register_type
from tests.integration.conftest import service_uri

pytestmark = pytest.mark.integration


@pytest.fixture
def timestamp_type() -> Iterator[FieldType]:
    """Register a Timestamp type the way a plugin would, and remove it again afterwards."""
    t = FieldType.extend("Timestamp")
    register_type(TypeSpec(t, pa.timestamp("us", tz="UTC"), "timestamptz", "INT64", numpy="datetime64[us]"))
    try:
        yield t
    finally:
        TYPES.pop(t, None)
        FieldType._value2member_map_.pop("Timestamp", None)
        FieldType._member_map_.pop(t.name, None)
        FieldType._member_names_.remove(t.name)


def test_a_type_added_to_the_table_round_trips_through_arrow_and_copy(timestamp_type: FieldType) -> None:
    dsn = service_uri("TEST_POSTGRES_DSN")
    schema = parse_schema(
        {
            "collection_name": "typed_extension",
            "fields": [
                {"name": "id", "type": "Int64", "is_primary": True},
                {"name": "seen_at", "type": "Timestamp", "nullable": True},
                {"name": "vec", "type": "FloatVector", "dim": 4},
            ],
        }
    )
    assert schema.fields[1].type is timestamp_type
    arrow = arrow_schema(schema)
    assert arrow.field("seen_at").type == pa.timestamp("us", tz="UTC")
    assert schema_of(arrow).fields[1].type is timestamp_type  # the schema survives the Arrow metadata trip

    base = dt.datetime(2026, 11, 23, 13, 45, tzinfo=dt.UTC)
    stamps = [base + dt.timedelta(seconds=i * 3601.5) for i in range(99)] + [None]
    vectors = np.arange(400, dtype=np.float32).reshape(100, 4)
    batch = pa.RecordBatch.from_arrays(
        [
            pa.array(range(100), pa.int64()),
            pa.array(stamps, arrow.field("seen_at").type),
            pa.FixedSizeListArray.from_arrays(vectors.ravel(), 4).cast(arrow.field("vec").type),
        ],
        schema=arrow,
    )

    async def roundtrip() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {quote(table_name(schema))}")
            await conn.execute(create_table_sql(schema))
            kind = await conn.fetchval(
                "SELECT data_type FROM information_schema.columns WHERE table_name = $1 AND column_name = 'seen_at'",
                table_name(schema),
            )
            assert kind == "timestamp with time zone"
            await conn.copy_records_to_table(table_name(schema), records=arrow_records(batch, schema, 0), columns=columns(schema))
            return await conn.fetch(f"SELECT id, seen_at, vec FROM {quote(table_name(schema))} ORDER BY id")
        finally:
            await conn.execute(f"DROP TABLE IF EXISTS {quote(table_name(schema))}")
            await conn.close()

    rows = anyio.run(roundtrip)
    assert [r["id"] for r in rows] == list(range(100))
    assert [r["seen_at"] for r in rows] == stamps
    assert np.array_equal(np.array([r["vec"] for r in rows], np.float32), vectors)
