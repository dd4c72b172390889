"""Milvus expression -> SQL: the translation, and errors that name the token at fault."""

from __future__ import annotations

import pytest

from task_components.errors import FilterConversionError, ShadowError
from task_components.schema import resolve_schema
from task_components.shadow.filters import to_sql

SCHEMA = resolve_schema("all_types")


@pytest.mark.parametrize(
    ("expr", "sql"),
    [
        ('id > 5 and f_varchar like "a%"', '("id" > 5 AND "f_varchar" LIKE \'a%\')'),
        ("id == 1 || id != 2 && f_int8 <= -3", '("id" = 1 OR ("id" <> 2 AND "f_int8" <= -3))'),
        ("not (id >= 1e3)", '(NOT "id" >= 1e3)'),
        ('f_json["category"] == "cloud"', "(\"f_json\" #>> '{\"category\"}') = 'cloud'"),
        ('f_json["a"]["b"] > 0.5', '(("f_json" #>> \'{"a","b"}\'))::double precision > 0.5'),
        ('f_json["active"] == true', '(("f_json" #>> \'{"active"}\'))::boolean = TRUE'),
        ("extra_score >= 0.3", '(("$meta" #>> \'{"extra_score"}\'))::double precision >= 0.3'),
        ('f_category not in ["a", "b"]', "\"f_category\" NOT IN ('a', 'b')"),
        ("id in []", "FALSE"),
        ("array_contains(f_array_int, 5)", '5 = ANY("f_array_int")'),
        ("array_contains_all(f_array_int, [1, 2])", '"f_array_int" @> ARRAY[1, 2]::bigint[]'),
        ('array_contains_any(f_array_str, ["x"])', "\"f_array_str\" && ARRAY['x']::text[]"),
        ("f_array_int[0] == 3", '"f_array_int"[1] = 3'),
        ("f_int64 is not null", '"f_int64" IS NOT NULL'),
        ("not f_bool", '(NOT "f_bool")'),
        ("f_varchar == 'it''s'", None),  # adjacent strings are not a thing in Milvus: must fail
        ('f_varchar == "O\'Brien"', "\"f_varchar\" = 'O''Brien'"),
        ("", "TRUE"),
    ],
)
def test_translation(expr: str, sql: str | None) -> None:
    if sql is None:
        with pytest.raises(FilterConversionError):
            to_sql(expr, SCHEMA)
    else:
        assert to_sql(expr, SCHEMA) == sql


@pytest.mark.parametrize(
    ("expr", "token", "message"),
    [
        ("id + 1 > 2", "+", "unsupported character"),
        ("text_match(f_varchar, 'x')", "text_match", "unsupported function"),
        ("1 < id", "1", "expected a field name"),
        ("id < 1 < 5", "<", "chained comparisons"),
        ("nope == 1", "nope", "unknown field"),
        ("id ==", "end of expression", "expected a value"),
        ("(id == 1", "end of expression", "expected ')'"),
        ('f_int8["x"] == 1', '"x"', "cannot be indexed"),
        ("id like 5", "5", "like needs a string"),
    ],
)
def test_errors_name_the_token(expr: str, token: str, message: str) -> None:
    schema = SCHEMA if "nope" not in expr else resolve_schema("simple")
    with pytest.raises(FilterConversionError) as info:
        to_sql(expr, schema)
    assert info.value.token == token and message in str(info.value)
    assert isinstance(info.value, ShadowError)


def test_string_literals_cannot_inject_sql() -> None:
    sql = to_sql('f_varchar == "x\'; DROP TABLE t; --"', SCHEMA)
    assert sql == "\"f_varchar\" = 'x''; DROP TABLE t; --'"
