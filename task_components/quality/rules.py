"""Named validation rules, one pydantic model each, selected by ``type`` in the pipeline file.

Every rule answers ``failure(record) -> reason | None``. Only ``not_null`` looks at missing values; the
others pass a ``None`` (so a missing optional field is not reported twice, once per rule). A rule's
``name`` travels into the dead-letter record, so a person sees *which* rule rejected *what*.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from task_components.quality.expression import Expression, ExpressionError

__all__ = ["Rule"]

_ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="shown in the dead-letter record")

    def failure(self, record: dict[str, Any]) -> str | None:
        raise NotImplementedError


class _FieldRule(_Rule):
    field: str

    def failure(self, record: dict[str, Any]) -> str | None:
        value = record.get(self.field)
        return None if value is None else self.check(value)

    def check(self, value: Any) -> str | None:
        raise NotImplementedError


class NotNull(_Rule):
    type: Literal["not_null"]
    field: str
    allow_empty: bool = Field(False, description="accept an empty or blank string")

    def failure(self, record: dict[str, Any]) -> str | None:
        value = record.get(self.field)
        if value is None:
            return f"{self.field} is missing"
        if not self.allow_empty and isinstance(value, str) and not value.strip():
            return f"{self.field} is empty"
        return None


class Range(_FieldRule):
    type: Literal["range"]
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Range:
        if self.min is None and self.max is None:
            raise ValueError("a range rule needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self

    def check(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"{self.field}={value!r} is not a number"
        if self.min is not None and value < self.min:
            return f"{self.field}={value!r} is below {self.min:g}"
        if self.max is not None and value > self.max:
            return f"{self.field}={value!r} is above {self.max:g}"
        return None


class Pattern(_FieldRule):
    type: Literal["pattern"]
    pattern: str
    _regex: re.Pattern[str] = PrivateAttr()

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"pattern {value!r} is not a regular expression: {exc}") from None
        return value

    def model_post_init(self, context: Any) -> None:
        self._regex = re.compile(self.pattern)

    def check(self, value: Any) -> str | None:
        if not isinstance(value, str) or not self._regex.fullmatch(value):
            return f"{self.field}={value!r} does not match {self.pattern!r}"
        return None


_TYPES: dict[str, Any] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, float),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "bool": lambda v: isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "datetime": lambda v: isinstance(v, str) and bool(_ISO_UTC.match(v)),
    "list": lambda v: isinstance(v, list),
    "dict": lambda v: isinstance(v, dict),
}


class TypeCheck(_FieldRule):
    type: Literal["type"]
    expected: Literal["int", "float", "number", "bool", "str", "datetime", "list", "dict"]

    def check(self, value: Any) -> str | None:
        return None if _TYPES[self.expected](value) else f"{self.field}={value!r} is not {self.expected}"


class Allowed(_FieldRule):
    type: Literal["allowed"]
    values: list[Any] = Field(min_length=1)

    def check(self, value: Any) -> str | None:
        return None if value in self.values else f"{self.field}={value!r} is not one of {self.values!r}"


class Custom(_Rule):
    type: Literal["expression"]
    expression: str = Field(description="e.g. amount < 5000 or status == 'active' (no code is ever eval'd)")
    _compiled: Expression = PrivateAttr()

    @field_validator("expression")
    @classmethod
    def _parses(cls, value: str) -> str:
        try:
            Expression(value)
        except ExpressionError as exc:
            raise ValueError(str(exc)) from None
        return value

    def model_post_init(self, context: Any) -> None:
        self._compiled = Expression(self.expression)

    def failure(self, record: dict[str, Any]) -> str | None:
        try:
            ok = self._compiled(record)
        except ExpressionError as exc:
            return f"{self.expression!r} could not be evaluated: {exc}"
        return None if ok else f"{self.expression!r} is false"


Rule = Annotated[NotNull | Range | Pattern | TypeCheck | Allowed | Custom, Field(discriminator="type")]
