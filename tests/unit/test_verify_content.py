"""Content matching of AUTO_ID rows: one canonical encoding from three representations, and the blame.

The Milvus and PostgreSQL values below are built the way pymilvus and asyncpg hand them back (JSON
parsed or as jsonb's re-ordered text, vectors as lists, bytes, one-element byte lists or ndarrays),
from the same generated Arrow batch the source files hold.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from task_components.generation.columns import generate_chunk
from task_components.schema import parse_schema
from task_components.schema.models import FieldSchema, FieldType
from task_components.schema.types import copy_values
from task_components.verification.canonical import NULL, canonical_column, row_hashes
from task_components.verification.content import (
    Buckets,
    attribute_counts,
    attribute_rows,
    pair_changes,
    split_buckets,
)
from task_components.verification.fullscan import ScanReport

ELEMENTS = ["Bool", "Int8", "Int16", "Int32", "Int64", "Float", "Double", "VarChar"]
SCHEMA = parse_schema(
    {
        "collection_name": "autoid_unit",
        "fields": [
            {"name": "id", "type": "Int64", "is_primary": True, "auto_id": True},
            {"name": "f_bool", "type": "Bool", "nullable": True},
            {"name": "f_int8", "type": "Int8"},
            {"name": "f_int16", "type": "Int16"},
            {"name": "f_int32", "type": "Int32"},
            {"name": "f_int64", "type": "Int64", "nullable": True, "null_ratio": 0.3},
            {"name": "f_float", "type": "Float", "min": -1, "max": 1},
            {"name": "f_double", "type": "Double", "min": -1e9, "max": 1e9},
            {"name": "f_varchar", "type": "VarChar", "max_length": 40, "pattern": "address", "nullable": True},
            {"name": "f_json", "type": "JSON", "nullable": True},
            *({"name": f"a_{e.lower()}", "type": "Array", "element_type": e, "max_capacity": 5, "max_length": 16} for e in ELEMENTS),
            {"name": "v_float", "type": "FloatVector", "dim": 16},
            {"name": "v_int8", "type": "Int8Vector", "dim": 8},
            {"name": "v_binary", "type": "BinaryVector", "dim": 64},
            {"name": "v_fp16", "type": "Float16Vector", "dim": 8},
            {"name": "v_bf16", "type": "BFloat16Vector", "dim": 8},
            {"name": "v_sparse", "type": "SparseFloatVector", "nnz": 6},
        ],
    }
)
FIELDS = SCHEMA.data_fields()
ROWS = 300


@pytest.fixture(scope="module")
def batch() -> pa.RecordBatch:
    return generate_chunk(SCHEMA.model_dump_json(), 7, 0, 0, ROWS, ROWS)


def _pg_jsonb(text: str) -> str:
    """jsonb's output: keys ordered by length then bytes, ``", "`` and ``": "`` separators."""

    def order(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: order(v[k]) for k in sorted(v, key=lambda k: (len(k.encode()), k.encode()))}
        return [order(x) for x in v] if isinstance(v, list) else v

    return json.dumps(order(json.loads(text)), ensure_ascii=False)


def milvus_values(col: pa.Array, f: FieldSchema, wrapped: bool) -> list[Any]:
    """What pymilvus returns for a column (``wrapped``: byte vectors as ``[b'...']``, else bare)."""
    out: list[Any] = []
    for v in col.to_pylist():
        if v is None:
            out.append(None)
        elif f.type is FieldType.JSON:
            out.append(json.loads(v))
        elif f.type is FieldType.SPARSE_FLOAT_VECTOR:
            out.append({int(k): float(np.float32(x)) for k, x in json.loads(v).items()})
        elif f.type is FieldType.FLOAT16_VECTOR and not wrapped:
            out.append(np.frombuffer(bytes(v), np.float16))  # some pymilvus versions: an ndarray
        elif f.type in (FieldType.BINARY_VECTOR, FieldType.FLOAT16_VECTOR, FieldType.BFLOAT16_VECTOR):
            out.append([bytes(v)] if wrapped else bytes(v))
        elif f.type is FieldType.INT8_VECTOR:
            out.append([np.asarray(v, np.int8).tobytes()] if wrapped else np.asarray(v, np.int8))
        else:
            out.append(v)
    return out


