"""Milvus expression -> SQL: the translation, and errors that name the token at fault.

Which rows each form selects is checked against real Milvus in tests/integration/test_filters.py;
these pin the SQL and every refusal.
"""

from __future__ import annotations

import pytest

from task_components.errors import FilterConversionError, ShadowError
from task_components.schema import resolve_schema
from task_components.shadow.filters import to_sql

SCHEMA = resolve_schema("all_types")
A = '("f_json" #>> \'{"a"}\')'  # f_json["a"] as text
AB = '("f_json" #> \'{"a"}\')'  # ... and as jsonb
T = '("f_json" #> \'{"t"}\')'  # f_json["t"] as jsonb
NUM_A = f"(CASE WHEN jsonb_typeof({AB}) = 'number' THEN ({A})::double precision END)"
STR_A = f"(CASE WHEN jsonb_typeof({AB}) = 'string' THEN ({A}) END)"
BOOL_A = f"(CASE WHEN jsonb_typeof({AB}) = 'boolean' THEN ({A})::boolean END)"
IF_NUMBER_A = f"CASE WHEN jsonb_typeof({AB}) = 'number' THEN"


@pytest.mark.parametrize(
    ("expr", "sql"),
    [
        ('id > 5 and f_varchar like "a%"', '("id" > 5 AND "f_varchar" LIKE \'a%\')'),
        ("id == 1 || id != 2 && f_int8 <= -3", '("id" = 1 OR ("id" <> 2 AND "f_int8" <= -3))'),
        ("not (id >= 1e3)", '(NOT "id" >= 1e3)'),
        ('f_json["a"] == "cloud"', f"COALESCE({STR_A} = 'cloud', FALSE)"),
        ('f_json["a"] > 0.5', f"COALESCE({NUM_A} > 0.5, FALSE)"),
        ('f_json["a"] == true', f"COALESCE({BOOL_A} = TRUE, FALSE)"),
        (
            'f_json["a"]["b"] like "x%"',
            'COALESCE((CASE WHEN jsonb_typeof(("f_json" #> \'{"a","b"}\')) = \'string\' '
            'THEN (("f_json" #>> \'{"a","b"}\')) END) LIKE \'x%\', FALSE)',
        ),
        (
            "extra_score >= 0.3",
            "COALESCE((CASE WHEN jsonb_typeof((\"$meta\" #> '{\"extra_score\"}')) = 'number' "
            'THEN (("$meta" #>> \'{"extra_score"}\'))::double precision END) >= 0.3, FALSE)',
        ),
        ('f_category not in ["a", "b"]', "\"f_category\" NOT IN ('a', 'b')"),
        ("id in [-1, +2]", '"id" IN (-1, 2)'),
        ("f_double in [1, 2.5]", '"f_double" IN (1, 2.5)'),
        ("id in []", "FALSE"),
        ("array_contains(f_array_int, 5)", '5 = ANY("f_array_int")'),
        ("array_contains_all(f_array_int, [1, 2])", '"f_array_int" @> ARRAY[1, 2]::bigint[]'),
        ('array_contains_any(f_array_str, ["x"])', "\"f_array_str\" && ARRAY['x']::text[]"),
        ("f_array_int[0] == 3", 'COALESCE("f_array_int"[1] = 3, FALSE)'),
        ("f_int64 is not null", '"f_int64" IS NOT NULL'),
        ("not f_bool", '(NOT "f_bool")'),
        ("f_varchar == 'it''s'", None),  # adjacent strings are not a thing in Milvus: must fail
        ('f_varchar == "O\'Brien"', "\"f_varchar\" = 'O''Brien'"),
        ("", "TRUE"),
        # Milvus is two-valued: an absent JSON key passes != and not in; an absent array element fails all
        ('f_json["a"] != 1', f"COALESCE({NUM_A} <> 1, TRUE)"),
        ('f_json["a"] not in [1]', f"COALESCE({NUM_A} NOT IN (1), TRUE)"),
        ("f_array_int[4] != 3", 'COALESCE("f_array_int"[5] <> 3, FALSE)'),
        # ranges and reversed comparisons
        ("1 < id < 5", '("id" > 1 AND "id" < 5)'),
        ("10 >= f_int8 > -2", '("f_int8" <= 10 AND "f_int8" > -2)'),
        ("5 > id", '"id" < 5'),
        ("-1 != id", '"id" <> -1'),
        ('1 < f_json["a"] <= 2', f"COALESCE(({NUM_A} > 1 AND {NUM_A} <= 2), FALSE)"),
        # one arithmetic step; integer columns in 64 bits
        ("f_int8 * 100 == 1200", '("f_int8")::bigint * 100 = 1200'),
        ("f_int64 % 3 == 0", '("f_int64")::bigint % 3 = 0'),
        ("f_int64 / -2 != 1", '("f_int64")::bigint / (-2) <> 1'),
        ("f_int64-2 == 0", '("f_int64")::bigint - 2 = 0'),
        ("2 + f_int32 == 4", '("f_int32")::bigint + 2 = 4'),
        ("-2 * f_int16 == 4", '("f_int16")::bigint * (-2) = 4'),
        ("f_int64 + 2 > 10", '("f_int64")::bigint + 2 > 10'),
        ("f_double / 2 <= 1.5", '"f_double" / 2 <= 1.5'),
        ("1 < f_int32 - 1 < 5", '(("f_int32")::bigint - 1 > 1 AND ("f_int32")::bigint - 1 < 5)'),
        ("f_array_int[0] % 2 == 1", 'COALESCE(("f_array_int"[1])::bigint % 2 = 1, FALSE)'),
        ('f_json["a"] * 2 == 4', f"COALESCE(({IF_NUMBER_A} ({A})::double precision * 2 END) = 4, FALSE)"),
        ('f_json["a"] % 5 == -2', f"COALESCE(({IF_NUMBER_A} trunc(({A})::numeric)::bigint % 5 END) = -2, FALSE)"),
        (
            'f_json["a"] / 2 == 1',
            f"COALESCE(({IF_NUMBER_A} CASE WHEN ({A}) ~ '^-?[0-9]+$'"
            f" THEN ({A})::bigint / 2 ELSE ({A})::double precision / 2 END END) = 1, FALSE)",
        ),
        # the contains family: Array fields use array operators, JSON paths need an array value
        ('json_contains(f_json["t"], "x")', f"COALESCE(jsonb_typeof({T}) = 'array' AND {T} @> jsonb_build_array('x'::text), FALSE)"),
        ('JSON_CONTAINS_ALL(f_json["t"], [1, -2])', f"COALESCE(jsonb_typeof({T}) = 'array' AND {T} @> jsonb_build_array(1, -2), FALSE)"),
        (
            'json_contains_any(f_json["t"], [1, true])',
            f"COALESCE(jsonb_typeof({T}) = 'array' AND ({T} @> jsonb_build_array(1) OR {T} @> jsonb_build_array(TRUE)), FALSE)",
        ),
        ("json_contains(f_array_int, 3)", '3 = ANY("f_array_int")'),
        ("ARRAY_CONTAINS(f_array_int, 3)", '3 = ANY("f_array_int")'),
        ('array_contains(f_json["t"], 1)', f"COALESCE(jsonb_typeof({T}) = 'array' AND {T} @> jsonb_build_array(1), FALSE)"),
        # exists and array_length
        ('exists f_json["a"]', f"{AB} IS NOT NULL"),
        ("EXISTS extra_score", '("$meta" #> \'{"extra_score"}\') IS NOT NULL'),
        ('(exists f_json["a"]) and id > 0', f'({AB} IS NOT NULL AND "id" > 0)'),
        ("array_length(f_array_int) == 3", 'cardinality("f_array_int") = 3'),
        ("1 < ARRAY_LENGTH(f_array_str) <= 3", '(cardinality("f_array_str") > 1 AND cardinality("f_array_str") <= 3)'),
        ('array_length(f_json["t"]) != 0', f"(CASE WHEN jsonb_typeof({T}) = 'array' THEN jsonb_array_length({T}) ELSE 0 END) <> 0"),
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
        ("id ; 1", ";", "unsupported character"),
        ("text_match(f_varchar, 'x')", "text_match", "text_match is not supported"),
        ("TEXT_MATCH(f_varchar, 'x')", "TEXT_MATCH", "text_match is not supported"),
        ("upper(f_varchar) == 'X'", "upper", "unsupported function"),
        ('Json_Contains(f_json["t"], 1)', "Json_Contains", "unsupported function"),
        ("1 < 2", "2", "expected a field name"),
        ("id < 1 < 5", "<", "a chained comparison starts with a value"),
        ("1 < id > 0", ">", "a range needs two < / <= or two > / >="),
        ("1 == id < 3", "<", "a range needs two"),
        ("1 < id < 5 < 6", "<", "two comparisons at most"),
        ("id == f_int32", "f_int32", "comparing two fields is not supported"),
        ("nope == 1", "nope", "unknown field"),
        ("id ==", "end of expression", "expected a value"),
        ("(id == 1", "end of expression", "expected ')'"),
        ('f_int8["x"] == 1', '"x"', "cannot be indexed"),
        ("id like 5", "5", "like needs a string"),
        # arithmetic Milvus does not evaluate, or evaluates in a way SQL would not match
        ("id ** 2 == 4", "**", "Milvus applies ** to constants only"),
        ("2 ** id == 4", "**", "constant before a field only with + or *"),
        ("10 - id == 3", "-", "constant before a field only with + or *"),
        ("id + 1 + 1 == 3", "+", "one arithmetic operation per comparison"),
        ("id / 0 == 1", "/", "division by zero"),
        ("id % 0.0 == 1", "%", "division by zero"),
        ('f_json["a"] / 0 == 1', "/", "division by zero"),
        ('f_json["a"] % 2.5 == 1', "%", "integer operands only"),
        ('f_json["a"] * 0.5 == 1', "*", "integer operands only"),
        ('f_json["a"] + 1 == 1.5', "1.5", "compares this arithmetic with integers only"),
        ('f_json["a"] in [1, "2"]', '"2"', "mixes value types"),
        ('f_json["a"] not in [1, 2.5]', "2.5", "mixes value types"),
        ("id in [1, true]", "true", "mixes value types"),
        ("f_float % 2 == 1", "%", "Milvus applies % to integer fields only"),
        ("id + 1.5 == 3", "+", "integer operands only"),
        ("id + 1 == 2.5", "2.5", "compares this arithmetic with integers only"),
        ("id == 2 + 3", "+", "arithmetic on the constant side"),
        ("f_varchar + 1 == 2", "+", "arithmetic needs a numeric field, 'f_varchar' is VarChar"),
        ("f_array_int + 1 == 2", "+", "arithmetic needs a numeric field"),
        ('id + "a" == 2', "+", "arithmetic needs a number"),
        ("id % 2 in [1]", "in", "applies to a field, not to arithmetic"),
        ("array_length(f_array_int) in [1]", "in", "applies to a field, not to arithmetic or array_length"),
        ("array_length(f_array_int) + 1 == 2", "+", "one arithmetic operation"),
        # functions
        ("json_contains(id, 1)", "id", "json_contains needs an Array field or a JSON path"),
        ("array_length(f_int64) == 1", "f_int64", "array_length needs an Array field or a JSON path"),
        ('json_contains_all(f_json["t"], [])', "]", "needs a non-empty list"),
        ("array_contains_any(f_array_int, [])", "]", "needs a non-empty list"),
        ('json_contains(f_json["t"], [1])', "[", "expected a value"),
        ('exists f_json["a"] and id > 0', "and", "write (exists ...) in parentheses"),
        ('exists f_json["a"] || id > 0', "||", "in parentheses"),
        ("exists f_json", "f_json", "exists needs a JSON key"),
        ("exists id", "id", "exists needs a JSON key"),
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
    contains = to_sql('json_contains(f_json["t"], "x\'); DROP TABLE t; --")', SCHEMA)
    assert contains.endswith("jsonb_build_array('x''); DROP TABLE t; --'::text), FALSE)")
    path = to_sql('exists f_json["a\'); DROP TABLE t; --"]', SCHEMA)
    assert path == "(\"f_json\" #> '{\"a''); DROP TABLE t; --\"}') IS NOT NULL"


def test_a_minus_sign_never_forms_a_sql_comment() -> None:
    assert "--" not in to_sql("f_int64 - -2 == 0", SCHEMA)
    assert to_sql("f_int64 - -2 == 0", SCHEMA) == '("f_int64")::bigint - (-2) = 0'
