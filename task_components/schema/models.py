"""Collection schema models: fields of any type in the field-type table, plus the value controls that drive generation.

The format is milvus-ingest's schema JSON/YAML, read as-is (``"type": "FloatVector"``, ``is_primary`` or
``is_primary_key``, ``cardinality_ratio``, ``enum_values``, ``default_value``, ``force_all_default``,
``force_all_null``, ``dynamic_fields``, ``functions``...), extended with our own controls
(``pattern``, ``null_ratio``, ``nnz``, ``min_length``, ``is_clustering_key``, ``num_shards``) and the
INT8_VECTOR type. Type names are matched loosely (``FloatVector``, ``FLOAT_VECTOR``, ``float_vector``)
because users copy them from pymilvus, from milvus-ingest and from Milvus docs. Every validation error
names the field and says how to fix it. What a type allows (dim, max_length, keys, ranges, defaults,
Array elements) is read from its row in the field-type table (``schema/types``), so a registered type is
validated like a builtin one.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from task_components.schema.defaults import check_default
from task_components.schema.functions import FunctionSchema, check_functions
from task_components.schema.types import TYPES, FieldType, TypeSpec

__all__ = ["PATTERNS", "CollectionSchema", "DynamicFieldSchema", "FieldSchema", "FieldType", "SchemaError"]


class SchemaError(ValueError):
    """A schema that cannot be generated or created; the message names the field and the fix."""


PATTERNS = (
    "word",
    "words",
    "sentence",
    "paragraph",
    "name",
    "first_name",
    "last_name",
    "email",
    "address",
    "city",
    "country",
    "url",
    "phone",
    "uuid",
    "id",
    "title",
    "category",
)


def identifier(what: str, v: str) -> str:
    """Milvus names: letters, digits and underscores, not starting with a digit."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
        raise ValueError(f"{what} {v!r} must be letters, digits and underscores, not starting with a digit")
    return v


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FieldSchema(_Base):
    name: str = Field(min_length=1, max_length=255)
    type: FieldType
    description: str = ""
    is_primary: bool = False
    auto_id: bool = False
    is_partition_key: bool = False
    is_clustering_key: bool = False
    nullable: bool = False
    null_ratio: float | None = Field(None, ge=0, le=1, description="share of nulls when nullable (default 0.1)")
    default_value: Any = Field(None, description="written to ~30% of non-null rows (all with force_all_default)")
    force_all_default: bool = Field(False, description="every row takes default_value (milvus-ingest)")
    force_all_null: bool = Field(False, description="every row is null; needs nullable (milvus-ingest)")
    min: float | None = None
    max: float | None = None
    max_length: int | None = Field(None, ge=1, le=65535)
    min_length: int | None = Field(None, ge=0, le=65535)
    pattern: str | None = Field(None, description=f"text pattern for VarChar: {', '.join(PATTERNS)}")
    dim: int | None = Field(None, ge=1, le=32768)
    nnz: int | None = Field(None, ge=1, description="non-zeros per sparse vector (default 16)")
    normalize: bool = True
    distribution: Literal["normal", "uniform"] = Field(
        "normal", description="vector components: Gaussian (like milvus-ingest) or uniform (about 2x faster)"
    )
    element_type: FieldType | None = None
    max_capacity: int | None = Field(None, ge=1, le=4096)
    cardinality_ratio: float | None = Field(None, ge=0, le=1, description="distinct values / total rows")
    cardinality: int | None = Field(None, ge=1, description="exact number of distinct values")
    enum_values: list[Any] | None = Field(None, alias="choices", min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _synonyms(cls, raw: Any) -> Any:
        """milvus-ingest reads ``is_primary_key`` as ``is_primary``; both given must agree."""
        if isinstance(raw, dict) and "is_primary_key" in raw:
            raw = dict(raw)
            alias = raw.pop("is_primary_key")
            if "is_primary" in raw and bool(raw["is_primary"]) != bool(alias):
                raise ValueError(
                    f"field {raw.get('name')!r}: is_primary ({raw['is_primary']}) and its synonym is_primary_key "
                    f"({alias}) disagree; keep one"
                )
            raw["is_primary"] = alias
        return raw

    @field_validator("type", "element_type", mode="before")
    @classmethod
    def _parse_type(cls, v: Any) -> Any:
        return None if v is None else FieldType.parse(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return identifier("field name", v)

    @model_validator(mode="after")
    def _check(self) -> FieldSchema:
        """The rules Milvus applies at create_collection, each read from the field-type table."""
        fail = self._fail
        t = self.type
        s = TYPES.get(t)
        if s is None:  # a name extended but never registered: nothing is known to check
            return self
        if s.family == "vector" and self.dim is None:
            fail(f'{t.value} needs dim, e.g. "dim": 768')
        if s.dim_multiple > 1 and self.dim is not None and self.dim % s.dim_multiple:
            m = s.dim_multiple
            fail(f"{t.value} dim must be a multiple of {m}, got {self.dim} (try {self.dim + m - self.dim % m})")
        if s.family == "text" and self.max_length is None:
            fail(f'{t.value} needs max_length, e.g. "max_length": 256')
        if s.family == "array":
            self._check_array()
        keys = " or ".join(k.value for k, row in TYPES.items() if row.key)
        if self.is_primary:
            if not s.key:
                fail(f"a primary key must be {keys}, not {t.value}")
            if self.nullable:
                fail('a primary key cannot be nullable; remove "nullable"')
            if self.auto_id and s.family != "integer":
                fail("auto_id needs an Int64 primary key")
        elif self.auto_id:
            fail('auto_id is only for the primary key; set "is_primary": true or remove "auto_id"')
        self._check_range(s)
        if self.pattern is not None and self.pattern not in PATTERNS:
            fail(f"unknown pattern {self.pattern!r}; use one of: {', '.join(PATTERNS)}")
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            fail(f"min_length ({self.min_length}) is greater than max_length ({self.max_length})")
        if self.is_partition_key and not s.key:
            fail(f"a partition key must be {keys}, not {t.value}")
        if self.enum_values is not None and not s.has_values:
            fail(f"enum_values apply to scalar fields, not {t.value}")
        if self.is_primary and (self.enum_values or self.cardinality_ratio is not None or self.cardinality):
            fail("a primary key is unique: remove enum_values/cardinality settings")
        if (self.cardinality_ratio is not None or self.cardinality) and not s.has_values:
            fail(f"cardinality_ratio/cardinality apply to scalar fields, not {t.value}")
        try:
            check_default(self)
        except ValueError as exc:
            fail(str(exc))
        return self

    def _check_array(self) -> None:
        fail = self._fail
        if self.element_type is None or self.max_capacity is None:
            fail('Array needs element_type and max_capacity, e.g. "element_type": "Int64", "max_capacity": 16')
        elem = TYPES.get(self.element_type) if self.element_type is not None else None
        if elem is None or not elem.array_element:
            fail(f"Array element_type must be a scalar type, got {getattr(self.element_type, 'value', None)}")
        elif elem.family == "text" and self.max_length is None:
            fail(f'an Array of {elem.type.value} needs max_length for its elements, e.g. "max_length": 64')

    def _check_range(self, s: TypeSpec) -> None:
        fail = self._fail
        if self.min is not None and self.max is not None and self.min > self.max:
            fail(f"min ({self.min}) is greater than max ({self.max}); swap them")
        if (self.min is not None or self.max is not None) and not (self.type.is_numeric or self._array_of_numbers()):
            fail(f"min/max apply to numeric fields, not {self.type.value}")
        if s.family == "integer" and self.min is not None and s.value_range is not None:
            lo, hi = s.value_range
            if self.min < lo or (self.max is not None and self.max > hi):
                fail(f"range [{self.min}, {self.max}] does not fit {self.type.value} ({lo}..{hi})")

    def _array_of_numbers(self) -> bool:
        s = TYPES.get(self.type)
        return s is not None and s.family == "array" and self.element_type is not None and self.element_type.is_numeric

    def _fail(self, message: str) -> None:
        raise ValueError(f"field {self.name!r}: {message}")

    @property
    def effective_null_ratio(self) -> float:
        if not self.nullable:
            return 0.0
        return 0.1 if self.null_ratio is None else self.null_ratio

    def distinct_values(self, total_rows: int) -> int | None:
        if self.cardinality is not None:
            return self.cardinality
        if self.cardinality_ratio is not None:  # milvus-ingest: max(1, int(rows * ratio))
            return max(1, int(total_rows * self.cardinality_ratio))
        return None


class DynamicFieldSchema(_Base):
    """A key generated into the ``$meta`` column of a collection with dynamic fields."""

    name: str = Field(min_length=1, max_length=255)
    type: str = Field(description="Bool, Int, Float, String, Array or JSON")
    description: str = ""
    probability: float = Field(1.0, ge=0, le=1)
    min_value: float | None = None
    max_value: float | None = None
    min_length: int | None = Field(None, ge=0)
    max_length: int | None = Field(None, ge=1)
    values: list[Any] | None = None
    array_min_length: int | None = Field(None, ge=0)
    array_max_length: int | None = Field(None, ge=1)

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        canon = {"bool": "Bool", "int": "Int", "float": "Float", "string": "String", "array": "Array", "json": "JSON"}
        key = v.lower()
        if key not in canon:
            raise ValueError(f"dynamic field type {v!r} must be one of {', '.join(canon.values())}")
        return canon[key]


class CollectionSchema(_Base):
    collection_name: str = Field("collection", min_length=1, max_length=255)
    description: str = ""
    fields: list[FieldSchema] = Field(min_length=1)
    enable_dynamic_field: bool = False
    dynamic_fields: list[DynamicFieldSchema] = Field(default_factory=list)
    num_partitions: int | None = Field(None, ge=1, le=4096)
    num_shards: int | None = Field(None, ge=1, le=64)
    functions: list[FunctionSchema] = Field(
        default_factory=list, description="BM25/TextEmbedding, carried to Milvus; their outputs are not generated"
    )

    @field_validator("collection_name")
    @classmethod
    def _cname(cls, v: str) -> str:
        return identifier("collection_name", v)

    @model_validator(mode="after")
    def _check(self) -> CollectionSchema:
        names = [f.name for f in self.fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"field names must be unique; repeated: {', '.join(dupes)}")
        primaries = [f.name for f in self.fields if f.is_primary]
        if len(primaries) != 1:
            got = ", ".join(primaries) or "none"
            raise ValueError(f'exactly one field needs "is_primary": true (found {got})')
        if sum(f.is_partition_key for f in self.fields) > 1:
            raise ValueError("at most one field can be the partition key")
        if sum(f.is_clustering_key for f in self.fields) > 1:
            raise ValueError("at most one field can be the clustering key")
        if self.dynamic_fields and not self.enable_dynamic_field:
            raise ValueError('dynamic_fields need "enable_dynamic_field": true')
        clash = sorted(set(names) & {d.name for d in self.dynamic_fields})
        if clash:
            raise ValueError(f"dynamic field names repeat schema fields: {', '.join(clash)}")
        check_functions(self.functions, {f.name: f for f in self.fields})
        return self

    @property
    def primary(self) -> FieldSchema:
        return next(f for f in self.fields if f.is_primary)

    @property
    def partition_key(self) -> FieldSchema | None:
        return next((f for f in self.fields if f.is_partition_key), None)

    @property
    def function_outputs(self) -> set[str]:
        """Fields Milvus computes (a function's output): never generated nor written to files."""
        return {name for fn in self.functions for name in fn.output_field_names}

    def data_fields(self) -> list[FieldSchema]:
        """Fields present in generated data: everything but an auto_id primary key and function outputs."""
        outputs = self.function_outputs
        return [f for f in self.fields if not (f.is_primary and f.auto_id) and f.name not in outputs]

    def field(self, name: str) -> FieldSchema:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"schema {self.collection_name!r} has no field {name!r}")
