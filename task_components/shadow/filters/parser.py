"""A recursive-descent parser over the tokens, writing SQL as it goes (see the package docstring)."""

from __future__ import annotations

from task_components.errors import FilterConversionError
from task_components.schema.arrow import META_COLUMN
from task_components.schema.models import CollectionSchema, FieldType
from task_components.schema.postgres import pg_type, quote
from task_components.shadow.filters.operands import Literal, Operand, arithmetic, json_operand
from task_components.shadow.filters.tokens import ARITH, COMPARE, Token, sql_string, tokenize

# json_contains* and array_contains* are one family in Milvus: each works on Array fields and JSON paths
_CONTAINS = {
    "array_contains": "one",
    "array_contains_all": "all",
    "array_contains_any": "any",
    "json_contains": "one",
    "json_contains_all": "all",
    "json_contains_any": "any",
}
_FUNCTIONS = {*_CONTAINS, "array_length", "text_match"}
_UPWARD, _DOWNWARD = frozenset({"<", "<="}), frozenset({">", ">="})
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


def function_name(token: Token) -> str | None:
    """The canonical name of a Milvus function token: Milvus spells them all lower or all upper case."""
    name = token.text.lower()
    if token.kind != "name" or name not in _FUNCTIONS or token.text not in (name, name.upper()):
        return None
    return name


