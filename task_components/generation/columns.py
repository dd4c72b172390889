"""One vectorized generator per Milvus field type, and the chunk function workers run.

``generate_chunk(schema_json, seed, index, start, rows, total_rows)`` is a pure function of its
arguments: each field draws from its own stream seeded by ``(seed, chunk index, field position)``,
so a chunk is byte-identical whichever worker makes it and however many workers there are. Primary
keys are ``start + arange(rows)``: unique across chunks without coordination.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from task_components.generation.text import infer_pattern, pick, text
from task_components.schema.arrow import arrow_schema, arrow_type
from task_components.schema.defaults import DEFAULT_SHARE
from task_components.schema.models import (
    INT_RANGES,
    CollectionSchema,
    DynamicFieldSchema,
    FieldSchema,
    FieldType,
)

_NUMPY = {
    FieldType.INT8: np.int8,
    FieldType.INT16: np.int16,
    FieldType.INT32: np.int32,
    FieldType.INT64: np.int64,
    FieldType.FLOAT: np.float32,
    FieldType.DOUBLE: np.float64,
}
DEFAULT_INT_RANGE = (-1_000_000, 1_000_000)


def int_bounds(f: FieldSchema, etype: FieldType) -> tuple[int, int]:
    if f.min is not None or f.max is not None:
        lo, hi = INT_RANGES[etype]
        return int(f.min if f.min is not None else lo), int(f.max if f.max is not None else hi)
    if etype in (FieldType.INT8, FieldType.INT16):
        return INT_RANGES[etype]
    return DEFAULT_INT_RANGE


def float_bounds(f: FieldSchema) -> tuple[float, float]:
    return (f.min if f.min is not None else 0.0, f.max if f.max is not None else 1.0)


def _numbers(f: FieldSchema, etype: FieldType, rng: np.random.Generator, n: int, ids: np.ndarray | None) -> np.ndarray:
    if etype.is_integer:
        lo, hi = int_bounds(f, etype)
        if ids is not None:
            k = int(ids.max(initial=0)) + 1
            span = hi - lo
            return (
                (lo + (ids * span) // max(k - 1, 1)).astype(_NUMPY[etype]) if k > 1 else np.full(n, lo, _NUMPY[etype])
            )
        return rng.integers(lo, hi, n, dtype=np.int64, endpoint=True).astype(_NUMPY[etype])
    lo_f, hi_f = float_bounds(f)
    if ids is not None:
        k = int(ids.max(initial=0)) + 1
        return (lo_f + (ids + 0.5) * (hi_f - lo_f) / max(k, 1)).astype(_NUMPY[etype])
    if etype is FieldType.FLOAT:
        out = rng.random(n, dtype=np.float32) * np.float32(hi_f - lo_f) + np.float32(lo_f)
        return np.minimum(out, np.float32(hi_f))  # float32 rounding must not step past max
    return rng.uniform(lo_f, hi_f, n)


def _scalar(f: FieldSchema, rng: np.random.Generator, n: int, total_rows: int) -> pa.Array:
    t, typ = f.type, arrow_type(f)
    if f.enum_values is not None:
        idx = rng.integers(0, len(f.enum_values), n)
        return pa.array(f.enum_values).cast(typ).take(pa.array(idx))
    distinct = f.distinct_values(total_rows)
    ids = rng.integers(0, distinct, n) if distinct is not None else None
    if t is FieldType.BOOL:
        return pa.array((ids % 2 == 1) if ids is not None else rng.random(n) < 0.5)
    if t.is_numeric:
        return pa.array(_numbers(f, t, rng, n, ids), type=typ)
    if t is FieldType.VARCHAR:
        assert f.max_length is not None
        if ids is not None and f.pattern is None and 36**f.max_length >= (distinct or 0) > _fits_text(f.max_length):
            return pa.array(_base36(ids, f.max_length))  # short codes (country_code, max_length 2) keep every value
        keys = ids.astype(np.uint64) if ids is not None else rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
        pattern = f.pattern or infer_pattern(f.name, f.max_length)
        strings = text(pattern, keys, prefix=f.name, min_length=f.min_length or 0)
        return pc.utf8_slice_codeunits(strings, 0, f.max_length)
    if t is FieldType.JSON:
        return _json_objects(rng, n)
    raise AssertionError(f"not a scalar: {t}")


_BASE36 = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


def _fits_text(max_length: int) -> int:
    """About how many distinct texts survive truncation to ``max_length`` (words start with few letters)."""
    return 26 ** min(max_length, 4) if max_length >= 6 else 10 * max_length


def _base36(ids: np.ndarray, max_length: int) -> np.ndarray:
    """Distinct ids as fixed-width base-36 codes ("00", "0A", ...): as many values as asked, within max_length."""
    width = 1
    while 36**width <= int(ids.max(initial=0)) and width < max_length:
        width += 1
    out = _BASE36[ids % 36]
    for k in range(1, width):
        out = np.char.add(_BASE36[(ids // 36**k) % 36], out)
    return out


def _json_objects(rng: np.random.Generator, n: int) -> pa.Array:
    """Small realistic objects: ``{"id": 7, "score": 0.42, "category": "cloud", "active": true, "tags": [..]}``."""
    keys = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    as_str = lambda a: pc.cast(a, pa.string())  # noqa: E731
    ident = as_str(pa.array(rng.integers(0, 100_000, n)))
    score = as_str(pc.round(pa.array(rng.random(n)), 4))
    active = pc.if_else(pa.array(rng.random(n) < 0.5), "true", "false")
    w1, w2, cat = pick("WORDS", keys, 31), pick("WORDS", keys, 32), pick("WORDS", keys, 33)
    return pc.binary_join_element_wise(
        '{"id": ', ident, ', "score": ', score, ', "category": "', cat, '", "active": ', active,
        ', "tags": ["', w1, '", "', w2, '"]}', "",
    )  # fmt: skip


def _list(values: pa.Array | np.ndarray, width: int, n: int) -> pa.Array:
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, values if isinstance(values, pa.Array) else pa.array(values))


def fast_uniform(rng: np.random.Generator, count: int) -> np.ndarray:
    """float32 in [-1, 1) straight from raw generator bits: about 3x numpy's own float32 draws."""
    raw = rng.bit_generator.random_raw((count + 1) // 2).view(np.uint32)[:count]
    out = ((raw >> np.uint32(9)) | np.uint32(0x40000000)).view(np.float32)  # [2, 4)
    out -= np.float32(3.0)
    return out


def _unit_floats(
    rng: np.random.Generator, n: int, dim: int, normalize: bool, distribution: str = "normal"
) -> np.ndarray:
    if distribution == "uniform":
        x = fast_uniform(rng, n * dim).reshape(n, dim)
    else:
        x = rng.standard_normal((n, dim), dtype=np.float32)
    if normalize:
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        x *= (1.0 / np.maximum(norms, np.float32(1e-12)))[:, None]
    return x


def to_bfloat16_bytes(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 (round to nearest even) as raw little-endian bytes."""
    u = x.view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    return rounded.view(np.uint8)


def _floats(f: FieldSchema, rng: np.random.Generator, n: int) -> np.ndarray:
    return _unit_floats(rng, n, f.dim or 0, f.normalize, f.distribution)


# how each vector type is synthesized, as (values, list width) for n rows
_VECTORS: dict[FieldType, Callable[[FieldSchema, np.random.Generator, int], tuple[Any, int]]] = {
    FieldType.FLOAT_VECTOR: lambda f, rng, n: (_floats(f, rng, n).ravel(), f.dim or 0),
    FieldType.FLOAT16_VECTOR: lambda f, rng, n: (
        _floats(f, rng, n).astype(np.float16).view(np.uint8).ravel(), (f.dim or 0) * 2),
    FieldType.BFLOAT16_VECTOR: lambda f, rng, n: (to_bfloat16_bytes(_floats(f, rng, n)).ravel(), (f.dim or 0) * 2),
    FieldType.BINARY_VECTOR: lambda f, rng, n: (rng.integers(0, 256, n * (f.dim or 0) // 8, dtype=np.uint8),
                                                (f.dim or 0) // 8),
    FieldType.INT8_VECTOR: lambda f, rng, n: (rng.integers(-128, 128, n * (f.dim or 0), dtype=np.int8), f.dim or 0),
}  # fmt: skip


def _vector(f: FieldSchema, rng: np.random.Generator, n: int) -> pa.Array:
    if f.type is FieldType.SPARSE_FLOAT_VECTOR:
        return _sparse(f, rng, n)
    try:
        make = _VECTORS[f.type]
    except KeyError:
        raise AssertionError(f"not a vector: {f.type}") from None
    values, width = make(f, rng, n)
    return _list(values, width, n)


def _sparse(f: FieldSchema, rng: np.random.Generator, n: int) -> pa.Array:
    """JSON text ``{"12": 0.53, "407": 0.11}`` with strictly increasing indices below ``dim`` (default 30000)."""
    nnz, space = f.nnz or 16, f.dim or 30_000
    nnz = min(nnz, space)
    steps = rng.integers(1, max(space // nnz, 1), (n, nnz), endpoint=True)
    indices = np.cumsum(steps, axis=1) - 1
    values = np.round(rng.random((n, nnz)) * 0.98 + 0.01, 4)  # in [0.01, 0.99]: never prints as an int
    pairs = pc.binary_join_element_wise(
        '"', pc.cast(pa.array(indices.ravel()), pa.string()), '": ', pc.cast(pa.array(values.ravel()), pa.string()), ""
    )
    return pc.binary_join_element_wise("{", pc.binary_join(_list(pairs, nnz, n), ", "), "}", "")


def _array(f: FieldSchema, rng: np.random.Generator, n: int) -> pa.Array:
    assert f.element_type is not None and f.max_capacity is not None
    et = f.element_type
    lengths = rng.integers(0, f.max_capacity, n, endpoint=True)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    if et is FieldType.BOOL:
        values: pa.Array = pa.array(rng.random(total) < 0.5)
    elif et is FieldType.VARCHAR:
        keys = rng.integers(0, 2**63, total, dtype=np.int64).astype(np.uint64)
        values = pc.utf8_slice_codeunits(text(f.pattern or "word", keys, prefix=f.name), 0, f.max_length or 64)
    else:
        values = pa.array(_numbers(f, et, rng, total, None), type=arrow_type(f).value_type)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


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
            value = _json_objects(rng, n)
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
    if f.type is FieldType.INT64:
        return pa.array(ids)
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
    if f.type.is_vector:
        arr = _vector(f, rng, n)
    elif f.type is FieldType.ARRAY:
        arr = _array(f, rng, n)
    else:
        arr = _scalar(f, rng, n, total_rows)
    arr = _with_nulls(arr, f.effective_null_ratio, rng)
    return arr if f.default_value is None else _with_default(arr, f, rng)


@lru_cache(maxsize=8)
def _parsed(schema_json: str) -> tuple[CollectionSchema, pa.Schema]:
    schema = CollectionSchema.model_validate_json(schema_json)
    return schema, arrow_schema(schema)


def generate_chunk(schema_json: str, seed: int, index: int, start: int, rows: int, total_rows: int) -> pa.RecordBatch:
    schema, arrow = _parsed(schema_json)
    positions = {f.name: i for i, f in enumerate(schema.fields)}
    columns = [
        generate_column(f, field_rng(seed, index, positions[f.name]), rows, start, total_rows)
        for f in schema.data_fields()
    ]
    if schema.enable_dynamic_field:
        columns.append(_dynamic(schema.dynamic_fields, field_rng(seed, index, len(schema.fields)), rows))
    return pa.RecordBatch.from_arrays(columns, schema=arrow)
