"""One vectorized generator per field type (``TypeSpec.generate``): whole columns from numpy draws.

Why in the type table's package: a type's row holds its generator, so a new type brings its own and
the generation component (chunks, seeds, nulls, defaults, enum and cardinality draws, primary keys)
needs no change. A generator gets the field, its random stream, the row count and, when the field
has a cardinality setting, the distinct-value id of every row (equal ids must give equal values).
No Python code runs per row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from task_components.schema.types.convert import arrow_type
from task_components.schema.types.spec import Distinct, Field, FieldType, spec
from task_components.schema.types.text import infer_pattern, pick, text

__all__ = [
    "DEFAULT_INT_RANGE",
    "array",
    "bfloat16_vector",
    "binary_vector",
    "boolean",
    "fast_uniform",
    "float16_vector",
    "float_bounds",
    "float_vector",
    "int8_vector",
    "int_bounds",
    "json_column",
    "json_objects",
    "list_column",
    "number_column",
    "numbers",
    "sparse",
    "to_bfloat16_bytes",
    "varchar",
]

DEFAULT_INT_RANGE = (-1_000_000, 1_000_000)


def int_bounds(f: Field, etype: FieldType) -> tuple[int, int]:
    """The field's min/max, else the type's whole range when it is narrow (Int8, Int16), else +-1e6."""
    limits = spec(etype).value_range
    assert limits is not None, f"{etype} has no value range"
    lo, hi = int(limits[0]), int(limits[1])
    if f.min is not None or f.max is not None:
        return int(f.min if f.min is not None else lo), int(f.max if f.max is not None else hi)
    if DEFAULT_INT_RANGE[0] <= lo and hi <= DEFAULT_INT_RANGE[1]:
        return lo, hi
    return DEFAULT_INT_RANGE


def float_bounds(f: Field) -> tuple[float, float]:
    return (f.min if f.min is not None else 0.0, f.max if f.max is not None else 1.0)


def numbers(f: Field, etype: FieldType, rng: np.random.Generator, n: int, ids: np.ndarray | None) -> np.ndarray:
    """Integers or floats of ``etype`` (a field's own type, or an Array's element type) within the field's bounds."""
    dtype = spec(etype).numpy
    if etype.is_integer:
        lo, hi = int_bounds(f, etype)
        if ids is not None:
            k = int(ids.max(initial=0)) + 1
            span = hi - lo
            return (lo + (ids * span) // max(k - 1, 1)).astype(dtype) if k > 1 else np.full(n, lo, dtype)
        return rng.integers(lo, hi, n, dtype=np.int64, endpoint=True).astype(dtype)
    lo_f, hi_f = float_bounds(f)
    if ids is not None:
        k = int(ids.max(initial=0)) + 1
        return (lo_f + (ids + 0.5) * (hi_f - lo_f) / max(k, 1)).astype(dtype)
    if np.dtype(dtype) == np.float32:
        out = rng.random(n, dtype=np.float32) * np.float32(hi_f - lo_f) + np.float32(lo_f)
        return np.minimum(out, np.float32(hi_f))  # float32 rounding must not step past max
    return rng.uniform(lo_f, hi_f, n)


def number_column(f: Field, rng: np.random.Generator, n: int, distinct: Distinct | None) -> pa.Array:
    return pa.array(numbers(f, f.type, rng, n, distinct.ids if distinct else None), type=arrow_type(f))


def boolean(f: Field, rng: np.random.Generator, n: int, distinct: Distinct | None) -> pa.Array:
    return pa.array((distinct.ids % 2 == 1) if distinct is not None else rng.random(n) < 0.5)


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


def varchar(f: Field, rng: np.random.Generator, n: int, distinct: Distinct | None) -> pa.Array:
    assert f.max_length is not None
    ids = distinct.ids if distinct is not None else None
    count = distinct.cardinality if distinct is not None else 0
    if ids is not None and f.pattern is None and 36**f.max_length >= count > _fits_text(f.max_length):
        return pa.array(_base36(ids, f.max_length))  # short codes (country_code, max_length 2) keep every value
    keys = ids.astype(np.uint64) if ids is not None else rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    pattern = f.pattern or infer_pattern(f.name, f.max_length)
    strings = text(pattern, keys, prefix=f.name, min_length=f.min_length or 0)
    return pc.utf8_slice_codeunits(strings, 0, f.max_length)


def json_objects(rng: np.random.Generator, n: int) -> pa.Array:
    """Small realistic objects: ``{"id": 7, "score": 0.42, "category": "cloud", "active": true, "tags": [..]}``."""
    keys = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    as_str = lambda a: pc.cast(a, pa.string())  # noqa: E731
    ident = as_str(pa.array(rng.integers(0, 100_000, n)))
    score = as_str(pc.round(pa.array(rng.random(n)), 4))
    active = pc.if_else(pa.array(rng.random(n) < 0.5), "true", "false")
    w1, w2, cat = pick("WORDS", keys, 31), pick("WORDS", keys, 32), pick("WORDS", keys, 33)
    return pc.binary_join_element_wise(
        '{"id": ',
        ident,
        ', "score": ',
        score,
        ', "category": "',
        cat,
        '", "active": ',
        active,
        ', "tags": ["',
        w1,
        '", "',
        w2,
        '"]}',
        "",
    )


def json_column(f: Field, rng: np.random.Generator, n: int, distinct: Distinct | None) -> pa.Array:
    return json_objects(rng, n)


def list_column(values: pa.Array | np.ndarray, width: int, n: int) -> pa.Array:
    """``n`` rows of ``width`` values each, as an Arrow list column (no copy of the values)."""
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, values if isinstance(values, pa.Array) else pa.array(values))


