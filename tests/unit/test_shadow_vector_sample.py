"""Sampled vector comparison, the vector-less shadow schema, the tracker's key listing (no services).

Why: ``sample_vector`` must compare the same dimensions on both sides and again on a rerun (seeded),
report a difference at its real dimension, and never sample bytes vectors; an ``ignore_vector`` table
is the schema minus its vectors; three-way validation needs the tracker's keys of one collection.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pytest

from task_components.schema import parse_schema
from task_components.shadow.diff import row_differences, sample_dims
from task_components.shadow.pgclient_data import milvus_filters
from task_components.shadow.sides import Shadow, without_vectors
from task_components.shadow.tracker import DELETED, EXISTS, KeyStateTracker

SCHEMA = parse_schema(
    {
        "collection_name": "sample_unit",
        "fields": [
            {"name": "id", "type": "Int64", "is_primary": True},
            {"name": "name", "type": "VarChar", "max_length": 16},
            {"name": "bits", "type": "BinaryVector", "dim": 64},
            {"name": "emb", "type": "FloatVector", "dim": 32},
        ],
    }
)
FIELDS = [f for f in SCHEMA.fields if not f.is_primary]


def test_sampled_dimensions_are_seeded_and_only_dense_numeric() -> None:
    dims = sample_dims(FIELDS, 4, seed=7)
    assert set(dims) == {"emb"} and len(dims["emb"]) == 4  # a binary vector is compared whole
    assert np.array_equal(dims["emb"], sample_dims(FIELDS, 4, seed=7)["emb"])
    assert sample_dims(FIELDS, None) == {} and sample_dims(FIELDS, 64) == {}  # not narrower than the vector
    with pytest.raises(ValueError, match="at least 1"):
        sample_dims(FIELDS, 0)


def test_only_sampled_dimensions_are_compared_and_the_real_index_is_named() -> None:
    dims = sample_dims(FIELDS, 4)
    emb = [f for f in FIELDS if f.name == "emb"]
    base = np.linspace(0, 1, 32, dtype=np.float32)
    outside = next(d for d in range(32) if d not in dims["emb"])
    inside = int(dims["emb"][2])
    m = {1: {"emb": base.tolist()}, 2: {"emb": base.tolist()}}
    p_off, p_on = base.copy(), base.copy()
    p_off[outside] += 1
    p_on[inside] += 1
    pg = {1: {"emb": p_off.tolist()}, 2: {"emb": p_on.tolist()}}
    found = row_differences(SCHEMA, emb, m, pg, samples=dims)
    assert [(d.key, d.field) for d in found] == [(2, "emb")]
    assert f"at index {inside} (of 4 sampled dimensions)" in found[0].detail
    assert len(row_differences(SCHEMA, emb, m, pg)) == 2  # unsampled: both found


def test_vectorless_schema_and_shadow_fields() -> None:
    scalars = without_vectors(SCHEMA)
    assert [f.name for f in scalars.fields] == ["id", "name"]
    shadow = Shadow("sample_unit", SCHEMA, "shadow_sample_unit", vectors=False)
    assert [f.name for f in shadow.fields()] == ["name"] and shadow.stored == scalars
    assert "bits, emb not compared" in shadow.skipped_vectors()
    assert Shadow("sample_unit", SCHEMA, "t").skipped_vectors() == ""


def test_tracker_lists_a_collections_existing_keys(tmp_path: Path) -> None:
    tracker = KeyStateTracker(tmp_path / "t")
    try:
        tracker.record([1, 2, 3], "insert", "a")
        tracker.record(["x"], "insert", "a")
        tracker.record([2], "delete", "a")
        tracker.record([9], "insert", "ab")  # a collection whose name extends "a": not a's keys
        assert sorted(tracker.keys("a"), key=str) == [1, 3, "x"]
        assert tracker.keys("a", DELETED) == [2] and tracker.keys("ab", EXISTS) == [9] and tracker.keys("none") == []
    finally:
        tracker.close()


def test_generated_filters_all_convert_and_escape_strings() -> None:
    sample = pd.DataFrame({"id": [3, 8], "name": ['o"k', "plain"]})
    exprs = milvus_filters(sample, SCHEMA)
    assert "id >= 3 and id <= 8" in exprs and "id % 2 == 0" in exprs
    assert 'name == "o\\"k"' in exprs and 'name like "pl%"' in exprs