def postgres_values(col: pa.Array, f: FieldSchema) -> list[Any]:
    """What asyncpg returns for the shadow column: the COPY values, jsonb re-ordered as PostgreSQL does."""
    values = copy_values(col, f)
    if f.type in (FieldType.JSON, FieldType.SPARSE_FLOAT_VECTOR):
        return [None if v is None else _pg_jsonb(v) for v in values]
    return [bytes(v) if isinstance(v, bytes | bytearray) else v for v in values]


@pytest.mark.parametrize("wrapped", [True, False], ids=["bytes-in-list", "bare"])
def test_every_field_type_encodes_the_same_from_source_milvus_and_postgres(batch: pa.RecordBatch, wrapped: bool) -> None:
    sides: dict[str, list[list[bytes]]] = {"source": [], "milvus": [], "postgres": []}
    for f in FIELDS:
        col = batch.column(f.name)
        source = canonical_column(f, col, json_text=True)
        milvus = canonical_column(f, milvus_values(col, f, wrapped), json_text=False)
        postgres = canonical_column(f, postgres_values(col, f), json_text=True)
        assert source == milvus == postgres, f.name
        assert len(set(source)) > 1, f"{f.name}: generated values all equal, the test proves nothing"
        for side, column in zip(sides.values(), (source, milvus, postgres), strict=True):
            side.append(column)
    nullable = {f.name for f in FIELDS if f.nullable}
    assert all(NULL in sides["source"][i] for i, f in enumerate(FIELDS) if f.name in nullable)
    hashes = [row_hashes(cols, ROWS) for cols in sides.values()]
    assert np.array_equal(hashes[0], hashes[1]) and np.array_equal(hashes[0], hashes[2])
    assert len(set(hashes[0].tolist())) == ROWS


def _one(ftype: str, value: Any, json_text: bool = False, **extra: Any) -> bytes:
    f = FieldSchema.model_validate({"name": "x", "type": ftype, **extra})
    return canonical_column(f, [value], json_text=json_text)[0]


def test_nulls_differ_from_empty_and_zero_values() -> None:
    assert _one("VarChar", None, max_length=4) != _one("VarChar", "", max_length=4)
    assert _one("Int64", None) != _one("Int64", 0)
    assert _one("Array", None, element_type="Int64", max_capacity=2) != _one("Array", [], element_type="Int64", max_capacity=2)
    assert _one("JSON", None) != _one("JSON", "null", json_text=True)


def test_float_rules_follow_what_each_store_keeps() -> None:
    assert _one("Float", 0.1) == _one("Float", float(np.float32(0.1)))  # Milvus returns the float32 widened
    assert _one("Float", -0.0) == _one("Float", 0.0)
    assert _one("Float", float("nan")) == _one("Float", -float("nan"))
    assert _one("Double", 0.1) != _one("Double", float(np.float32(0.1)))  # DOUBLE is kept as float64
    one_ulp = np.nextafter(np.float32(0.5), np.float32(1), dtype=np.float32)
    assert _one("FloatVector", [0.5, 1.0], dim=2) != _one("FloatVector", [float(one_ulp), 1.0], dim=2)
    assert _one("FloatVector", [-0.0, 1.0], dim=2) == _one("FloatVector", [0.0, 1.0], dim=2)
    sparse = _one("SparseFloatVector", '{"7": 0.1, "2": 0.5}', json_text=True)
    assert sparse == _one("SparseFloatVector", {2: 0.5, 7: float(np.float32(0.1))})


