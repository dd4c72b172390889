"""What a comparison compares: a column, a JSON path, an array element, or one arithmetic step on one.

Kept apart from the parser because this is where Milvus' evaluation rules live (which types allow
which operator, how integers divide), each checked on a real Milvus server; the parser only walks
tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from task_components.errors import FilterConversionError
from task_components.schema.models import FieldType
from task_components.shadow.filters.tokens import Token, json_key


@dataclass(frozen=True, slots=True)
class Literal:
    sql: str  # already rendered from a classified token: safe to splice
    kind: str  # number, string or bool
    token: Token

    @property
    def is_integer(self) -> bool:
        return self.kind == "number" and re.fullmatch(r"-?\d+", self.sql) is not None

    @property
    def is_zero(self) -> bool:
        return self.kind == "number" and float(self.sql) == 0


@dataclass(frozen=True, slots=True)
class Operand:
    sql: str  # SQL for the value; a JSON path is read as text and cast by the literal it meets
    json: bool
    field_type: FieldType | None  # None for a JSON path
    token: Token  # the field name, for errors
    jsonb: str | None = None  # a JSON path as jsonb (containment, existence, length)
    keyed: bool = False  # a JSON path with at least one key (what ``exists`` needs)
    array_pg: str | None = None  # PostgreSQL array type of an Array field
    computed: bool = False  # arithmetic or array_length: a value, not a field
    integer_result: bool = False  # integer arithmetic: Milvus compares it with integers only
    absent: str | None = None  # "key" (JSON path) or "index" (array element): SQL NULL when not there

    def two_valued(self, sql: str, *, not_equal: bool = False) -> str:
        """``sql`` as Milvus decides it when the value is absent (checked on the server).

        Milvus never yields "unknown": a comparison with a missing JSON key is false, except ``!=`` and
        ``not in``, which are true; with an index past the end of an array even ``!=`` is false. SQL
        would give NULL, and ``NOT NULL`` selects nothing where Milvus' ``not`` selects the row.
        """
        if self.absent is None:
            return sql
        return f"COALESCE({sql}, {'TRUE' if not_equal and self.absent == 'key' else 'FALSE'})"

    def compared(self, literal: Literal) -> str:
        """The operand's SQL as Milvus compares it with this literal.

        A JSON value is compared only with a literal of its own JSON type (``meta["id"] == "5"`` is
        false for the number 5, ``meta["category"] == 1`` is false, not an error): any other type
        reads as absent.
        """
        if self.integer_result and not literal.is_integer:
            raise FilterConversionError("Milvus compares this arithmetic with integers only", literal.token.text, literal.token.pos)
        if not self.json:
            return self.sql
        return self.typed(literal.kind)

    def typed(self, kind: str) -> str:
        json_type, cast = _JSON_TYPES[kind]
        return f"(CASE WHEN jsonb_typeof({self.jsonb}) = '{json_type}' THEN ({self.sql}){cast} END)"


_JSON_TYPES = {"number": ("number", "::double precision"), "bool": ("boolean", "::boolean"), "string": ("string", "")}


def json_path(column: str, path: list[Token], *, as_text: bool = True) -> str:
    literal = "{" + ",".join(json_key(k) for k in path) + "}"
    op = "#>>" if as_text else "#>"
    return f"({column} {op} '" + literal.replace("'", "''") + "')"


def json_operand(column: str, path: list[Token], token: Token) -> Operand:
    jsonb = json_path(column, path, as_text=False)
    return Operand(json_path(column, path), True, None, token, jsonb=jsonb, keyed=bool(path), absent="key")


def arithmetic(left: Operand, sign: Token, right: Literal) -> Operand:
    """``left <sign> right`` as Milvus evaluates it, or a refusal naming ``sign``.

    Milvus evaluates integer fields in 64 bits, dividing with truncation toward zero and giving
    ``%`` the sign of the dividend (checked with negatives on the server): exactly PostgreSQL's
    bigint ``/`` and ``%``, so integer columns are cast to bigint first (an Int8 times 100 must not
    overflow). A zero divisor is refused: PostgreSQL raises, and Milvus 2.3 crashes (SIGFPE).
    """

    def refuse(why: str) -> FilterConversionError:
        return FilterConversionError(why, sign.text, sign.pos)

    if sign.text == "**":
        raise refuse("Milvus applies ** to constants only, never to a field")
    if left.computed:
        raise refuse("Milvus evaluates one arithmetic operation per comparison")
    if right.kind != "number":
        raise refuse(f"arithmetic needs a number, got {right.token.text!r} after")
    if sign.text in "/%" and right.is_zero:
        raise refuse("division by zero (it crashes Milvus 2.3)")
    value = f"({right.sql})" if right.sql.startswith("-") else right.sql
    if left.json:
        if not right.is_integer:
            raise refuse("on a JSON value Milvus applies arithmetic with integer operands only here")
        sql = _json_arithmetic(left, sign, value)
        return replace(left, sql=sql, json=False, computed=True, integer_result=True)
    t = left.field_type
    if t is not None and t.is_integer:
        if not right.is_integer:
            raise refuse("Milvus applies integer arithmetic with integer operands only")
        return replace(left, sql=f"({left.sql})::bigint {sign.text} {value}", computed=True, integer_result=True)
    if t is not None and t.is_float:
        if sign.text == "%":
            raise refuse("Milvus applies % to integer fields only")
        return replace(left, sql=f"{left.sql} {sign.text} {value}", computed=True)
    raise refuse(f"arithmetic needs a numeric field, {left.token.text!r} is {t.value if t else 'not one'}")


def _json_arithmetic(left: Operand, sign: Token, value: str) -> str:
    """Milvus on a JSON number: integers in 64 bits (``/`` truncates), floats in double precision,
    and ``%`` truncates a float to an integer first (all checked on the server). Any other JSON type
    reads as absent. ``+ - *`` run in double precision: exact for integers below 2**53."""
    p, text = left.jsonb, left.sql
    if sign.text == "%":
        result = f"trunc(({text})::numeric)::bigint % {value}"
    elif sign.text == "/":
        result = f"CASE WHEN ({text}) ~ '^-?[0-9]+$' THEN ({text})::bigint / {value} ELSE ({text})::double precision / {value} END"
    else:
        result = f"({text})::double precision {sign.text} {value}"
    return f"(CASE WHEN jsonb_typeof({p}) = 'number' THEN {result} END)"
