"""Milvus functions in a schema (``"functions": [...]``): BM25 full-text search and text embedding.

milvus-ingest's format names them ``{"name", "type", "input_field_names", "output_field_names", "params"}``.
A function's output field is computed by Milvus at insert time, so it is never generated nor written to
files; it is carried to ``create_collection`` as a pymilvus ``Function``. The checks here are the ones
milvus-ingest and Milvus make, done before any row is generated so a bad schema fails in a second.
"""

from __future__ import annotations

import enum
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from task_components.schema.types import FieldType

__all__ = ["FunctionSchema", "FunctionType", "check_functions"]


class FunctionType(enum.StrEnum):
    BM25 = "BM25"
    TEXT_EMBEDDING = "TextEmbedding"

    @classmethod
    def parse(cls, raw: Any) -> FunctionType:
        """Loose names (``bm25``, ``TEXTEMBEDDING``, ``text_embedding``): users copy them from pymilvus."""
        key = re.sub(r"[^a-z0-9]", "", str(raw).lower())
        for member in cls:
            if member.value.lower() == key:
                return member
        raise ValueError(f"unknown function type {raw!r}; use one of: {', '.join(m.value for m in cls)}")


# what each function type reads and writes
_INPUT = {FunctionType.BM25: {FieldType.VARCHAR}, FunctionType.TEXT_EMBEDDING: {FieldType.VARCHAR}}
_OUTPUT = {
    FunctionType.BM25: {FieldType.SPARSE_FLOAT_VECTOR},
    FunctionType.TEXT_EMBEDDING: {
        FieldType.FLOAT_VECTOR,
        FieldType.FLOAT16_VECTOR,
        FieldType.BFLOAT16_VECTOR,
        FieldType.INT8_VECTOR,
    },
}


class FunctionSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    type: FunctionType
    input_field_names: list[str] = Field(min_length=1)
    output_field_names: list[str] = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict, description="e.g. provider/model_name for TextEmbedding")
    description: str = ""

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, v: Any) -> Any:
        return FunctionType.parse(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v):
            raise ValueError(f"function name {v!r} must be letters, digits and underscores, not starting with a digit")
        return v

    @model_validator(mode="after")
    def _arity(self) -> FunctionSchema:
        if len(self.input_field_names) != 1 or len(self.output_field_names) != 1:
            raise ValueError(
                f"function {self.name!r}: {self.type.value} takes exactly one input and one output field, got "
                f"inputs {self.input_field_names} and outputs {self.output_field_names}"
            )
        if self.type is FunctionType.TEXT_EMBEDDING and not self.params.get("provider"):
            raise ValueError(
                f'function {self.name!r}: TextEmbedding needs params.provider, e.g. "params": '
                '{"provider": "openai", "model_name": "text-embedding-3-small"}'
            )
        return self


def check_functions(functions: list[FunctionSchema], fields: dict[str, Any]) -> None:
    """Inputs and outputs exist with the right types, each output made once and never the primary key."""
    outputs: set[str] = set()
    for fn in functions:
        where = f"function {fn.name!r} ({fn.type.value})"
        for name in fn.input_field_names:
            f = fields.get(name)
            if f is None:
                raise ValueError(f"{where}: input field {name!r} is not in fields (have: {', '.join(fields)})")
            if f.type not in _INPUT[fn.type]:
                raise ValueError(f"{where}: input field {name!r} must be VarChar, not {f.type.value}")
        for name in fn.output_field_names:
            f = fields.get(name)
            want = " or ".join(sorted(t.value for t in _OUTPUT[fn.type]))
            if f is None:
                raise ValueError(
                    f'{where}: output field {name!r} must be defined in fields, e.g. {{"name": "{name}", '
                    f'"type": "{sorted(t.value for t in _OUTPUT[fn.type])[0]}"}}'
                )
            if f.type not in _OUTPUT[fn.type]:
                raise ValueError(f"{where}: output field {name!r} must be {want}, not {f.type.value}")
            if f.is_primary or f.nullable or f.is_partition_key:
                raise ValueError(f"{where}: output field {name!r} cannot be the primary/partition key or nullable")
            if name in outputs:
                raise ValueError(f"{where}: output field {name!r} is already the output of another function")
            if name in fn.input_field_names:
                raise ValueError(f"{where}: field {name!r} cannot be both input and output")
            outputs.add(name)
