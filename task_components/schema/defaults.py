"""``default_value``, ``force_all_default`` and ``force_all_null``: milvus-ingest's rules, checked up front.

milvus-ingest writes ``default_value`` into about 30% of the rows that are not null (the rows a real
client would have left the field out of), every row with ``force_all_default``, and nulls in every row
with ``force_all_null``. Milvus accepts a default only on scalar fields other than the primary key
(Bool, Int8..Int64, Float, Double, VarChar), of the field's own type and within its range/length, so a
schema that would be rejected at create_collection is rejected here, naming the field and the value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from task_components.schema.models import FieldSchema

__all__ = ["DEFAULT_SHARE", "check_default"]

DEFAULT_SHARE = 0.3  # milvus-ingest: share of non-null rows that take the default value

_DEFAULTABLE = {"Bool", "Int8", "Int16", "Int32", "Int64", "Float", "Double", "VarChar"}
_FLOAT32_MAX = 3.4028234663852886e38


def _kind(value: Any) -> str:
    return type(value).__name__


def check_default(f: FieldSchema) -> None:
    """ValueError for a default/force setting Milvus or milvus-ingest rejects (the model adds the field name)."""
    from task_components.schema.models import INT_RANGES

    t = f.type.value
    if f.force_all_default and f.force_all_null:
        raise ValueError("force_all_default and force_all_null exclude each other; keep one")
    if f.force_all_null and not f.nullable:
        raise ValueError('force_all_null needs "nullable": true (Milvus rejects nulls in a non-nullable field)')
    if f.force_all_default and f.default_value is None:
        raise ValueError('force_all_default needs a default_value, e.g. "default_value": 0')
    if (f.force_all_default or f.force_all_null) and f.is_primary:
        raise ValueError("a primary key cannot be forced to a default or to null")
    v = f.default_value
    if v is None:
        return
    if f.is_primary:
        raise ValueError("a primary key cannot have a default_value (Milvus rejects it); remove it or use auto_id")
    if t not in _DEFAULTABLE:
        raise ValueError(
            f"{t} fields cannot have a default_value (Milvus supports it on Bool, Int8-Int64, Float, Double "
            "and VarChar only); remove it"
        )
    if t == "Bool" and not isinstance(v, bool):
        raise ValueError(f"default_value of a Bool field must be true or false, got {_kind(v)} {v!r}")
    if f.type.is_integer:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"default_value of an {t} field must be an integer, got {_kind(v)} {v!r}")
        lo, hi = INT_RANGES[f.type]
        if not lo <= v <= hi:
            raise ValueError(f"default_value {v} does not fit {t} ({lo}..{hi})")
    if t in ("Float", "Double"):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError(f"default_value of a {t} field must be a number, got {_kind(v)} {v!r}")
        if t == "Float" and abs(v) > _FLOAT32_MAX:
            raise ValueError(f"default_value {v} does not fit Float (32-bit)")
    if t == "VarChar":
        if not isinstance(v, str):
            raise ValueError(f"default_value of a VarChar field must be a string, got {_kind(v)} {v!r}")
        if f.max_length is not None and len(v) > f.max_length:
            raise ValueError(f"default_value {v!r} is {len(v)} characters, longer than max_length {f.max_length}")
    if f.type.is_numeric:
        if f.min is not None and v < f.min:
            raise ValueError(f"default_value {v} is less than min ({f.min})")
        if f.max is not None and v > f.max:
            raise ValueError(f"default_value {v} is greater than max ({f.max})")