def test_json_ignores_layout_but_not_types() -> None:
    assert _one("JSON", '{"b": [1, 2], "a": {"y": 1, "x": "é"}}', True) == _one("JSON", {"a": {"x": "é", "y": 1}, "b": [1, 2]})
    assert _one("JSON", '{"a": 1}', True) != _one("JSON", '{"a": 1.0}', True)  # 1 == 1.0 in Python, not in JSON
    assert _one("JSON", '{"a": true}', True) != _one("JSON", '{"a": 1}', True)


def test_row_hash_follows_the_documented_encoding() -> None:
    """Hashes appear in reports, so the encoding is a format: rebuild it by hand from the module doc."""
    import hashlib

    f = [FieldSchema(name="t", type=FieldType.VARCHAR, max_length=8), FieldSchema(name="n", type=FieldType.INT64)]
    cols = [canonical_column(f[0], ["ab", None], json_text=False), canonical_column(f[1], [1, -2], json_text=False)]

    def expected(*fields: bytes) -> int:
        data = b"".join(len(b).to_bytes(4, "little") + b for b in fields)
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")

    one, minus_two = (1).to_bytes(8, "little", signed=True), (-2).to_bytes(8, "little", signed=True)
    assert row_hashes(cols, 2).tolist() == [expected(b"\x01ab", b"\x01" + one), expected(b"\x00", b"\x01" + minus_two)]


def test_a_type_without_an_encoding_is_refused_by_name() -> None:
    t = FieldType.extend("AutoidUnitOnly")
    try:
        with pytest.raises(ValueError, match="field 'odd': type AutoidUnitOnly has no canonical encoding"):
            canonical_column(FieldSchema(name="odd", type=t), [1], json_text=False)
    finally:
        FieldType._value2member_map_.pop("AutoidUnitOnly", None)
        FieldType._member_map_.pop(t.name, None)
        FieldType._member_names_.remove(t.name)


# -- blame: buckets, majority, pairing ----------------------------------------------------------------------
def test_buckets_see_multisets_not_order() -> None:
    rng = np.random.default_rng(1)
    hashes = rng.integers(0, 2**63, 1000, dtype=np.uint64) * np.uint64(2)
    a, b, c = Buckets(8), Buckets(8), Buckets(8)
    a.add(hashes)
    b.add(hashes[::-1])
    assert np.array_equal(a.sums, b.sums)
    changed = hashes.copy()
    changed[5] ^= np.uint64(1)  # same bucket, same count: only the sums can tell
    c.add(changed)
    differing = np.flatnonzero(np.any(a.sums != c.sums, axis=0))
    assert differing.tolist() == [int(a.of(hashes[5:6])[0])]
    assert a.sums[0][differing[0]] == c.sums[0][differing[0]]


def test_majority_blames_the_odd_side() -> None:
    assert attribute_counts({"source": 1, "milvus": 1, "postgres": 1}) == []
    assert attribute_counts({"source": 1, "milvus": 0, "postgres": 1}) == [("milvus", -1)]
    assert attribute_counts({"source": 1, "milvus": 3, "postgres": 1}) == [("milvus", 2)]
    assert attribute_counts({"source": 1, "milvus": 1, "postgres": 0}) == [("postgres", -1)]
    assert attribute_counts({"source": 0, "milvus": 1, "postgres": 1}) == [("source", -1)]
    assert attribute_counts({"source": 1, "milvus": 0, "postgres": 2}) == [("milvus", -1), ("postgres", 1)]


