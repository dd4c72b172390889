"""Canonical bytes of field values, one encoder per field type (``TypeSpec.canonical``).

The format (tag byte, integer/float/text/JSON/sparse/array/vector rules, the row hash over them) is
described in ``verification/canonical.py``, which hashes rows with these encoders; they live here so
that each type's row in the field-type table holds its own encoder and a new type brings one along.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from task_components.schema.types.convert import value_matrix
from task_components.schema.types.spec import Field, spec

__all__ = [
    "NULL",
    "VALUE",
    "array_bytes",
    "bool_bytes",
    "dense_bytes",
    "dense_rows",
    "double_bytes",
    "float_bytes",
    "int_bytes",
    "json_bytes",
    "sparse_bytes",
    "text_bytes",
]

NULL = b"\x00"
VALUE = b"\x01"
_NAN32 = struct.pack("<f", float("nan"))
_NAN64 = struct.pack("<d", float("nan"))


def _json(v: Any, text: bool) -> Any:
    return json.loads(v) if text or isinstance(v, bytes | bytearray) else v


def int_bytes(f: Field, values: list[Any], text: bool) -> list[bytes]:
    return [VALUE + int(v).to_bytes(8, "little", signed=True) for v in values]


def bool_bytes(f: Field, values: list[Any], text: bool) -> list[bytes]:
    return [VALUE + (b"\x01" if v else b"\x00") for v in values]


def _floats(dtype: str, nan: bytes) -> Callable[[list[Any]], list[bytes]]:
    def encode(values: list[Any]) -> list[bytes]:
        a = np.asarray(values, dtype=dtype)
        a = np.where(a == 0, np.zeros((), dtype), a)  # -0.0 -> 0.0
        out = [VALUE + b for b in _split(a.tobytes(), a.dtype.itemsize)]
        for i in np.flatnonzero(np.isnan(a)):
            out[i] = VALUE + nan
        return out

    return encode


def _split(buf: bytes, width: int) -> list[bytes]:
    return [buf[i : i + width] for i in range(0, len(buf), width)]


_f32, _f64 = _floats("<f4", _NAN32), _floats("<f8", _NAN64)


def float_bytes(f: Field, values: list[Any], text: bool) -> list[bytes]:
    return _f32(values)


def double_bytes(f: Field, values: list[Any], text: bool) -> list[bytes]:
    return _f64(values)


def text_bytes(f: Field, values: list[Any], text: bool) -> list[bytes]:
    return [VALUE + str(v).encode() for v in values]


def json_bytes(f: Field, values: list[Any], text: bool) -> list[bytes]:
    dump = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode
    return [VALUE + dump(_json(v, text)).encode() for v in values]


def sparse_bytes(f: Field, values: list[Any], text: bool) -> list[bytes]:
    out = []
    for v in values:
        pairs = sorted((int(k), float(x)) for k, x in _json(v, text).items())
        idx = np.array([k for k, _ in pairs], "<u4")
        val = np.array([x for _, x in pairs], "<f4")
        val[val == 0] = 0
        out.append(VALUE + len(pairs).to_bytes(4, "little") + np.rec.fromarrays([idx, val]).tobytes())
    return out


def array_bytes(f: Field, values: list[Any], text: bool) -> list[bytes]:
    """Each element through its scalar encoder (tag dropped); text elements length-prefixed."""
    assert f.element_type is not None
    elem = spec(f.element_type)
    assert elem.canonical is not None, f"Array element {f.element_type} has no canonical encoding"
    encode, is_text = elem.canonical, elem.family == "text"
    out = []
    for v in values:
        items = encode(f, list(v), text)
        parts = [len(items).to_bytes(4, "little")]
        for b in items:
            parts.append(len(b).to_bytes(4, "little") + b[1:] if is_text else b[1:])
        out.append(VALUE + b"".join(parts))
    return out


def dense_rows(f: Field, m: np.ndarray) -> list[bytes]:
    """An (n, width) matrix of one dense-vector field as each row's canonical bytes."""
    if spec(f).storage == "vector":
        m = np.ascontiguousarray(m, dtype=np.dtype(spec(f).numpy).newbyteorder("<"))
        if m.dtype.kind == "f":
            m = np.where(m == 0, np.zeros((), m.dtype), m)  # -0.0 -> 0.0
    else:
        m = np.ascontiguousarray(m).view(np.uint8).reshape(len(m), -1)
    width = m.shape[1] * m.dtype.itemsize
    return [VALUE + b for b in _split(m.tobytes(), width)] if width else [VALUE] * len(m)


def dense_bytes(f: Field, values: list[Any], text: bool) -> list[bytes]:
    try:
        return dense_rows(f, value_matrix(values, f))
    except ValueError:  # rows of different lengths (a corrupted store): each row on its own, still comparable
        return [dense_rows(f, value_matrix([v], f))[0] for v in values]
