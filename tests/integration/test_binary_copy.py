"""Binary COPY payloads from Arrow buffers, checked against PostgreSQL's own parsing and the record path."""

from __future__ import annotations

import math
import secrets
from typing import Any

import anyio
import asyncpg
import numpy as np
import pyarrow as pa
import pytest

from config.settings import Settings
from dag_orchestrator import DAG, Executor, PipelineContext, RunServices, task
from task_components.generation.columns import generate_chunk
from task_components.schema import parse_schema, resolve_schema
from task_components.schema.arrow import META_COLUMN, arrow_schema
from task_components.schema.models import CollectionSchema
from task_components.schema.postgres import arrow_records, columns, create_table_sql, key_column, quote
from task_components.shadow import ShadowSync
from task_components.shadow.binary_copy import HEADER, TRAILER, covered, encode_batch
from task_components.shadow.sync import ShadowParams
from tests.integration.conftest import service_uri

pytestmark = pytest.mark.integration

DIM = 768
I64 = (-(2**63), 2**63 - 1)


def edge_schema(*, wide: bool, auto_id: bool = False) -> CollectionSchema:
    fields: list[dict[str, Any]] = [
        {"name": "id", "type": "Int64", "is_primary": True, "auto_id": auto_id},
        {"name": "f_bool", "type": "Bool", "nullable": True},
        {"name": "f_int8", "type": "Int8"},
        {"name": "f_int16", "type": "Int16"},
        {"name": "f_int32", "type": "Int32", "nullable": True},
        {"name": "f_int64", "type": "Int64", "nullable": True},
        {"name": "f_float", "type": "Float", "nullable": True},
        {"name": "f_double", "type": "Double"},
        {"name": "f_text", "type": "VarChar", "max_length": 1000, "nullable": True},
        {"name": "f_text2", "type": "VarChar", "max_length": 1000},
        {"name": "f_json", "type": "JSON", "nullable": True},
        {"name": "v_sparse", "type": "SparseFloatVector"},
        {"name": "v_int8", "type": "Int8Vector", "dim": 4},
        {"name": "v_binary", "type": "BinaryVector", "dim": 16},
        {"name": "v_fp16", "type": "Float16Vector", "dim": 2, "nullable": True},
        {"name": "v_bf16", "type": "BFloat16Vector", "dim": 2},
        {"name": "v_small", "type": "FloatVector", "dim": 3, "nullable": True},
    ]
    if wide:
        fields.append({"name": "v_wide", "type": "FloatVector", "dim": DIM})
    return parse_schema({"collection_name": f"bc_{secrets.token_hex(4)}", "enable_dynamic_field": True, "fields": fields})


def edge_batch(schema: CollectionSchema) -> pa.RecordBatch:
    """Six rows of edge values: extremes, NULLs, NaN/inf, empty and non-ASCII text, then a generated tail."""
    nan, inf = float("nan"), float("inf")
    cols: dict[str, Any] = {
        "id": [I64[0], -1, 0, 1, 2, I64[1]],
        "f_bool": [True, False, None, True, None, False],
        "f_int8": [-128, 127, 0, -1, 5, 6],
        "f_int16": [-32768, 32767, 0, -1, 5, 6],
        "f_int32": [-(2**31), 2**31 - 1, None, -1, 0, 7],
        "f_int64": [None, -5, I64[1], None, 0, I64[0]],
        "f_float": [nan, inf, -inf, None, -0.0, 1.5e-45],
        "f_double": [nan, inf, -inf, 1e308, -0.0, 5e-324],
        "f_text": ["", "héllo wörld ✓ 日本語 🎉", None, "a", "x" * 300, "tab\tnew\nline \\ 'q' \"dq\""],
        "f_text2": ["z", "", "ü", "", "end", "NULL"],
        "f_json": ['{"a": 1}', "[]", '"ü"', "null", None, '{"k": [1, 2.5, "x"]}'],
        "v_sparse": ['{"1": 0.5}', '{"7": -1.0, "2": 3.25}', "{}", '{"0": 1}', '{"3": 0.0}', '{"9": 2}'],
        "v_int8": [[-128, 127, 0, -1]] * 3 + [[1, 2, 3, 4]] * 3,
        "v_binary": [[0, 255], [1, 2], [128, 127], [0, 0], [255, 255], [7, 9]],
        "v_fp16": [[0, 60, 0, 188], None, [1, 2, 3, 4], [0, 0, 0, 0], None, [255, 124, 0, 252]],
        "v_bf16": [[128, 63, 0, 64]] * 6,
        "v_small": [[nan, inf, -inf], [0.0, -0.0, 1e-45], None, [1.5, -2.5, 3.0], [3.4e38, -3.4e38, 0.1], None],
        META_COLUMN: ['{"extra": "é"}', None, "{}", '{"n": 1}', None, '{"x": [1]}'],
    }
    if any(f.name == "v_wide" for f in schema.fields):
        wide = np.random.default_rng(3).standard_normal((6, DIM)).astype(np.float32)
        wide[0, :3] = (np.nan, np.inf, -np.inf)
        cols["v_wide"] = list(wide)
    arrow = arrow_schema(schema)  # an AUTO_ID schema's batch has no id column
    return pa.RecordBatch.from_arrays([pa.array(cols[f.name], f.type) for f in arrow], schema=arrow)


