"""Named validation rules, one pydantic model each, selected by ``type`` in the pipeline file.

Every rule answers ``failure(record) -> reason | None``. Only ``not_null`` looks at missing values; the
others pass a ``None`` (so a missing optional field is not reported twice, once per rule). A rule's
``name`` travels into the dead-letter record, so a person sees *which* rule rejected *what*. Values are
quoted shortened (a 5 MB field must not make a 5 MB reason).

Pattern rules run in RE2 (``google-re2``): matching is linear in the value, so no pattern and no value
can backtrack for ever (``(a+)+$`` on 32 a's and a ``!`` froze the process under Python's ``re``). RE2
has no backreferences or lookaround; a pattern it cannot run is refused when the pipeline is validated,
with RE2's reason. RE2's ``\\w``, ``\\d``, ``\\s`` and ``\\b`` are ASCII-only (Python's are Unicode):
``\\w+`` refuses "café" and ``[^@\\s]`` lets a no-break space through, so a pattern using them is
accepted with a warning (``pattern_ascii_classes``) naming the Unicode spelling (``[\\p{L}\\p{N}_]``...),
unless it already uses a Unicode class (``\\p{...}``): its author chose.

Numbers must be finite: ``range``, ``type: float`` and ``type: number`` refuse NaN and infinities (NaN
compares false with every bound, so it would pass any range).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

import re2
import structlog
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from task_components.quality.expression import Expression, ExpressionError

__all__ = ["Rule"]

log = structlog.get_logger("quality")
_ASCII_CLASSES = re.compile(r"(?<!\\)(?:\\\\)*\\([wWdDsSbB])")
_warned: set[str] = set()
_ISO_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$")


def short(value: Any, limit: int = 80) -> str:
    """``repr`` of a value, cut to ``limit`` characters (reasons travel into logs and dead letters)."""
    text = repr(value) if not isinstance(value, str | bytes) or len(value) <= limit * 4 else repr(value[: limit * 4])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def ascii_classes(pattern: str) -> list[str]:
    """The ASCII-only classes (``\\w``, ``\\d``, ``\\s``, ``\\b`` and negations) a pattern uses, in order."""
    return list(dict.fromkeys("\\" + m for m in _ASCII_CLASSES.findall(pattern)))


def compile_re2(pattern: str) -> Any:
    """The RE2 program of ``pattern``; ValueError with RE2's reason when RE2 cannot run it."""
    options = re2.Options()
    options.log_errors = False  # the reason goes into the error, not to stderr
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValueError(
            f"pattern {pattern!r} cannot run in RE2 (linear-time matching: no backreferences or lookaround): {reason}"
        ) from None


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
            return f"{self.field}={short(value)} is not a number"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{self.field}={short(value)} is not a finite number"
        if self.min is not None and value < self.min:
            return f"{self.field}={short(value)} is below {self.min:g}"
        if self.max is not None and value > self.max:
            return f"{self.field}={short(value)} is above {self.max:g}"
        return None


class Pattern(_FieldRule):
    type: Literal["pattern"]
    pattern: str
    _regex: Any = PrivateAttr()

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        compile_re2(value)
        classes = ascii_classes(value)
        if classes and "\\p{" not in value and value not in _warned:  # once per pattern and process
            _warned.add(value)
            log.warning(
                "pattern_ascii_classes",
                pattern=value,
                classes=classes,
                hint="RE2 matches these classes in ASCII only (\\w+ refuses 'café'); for any letter or "
                "digit write [\\p{L}\\p{N}_], for any space [\\p{Z}\\s]",
            )
        return value

    def model_post_init(self, context: Any) -> None:
        self._regex = compile_re2(self.pattern)

    def check(self, value: Any) -> str | None:
        if not isinstance(value, str) or not self._regex.fullmatch(value):
            return f"{self.field}={short(value)} does not match {self.pattern!r}"
        return None


_TYPES: dict[str, Any] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, float) and math.isfinite(v),
    "number": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and math.isfinite(v)),
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
        return None if _TYPES[self.expected](value) else f"{self.field}={short(value)} is not {self.expected}"


class Allowed(_FieldRule):
    type: Literal["allowed"]
    values: list[Any] = Field(min_length=1)

    def check(self, value: Any) -> str | None:
        return None if value in self.values else f"{self.field}={short(value)} is not one of {short(self.values, 200)}"


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