def fast_uniform(rng: np.random.Generator, count: int) -> np.ndarray:
    """float32 in [-1, 1) straight from raw generator bits: about 3x numpy's own float32 draws."""
    raw = rng.bit_generator.random_raw((count + 1) // 2).view(np.uint32)[:count]
    out = ((raw >> np.uint32(9)) | np.uint32(0x40000000)).view(np.float32)  # [2, 4)
    out -= np.float32(3.0)
    return out


def _unit_floats(f: Field, rng: np.random.Generator, n: int) -> np.ndarray:
    dim = f.dim or 0
    if f.distribution == "uniform":
        x = fast_uniform(rng, n * dim).reshape(n, dim)
    else:
        x = rng.standard_normal((n, dim), dtype=np.float32)
    if f.normalize:
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        x *= (1.0 / np.maximum(norms, np.float32(1e-12)))[:, None]
    return x


def to_bfloat16_bytes(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 (round to nearest even) as raw little-endian bytes."""
    u = x.view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    return rounded.view(np.uint8)


def float_vector(f: Field, rng: np.random.Generator, n: int, distinct: Distinct | None = None) -> pa.Array:
    return list_column(_unit_floats(f, rng, n).ravel(), f.dim or 0, n)


def float16_vector(f: Field, rng: np.random.Generator, n: int, distinct: Distinct | None = None) -> pa.Array:
    return list_column(_unit_floats(f, rng, n).astype(np.float16).view(np.uint8).ravel(), (f.dim or 0) * 2, n)


def bfloat16_vector(f: Field, rng: np.random.Generator, n: int, distinct: Distinct | None = None) -> pa.Array:
    return list_column(to_bfloat16_bytes(_unit_floats(f, rng, n)).ravel(), (f.dim or 0) * 2, n)


def binary_vector(f: Field, rng: np.random.Generator, n: int, distinct: Distinct | None = None) -> pa.Array:
    width = (f.dim or 0) // 8
    return list_column(rng.integers(0, 256, n * width, dtype=np.uint8), width, n)


def int8_vector(f: Field, rng: np.random.Generator, n: int, distinct: Distinct | None = None) -> pa.Array:
    return list_column(rng.integers(-128, 128, n * (f.dim or 0), dtype=np.int8), f.dim or 0, n)


def sparse(f: Field, rng: np.random.Generator, n: int, distinct: Distinct | None = None) -> pa.Array:
    """JSON text ``{"12": 0.53, "407": 0.11}`` with strictly increasing indices below ``dim`` (default 30000)."""
    nnz, space = f.nnz or 16, f.dim or 30_000
    nnz = min(nnz, space)
    steps = rng.integers(1, max(space // nnz, 1), (n, nnz), endpoint=True)
    indices = np.cumsum(steps, axis=1) - 1
    values = np.round(rng.random((n, nnz)) * 0.98 + 0.01, 4)  # in [0.01, 0.99]: never prints as an int
    pairs = pc.binary_join_element_wise(
        '"', pc.cast(pa.array(indices.ravel()), pa.string()), '": ', pc.cast(pa.array(values.ravel()), pa.string()), ""
    )
    return pc.binary_join_element_wise("{", pc.binary_join(list_column(pairs, nnz, n), ", "), "}", "")


def array(f: Field, rng: np.random.Generator, n: int, distinct: Distinct | None = None) -> pa.Array:
    """Ragged lists of the element type: booleans, words, or numbers within the field's min/max."""
    assert f.element_type is not None and f.max_capacity is not None
    et = f.element_type
    family = spec(et).family
    lengths = rng.integers(0, f.max_capacity, n, endpoint=True)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    if family == "bool":
        values: pa.Array = pa.array(rng.random(total) < 0.5)
    elif family == "text":
        keys = rng.integers(0, 2**63, total, dtype=np.int64).astype(np.uint64)
        values = pc.utf8_slice_codeunits(text(f.pattern or "word", keys, prefix=f.name), 0, f.max_length or 64)
    elif family in ("integer", "float"):
        values = pa.array(numbers(f, et, rng, total, None), type=arrow_type(f).value_type)
    else:
        raise ValueError(f"field {f.name!r}: no Array generator for element type {et.value}")
    return pa.ListArray.from_arrays(pa.array(offsets), values)
