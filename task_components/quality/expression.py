"""Custom-expression rules without ``eval``: a tiny, whitelisted expression language over record fields.

An expression such as ``amount < 5000 or status == 'active'`` is parsed once with ``ast`` (so a bad one is
rejected when the pipeline is validated, exit 2) and evaluated by walking the tree. Only literals, field
names, comparisons, ``and``/``or``/``not``, arithmetic, list/tuple/set literals and a few pure functions
exist: no attribute access, subscripts, lambdas or imports, so a pipeline file can never run code.
A name that is not a field evaluates to ``None``.

Evaluation stays bounded whatever a record holds: ``**`` does not exist, repeating a string or list
(``*``) is refused above ``MAX_SEQUENCE`` items, and ``%`` on a string (printf formatting, where a
record's ``"%0999999999d"`` would build a gigabyte) is refused, and ``round``'s digits are bounded to
``MAX_ROUND_DIGITS`` (``round(5, -3_000_000)`` computes a 3-million-digit power of ten, holding the GIL).
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["MAX_ROUND_DIGITS", "MAX_SEQUENCE", "Expression", "ExpressionError"]

MAX_SEQUENCE = 100_000
MAX_ROUND_DIGITS = 400  # beyond any float's digits and any JSON integer worth rounding


class ExpressionError(ValueError):
    """An expression that uses something outside the whitelist, or fails on a record's values."""


def _mul(a: Any, b: Any) -> Any:
    for seq, times in ((a, b), (b, a)):
        if isinstance(seq, str | bytes | list | tuple) and isinstance(times, int) and len(seq) * times > MAX_SEQUENCE:
            raise ExpressionError(f"repeating a {type(seq).__name__} {times} times exceeds {MAX_SEQUENCE} items")
    return a * b


def _mod(a: Any, b: Any) -> Any:
    if isinstance(a, str | bytes):
        raise ExpressionError("% on text (printf formatting) is not allowed")
    return a % b


def _round(number: Any, digits: Any = None) -> Any:
    if isinstance(digits, int) and abs(digits) > MAX_ROUND_DIGITS:
        raise ExpressionError(f"round to {digits} digits is outside +-{MAX_ROUND_DIGITS}")
    return round(number) if digits is None else round(number, digits)


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len,
    "abs": abs,
    "min": min,
    "max": max,
    "round": _round,
    "lower": lambda s: s.lower(),
    "upper": lambda s: s.upper(),
    "str": str,
    "int": int,
    "float": float,
}
_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: _mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: _mod,
}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}


class Expression:
    __slots__ = ("source", "tree")

    def __init__(self, source: str) -> None:
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"expression {source!r} is not valid: {exc.msg}") from None
        for node in ast.walk(tree):
            self._check(node, source)
        self.source, self.tree = source, tree

    @staticmethod
    def _check(node: ast.AST, source: str) -> None:
        allowed = (
            ast.Expression,
            ast.BoolOp,
            ast.And,
            ast.Or,
            ast.UnaryOp,
            ast.Not,
            ast.USub,
            ast.UAdd,
            ast.BinOp,
            ast.Compare,
            ast.Name,
            ast.Load,
            ast.Constant,
            ast.List,
            ast.Tuple,
            ast.Set,
            ast.Call,
            ast.IfExp,
            *_BINARY,
            *_COMPARE,
        )
        if not isinstance(node, allowed):
            raise ExpressionError(f"expression {source!r}: {type(node).__name__} is not allowed")
        if isinstance(node, ast.Call) and (not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS or node.keywords):
            name = node.func.id if isinstance(node.func, ast.Name) else "this call"
            raise ExpressionError(f"expression {source!r}: {name} is not an allowed function ({', '.join(_FUNCTIONS)})")

    def __call__(self, record: Mapping[str, Any]) -> Any:
        try:
            return self._eval(self.tree.body, record)
        except ExpressionError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure on a record's values is that record's error
            raise ExpressionError(f"{type(exc).__name__}: {exc}") from None

    def _eval(self, node: ast.AST, rec: Mapping[str, Any]) -> Any:
        match node:
            case ast.Constant(value=value):
                return value
            case ast.Name(id=name):
                return rec.get(name)
            case ast.BoolOp(op=ast.And(), values=values):
                result: Any = True
                for v in values:
                    result = self._eval(v, rec)
                    if not result:
                        return result
                return result
            case ast.BoolOp(values=values):
                result = False
                for v in values:
                    result = self._eval(v, rec)
                    if result:
                        return result
                return result
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                return not self._eval(operand, rec)
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                return -self._eval(operand, rec)
            case ast.UnaryOp(operand=operand):
                return +self._eval(operand, rec)
            case ast.BinOp(left=left, op=op, right=right):
                return _BINARY[type(op)](self._eval(left, rec), self._eval(right, rec))
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                current = self._eval(left, rec)
                for cmp, comp in zip(ops, comparators, strict=True):
                    nxt = self._eval(comp, rec)
                    if not _COMPARE[type(cmp)](current, nxt):
                        return False
                    current = nxt
                return True
            case ast.List(elts=elts) | ast.Tuple(elts=elts):
                return [self._eval(e, rec) for e in elts]
            case ast.Set(elts=elts):
                return {self._eval(e, rec) for e in elts}
            case ast.IfExp(test=test, body=body, orelse=orelse):
                return self._eval(body, rec) if self._eval(test, rec) else self._eval(orelse, rec)
            case ast.Call(func=ast.Name(id=name), args=args):
                return _FUNCTIONS[name](*(self._eval(a, rec) for a in args))
        raise ExpressionError(f"{type(node).__name__} is not allowed")  # unreachable after _check
