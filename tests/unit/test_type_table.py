"""The field-type table holds every per-type fact, and a row can travel to worker processes."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest

from task_components.generation.columns import generate_chunk
from task_components.schema.models import FieldType
from task_components.schema.types import TYPES, TypeSpec, register_type, spec, unregister_type
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
