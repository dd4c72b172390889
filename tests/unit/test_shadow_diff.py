"""The pure half of the shadow comparison: rows in, attributed differences out (no services)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

import pipeline.shadow_cli  # noqa: F401 - registers the `shadow` group
from pipeline.cli import app
from task_components.errors import FilterConversionError, ShadowValidationError
from task_components.schema import parse_schema
from task_components.schema.arrow import arrow_schema
from task_components.shadow.diff import Comparison, Difference, TopK, key_differences, recall, row_differences
from task_components.shadow.export import arrow_batch
from task_components.shadow.sides import Shadow
from task_components.shadow.tracker import KeyStateTracker

SCHEMA = parse_schema(
    {
        "collection_name": "compare_unit",
        "enable_dynamic_field": True,
        "fields": [
            {"name": "id", "type": "Int64", "is_primary": True},
            {"name": "name", "type": "VarChar", "max_length": 16, "nullable": True},
            {"name": "score", "type": "Float"},
            {"name": "meta", "type": "JSON"},
            {"name": "bits", "type": "BinaryVector", "dim": 16},
            {"name": "emb", "type": "FloatVector", "dim": 3},
        ],
    }
)
FIELDS = [f for f in SCHEMA.fields if not f.is_primary]


def milvus_row(i: int, **change: object) -> dict[str, object]:
    """A row as pymilvus returns it: JSON as objects, binary vectors wrapped, dynamic keys flattened."""
    row = {
        "id": i,
        "name": f"n{i}",
        "score": i / 3,
        "meta": {"k": i},
        "bits": [bytes([i, 255 - i])],
        "emb": [i * 0.1, 0.5, 1.0],
        "extra": i,
    }
    return {**row, **change}


def pg_row(i: int, **change: object) -> dict[str, object]:
    """The same row as asyncpg returns it from the shadow table: jsonb text, bytea, real[] and $meta."""
    row = {
        "id": i,
        "name": f"n{i}",
        "score": float(np.float32(i / 3)),
        "meta": json.dumps({"k": i}),
        "bits": bytes([i, 255 - i]),
        "emb": [float(np.float32(i * 0.1)), 0.5, 1.0],
        "$meta": json.dumps({"extra": i}),
    }
    return {**row, **change}


def diffs(milvus: dict, pg: dict, tolerance: float = 1e-6) -> set[tuple]:
    return {(d.key, d.field, d.kind, d.side) for d in row_differences(SCHEMA, FIELDS, milvus, pg, tolerance, True)}


def test_the_same_rows_read_from_both_stores_agree() -> None:
    keys = range(5)
    assert diffs({i: milvus_row(i) for i in keys}, {i: pg_row(i) for i in keys}) == set()


@pytest.mark.parametrize(
    ("milvus_change", "pg_change", "field"),
    [
        ({}, {"name": "other"}, "name"),
        ({}, {"name": None}, "name"),  # a NULL is not the value
        ({}, {"score": 99.0}, "score"),
        ({}, {"meta": json.dumps({"k": "1"})}, "meta"),  # "1" is not 1 in JSON
        ({}, {"bits": bytes([1, 0])}, "bits"),
        ({}, {"emb": [0.1, 0.5, 1.01]}, "emb"),
        ({}, {"$meta": json.dumps({"extra": 2})}, "$meta"),
        ({"other_dynamic": True}, {}, "$meta"),  # a dynamic key only Milvus has
    ],
)
def test_a_changed_field_is_named_and_charged_to_postgres(milvus_change: dict, pg_change: dict, field: str) -> None:
    m = {1: milvus_row(1, **milvus_change), 2: milvus_row(2)}
    p = {1: pg_row(1, **pg_change), 2: pg_row(2)}
    assert diffs(m, p) == {(1, field, "changed", "postgres")}


def test_vector_tolerance_and_ragged_vectors() -> None:
    m, p = {1: milvus_row(1)}, {1: pg_row(1, emb=[0.1, 0.5, 1.004])}
    assert diffs(m, p, tolerance=0.01) == set()
    assert diffs(m, p, tolerance=0.001) == {(1, "emb", "changed", "postgres")}
    assert diffs(m, {1: pg_row(1, emb=[0.1, 0.5])}) == {(1, "emb", "changed", "postgres")}  # wrong length
    batch = (
        {i: milvus_row(i) for i in range(3)},
        {i: pg_row(i, emb=[0.0, 0.5]) if i == 1 else pg_row(i) for i in range(3)},
    )
    assert diffs(*batch) == {(1, "emb", "changed", "postgres")}  # one ragged row falls back to row by row


def test_only_keys_both_sides_hold_are_compared_field_by_field() -> None:
    assert diffs({1: milvus_row(1), 2: milvus_row(2)}, {2: pg_row(2), 3: pg_row(3)}) == set()


def test_key_differences_without_tracker_take_milvus_as_the_reference() -> None:
    got = {(d.key, d.kind, d.side) for d in key_differences(np.array([1, 2, 3]), np.array([2, 3, 4]))}
    assert got == {(4, "extra", "postgres"), (1, "missing", "postgres")}


def test_key_differences_follow_the_tracker(tmp_path: Path) -> None:
    tracker = KeyStateTracker(tmp_path / "keys")
    try:
        tracker.record([1, 4], "insert", "c")
        tracker.record([5], "delete", "c")
        tracker.record([6], "insert", "other collection")
        got = key_differences(np.array([2, 3, 5, 6]), np.array([1, 2, 3]), tracker, "c")
    finally:
        tracker.close()
    assert {(d.key, d.kind, d.side) for d in got} == {
        (1, "missing", "milvus"),  # recorded as existing, Milvus lacks it
        (5, "extra", "milvus"),  # recorded as deleted, Milvus still has it
        (6, "missing", "postgres"),  # recorded for another collection only: Milvus is the reference
    }


def test_a_key_stored_twice_is_extra_on_that_side() -> None:
    got = key_differences(np.array([1, 2, 2, 2]), np.array([1, 2]))
    assert [(d.key, d.kind, d.side, d.detail) for d in got] == [(2, "extra", "milvus", "key stored 3 times")]
    text = key_differences(["a", "b", "b"], ["a", "b", "c"])
    assert {(d.key, d.kind, d.side) for d in text} == {("b", "extra", "milvus"), ("c", "extra", "postgres")}


def test_comparison_counts_everything_but_keeps_the_first_differences() -> None:
    result = Comparison("validate", "c", "shadow_c", compared=10, max_kept=2)
    assert result.ok and "no differences" in result.summary()
    result.add([Difference(i, None, "extra", "postgres") for i in range(5)])
    result.add([Difference(9, "name", "changed", "postgres", "'a'", "'b'")])
    assert not result.ok and result.total == 6 and len(result.differences) == 2
    assert "6 differences: 1 changed in postgres, 5 extra in postgres" in result.summary()
    assert "key 0: row extra in postgres" in str(result)
    assert json.loads(json.dumps(result.to_dict()))["total"] == 6
    assert str(Difference(9, "name", "changed", "postgres", "'a'", "'b'")) == (
        "key 9: field 'name' changed in postgres (milvus 'a', postgres 'b')"
    )


@pytest.mark.parametrize("metric", ["L2", "IP", "COSINE"])
def test_top_k_over_batches_is_the_exact_answer(metric: str) -> None:
    rng = np.random.default_rng(3)
    data, queries = rng.normal(size=(500, 6)).astype(np.float32), rng.normal(size=(4, 6)).astype(np.float32)
    top = TopK(queries, 7, metric)
    for start in range(0, 500, 64):
        top.add(list(range(start, min(start + 64, 500))), data[start : start + 64])
    if metric == "L2":
        want = np.argsort(((queries[:, None, :] - data[None]) ** 2).sum(-1), axis=1)[:, :7]
    else:
        d = data / np.linalg.norm(data, axis=1, keepdims=True) if metric == "COSINE" else data
        want = np.argsort(-(queries @ d.T), axis=1)[:, :7]
    assert [set(r) for r in top.result()] == [set(w.tolist()) for w in want]


def test_top_k_with_fewer_rows_than_k_and_recall() -> None:
    top = TopK(np.ones((1, 2), np.float32), 5, "IP")
    top.add(["a", "b"], np.array([[1, 0], [2, 2]], np.float32))
    assert top.result() == [["b", "a"]]
    assert recall(["b", "x"], ["b", "a"]) == 0.5 and recall([], []) == 1.0


def test_both_sides_become_the_same_arrow_batch() -> None:
    m = [milvus_row(i) for i in range(3)] + [milvus_row(3, name=None)]
    p = [pg_row(i) for i in range(3)] + [pg_row(3, name=None)]
    a, b = arrow_batch(m, SCHEMA, "milvus"), arrow_batch(p, SCHEMA, "postgres")
    assert a.schema.equals(arrow_schema(SCHEMA)) and a.num_rows == 4
    assert a.column("emb").to_pylist() == b.column("emb").to_pylist()
    assert a.column("bits").to_pylist() == b.column("bits").to_pylist() == [[i, 255 - i] for i in range(4)]
    assert a.column("name").to_pylist()[3] is None and a.column("$meta").to_pylist() == b.column("$meta").to_pylist()
    assert a.column("emb").type == pa.list_(pa.float32())


def test_shadow_keys_filters_and_fields() -> None:
    shadow = Shadow("compare_unit", SCHEMA, "shadow_compare_unit")
    assert shadow.pk_in([1, 2]) == "id in [1, 2]"
    assert shadow.coerce(["3", 4]) == [3, 4]
    with pytest.raises(ShadowValidationError, match="has Int64 keys"):
        shadow.coerce(["x"])
    with pytest.raises(ShadowValidationError, match="no field 'nope'"):
        shadow.fields(["name", "nope"])
    assert [f.name for f in shadow.fields(ignore_vectors=True)] == ["name", "score", "meta"]
    assert not shadow.dynamic(["name"]) and shadow.dynamic()
    with pytest.raises(FilterConversionError):
        shadow.where("id ~ 3")
    text = Shadow(
        "c",
        parse_schema(
            {
                "collection_name": "c",
                "fields": [
                    {"name": "pk", "type": "VarChar", "max_length": 8, "is_primary": True},
                    {"name": "v", "type": "FloatVector", "dim": 2},
                ],
            }
        ),
        "shadow_c",
    )
    assert text.pk_in(['a"b', "c\\d"]) == 'pk in ["a\\"b", "c\\\\d"]'  # quotes escaped: never a malformed filter


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "c", "--ids", "1", "--filter", "id > 0"], "--ids and --filter are exclusive"),
        (["compare", "c", "--ids", " , "], "--ids needs comma-separated keys"),
        (["export", "c", "--out", "x.csv"], "give a .parquet file"),
        (["export", "c", "--out", "x.parquet", "--side", "mongo"], "--side must be postgres or milvus"),
        (
            [
                "validate",
                "c",
                "--uri",
                "http://127.0.0.1:1",
                "--pg-dsn",
                "postgresql://x@127.0.0.1:1/x",
                "--tracker",
                "/nonexistent/keys",
            ],
            "no key tracker there",
        ),
    ],
)
def test_bad_input_exits_2_before_connecting(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["shadow", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


def test_a_changed_vector_says_where_it_differs() -> None:
    (d,) = row_differences(SCHEMA, FIELDS, {1: milvus_row(1)}, {1: pg_row(1, emb=[0.1, 0.75, 1.0])}, 1e-6)
    assert d.field == "emb" and d.detail == "largest difference 0.25 at index 1"


def test_search_refuses_vector_types_it_cannot_search_exactly() -> None:
    from task_components.shadow.compare import _vector_field

    shadow = Shadow("compare_unit", SCHEMA, "shadow_compare_unit")
    with pytest.raises(ShadowValidationError, match="vector fields bits, emb: pass anns_field"):
        _vector_field(shadow, None)
    with pytest.raises(ShadowValidationError, match="FloatVector fields only; 'bits' is BinaryVector"):
        _vector_field(shadow, "bits")
    with pytest.raises(ShadowValidationError, match="no vector field 'name'"):
        _vector_field(shadow, "name")
    assert _vector_field(shadow, "emb").name == "emb"


class Pages:
    """Stands in for MilvusClient.query: records each call, answers count(*) and sorted pages like the server."""

    def __init__(self, keys: list[Any]) -> None:
        self.keys: list[Any] = sorted(keys)
        self.calls: list[tuple[str, str | None]] = []

    def query(
        self, collection: str, filter: str, output_fields: list[str], consistency_level: str, limit: int | None = None, **_: object
    ) -> list[dict[str, Any]]:
        self.calls.append((filter, consistency_level if limit is None else None))
        if output_fields == ["count(*)"]:
            return [{"count(*)": len(self.keys)}]
        keys = self.keys
        if " >= " in filter:  # the bound after -2**63, which has no literal
            keys = [k for k in keys if k >= int(filter.split(" >= ", 1)[1].split(" and ")[0])]
        elif " > " in filter:
            after = json.loads(filter.split(" > ", 1)[1].split(" and ")[0])
            keys = [k for k in keys if k > after]
        return [{"id": k} for k in keys][:limit]


def test_key_literals_are_escaped_and_the_walk_pages_after_a_quoted_key() -> None:
    from task_components import keyexpr

    assert keyexpr.pk_in("id", ['a"b', "c\\d", "é"], int_keys=False) == 'id in ["a\\"b", "c\\\\d", "é"]'
    assert keyexpr.pk_in("id", [keyexpr.INT64_MAX, -1], int_keys=True) == "id in [9223372036854775807, -1]"

    client = Pages(['a"b', "b", 'c"', "d"])
    got = [r["id"] for page in keyexpr.walk(client, "c", "id", False, 'id != "x"', ["id"], 1) for r in page]
    assert got == ['a"b', "b", 'c"', "d"]
    exprs = [f for f, _ in client.calls]
    assert exprs[1:3] == ['id != "x"', 'id > "a\\"b" and (id != "x")']  # pymilvus wrote id > "a"b"
    assert exprs[-1] == 'id > "d" and (id != "x")' and len(exprs) == 6


def test_the_walk_is_fenced_by_a_strong_count_and_stops_at_a_short_page() -> None:
    """Pages carrying pymilvus' iterator flag go with the collection's default consistency (Bounded):
    only a Strong count(*) before them makes rows written just before the walk visible."""
    from task_components import keyexpr

    client = Pages(list(range(5)))
    walk = keyexpr.walk(client, "c", "id", True, "", ["id"], 2)
    assert [r["id"] for page in walk for r in page] == [0, 1, 2, 3, 4] and walk.count == 5
    assert client.calls[0] == ("", "Strong")  # the count comes first, as a Strong query
    assert [f for f, _ in client.calls[1:]] == ["", "id > 1", "id > 3"]  # the short page [4] ends it
    empty = Pages([])
    assert list(keyexpr.walk(empty, "c", "id", True, "", ["id"], 2)) == [] and len(empty.calls) == 1


def test_the_lowest_int64_key_is_looked_up_and_walked_past() -> None:
    """-2**63 has no literal Milvus parses (``id > -9223372036854775808`` is refused)."""
    from task_components import keyexpr

    low = keyexpr.INT64_MIN
    assert keyexpr.pk_in("id", [low], True) == "id < -9223372036854775807"
    assert keyexpr.pk_in("id", [3, low], True) == "(id in [3] or id < -9223372036854775807)"
    client = Pages([low, low + 1, 7])
    walk = keyexpr.walk(client, "c", "id", True, "", ["id"], 1)
    assert [r["id"] for page in walk for r in page] == [low, low + 1, 7]
    assert [f for f, _ in client.calls][2] == "id >= -9223372036854775807"
    assert str(low) not in " ".join(f for f, _ in client.calls)


def test_a_note_is_shown_but_is_no_difference() -> None:
    result = Comparison("validate", "c", "shadow_c", compared=3)
    result.notes.append("key 9223372036854775807: present, fields not compared")
    assert result.ok and "note: key 9223372036854775807" in str(result)
    assert result.to_dict()["notes"] == result.notes