def test_a_missing_and_an_extra_row_differing_in_one_field_are_a_change() -> None:
    fields = [FieldSchema(name="name", type=FieldType.VARCHAR, max_length=9), FieldSchema(name="v", type=FieldType.FLOAT_VECTOR, dim=2)]

    def row(name: str, v: list[float]) -> list[bytes]:
        return [canonical_column(f, [x], json_text=False)[0] for f, x in zip(fields, [name, v], strict=True)]

    content = {
        1: row("a", [1, 2]),
        2: row("b", [1, 2]),
        3: row("c", [1, 2]),
        4: row("c", [1, 2.0005]),
        5: row("e", [1, 2]),
        6: row("x", [9, 9]),
        7: row("a", [1, 2.5]),
    }
    pairs, lost, added = pair_changes([1, 3, 5], [2, 4, 6], content, fields, tolerance=1e-3)
    assert pairs == [(1, 2, "name"), (3, 4, None)]  # 3 -> 4 moved its vector within the tolerance
    assert lost == [5] and added == [6]  # 5 -> 6 changed both fields: a missing and an extra row
    pairs, _, _ = pair_changes([3], [7], content, fields, tolerance=1e-3)
    assert pairs == []  # 7 differs from 3 in both fields
    pairs, _, _ = pair_changes([1], [7], content, fields, tolerance=1e-3)
    assert pairs == [(1, 7, "v")]  # beyond the tolerance


def test_rows_are_blamed_on_every_side_the_source_included() -> None:
    """Two stores agreeing against the source blame the source; a row neither store holds is 'both'."""
    name = FieldSchema(name="name", type=FieldType.VARCHAR, max_length=9)
    qty = FieldSchema(name="qty", type=FieldType.INT32)
    rows = {"a": ("a", 1), "b": ("b", 2), "b'": ("b", 3), "c": ("c", 4), "d": ("d", 5), "e": ("e", 6)}
    content = {
        i: [canonical_column(name, [n], json_text=False)[0], canonical_column(qty, [q], json_text=False)[0]]
        for i, (n, q) in enumerate(rows.values())
    }
    h = dict(zip(rows, content, strict=True))
    where: dict[str, dict[int, list[Any]]] = {
        "source": {h["a"]: ["f:0"], h["b"]: ["f:1"], h["c"]: ["f:2"], h["e"]: ["f:4"]},
        "milvus": {h["a"]: [11], h["b'"]: [12], h["c"]: [13], h["d"]: [14]},
        "postgres": {h["a"]: [0], h["b'"]: [1], h["c"]: [2], h["d"]: [3]},
    }  # b changed to b' in both stores; d is in both stores only; e is in the source only
    report = ScanReport()
    attribute_rows(report, content, where, [name, qty], tolerance=0.0)
    got = {(f["key"], f["field"], f["side"], f["problem"]) for f in report.findings}
    assert got == {
        (12, "qty", "source", "value differs"),
        (14, None, "source", "row not in the source files"),
        (f"hash:{h['e']:016x}", None, "both", "row missing"),
    }
    changed = next(f for f in report.findings if f["field"] == "qty")
    assert (changed["source_row"], changed["milvus_id"], changed["postgres_row"]) == ("f:1", 12, 1)


def test_buckets_beyond_the_budget_are_blamed_from_their_counts() -> None:
    low = np.random.default_rng(2).integers(0, 2**40, 2560, dtype=np.uint64) * np.uint64(2)
    hashes = (np.repeat(np.arange(256, dtype=np.uint64), 10) << np.uint64(56)) | low  # 10 rows in each of 256 buckets
    sides = {s: Buckets(8) for s in ("source", "milvus", "postgres")}
    sides["source"].add(hashes)
    sides["milvus"].add(hashes[25:])  # buckets 0, 1 lose all 10 rows, bucket 2 loses 5
    changed = hashes.copy()
    changed[[2000, 2010, 2011]] ^= np.uint64(1)  # changed in place in PostgreSQL: buckets 200, 201; same counts
    sides["postgres"].add(changed)
    sums = [b.sums for b in sides.values()]
    expand, blamed = split_buckets(sums, budget=10**9)
    assert expand.tolist() == [0, 1, 2, 200, 201] and not blamed
    expand, blamed = split_buckets(sums, budget=50)  # bucket 0 (20 rows) and 1 (40 in all) fit, not bucket 2
    assert expand.tolist() == [0, 1] and blamed == {"milvus": 5, "postgres": 2}  # a bucket changed in place: 1
