"""Every quality rule, the safe expression language, duplicates and the invalid-share threshold."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from task_components.contracts import BatchThresholdError, StreamBatch, StreamRecord
from task_components.quality import QualityParams, QualityStage
from task_components.quality.expression import Expression, ExpressionError
from task_components.quality.rules import Rule

rule = TypeAdapter(Rule).validate_python


def test_not_null() -> None:
    r = rule({"name": "n", "type": "not_null", "field": "a"})
    assert r.failure({"a": 0}) is None
    assert r.failure({}) == "a is missing"
    assert r.failure({"a": "  "}) == "a is empty"
    assert rule({"name": "n", "type": "not_null", "field": "a", "allow_empty": True}).failure({"a": ""}) is None


def test_range() -> None:
    r = rule({"name": "r", "type": "range", "field": "x", "min": 0, "max": 10})
    assert [r.failure({"x": v}) is None for v in (0, 10, 5.5, None)] == [True] * 4
    assert "below 0" in (r.failure({"x": -1}) or "")
    assert "above 10" in (r.failure({"x": 10.01}) or "")
    assert "not a number" in (r.failure({"x": "5"}) or "")
    assert "not a number" in (r.failure({"x": True}) or "")
    assert "not a finite number" in (r.failure({"x": float("nan")}) or "")  # NaN compares false with any bound
    assert "not a finite number" in (r.failure({"x": float("-inf")}) or "")
    with pytest.raises(ValidationError, match="needs min, max"):
        rule({"name": "r", "type": "range", "field": "x"})
    with pytest.raises(ValidationError, match="greater than max"):
        rule({"name": "r", "type": "range", "field": "x", "min": 2, "max": 1})


def test_pattern_matches_whole_value() -> None:
    r = rule({"name": "p", "type": "pattern", "field": "code", "pattern": "[A-Z]{2}"})
    assert r.failure({"code": "US"}) is None
    assert "does not match" in (r.failure({"code": "USA"}) or "")
    assert "does not match" in (r.failure({"code": 12}) or "")
    with pytest.raises(ValidationError, match=r"cannot run in RE2.*missing \)"):
        rule({"name": "p", "type": "pattern", "field": "c", "pattern": "("})


@pytest.mark.parametrize(("pattern", "why"), [(r"(a)\1", "invalid escape sequence"), ("(?=a)a", "perl operator")])
def test_a_pattern_re2_cannot_run_is_refused_with_re2s_reason(pattern: str, why: str) -> None:
    with pytest.raises(ValidationError, match=f"cannot run in RE2.*{why}"):
        rule({"name": "p", "type": "pattern", "field": "c", "pattern": pattern})


def test_catastrophic_backtracking_pattern_answers_at_once() -> None:
    r = rule({"name": "p", "type": "pattern", "field": "c", "pattern": "(a+)+$"})
    started = time.monotonic()
    assert "does not match" in (r.failure({"c": "a" * 5000 + "!"}) or "")  # Python's re: longer than the universe
    assert r.failure({"c": "a" * 32}) is None
    assert time.monotonic() - started < 0.5


def test_a_reason_quotes_a_huge_value_shortened() -> None:
    r = rule({"name": "p", "type": "pattern", "field": "c", "pattern": "[a-z]+"})
    reason = r.failure({"c": "X" * 5_000_000}) or ""
    assert "does not match" in reason and len(reason) < 200


def test_a_rule_that_raises_on_a_value_rejects_that_record_not_the_batch() -> None:
    stage = QualityStage(QualityParams.model_validate({"rules": [{"name": "code", "type": "pattern", "field": "c", "pattern": "[a-z]+"}]}))
    batch = StreamBatch(0, [StreamRecord("t", 0, i, b"", {"c": c}, f"c{i}") for i, c in enumerate(["ok", "\ud800"])])
    stage.processor()(batch)
    assert batch.records[0].rejection is None
    why = batch.records[1].rejection
    assert why is not None and why.rule == "code" and "UnicodeEncodeError" in why.reason


@pytest.mark.parametrize(
    ("source", "record", "error"),
    [
        ("len(name * n) > 0", {"name": "ab", "n": 10**9}, "exceeds 100000 items"),
        ("len(fmt % n) > 0", {"fmt": "%0999999999d", "n": 1}, "printf formatting"),
        ("round(n, d) == 0", {"n": 5, "d": -3_000_000}, "outside \\+-400"),  # 1.3 s holding the GIL unbounded
        ("round(n, d) == 0", {"n": 5.5, "d": 10**9}, "outside \\+-400"),
    ],
)
def test_expressions_stay_bounded_whatever_a_record_holds(source: str, record: dict, error: str) -> None:
    with pytest.raises(ExpressionError, match=error):
        Expression(source)(record)
    assert Expression("len(name * 3)")({"name": "ab"}) == 6 and Expression("n % 4")({"n": 10}) == 2
    assert Expression("round(n, -2)")({"n": 1234}) == 1200 and Expression("round(n)")({"n": 2.6}) == 3


@pytest.mark.parametrize(
    ("expected", "good", "bad"),
    [
        ("int", 3, 3.0),
        ("int", -1, True),
        ("float", 1.5, 1),
        ("float", 1.5, float("nan")),
        ("number", 1, "1"),
        ("number", -2.5, float("inf")),
        ("bool", False, 0),
        ("str", "x", 1),
        ("datetime", "2024-01-02T03:04:05Z", "2024-01-02"),
        ("list", [1], (1,)),
        ("dict", {}, []),
    ],
)
def test_type(expected: str, good: Any, bad: Any) -> None:
    r = rule({"name": "t", "type": "type", "field": "v", "expected": expected})
    assert r.failure({"v": good}) is None
    assert f"is not {expected}" in (r.failure({"v": bad}) or "")


def test_allowed() -> None:
    r = rule({"name": "a", "type": "allowed", "field": "s", "values": ["on", "off"]})
    assert r.failure({"s": "on"}) is None and r.failure({}) is None
    assert "is not one of" in (r.failure({"s": "ON"}) or "")


def test_expression_rule() -> None:
    r = rule({"name": "e", "type": "expression", "expression": "amount <= 2000 or status == 'active'"})
    assert r.failure({"amount": 5000, "status": "active"}) is None
    assert r.failure({"amount": 10, "status": "x"}) is None
    assert "is false" in (r.failure({"amount": 5000, "status": "inactive"}) or "")
    assert "could not be evaluated" in (r.failure({"status": "x"}) or "")  # None <= 2000


@pytest.mark.parametrize(
    ("source", "record", "want"),
    [
        ("len(name) > 2 and lower(name) in ['bob', 'alice']", {"name": "Alice"}, True),
        ("-x + 2 * y == 4 and not z", {"x": 2, "y": 3, "z": False}, True),
        ("1 < x <= 3", {"x": 3}, True),
        ("1 < x <= 3", {"x": 4}, False),
        ("missing is None", {}, True),
        ("'a' if x % 2 else 'b'", {"x": 3}, "a"),
        ("x in {1, 2}", {"x": 2}, True),
        ("abs(round(x)) // 2 - 1", {"x": -4.4}, 1),
    ],
)
def test_expression_language(source: str, record: dict[str, Any], want: Any) -> None:
    assert Expression(source)(record) == want


@pytest.mark.parametrize(
    "source",
    [
        "__import__('os').system('true')",
        "x.__class__",
        "x[0]",
        "(lambda: 1)()",
        "open('f')",
        "[a for a in b]",
        "f'{x}'",
        "x := 1",
        "len(x, key=1)",
    ],
)
def test_expression_refuses_anything_but_the_whitelist(source: str) -> None:
    with pytest.raises(ExpressionError):
        Expression(source)


def test_expression_syntax_error_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="is not valid"):
        rule({"name": "e", "type": "expression", "expression": "a >"})


# -- the stage -----------------------------------------------------------------------------------------
def _batch(seq: int, *values: dict[str, Any] | None) -> StreamBatch:
    return StreamBatch(seq, [StreamRecord("t", 0, i, b"", v, f"c{i}") for i, v in enumerate(values)])


def _stage(**params: Any) -> Any:
    return QualityStage(QualityParams.model_validate(params)).processor()


def test_rules_reject_with_the_rule_name_and_the_first_failure_wins() -> None:
    process = _stage(
        rules=[{"name": "has_a", "type": "not_null", "field": "a"}, {"name": "small_a", "type": "range", "field": "a", "max": 5}]
    )
    batch = _batch(0, {"a": 1}, {}, {"a": 9})
    process(batch)
    assert [r.rejection and r.rejection.rule for r in batch.records] == [None, "has_a", "small_a"]
    assert batch.records[2].rejection is not None and batch.records[2].rejection.step == "quality"


@pytest.mark.parametrize(("action", "written", "marked"), [("remove", 2, 0), ("mark", 4, 2), ("keep", 4, 0)])
def test_duplicates_within_and_across_batches(action: str, written: int, marked: int) -> None:
    process = _stage(duplicates={"key": ["id"], "action": action})
    first, second = _batch(0, {"id": 1}, {"id": 1}), _batch(1, {"id": 1}, {"id": 2})
    process(first)
    process(second)
    out = first.valid() + second.valid()
    assert len(out) == written
    assert sum(bool(r.value and r.value.get("_duplicate")) for r in out) == marked


def test_invalid_records_never_enter_the_duplicate_window() -> None:
    process = _stage(rules=[{"name": "pos", "type": "range", "field": "x", "min": 0}], duplicates={"key": ["id"]})
    batch = _batch(0, {"id": 1, "x": -1}, {"id": 1, "x": 1})
    process(batch)
    assert [r.value for r in batch.valid()] == [{"id": 1, "x": 1}]


def test_window_forgets_old_keys() -> None:
    process = _stage(duplicates={"key": ["id"], "window": 1})
    for seq, key in enumerate([1, 2, 1]):
        batch = _batch(seq, {"id": key})
        process(batch)
        assert batch.valid(), f"key {key} in batch {seq} should not be a duplicate with window=1"


def test_threshold_fails_the_batch_above_the_share_and_counts_earlier_rejections() -> None:
    process = _stage(rules=[{"name": "has_a", "type": "not_null", "field": "a"}], max_invalid_share=0.5, threshold_min_records=4)
    ok = _batch(0, {"a": 1}, {"a": 1}, {}, {})  # 50%: not above
    process(ok)
    bad = _batch(1, {"a": 1}, {}, {}, None)  # None: rejected earlier (decode): counts too
    bad.records[3].reject("decode", "json", "not JSON")
    with pytest.raises(BatchThresholdError, match="3 of 4 records invalid"):
        process(bad)
    small = _batch(2, {}, {})  # below threshold_min_records: never fails
    process(small)


def test_a_list_or_object_duplicate_key_rejects_that_record_not_the_batch() -> None:
    process = _stage(duplicates={"key": ["id", "region"]})
    batch = _batch(0, {"id": {"$gt": ""}, "region": "eu"}, {"id": 1, "region": ["eu"]}, {"id": 1, "region": "eu"})
    process(batch)  # an unhashable key raised TypeError here and failed the run
    why = [r.rejection for r in batch.records]
    assert why[0] is not None and (why[0].step, why[0].rule) == ("quality", "duplicates") and "a dict" in why[0].reason
    assert why[1] is not None and "region is a list" in why[1].reason
    assert why[2] is None


def test_true_and_one_are_different_duplicate_keys() -> None:
    process = _stage(duplicates={"key": ["id"]})
    first, second = _batch(0, {"id": 1}, {"id": True}), _batch(1, {"id": 1.0}, {"id": True}, {"id": False})
    process(first)
    process(second)
    assert [r.duplicate for r in first.records] == [False, False]
    assert [r.duplicate for r in second.records] == [True, True, False]  # 1.0 is 1 (as in MongoDB), True is not


def test_a_pattern_with_ascii_only_classes_is_accepted_with_a_warning() -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        r = rule({"name": "w", "type": "pattern", "field": "c", "pattern": r"\w+\s\d+"})
        rule({"name": "w", "type": "pattern", "field": "c", "pattern": r"\w+\s\d+"})  # said once per pattern
        rule({"name": "u", "type": "pattern", "field": "c", "pattern": r"[\p{L}\s]+"})  # already Unicode-aware
        rule({"name": "e", "type": "pattern", "field": "c", "pattern": r"[a-z]+\\w"})  # an escaped backslash
    assert "does not match" in (r.failure({"c": "café 1"}) or "")  # RE2's \w is ASCII: the reason for the warning
    assert [(e["event"], e["log_level"], e["classes"]) for e in logs] == [("pattern_ascii_classes", "warning", ["\\w", "\\s", "\\d"])]
    assert "\\p{L}" in logs[0]["hint"]
