"""The tokenizer: every character of a filter is classified here, before any SQL is written.

Numbers are unsigned numerals (a sign is a separate token, so ``x-2`` reads as ``x - 2`` as in
Milvus); strings keep their quotes and are re-quoted for SQL by ``sql_string`` only. Anything the
grammar has no token for (``;``, ``#``, a backtick...) fails here, naming the character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from task_components.errors import FilterConversionError

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')
    | (?P<op>\*\*|==|!=|<=|>=|&&|\|\||[<>!()\[\],+\-*/%])
    | (?P<name>[A-Za-z_$][A-Za-z0-9_]*)
    | (?P<bad>\S)
    )""",
    re.VERBOSE,
)
KEYWORDS = frozenset({"and", "or", "not", "in", "like", "is", "null", "true", "false", "exists"})
COMPARE = {"==": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
ARITH = frozenset({"+", "-", "*", "/", "%", "**"})


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # number, string, op, name, kw or end
    text: str
    pos: int

    def is_op(self, *texts: str) -> bool:
        return self.kind in ("op", "kw") and self.text in texts


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
        if kind == "name" and text.lower() in KEYWORDS:
            kind, text = "kw", text.lower()
        tokens.append(Token(kind, text, start))
        pos = m.end()
    tokens.append(Token("end", "", len(expr)))
    return tokens


def sql_string(token: Token) -> str:
    """A Milvus string token as a SQL literal: backslash escapes resolved, ``'`` doubled."""
    body = re.sub(r"\\(.)", r"\1", token.text[1:-1])
    return "'" + body.replace("'", "''") + "'"


def json_key(token: Token) -> str:
    """A path key (string or index token) as an element of a PostgreSQL text-array literal."""
    text = token.text[1:-1] if token.kind == "string" else token.text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
