"""Every converter and standardization, with property tests on the converters (no services)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from task_components.contracts import StreamBatch, StreamRecord
from task_components.standardization import StandardizeParams, StandardizeStage
from task_components.standardization.convert import ConversionError, to_bool, to_float, to_int, to_iso_utc, to_str
from task_components.standardization.normalize import (
    lower,
    normalize_country,
    normalize_email,
    normalize_phone,
    title,
    trim,
    upper,
)

aware = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2999, 12, 31), timezones=st.timezones()).filter(
    lambda d: d.utcoffset() is not None
)


# -- converters ----------------------------------------------------------------------------------------
@given(st.integers(min_value=-(10**15), max_value=10**15))
def test_to_int_reads_back_any_integer_written_in_common_ways(n: int) -> None:
    assert to_int(n) == to_int(str(n)) == to_int(f"{n:,}") == to_int(float(n)) == n


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_to_float_reads_back_repr(x: float) -> None:
    assert to_float(repr(x)) == x and to_float(x) == x


@pytest.mark.parametrize("bad", ["abc", "1.5", [], {}, True, "12,34x"])
def test_to_int_rejects_with_reason(bad: object) -> None:
    with pytest.raises(ConversionError, match="cannot convert"):
        to_int(bad)


@pytest.mark.parametrize("bad", ["N/A", "nan", "inf", math.inf, True, "1.2.3"])
def test_to_float_rejects_non_finite_and_text(bad: object) -> None:
    with pytest.raises(ConversionError, match="finite float"):
        to_float(bad)


def test_to_float_reads_currency_and_thousands() -> None:
    assert to_float("$1,234.50") == 1234.5 and to_float(" 12 ") == 12.0


@pytest.mark.parametrize(("raw", "want"), [("yes", True), ("N", False), ("TRUE", True), (0, False), (1, True)])
def test_to_bool(raw: object, want: bool) -> None:
    assert to_bool(raw) is want


@pytest.mark.parametrize("bad", ["maybe", 2, 1.0])
def test_to_bool_rejects(bad: object) -> None:
    with pytest.raises(ConversionError):
        to_bool(bad)


def test_to_str_and_none_pass_through() -> None:
    assert to_str(12) == "12" and to_str(True) == "True"
    assert all(f(None) is None for f in (to_int, to_float, to_bool, to_str, to_iso_utc))
    with pytest.raises(ConversionError):
        to_str({"a": 1})


@given(aware)
def test_iso_utc_is_the_same_instant_in_every_spelling(moment: datetime) -> None:
    moment = moment.replace(microsecond=0)
    want = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert to_iso_utc(moment) == to_iso_utc(moment.isoformat()) == want
    assert to_iso_utc(int(moment.timestamp())) == want
    if moment.timestamp() * 1000 > 1e11:  # the documented limit: smaller epoch numbers are seconds
        assert to_iso_utc(int(moment.timestamp()) * 1000) == want  # epoch milliseconds


@given(aware)
def test_iso_utc_is_idempotent(moment: datetime) -> None:
    once = to_iso_utc(moment)
    assert to_iso_utc(once) == once


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("2024-03-05", "2024-03-05T00:00:00Z"),
        ("03/05/2024", "2024-03-05T00:00:00Z"),
        ("05.03.2024", "2024-03-05T00:00:00Z"),
        ("5 Mar 2024", "2024-03-05T00:00:00Z"),
        ("March 5, 2024", "2024-03-05T00:00:00Z"),
        ("2024-03-05T10:00:00+02:00", "2024-03-05T08:00:00Z"),
        ("2024-03-05 10:00:00", "2024-03-05T10:00:00Z"),
        (datetime(2024, 3, 5, 10, tzinfo=timezone(timedelta(hours=-5))), "2024-03-05T15:00:00Z"),
        ("2024-03-05T10:00:00.250Z", "2024-03-05T10:00:00.250000Z"),
    ],
)
def test_iso_utc_formats(raw: object, want: str) -> None:
    assert to_iso_utc(raw) == want


@pytest.mark.parametrize("bad", ["yesterday", "31/31/2020", "2020-13-45", True, 10**20])
def test_iso_utc_rejects(bad: object) -> None:
    with pytest.raises(ConversionError):
        to_iso_utc(bad)


def test_custom_date_formats_decide_ambiguous_dates() -> None:
    assert to_iso_utc("03/05/2024", formats=["%d/%m/%Y"]) == "2024-05-03T00:00:00Z"


# -- standardizations ----------------------------------------------------------------------------------
def test_trim_and_case() -> None:
    assert trim("  a   b \t") == "a b"
    assert lower("AbC") == "abc" and upper("AbC") == "ABC"
    assert title("jOHN  o'BRIEN") == "John  O'brien"
    with pytest.raises(ConversionError, match="needs text"):
        trim(5)


@given(st.text())
def test_text_operations_are_idempotent(text: str) -> None:
    for op in (trim, lower, upper):
        assert op(op(text)) == op(text)


@pytest.mark.parametrize(
    ("raw", "want"),
    [("  Alice.Smith@Example.COM ", "alice.smith@example.com"), ("mailto:a+b@x.io", "a+b@x.io")],
)
def test_email(raw: str, want: str) -> None:
    assert normalize_email(raw) == want and normalize_email(want) == want


@pytest.mark.parametrize("bad", ["alice at example.com", "a@b", "@x.com", "a@@x.com", ""])
def test_email_rejects(bad: str) -> None:
    with pytest.raises(ConversionError, match="not an e-mail"):
        normalize_email(bad)


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("(415) 555-0123", "+14155550123"),
        ("415.555.0123", "+14155550123"),
        ("1-415-555-0123", "+14155550123"),
        ("+44 20 7946 0958", "+442079460958"),
        ("0044 20 7946 0958", "+442079460958"),
        (4155550123, "+14155550123"),
    ],
)
def test_phone_e164(raw: object, want: str) -> None:
    assert normalize_phone(raw) == want


def test_phone_default_country_code() -> None:
    assert normalize_phone("030 1234 5678"[1:], default_country_code="49") == "+4930123456" + "78"


@given(st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True))
def test_phone_is_idempotent_on_e164(e164: str) -> None:
    assert normalize_phone(e164) == e164


@pytest.mark.parametrize("bad", ["12345", "call me", "+0 000", "+1234567890123456"])
def test_phone_rejects(bad: str) -> None:
    with pytest.raises(ConversionError, match="not a phone number"):
        normalize_phone(bad)


@pytest.mark.parametrize(("raw", "want"), [("usa", "US"), ("United Kingdom", "GB"), ("deu", "DE"), (" u.s.a. ", "US"), ("jp", "JP")])
def test_country(raw: str, want: str) -> None:
    assert normalize_country(raw) == want and normalize_country(want) == want


def test_country_rejects_unknown() -> None:
    with pytest.raises(ConversionError, match="not a known country"):
        normalize_country("Atlantis")


# -- the stage -----------------------------------------------------------------------------------------
def _run(params: dict, *values: dict) -> list[StreamRecord]:
    records = [StreamRecord("t", 0, i, b"{}", dict(v), f"c{i}") for i, v in enumerate(values)]
    StandardizeStage(StandardizeParams.model_validate(params)).processor()(StreamBatch(0, records))
    return records


def test_stage_maps_converts_and_standardizes_and_collects_errors_per_record() -> None:
    params = {
        "mapping": {"Mail": "email", "Amt": "amount"},
        "types": {"amount": "float", "when": "datetime"},
        "fields": {"email": ["trim", "email"], "country": ["country"]},
        "country_aliases": {"Atlantis": "AQ"},
    }
    good, bad_amount, bad_email, atlantis = _run(
        params,
        {"Mail": " A@B.io ", "Amt": "1,5", "when": "2024-01-02", "country": "usa"},
        {"Mail": "a@b.io", "Amt": "lots"},
        {"Mail": "nope", "Amt": 1},
        {"Mail": "a@b.io", "country": "atlantis"},
    )
    assert good.value == {"email": "a@b.io", "amount": 15.0, "when": "2024-01-02T00:00:00Z", "country": "US"}
    assert good.rejection is None
    assert bad_amount.rejection is not None and (bad_amount.rejection.step, bad_amount.rejection.rule) == (
        "conversion",
        "amount",
    )
    assert bad_email.rejection is not None and bad_email.rejection.rule == "email.email"
    assert atlantis.value is not None and atlantis.value["country"] == "AQ"


def test_drop_unmapped_keeps_only_targets() -> None:
    (rec,) = _run({"mapping": {"a": "x"}, "drop_unmapped": True}, {"a": 1, "b": 2})
    assert rec.value == {"x": 1}


def test_unknown_operation_is_rejected_when_the_pipeline_is_validated() -> None:
    with pytest.raises(ValueError, match="unknown standardization 'shout'"):
        StandardizeParams.model_validate({"fields": {"a": ["trim", "shout"]}})


@pytest.mark.parametrize("bad", [2**63, -(2**63) - 1, 10**400, "9" * 30, 1e19, "1e30"])
def test_to_int_is_bounded_to_64_bits_with_the_reason(bad: object) -> None:
    with pytest.raises(ConversionError, match="64-bit"):
        to_int(bad)
    assert to_int(2**63 - 1) == 2**63 - 1 and to_int(str(-(2**63))) == -(2**63)


def test_huge_numbers_are_conversion_errors_of_the_record_not_overflows() -> None:
    with pytest.raises(ConversionError, match="finite float"):
        to_float(10**400)
    with pytest.raises(ConversionError, match="out of range"):
        to_iso_utc(10**400)


def test_a_record_with_10_to_the_400_quantity_is_rejected_in_conversion() -> None:
    stage = StandardizeStage(StandardizeParams(types={"quantity": "int", "amount": "float"}))
    batch = StreamBatch(0, [StreamRecord("t", 0, i, b"", {"quantity": q, "amount": 1}, f"c{i}") for i, q in enumerate([3, 10**400])])
    stage.processor()(batch)
    assert batch.records[0].rejection is None and batch.records[0].value == {"quantity": 3, "amount": 1.0}
    why = batch.records[1].rejection
    assert why is not None and (why.step, why.rule) == ("conversion", "quantity") and "64-bit" in why.reason
    assert len(why.reason) < 200


def test_an_operation_failing_unforeseen_rejects_the_record(monkeypatch: pytest.MonkeyPatch) -> None:
    from task_components.standardization import task

    def boom(value: object) -> object:
        raise OverflowError("int too large to convert to float")

    monkeypatch.setitem(task.OPERATIONS, "boom", boom)
    stage = StandardizeStage(StandardizeParams(fields={"name": ["trim", "boom"]}))
    batch = StreamBatch(0, [StreamRecord("t", 0, 0, b"", {"name": " x "}, "c0")])
    stage.processor()(batch)
    why = batch.records[0].rejection
    assert why is not None and (why.step, why.rule) == ("standardization", "name.boom")
    assert why.reason == "cannot process this value: OverflowError: int too large to convert to float"
