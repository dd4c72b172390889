"""The field-type table holds every per-type fact, and a row can travel to worker processes."""

from __future__ import annotations

import pickle
from dataclasses import replace

import anyio
import numpy as np
import pyarrow as pa
import pytest

from dag_orchestrator.backends import LocalBackend
from task_components.generation import GenerateParams, generate_batches
from task_components.generation.columns import generate_chunk
from task_components.schema import parse_schema
from task_components.schema.models import FieldType
from task_components.schema.types import TYPES, Distinct, Field, TypeSpec, register_type, spec, unregister_type
from task_components.schema.types.spec import install_plugins, pack_plugins, plugin_types

DEFAULTABLE = {"Bool", "Int8", "Int16", "Int32", "Int64", "Float", "Double", "VarChar"}


def test_every_milvus_type_has_a_complete_row() -> None:
    assert set(FieldType) <= set(TYPES)
    for t, s in TYPES.items():
        assert s.type is t and s.generate is not None and s.canonical is not None and s.example, t
        assert (s.copy is None) == (t is FieldType.ARRAY), t  # ragged arrays take the record path
        assert (s.default is not None) == (t.value in DEFAULTABLE), t
    assert spec(FieldType.INT16).value_range == (-(2**15), 2**15 - 1)
    assert spec(FieldType.BINARY_VECTOR).index == {"index_type": "BIN_FLAT", "metric_type": "HAMMING", "params": {}}
    assert [t for t, s in TYPES.items() if s.key] == [FieldType.INT64, FieldType.VARCHAR]
    assert not plugin_types()


def test_a_row_travels_to_a_process_that_never_registered_it() -> None:
    t = FieldType.extend("Cents")
    register_type(TypeSpec(t, pa.int64(), "bigint", "INT64", numpy=np.int64, family="integer"))
    try:
        packed = pack_plugins()
        assert packed is not None and packed[0] == ("Cents",)
        shipped = pickle.dumps(generate_chunk)
    finally:
        unregister_type(t)
    with pytest.raises(ValueError, match="unknown type 'Cents'"):
        FieldType.parse("Cents")
    assert pickle.loads(shipped) is generate_chunk  # unpickling installs the row, as in a worker
    try:
        assert spec(FieldType.parse("Cents")).pg == "bigint"
    finally:
        unregister_type(FieldType.parse("Cents"))
    install_plugins(*packed)  # what the unpickling ran, called directly
    try:
        assert plugin_types()[0].type.value == "Cents"
    finally:
        unregister_type(FieldType.parse("Cents"))


def test_a_row_that_cannot_travel_says_why_and_what_to_do() -> None:
    t = FieldType.extend("Lambda")
    register_type(TypeSpec(t, pa.int64(), "bigint", "INT64", width=lambda dim: dim))
    try:
        with pytest.raises(TypeError, match=r"Lambda cannot be sent to worker processes.*workers: 0"):
            pack_plugins()
    finally:
        unregister_type(t)


def test_unregistering_a_builtin_row_keeps_its_name() -> None:
    saved = dict(TYPES)
    unregister_type(FieldType.BOOL)
    try:
        assert FieldType.parse("bool") is FieldType.BOOL and FieldType.BOOL not in TYPES
    finally:
        TYPES.clear()
        TYPES.update(saved)  # in its place: the table's order is the help's and the error messages' order


# -- a builtin row replaced for a while: put back on unregister, and the same in every worker ----------------
def sevens(f: Field, rng: np.random.Generator, n: int, distinct: Distinct | None) -> pa.Array:
    """An Int64 generator unlike the builtin one (module level: workers receive it by reference)."""
    return pa.array(np.arange(n, dtype=np.int64) * 7, pa.int64())


SCHEMA = {
    "collection_name": "override",
    "fields": [
        {"name": "id", "type": "Int64", "is_primary": True},
        {"name": "n", "type": "Int64", "min": 0, "max": 1000},
        {"name": "v", "type": "FloatVector", "dim": 4},
    ],
}


def _chunk() -> pa.RecordBatch:
    return generate_chunk(parse_schema(SCHEMA).model_dump_json(), 3, 0, 0, 500, 500)


def test_replacing_a_builtin_row_then_unregistering_puts_the_builtin_back() -> None:
    builtin, order, before = spec(FieldType.INT64), list(TYPES), _chunk()
    register_type(replace(builtin, generate=sevens, pg="numeric"))
    try:
        assert spec(FieldType.INT64).pg == "numeric" and _chunk()["n"].to_pylist()[:3] == [0, 7, 14]
    finally:
        unregister_type(FieldType.INT64)
    assert spec(FieldType.INT64) is builtin and list(TYPES) == order
    assert _chunk().equals(before) and not plugin_types()


def test_a_replaced_builtin_row_generates_the_same_data_in_worker_processes() -> None:
    async def streams() -> tuple[list[pa.RecordBatch], ...]:
        params = GenerateParams(schema=SCHEMA, total_rows=6000, seed=4, chunk_rows=1000)

        async def run(backend: LocalBackend) -> list[pa.RecordBatch]:
            return [b async for b in generate_batches(params, backend)]

        async with LocalBackend(0) as inline, LocalBackend(2, preload=["task_components.generation.columns"]) as pool:
            builtin_inline = await run(inline)
            register_type(replace(spec(FieldType.INT64), generate=sevens))
            try:
                replaced_inline, replaced_workers = await run(inline), await run(pool)
            finally:
                unregister_type(FieldType.INT64)
            return builtin_inline, replaced_inline, replaced_workers, await run(pool)  # the same workers, reused

    builtin_inline, replaced_inline, replaced_workers, builtin_workers = anyio.run(streams)
    assert replaced_inline[0]["n"].to_pylist()[:3] == [0, 7, 14]
    for a, b in zip(replaced_inline, replaced_workers, strict=True):
        assert a.equals(b)
    for a, b in zip(builtin_inline, builtin_workers, strict=True):  # the workers dropped the earlier job's row
        assert a.equals(b)
