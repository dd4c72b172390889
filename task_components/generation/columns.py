"""The chunk function workers run: each field's column from its type's generator, plus nulls and defaults.

Each type's generator is in its field-type table row (``TypeSpec.generate``, the builtin ones in
``schema/types/generate.py``); here are the parts every type shares: enum and cardinality draws, nulls,
default values, primary keys and the dynamic ``$meta`` column.

``generate_chunk(schema_json, seed, index, start, rows, total_rows)`` is a pure function of its
arguments: each field draws from its own stream seeded by ``(seed, chunk index, field position)``,
so a chunk is byte-identical whichever worker makes it and however many workers there are. Primary
keys are ``start + arange(rows)``: unique across chunks without coordination.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from task_components.schema.arrow import arrow_schema, arrow_type
from task_components.schema.defaults import DEFAULT_SHARE
from task_components.schema.models import CollectionSchema, DynamicFieldSchema, FieldSchema
from task_components.schema.types import Distinct, spec
from task_components.schema.types.generate import json_objects, to_bfloat16_bytes
from task_components.schema.types.spec import install_plugins, pack_plugins
from task_components.schema.types.text import text

__all__ = ["field_rng", "generate_chunk", "generate_column", "primary_keys", "to_bfloat16_bytes"]


def _values(f: FieldSchema, rng: np.random.Generator, n: int, total_rows: int) -> pa.Array:
    """The field's column from its type's generator, after the draws every scalar type shares.

    ``enum_values`` pick from the list whatever the type; a cardinality setting draws each row's value id
    and hands it to the generator, which makes equal ids equal values.
    """
    s = spec(f)
    if s.generate is None:
        raise ValueError(f"field {f.name!r}: type {f.type.value} has no generator in the field-type table")
    distinct = None
    if s.has_values:
        if f.enum_values is not None:
            idx = rng.integers(0, len(f.enum_values), n)
            return pa.array(f.enum_values).cast(arrow_type(f)).take(pa.array(idx))
        count = f.distinct_values(total_rows)
        distinct = Distinct(rng.integers(0, count, n), count) if count is not None else None
    return s.generate(f, rng, n, distinct)


def _with_nulls(arr: pa.Array, ratio: float, rng: np.random.Generator) -> pa.Array:
    if ratio <= 0:
        return arr
    present = pa.array(rng.random(len(arr)) >= ratio)
    return pc.if_else(present, arr, pa.nulls(len(arr), arr.type))


def _with_default(arr: pa.Array, f: FieldSchema, rng: np.random.Generator) -> pa.Array:
    """About 30% of the non-null rows take default_value, as milvus-ingest writes them."""
    take = pa.array(rng.random(len(arr)) < DEFAULT_SHARE)
    return pc.if_else(pc.and_(take, pc.is_valid(arr)), pa.scalar(f.default_value, arr.type), arr)


def _dynamic(fields: list[DynamicFieldSchema], rng: np.random.Generator, n: int) -> pa.Array:
    """The ``$meta`` column: a JSON object per row holding each dynamic key with its probability."""
    fragments = []
    for d in fields:
        if d.values:
            choices = pa.array([json.dumps(v) for v in d.values])
            value = choices.take(pa.array(rng.integers(0, len(d.values), n)))
        elif d.type == "Int":
            lo, hi = int(d.min_value or 0), int(d.max_value if d.max_value is not None else 1000)
            value = pc.cast(pa.array(rng.integers(lo, hi, n, endpoint=True)), pa.string())
        elif d.type == "Float":
            lo_f, hi_f = d.min_value or 0.0, d.max_value if d.max_value is not None else 1.0
            value = pc.cast(pc.round(pa.array(rng.uniform(lo_f, hi_f, n)), 4), pa.string())
        elif d.type == "Bool":
            value = pc.if_else(pa.array(rng.random(n) < 0.5), "true", "false")
        elif d.type == "Array":
            lengths = rng.integers(d.array_min_length or 0, d.array_max_length or 5, n, endpoint=True)
            offsets = np.zeros(n + 1, dtype=np.int32)
            np.cumsum(lengths, out=offsets[1:])
            items = pc.cast(pa.array(rng.integers(0, 100, int(offsets[-1]))), pa.string())
            joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), items), ", ")
            value = pc.binary_join_element_wise("[", joined, "]", "")
        elif d.type == "JSON":
            value = json_objects(rng, n)
        else:
            keys = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
            value = pc.binary_join_element_wise('"', text("words", keys), '"', "")
        fragment = pc.binary_join_element_wise(f', "{d.name}": ', value, "")
        present = pa.array(rng.random(n) < d.probability)
        fragments.append(pc.if_else(present, fragment, ""))
    if not fragments:
        return pa.array(["{}"] * n)
    # (binary_join_element_wise with null_handling="skip" drops all-null rows in pyarrow 26: avoid it)
    inner = pc.utf8_ltrim(pc.binary_join_element_wise(*fragments, ""), characters=", ")
    return pc.binary_join_element_wise("{", inner, "}", "")


def primary_keys(f: FieldSchema, start: int, n: int) -> pa.Array:
    ids = np.arange(start, start + n, dtype=np.int64)
    if spec(f).family == "integer":
        return pa.array(ids, arrow_type(f))
    digits = pc.utf8_lpad(pc.cast(pa.array(ids), pa.string()), width=12, padding="0")
    return pc.utf8_slice_codeunits(pc.binary_join_element_wise(f.name, "-", digits, ""), 0, f.max_length or 64)


def field_rng(seed: int, chunk: int, position: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, chunk, position])))


def generate_column(f: FieldSchema, rng: np.random.Generator, n: int, start: int, total_rows: int) -> pa.Array:
    if f.is_primary:
        return primary_keys(f, start, n)
    if f.force_all_null:
        return pa.nulls(n, arrow_type(f))
    if f.force_all_default:
        return pa.array([f.default_value] * n, arrow_type(f))
    arr = _values(f, rng, n, total_rows)
    arr = _with_nulls(arr, f.effective_null_ratio, rng)
    return arr if f.default_value is None else _with_default(arr, f, rng)


@lru_cache(maxsize=8)
def _parsed(schema_json: str) -> tuple[CollectionSchema, pa.Schema]:
    schema = CollectionSchema.model_validate_json(schema_json)
    return schema, arrow_schema(schema)


def _generate_chunk(schema_json: str, seed: int, index: int, start: int, rows: int, total_rows: int) -> pa.RecordBatch:
    schema, arrow = _parsed(schema_json)
    positions = {f.name: i for i, f in enumerate(schema.fields)}
    columns = [generate_column(f, field_rng(seed, index, positions[f.name]), rows, start, total_rows) for f in schema.data_fields()]
    if schema.enable_dynamic_field:
        columns.append(_dynamic(schema.dynamic_fields, field_rng(seed, index, len(schema.fields)), rows))
    return pa.RecordBatch.from_arrays(columns, schema=arrow)


class _ChunkFunction:
    """``generate_chunk`` as jobs carry it: pickled with this process's rows of the field-type table that a
    fresh process lacks (a plugin's type, a builtin type's replaced row: ``spec.plugin_types``).

    Why: workers fork from a forkserver that never ran the parent's ``register_type``; unpickling the
    function there makes the worker's table the parent's first, so a type added (or a builtin row
    replaced) by one call generates the same data in every worker as in the parent.
    """

    def __call__(self, schema_json: str, seed: int, index: int, start: int, rows: int, total_rows: int) -> pa.RecordBatch:
        return _generate_chunk(schema_json, seed, index, start, rows, total_rows)

    def __reduce__(self) -> tuple[Any, ...]:
        return _with_plugins, pack_plugins()  # even empty: a reused worker may hold an earlier job's rows


def _with_plugins(names: tuple[str, ...], rows: bytes) -> _ChunkFunction:
    install_plugins(names, rows)
    return generate_chunk


generate_chunk = _ChunkFunction()