def norm(value: Any) -> Any:
    """NaN never equals itself: compare records with NaN replaced by a marker, -0.0 kept apart from 0.0."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else (value, math.copysign(1, value))
    if isinstance(value, list | tuple):
        return [norm(v) for v in value]
    return value


async def load_both(schema: CollectionSchema, batch: pa.RecordBatch, offset: int = 0) -> tuple[list[Any], list[Any]]:
    """COPY the batch binary into one table and by records into another; both tables' rows, by key."""
    binary, records = f"{schema.collection_name}_bin", f"{schema.collection_name}_rec"
    encoded = encode_batch(batch, schema, offset)
    assert encoded is not None
    payload, cols = encoded
    assert bytes(payload[: len(HEADER)]) == HEADER and bytes(payload[-2:]) == TRAILER
    conn = await asyncpg.connect(service_uri("TEST_POSTGRES_DSN"))
    try:
        for t in (binary, records):
            await conn.execute(create_table_sql(schema, t))
        await conn.copy_to_table(binary, source=payload, format="binary", columns=cols)
        await conn.copy_records_to_table(records, records=arrow_records(batch, schema, offset), columns=columns(schema))
        order = f"ORDER BY {quote(key_column(schema))}"
        got = [tuple(r) for r in await conn.fetch(f"SELECT * FROM {quote(binary)} {order}")]
        want = [tuple(r) for r in await conn.fetch(f"SELECT * FROM {quote(records)} {order}")]
        return got, want
    finally:
        for t in (binary, records):
            await conn.execute(f"DROP TABLE IF EXISTS {quote(t)}")
        await conn.close()


@pytest.mark.parametrize("wide", [False, True], ids=["narrow rows (gathered)", "768-d rows (joined)"])
def test_every_covered_type_reads_back_as_postgres_parsed_the_record_path(wide: bool) -> None:
    schema = edge_schema(wide=wide)
    assert covered(schema)
    batch = edge_batch(schema)
    got, want = anyio.run(load_both, schema, batch)
    assert len(got) == 6
    assert [norm(r) for r in got] == [norm(r) for r in want]
    by_id = {r[0]: r for r in got}
    names = [f.name for f in schema.data_fields()] + [META_COLUMN]
    row = dict(zip(names, by_id[I64[0]], strict=True))  # first source row: checked against the source itself
    assert row["f_int64"] is None and row["f_bool"] is True and row["f_text"] == "" and row["f_json"] == '{"a": 1}'
    assert math.isnan(row["f_float"]) and math.isnan(row["f_double"]) and row["v_int8"] == [-128, 127, 0, -1]
    assert row["v_binary"] == bytes([0, 255]) and row["v_fp16"] == bytes([0, 60, 0, 188])
    row = dict(zip(names, by_id[-1], strict=True))
    assert row["f_text"] == "héllo wörld ✓ 日本語 🎉" and row["f_float"] == math.inf and row["v_fp16"] is None
    assert row["v_small"] == [0.0, -0.0, np.float32(1e-45)] and row[META_COLUMN] is None
    if wide:
        vec = np.asarray(batch.column("v_wide")[5].values, np.float32)
        assert np.array_equal(np.asarray(by_id[I64[1]][names.index("v_wide")], np.float32), vec)


def test_a_sliced_batch_and_auto_id_rows_are_keyed_by_position() -> None:
    schema = edge_schema(wide=True, auto_id=True)
    batch = edge_batch(schema).slice(1, 4)  # Arrow offsets not starting at 0, validity bitmaps mid-byte
    got, want = anyio.run(load_both, schema, batch, 1000)
    assert [r[0] for r in got] == [1000, 1001, 1002, 1003]
    assert [norm(r) for r in got] == [norm(r) for r in want]


@pytest.mark.parametrize("name", ["vector_bench", "all_types_without_arrays"])
def test_generated_batches_match_the_record_path_row_for_row(name: str) -> None:
    if name == "vector_bench":
        schema = resolve_schema("vector_bench")
    else:
        data = resolve_schema("all_types").model_dump(exclude_defaults=True)
        data["fields"] = [f for f in data["fields"] if f["type"] != "Array"]
        schema = parse_schema(data)
    schema = schema.model_copy(update={"collection_name": f"bc_{secrets.token_hex(4)}"})
    batch = generate_chunk(schema.model_dump_json(), 5, 0, 0, 3000, 3000)
    got, want = anyio.run(load_both, schema, batch)
    assert len(got) == 3000
    assert [norm(r) for r in got] == [norm(r) for r in want]


def test_uncovered_types_and_ragged_vectors_fall_back_to_records() -> None:
    assert not covered(resolve_schema("all_types"))  # ARRAY fields
    assert (
        encode_batch(generate_chunk(resolve_schema("all_types").model_dump_json(), 1, 0, 0, 5, 5), resolve_schema("all_types"), 0) is None
    )
    fields = [{"name": "id", "type": "Int64", "is_primary": True}, {"name": "v", "type": "FloatVector", "dim": 2}]
    schema = parse_schema({"collection_name": "ragged", "fields": fields})
    ragged = pa.RecordBatch.from_arrays(
        [pa.array([1, 2]), pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float32()))], schema=arrow_schema(schema)
    )
    assert encode_batch(ragged, schema, 0) is None