class Parser:
    def __init__(self, expr: str, schema: CollectionSchema) -> None:
        self.tokens = tokenize(expr)
        self.i = 0
        self.schema = schema
        self.fields = {f.name: f for f in schema.fields}

    # -- token helpers ---------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    @property
    def next(self) -> Token:
        return self.tokens[min(self.i + 1, len(self.tokens) - 1)]

    def take(self) -> Token:
        t = self.tokens[self.i]
        self.i = min(self.i + 1, len(self.tokens) - 1)  # never past the end token
        return t

    def accept(self, *texts: str) -> Token | None:
        return self.take() if self.tok.is_op(*texts) else None

    def expect(self, text: str) -> Token:
        if self.tok.text != text:
            raise self.error(f"expected {text!r}")
        return self.take()

    def error(self, message: str, token: Token | None = None) -> FilterConversionError:
        t = token or self.tok
        return FilterConversionError(message, t.text or "end of expression", t.pos)

    # -- boolean structure -----------------------------------------------------------------------
    def parse(self) -> str:
        sql = self.or_()
        if self.tok.kind != "end":
            raise self.error("unexpected token")
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
        if self.tok.is_op("exists"):
            return self.exists()
        name = function_name(self.tok)
        if name in _CONTAINS:
            return self.contains(name)
        if name == "text_match":
            raise self.error(
                "text_match is not supported: Milvus matches tokens of its analyzer, which SQL cannot reproduce "
                "exactly (and the Milvus 2.3 this shadow is checked against has no text_match)"
            )
        if self.tok.kind == "name" and self.next.text == "(" and name is None:
            raise self.error("unsupported function")
        return self.comparison()

    # -- operands and literals -------------------------------------------------------------------
    def operand(self) -> Operand:
        if function_name(self.tok) == "array_length":
            return self.array_length()
        t = self.take()
        if t.kind != "name":
            raise self.error("expected a field name", t)
        if self.tok.text == "(":
            raise self.error("unsupported function", t)
        path: list[Token] = []
        while self.accept("["):
            key = self.take()
            if key.kind not in ("string", "number"):
                raise self.error("expected a key or index", key)
            path.append(key)
            self.expect("]")
        f = self.fields.get(t.text)
        if f is None:
            if not self.schema.enable_dynamic_field:
                raise self.error("unknown field", t)
            return json_operand(quote(META_COLUMN), [t, *path], t)
        if f.type is FieldType.JSON and path:
            return json_operand(quote(f.name), path, t)
        if f.type is FieldType.JSON:  # the whole document: compared as is, but json_contains may search it
            return Operand(quote(f.name), False, f.type, t, jsonb=quote(f.name))
        if path and f.type is FieldType.ARRAY and len(path) == 1 and path[0].kind == "number":
            element = f"{quote(f.name)}[{int(path[0].text) + 1}]"  # PostgreSQL arrays are 1-based
            return Operand(element, False, f.element_type, t, absent="index")
        if path:
            raise self.error(f"field {f.name!r} ({f.type.value}) cannot be indexed", path[0])
        array_pg = pg_type(f) if f.type is FieldType.ARRAY else None
        return Operand(quote(f.name), False, f.type, t, array_pg=array_pg)

    def starts_literal(self) -> bool:
        t = self.tok
        return t.kind in ("number", "string") or t.is_op("true", "false") or (t.is_op("-", "+") and self.next.kind == "number")

    def after_literal(self) -> Token:
        """The token after the literal starting here (a signed number is two tokens)."""
        skip = 2 if self.tok.is_op("-", "+") else 1
        return self.tokens[min(self.i + skip, len(self.tokens) - 1)]

    def literal(self) -> Literal:
        sign = self.take().text if self.tok.is_op("-", "+") and self.next.kind == "number" else ""
        t = self.take()
        if t.kind == "number":
            return Literal(("-" if sign == "-" else "") + t.text, "number", t)
        if t.kind == "string":
            return Literal(sql_string(t), "string", t)
        if t.is_op("true", "false"):
            return Literal(t.text.upper(), "bool", t)
        raise self.error("expected a value", t)

    def check_list(self, left: Operand, values: list[Literal]) -> None:
        """One type per ``in`` list: Milvus rejects a mixed list, and on a JSON path even mixing integers
        and floats fails inside its query node."""

        def kind(v: Literal) -> tuple[str, bool]:
            return v.kind, left.json and v.is_integer

        odd = next((v for v in values if kind(v) != kind(values[0])), None)
        if odd is not None:
            raise self.error("an in list mixes value types, which Milvus rejects", odd.token)

    def value_list(self) -> list[Literal]:
        self.expect("[")
        values: list[Literal] = []
        if self.tok.text != "]":
            values.append(self.literal())
            while self.accept(","):
                values.append(self.literal())
        self.expect("]")
        return values

    def value(self) -> Operand:
        """An operand with at most one arithmetic step: ``x``, ``x % 3``, or ``2 * x`` (+ and * commute)."""
        if self.starts_literal():
            if not self.after_literal().is_op(*ARITH):
                raise self.error("expected a field name")
            constant = self.literal()
            sign = self.tok
            if not sign.is_op("+", "*"):
                raise self.error("Milvus puts a constant before a field only with + or *", sign)
            self.take()
            return arithmetic(self.operand(), sign, constant)
        left = self.operand()
        if self.tok.is_op(*ARITH):
            sign = self.take()
            left = arithmetic(left, sign, self.literal())
            if self.tok.is_op(*ARITH):
                raise self.error("Milvus evaluates one arithmetic operation per comparison")
        return left

    def bound(self) -> Literal:
        """The literal side of a comparison. Milvus folds ``x == 2 + 3``; we refuse it rather than mirror its
        constant typing (``2 ** 3`` is a float there, which an Int64 comparison then rejects)."""
        lit = self.literal()
        if self.tok.is_op(*ARITH):
            raise self.error("arithmetic on the constant side is not supported")
        return lit

    # -- comparisons -----------------------------------------------------------------------------
    def comparison(self) -> str:
        if self.starts_literal() and not self.after_literal().is_op(*ARITH):
            return self.range_or_reversed()
        left = self.value()
        t = self.tok
        if t.kind == "op" and t.text in COMPARE:
            self.take()
            if not self.starts_literal():
                raise self.error("expected a value (comparing two fields is not supported)")
            right = self.bound()
            if self.tok.kind == "op" and self.tok.text in COMPARE:
                raise self.error("a chained comparison starts with a value, e.g. 1 < x < 5")
            return left.two_valued(f"{left.compared(right)} {COMPARE[t.text]} {right.sql}", not_equal=t.text == "!=")
        if left.computed and (t.is_op("in", "not", "like", "is")):
            raise self.error(f"{t.text!r} applies to a field, not to arithmetic or array_length")
        return self.predicate(left)

    def range_or_reversed(self) -> str:
        """``1 < x``, and Milvus' ranges ``1 < x < 5`` / ``5 >= x > 1``: both signs the same direction."""
        low = self.literal()
        op1 = self.tok
        if not (op1.kind == "op" and op1.text in COMPARE):
            raise self.error("expected a field name", low.token)
        self.take()
        field = self.value()
        op2 = self.tok
        if not (op2.kind == "op" and op2.text in COMPARE):
            return field.two_valued(f"{field.compared(low)} {COMPARE[_FLIP[op1.text]]} {low.sql}", not_equal=op1.text == "!=")
        self.take()
        high = self.bound()
        same_way = {op1.text, op2.text} <= _UPWARD or {op1.text, op2.text} <= _DOWNWARD
        if not same_way:
            raise self.error("a range needs two < / <= or two > / >= (Milvus rejects other chains)", op2)
        if self.tok.kind == "op" and self.tok.text in COMPARE:
            raise self.error("a range has two comparisons at most")
        return field.two_valued(
            f"({field.compared(low)} {COMPARE[_FLIP[op1.text]]} {low.sql} AND {field.compared(high)} {COMPARE[op2.text]} {high.sql})"
        )

    def predicate(self, left: Operand) -> str:
        t = self.tok
        negate = bool(self.accept("not"))
        if self.accept("in"):
            values = self.value_list()
            if not values:
                return "TRUE" if negate else "FALSE"
            self.check_list(left, values)
            cast = left.compared(values[0])
            sql = f"{cast} {'NOT IN' if negate else 'IN'} ({', '.join(v.sql for v in values)})"
            return left.two_valued(sql, not_equal=negate)
        if negate:
            raise self.error("expected 'in' after 'not'")
        if self.accept("like"):
            pattern = self.literal()
            if pattern.kind != "string":
                raise self.error("like needs a string pattern", pattern.token)
            return left.two_valued(f"{left.compared(pattern)} LIKE {pattern.sql}")
        if self.accept("is"):
            is_not = bool(self.accept("not"))
            self.expect("null")
            return f"{left.sql} IS {'NOT ' if is_not else ''}NULL"
        if left.field_type is FieldType.BOOL and not left.json:
            return left.sql  # a Bool field on its own is a predicate
        raise self.error("unsupported operator", t)

    # -- functions -------------------------------------------------------------------------------
    def exists(self) -> str:
        """``exists meta["a"]``: the key is present, whatever its value (JSON null included)."""
        self.take()
        target = self.operand()
        if not (target.json and target.keyed and target.jsonb):
            raise self.error('exists needs a JSON key, e.g. exists meta["a"] or a dynamic field', target.token)
        if self.tok.is_op("and", "&&", "or", "||"):
            raise self.error("Milvus applies exists to everything after it: write (exists ...) in parentheses")
        return f"{target.jsonb} IS NOT NULL"

    def call_target(self, name: str) -> Operand:
        self.take()
        self.expect("(")
        target = self.operand()
        if target.array_pg is None and target.jsonb is None:
            raise self.error(f"{name} needs an Array field or a JSON path", target.token)
        return target

    def array_length(self) -> Operand:
        target = self.call_target("array_length")
        self.expect(")")
        if target.array_pg is not None:
            sql = f"cardinality({target.sql})"
        else:  # Milvus counts a missing key or a non-array value as length 0
            p = target.jsonb
            sql = f"(CASE WHEN jsonb_typeof({p}) = 'array' THEN jsonb_array_length({p}) ELSE 0 END)"
        return Operand(sql, False, FieldType.INT64, target.token, computed=True)

    def contains(self, name: str) -> str:
        target = self.call_target(name)
        self.expect(",")
        mode = _CONTAINS[name]
        values = [self.literal()] if mode == "one" else self.value_list()
        if not values:
            raise self.error(f"{name} needs a non-empty list (Milvus rejects [])", self.tokens[self.i - 1])
        self.expect(")")
        if target.array_pg is not None:
            if mode == "one":
                return f"{values[0].sql} = ANY({target.sql})"
            array = f"ARRAY[{', '.join(v.sql for v in values)}]::{target.array_pg}"
            return f"{target.sql} {'@>' if mode == 'all' else '&&'} {array}"
        # JSON: only an array value can contain anything (PostgreSQL's @> also lets a scalar contain itself)
        p = target.jsonb
        typed = [f"{v.sql}::text" if v.kind == "string" else v.sql for v in values]
        if mode == "any":
            test = "(" + " OR ".join(f"{p} @> jsonb_build_array({v})" for v in typed) + ")"
        else:
            test = f"{p} @> jsonb_build_array({', '.join(typed)})"
        return f"COALESCE(jsonb_typeof({p}) = 'array' AND {test}, FALSE)"
