"""``default_value``, ``force_all_default`` and ``force_all_null``: milvus-ingest's rules, checked up front.

milvus-ingest writes ``default_value`` into about 30% of the rows that are not null (the rows a real
client would have left the field out of), every row with ``force_all_default``, and nulls in every row
with ``force_all_null``. Milvus accepts a default only on scalar fields other than the primary key
(Bool, Int8..Int64, Float, Double, VarChar), of the field's own type and within its range/length, so a
schema that would be rejected at create_collection is rejected here, naming the field and the value.
"""

from __future__ import annotations

from typing import Any, Protocol

from task_components.schema.types import TYPES, Field, spec

__all__ = ["DEFAULT_SHARE", "check_default"]

DEFAULT_SHARE = 0.3  # milvus-ingest: share of non-null rows that take the default value


class Defaulted(Field, Protocol):
    """What the default/force rules read of a field (``models.FieldSchema``, which calls them, is one)."""

    @property
    def nullable(self) -> bool: ...
    @property
    def is_primary(self) -> bool: ...
    @property
    def default_value(self) -> Any: ...
    @property
    def force_all_default(self) -> bool: ...
    @property
    def force_all_null(self) -> bool: ...


def check_default(f: Defaulted) -> None:
    """ValueError for a default/force setting Milvus or milvus-ingest rejects (the model adds the field name).

    Whether a type takes a default, and which values, is its field-type table row's ``default`` rule.
    """
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
    rule = spec(f).default
    if rule is None:
        takes = ", ".join(k.value for k, row in TYPES.items() if row.default is not None)
        raise ValueError(f"{t} fields cannot have a default_value (Milvus supports it on {takes} only); remove it")
    rule(f, v)
    limits = spec(f).value_range
    if limits is not None and not limits[0] <= v <= limits[1]:
        lo, hi = limits
        if spec(f).family == "integer":
            raise ValueError(f"default_value {v} does not fit {t} ({lo}..{hi})")
        raise ValueError(f"default_value {v} does not fit {t}")
    if f.type.is_numeric:
        if f.min is not None and v < f.min:
            raise ValueError(f"default_value {v} is less than min ({f.min})")
        if f.max is not None and v > f.max:
            raise ValueError(f"default_value {v} is greater than max ({f.max})")