def test_shadow_sync_writes_vector_batches_by_binary_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_records(*args: Any) -> None:
        raise AssertionError("a covered schema went through the record path")

    monkeypatch.setattr("task_components.shadow.sync.arrow_records", no_records)
    dsn = service_uri("TEST_POSTGRES_DSN")
    schema = resolve_schema("vector_bench")
    js = schema.model_dump_json()
    batches = [generate_chunk(js, 2, i, i * 1500, 1500, 6000) for i in range(4)]
    table = f"shadow_bc_{secrets.token_hex(4)}"

    @task(emits_stream=True)
    async def source(ctx: PipelineContext) -> None:
        for b in batches:
            await ctx.emit(b)

    shadow = ShadowSync("shadow", ShadowParams(table=table), needs=["source"], streams_from=["source"])
    settings = Settings.model_validate({"postgres": {"dsn": dsn}})

    async def run() -> list[Any]:
        result = await Executor().run(DAG("bc", [source, shadow]), PipelineContext(services=RunServices(settings)))
        assert result.ok, result.failed()
        assert result.results["shadow"].rows == 6000
        conn = await asyncpg.connect(dsn)
        try:
            return await conn.fetch(f"SELECT id, title, embedding FROM {quote(table)} WHERE id % 997 = 0 ORDER BY id")
        finally:
            await conn.execute(f"DROP TABLE IF EXISTS {quote(table)}")
            await conn.close()

    rows = anyio.run(run)
    source_rows = pa.Table.from_batches(batches).to_pydict()
    for r in rows:
        i = source_rows["id"].index(r["id"])
        assert r["title"] == source_rows["title"][i]
        assert np.array_equal(np.asarray(r["embedding"], np.float32), np.asarray(source_rows["embedding"][i], np.float32))
    assert len(rows) == 7


def test_a_binary_copy_that_committed_before_the_connection_died_is_replaced_not_duplicated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dsn = service_uri("TEST_POSTGRES_DSN")
    schema = resolve_schema("vector_bench")
    batches = [generate_chunk(schema.model_dump_json(), 3, i, i * 500, 500, 1500) for i in range(3)]
    table = f"shadow_bc_{secrets.token_hex(4)}"
    real_copy = asyncpg.Connection.copy_to_table
    calls = 0

    async def copy_then_die(self: asyncpg.Connection, *args: Any, **kwargs: Any) -> str:
        nonlocal calls
        calls += 1
        result = await real_copy(self, *args, **kwargs)
        if calls == 2:  # the second batch lands, then the connection "drops" before the reply is read
            raise ConnectionResetError("connection reset by peer")
        return result

    monkeypatch.setattr(asyncpg.Connection, "copy_to_table", copy_then_die)

    @task(emits_stream=True)
    async def source(ctx: PipelineContext) -> None:
        for b in batches:
            await ctx.emit(b)

    params = ShadowParams(table=table, concurrency=1)
    shadow = ShadowSync("shadow", params, needs=["source"], streams_from=["source"])
    settings = Settings.model_validate({"postgres": {"dsn": dsn}})

    async def run() -> tuple[int, int]:
        result = await Executor().run(DAG("bc", [source, shadow]), PipelineContext(services=RunServices(settings)))
        assert result.ok, result.failed()
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(f"SELECT count(*) AS n, count(DISTINCT id) AS d FROM {quote(table)}")
            return row["n"], row["d"]
        finally:
            await conn.execute(f"DROP TABLE IF EXISTS {quote(table)}")
            await conn.close()

    assert anyio.run(run) == (1500, 1500)
    assert calls == 4  # three batches, one of them twice


@pytest.mark.parametrize("rows", [0, 1, 700])
def test_rows_of_fixed_width_fields_only_and_an_empty_batch(rows: int) -> None:
    fields = [
        {"name": "id", "type": "Int64", "is_primary": True},
        {"name": "n", "type": "Int32"},
        {"name": "v", "type": "FloatVector", "dim": DIM},
        {"name": "b", "type": "BinaryVector", "dim": 8},
    ]
    schema = parse_schema({"collection_name": f"bc_{secrets.token_hex(4)}", "fields": fields})
    batch = generate_chunk(schema.model_dump_json(), 8, 0, 0, max(rows, 1), max(rows, 1)).slice(0, rows)
    encoded = encode_batch(batch, schema, 0)
    assert encoded is not None and encoded[1] == ["id", "n", "v", "b"]  # no text: every column is fixed width
    if not rows:  # (the record path cannot convert an empty vector column: types.matrix)
        assert bytes(encoded[0]) == HEADER + TRAILER
        return
    got, want = anyio.run(load_both, schema, batch)
    assert len(got) == rows
    assert [norm(r) for r in got] == [norm(r) for r in want]
