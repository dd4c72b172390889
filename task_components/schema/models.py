"""Collection schema models: every Milvus field type, plus the value controls that drive generation.

The format is milvus-ingest's schema JSON/YAML, read as-is (``"type": "FloatVector"``, ``is_primary`` or
``is_primary_key``, ``cardinality_ratio``, ``enum_values``, ``default_value``, ``force_all_default``,
``force_all_null``, ``dynamic_fields``, ``functions``...), extended with our own controls
(``pattern``, ``null_ratio``, ``nnz``, ``min_length``, ``is_clustering_key``, ``num_shards``) and the
INT8_VECTOR type. Type names are matched loosely (``FloatVector``, ``FLOAT_VECTOR``, ``float_vector``)
because users copy them from pymilvus, from milvus-ingest and from Milvus docs. Every validation error
names the field and says how to fix it.
"""

from __future__ import annotations

import enum
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from task_components.schema.defaults import check_default
from task_components.schema.functions import FunctionSchema, check_functions

__all__ = ["PATTERNS", "CollectionSchema", "DynamicFieldSchema", "FieldSchema", "FieldType", "SchemaError"]


class SchemaError(ValueError):
    """A schema that cannot be generated or created; the message names the field and the fix."""


class FieldType(enum.StrEnum):
    BOOL = "Bool"
    INT8 = "Int8"
    INT16 = "Int16"
    INT32 = "Int32"
    INT64 = "Int64"
    FLOAT = "Float"
    DOUBLE = "Double"
    VARCHAR = "VarChar"
    JSON = "JSON"
    ARRAY = "Array"
    FLOAT_VECTOR = "FloatVector"
    BINARY_VECTOR = "BinaryVector"
    FLOAT16_VECTOR = "Float16Vector"
    BFLOAT16_VECTOR = "BFloat16Vector"
    SPARSE_FLOAT_VECTOR = "SparseFloatVector"
    INT8_VECTOR = "Int8Vector"

    @classmethod
    def parse(cls, raw: Any) -> FieldType:
        if isinstance(raw, FieldType):
            return raw
        key = re.sub(r"[^a-z0-9]", "", str(raw).lower())
        if key == "string":
            return cls.VARCHAR
        for member in cls:
            if re.sub(r"[^a-z0-9]", "", member.value.lower()) == key:
                return member
        names = ", ".join(m.value for m in cls)
        raise ValueError(f"unknown type {raw!r}; use one of: {names}")

    @classmethod
    def extend(cls, value: str) -> FieldType:
        """A new member (for a plugin's type in the field-type table); the same object on every call."""
        if value in cls._value2member_map_:
            return cls._value2member_map_[value]  # type: ignore[return-value]
        member = str.__new__(cls, value)
        member._name_ = re.sub(r"(?<!^)(?=[A-Z])", "_", value).upper()
        member._value_ = value
        cls._value2member_map_[value] = member
        cls._member_map_[member._name_] = member
        cls._member_names_.append(member._name_)
        return member

    @property
    def is_vector(self) -> bool:
        return self.name.endswith("_VECTOR")

    @property
    def is_integer(self) -> bool:
        return self in (FieldType.INT8, FieldType.INT16, FieldType.INT32, FieldType.INT64)

    @property
    def is_numeric(self) -> bool:
        return self.is_integer or self in (FieldType.FLOAT, FieldType.DOUBLE)


INT_RANGES = {
    FieldType.INT8: (-(2**7), 2**7 - 1),
    FieldType.INT16: (-(2**15), 2**15 - 1),
    FieldType.INT32: (-(2**31), 2**31 - 1),
    FieldType.INT64: (-(2**63), 2**63 - 1),
}
SCALAR_ELEMENTS = {
    FieldType.BOOL, FieldType.INT8, FieldType.INT16, FieldType.INT32, FieldType.INT64,
    FieldType.FLOAT, FieldType.DOUBLE, FieldType.VARCHAR,
}  # fmt: skip
PATTERNS = (
    "word", "words", "sentence", "paragraph", "name", "first_name", "last_name", "email", "address",
    "city", "country", "url", "phone", "uuid", "id", "title", "category",
)  # fmt: skip


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
        fail = self._fail
        t = self.type
        if t.is_vector and t is not FieldType.SPARSE_FLOAT_VECTOR and self.dim is None:
            fail(f'{t.value} needs dim, e.g. "dim": 768')
        if t is FieldType.BINARY_VECTOR and self.dim is not None and self.dim % 8:
            fail(f"BinaryVector dim must be a multiple of 8, got {self.dim} (try {self.dim + 8 - self.dim % 8})")
        if t is FieldType.VARCHAR and self.max_length is None:
            fail('VarChar needs max_length, e.g. "max_length": 256')
        if t is FieldType.ARRAY:
            if self.element_type is None or self.max_capacity is None:
                fail('Array needs element_type and max_capacity, e.g. "element_type": "Int64", "max_capacity": 16')
            if self.element_type not in SCALAR_ELEMENTS:
                fail(f"Array element_type must be a scalar type, got {self.element_type.value}")  # type: ignore[union-attr]
            if self.element_type is FieldType.VARCHAR and self.max_length is None:
                fail('an Array of VarChar needs max_length for its elements, e.g. "max_length": 64')
        if self.is_primary:
            if t not in (FieldType.INT64, FieldType.VARCHAR):
                fail(f"a primary key must be Int64 or VarChar, not {t.value}")
            if self.nullable:
                fail('a primary key cannot be nullable; remove "nullable"')
            if self.auto_id and t is not FieldType.INT64:
                fail("auto_id needs an Int64 primary key")
        elif self.auto_id:
            fail('auto_id is only for the primary key; set "is_primary": true or remove "auto_id"')
        if self.min is not None and self.max is not None and self.min > self.max:
            fail(f"min ({self.min}) is greater than max ({self.max}); swap them")
        if (self.min is not None or self.max is not None) and not (t.is_numeric or self._array_of_numbers()):
            fail(f"min/max apply to numeric fields, not {t.value}")
        if t.is_integer and self.min is not None:
            lo, hi = INT_RANGES[t]
            if self.min < lo or (self.max is not None and self.max > hi):
                fail(f"range [{self.min}, {self.max}] does not fit {t.value} ({lo}..{hi})")
        if self.pattern is not None and self.pattern not in PATTERNS:
            fail(f"unknown pattern {self.pattern!r}; use one of: {', '.join(PATTERNS)}")
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            fail(f"min_length ({self.min_length}) is greater than max_length ({self.max_length})")
        if self.is_partition_key and t not in (FieldType.INT64, FieldType.VARCHAR):
            fail(f"a partition key must be Int64 or VarChar, not {t.value}")
        if self.enum_values is not None and (t.is_vector or t in (FieldType.JSON, FieldType.ARRAY)):
            fail(f"enum_values apply to scalar fields, not {t.value}")
        if self.is_primary and (self.enum_values or self.cardinality_ratio is not None or self.cardinality):
            fail("a primary key is unique: remove enum_values/cardinality settings")
        if (self.cardinality_ratio is not None or self.cardinality) and (
            t.is_vector or t in (FieldType.JSON, FieldType.ARRAY)
        ):
            fail(f"cardinality_ratio/cardinality apply to scalar fields, not {t.value}")
        try:
            check_default(self)
        except ValueError as exc:
            fail(str(exc))
        return self

    def _array_of_numbers(self) -> bool:
        return self.type is FieldType.ARRAY and self.element_type is not None and self.element_type.is_numeric

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
