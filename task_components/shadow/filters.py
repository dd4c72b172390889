"""Milvus boolean expressions -> PostgreSQL WHERE clauses over the shadow table.

Supported: comparisons (== != < <= > >=), ``in`` / ``not in`` lists, ``like``, ``is [not] null``,
``and``/``&&``, ``or``/``||``, ``not``/``!``, parentheses, JSON paths (``meta["a"]["b"]``, also on
dynamic fields, which live in ``$meta``), array indexing, ``array_contains``, ``array_contains_all``,
``array_contains_any``. Anything else raises FilterConversionError naming the token and position.

Literals are rendered from tokens the tokenizer has already classified (numbers are validated
numerals, strings are re-quoted with ``''`` escaping), so a filter can never inject SQL. A JSON path
is read as text (``#>>``) and cast to the type of the literal it is compared with, which is how Milvus
compares JSON values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from task_components.errors import FilterConversionError
from task_components.schema.arrow import META_COLUMN
from task_components.schema.models import CollectionSchema, FieldType
from task_components.schema.postgres import pg_type, quote

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')
    | (?P<op>==|!=|<=|>=|&&|\|\||[<>!()\[\],])
    | (?P<name>[A-Za-z_$][A-Za-z0-9_]*)
    | (?P<bad>\S)
    )""",
    re.VERBOSE,
)
_COMPARE = {"==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_ARRAY_FUNCS = {"array_contains", "array_contains_all", "array_contains_any"}


@dataclass(frozen=True, slots=True)
class Token:
    kind: str
    text: str
    pos: int


def tokenize(expr: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None or m.end() == pos:
            break
        kind = m.lastgroup or "bad"
        start = m.start(kind)
        if kind == "bad":
            raise FilterConversionError("unsupported character", m.group(kind), start)
        text = m.group(kind)
        if kind == "name" and text.lower() in ("and", "or", "not", "in", "like", "is", "null", "true", "false"):
            kind = "kw"
            text = text.lower()
        tokens.append(Token(kind, text, start))
        pos = m.end()
    tokens.append(Token("end", "", len(expr)))
    return tokens


def _sql_string(token: Token) -> str:
    body = token.text[1:-1]
    body = re.sub(r"\\(.)", r"\1", body)
    return "'" + body.replace("'", "''") + "'"


@dataclass(slots=True)
class _Operand:
    sql: str  # SQL for the column, or the text of a JSON path
    json: bool  # a JSON path read as text: cast by the literal it meets
    field_type: FieldType | None
    array_pg: str | None = None  # PG element array type for ARRAY fields


class _Parser:
    def __init__(self, expr: str, schema: CollectionSchema) -> None:
        self.tokens = tokenize(expr)
        self.i = 0
        self.schema = schema
        self.fields = {f.name: f for f in schema.fields}

    # -- token helpers ---------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        t = self.tokens[self.i]
        self.i += 1
        return t

    def accept(self, *texts: str) -> Token | None:
        if self.tok.text in texts and self.tok.kind in ("op", "kw"):
            return self.take()
        return None

    def expect(self, text: str) -> Token:
        if self.tok.text != text:
            raise FilterConversionError(f"expected {text!r}", self.tok.text or "end of expression", self.tok.pos)
        return self.take()

    # -- grammar ---------------------------------------------------------------------------------
    def parse(self) -> str:
        sql = self.or_()
        if self.tok.kind != "end":
            raise FilterConversionError("unexpected token", self.tok.text, self.tok.pos)
        return sql

    def or_(self) -> str:
        parts = [self.and_()]
        while self.accept("or", "||"):
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def and_(self) -> str:
        parts = [self.not_()]
        while self.accept("and", "&&"):
            parts.append(self.not_())
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def not_(self) -> str:
        if self.accept("not", "!"):
            return f"(NOT {self.not_()})"
        return self.primary()

    def primary(self) -> str:
        if self.accept("("):
            inner = self.or_()
            self.expect(")")
            return inner
        if self.tok.kind == "name" and self.tok.text.lower() in _ARRAY_FUNCS:
            return self.array_function()
        if self.tok.kind == "name" and self.tokens[self.i + 1].text == "(":
            raise FilterConversionError("unsupported function", self.tok.text, self.tok.pos)
        return self.comparison()

    def operand(self) -> _Operand:
        t = self.take()
        if t.kind != "name":
            raise FilterConversionError("expected a field name", t.text or "end of expression", t.pos)
        path: list[Token] = []
        while self.accept("["):
            key = self.take()
            if key.kind not in ("string", "number"):
                raise FilterConversionError("expected a key or index", key.text, key.pos)
            path.append(key)
            self.expect("]")
        f = self.fields.get(t.text)
        if f is None:
            if not self.schema.enable_dynamic_field:
                raise FilterConversionError("unknown field", t.text, t.pos)
            return _Operand(self._json_path(quote(META_COLUMN), [t, *path]), True, None)
        if path and f.type is FieldType.JSON:
            return _Operand(self._json_path(quote(f.name), path), True, FieldType.JSON)
        if path and f.type is FieldType.ARRAY and len(path) == 1 and path[0].kind == "number":
            return _Operand(f"{quote(f.name)}[{int(path[0].text) + 1}]", False, f.element_type)  # PG is 1-based
        if path:
            raise FilterConversionError(
                f"field {f.name!r} ({f.type.value}) cannot be indexed", path[0].text, path[0].pos
            )
        array_pg = pg_type(f) if f.type is FieldType.ARRAY else None
        return _Operand(quote(f.name), False, f.type, array_pg)

    @staticmethod
    def _json_path(column: str, path: list[Token]) -> str:
        keys = []
        for k in path:
            text = k.text[1:-1] if k.kind == "string" else k.text
            keys.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
        literal = "{" + ",".join(keys) + "}"
        return f"({column} #>> '" + literal.replace("'", "''") + "')"

    def literal(self) -> tuple[str, str]:
        """(sql, kind) where kind is number, string or bool."""
        t = self.take()
        if t.kind == "number":
            return t.text, "number"
        if t.kind == "string":
            return _sql_string(t), "string"
        if t.kind == "kw" and t.text in ("true", "false"):
            return t.text.upper(), "bool"
        raise FilterConversionError("expected a value", t.text or "end of expression", t.pos)

    @staticmethod
    def _cast(op: _Operand, kind: str) -> str:
        if not op.json:
            return op.sql
        return {"number": f"({op.sql})::double precision", "bool": f"({op.sql})::boolean"}.get(kind, op.sql)

    def value_list(self) -> list[tuple[str, str]]:
        self.expect("[")
        values: list[tuple[str, str]] = []
        if self.tok.text != "]":
            values.append(self.literal())
            while self.accept(","):
                values.append(self.literal())
        self.expect("]")
        return values

    def comparison(self) -> str:
        left = self.operand()
        t = self.tok
        if t.kind == "op" and t.text in _COMPARE:
            self.take()
            value, kind = self.literal()
            if self.tok.kind == "op" and self.tok.text in _COMPARE:
                raise FilterConversionError(
                    "chained comparisons are not supported; use and", self.tok.text, self.tok.pos
                )
            return f"{self._cast(left, kind)} {_COMPARE[t.text]} {value}"
        negate = bool(self.accept("not"))
        if self.accept("in"):
            values = self.value_list()
            if not values:
                return "TRUE" if negate else "FALSE"
            kind = values[0][1]
            sql = f"{self._cast(left, kind)} {'NOT IN' if negate else 'IN'} ({', '.join(v for v, _ in values)})"
            return sql
        if negate:
            raise FilterConversionError("expected 'in' after 'not'", self.tok.text, self.tok.pos)
        if self.accept("like"):
            value, kind = self.literal()
            if kind != "string":
                raise FilterConversionError("like needs a string pattern", value, self.tokens[self.i - 1].pos)
            return f"{left.sql} LIKE {value}"
        if self.accept("is"):
            is_not = bool(self.accept("not"))
            self.expect("null")
            return f"{left.sql} IS {'NOT ' if is_not else ''}NULL"
        if left.field_type is FieldType.BOOL and not left.json:
            return left.sql  # a Bool field on its own is a predicate
        raise FilterConversionError("unsupported operator", t.text or "end of expression", t.pos)

    def array_function(self) -> str:
        name = self.take().text.lower()
        self.expect("(")
        field = self.operand()
        if field.array_pg is None:
            raise FilterConversionError(
                f"{name} needs an Array field", self.tokens[self.i - 1].text, self.tokens[self.i - 1].pos
            )
        self.expect(",")
        if name == "array_contains":
            value, _ = self.literal()
            self.expect(")")
            return f"{value} = ANY({field.sql})"
        values = self.value_list()
        self.expect(")")
        array = f"ARRAY[{', '.join(v for v, _ in values)}]::{field.array_pg}"
        return f"{field.sql} {'@>' if name == 'array_contains_all' else '&&'} {array}"


def to_sql(expr: str, schema: CollectionSchema) -> str:
    """The WHERE clause (without ``WHERE``) selecting the rows ``expr`` selects in Milvus."""
    if not expr.strip():
        return "TRUE"
    return _Parser(expr, schema).parse()
