"""Test data for the streaming pipeline: realistic messy customer records, and the answer key.

Each ``TestRecord`` carries the raw message (mixed date formats, phone punctuation, country names,
amounts as text, stray spaces and capitals) and, independently of the pipeline's code, what a correct
pipeline must make of it: the canonical document for a valid record, the rejecting step for an
invalid one. Integration tests compare the sinks against this answer key, so they test the pipeline
rather than re-run it. Duplicates are re-sends of an earlier valid record, unchanged. Deterministic
per seed: record i depends only on (seed, i).
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

__all__ = ["INVALID_KINDS", "TestRecord", "records"]

FIRST = ["alice", "bob", "carol", "david", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "oscar"]
LAST = ["smith", "jones", "garcia", "miller", "davis", "lopez", "wilson", "moore", "taylor", "thomas", "white"]
COUNTRIES = {  # canonical -> raw spellings
    "US": ["US", "us", "USA", "United States"],
    "GB": ["GB", "uk", "United Kingdom", "GBR"],
    "DE": ["DE", "Germany", "deu"],
    "FR": ["fr", "France", "FRA"],
    "JP": ["JP", "Japan", "jpn"],
    "BR": ["BR", "Brazil", "bra"],
    "IN": ["IN", "India", "ind"],
    "CA": ["ca", "Canada", "CAN"],
}
CALLING = {"US": "1", "CA": "1", "GB": "44", "DE": "49", "FR": "33", "JP": "81", "BR": "55", "IN": "91"}
STATUSES = ["active", "inactive", "pending"]
# kind -> (step, rule) the pipeline in pipelines/streaming.yaml must reject it with
INVALID_KINDS: dict[str, tuple[str, str]] = {
    "missing_email": ("quality", "email_present"),
    "bad_email": ("standardization", "email.email"),
    "negative_amount": ("quality", "amount_range"),
    "bad_status": ("quality", "status_known"),
    "amount_not_number": ("conversion", "amount"),
    "bad_date": ("conversion", "signup_date"),
    "unknown_country": ("standardization", "country.country"),
    "bad_phone": ("standardization", "phone.phone"),
    "big_inactive": ("quality", "large_orders_need_active"),
    "not_json": ("decode", "json"),
}


@dataclass(slots=True)
class TestRecord:
    index: int
    key: str
    raw: bytes
    kind: str  # "valid", "duplicate" or one of INVALID_KINDS
    expected: dict[str, Any] | None  # the canonical document of a valid record (or of the duplicated one)

    @property
    def valid(self) -> bool:
        return self.kind in ("valid", "duplicate")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _date(rng: random.Random) -> tuple[Any, str]:
    day = datetime(2015, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(3650))
    moment = day + timedelta(seconds=rng.randrange(86400))
    style = rng.randrange(6)
    if style == 0:
        return day.strftime("%Y-%m-%d"), _iso(day)
    if style == 1:
        return day.strftime("%m/%d/%Y"), _iso(day)
    if style == 2:
        return day.strftime("%d %b %Y"), _iso(day)
    if style == 3:
        return moment.astimezone(timezone(timedelta(hours=2))).isoformat(), _iso(moment)
    if style == 4:
        return int(moment.timestamp()), _iso(moment)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ"), _iso(moment)


def _phone(rng: random.Random, country: str) -> tuple[str, str]:
    national = f"{rng.randrange(200, 999)}{rng.randrange(200, 999)}{rng.randrange(1000, 9999)}"
    cc = CALLING[country]
    canonical = f"+{cc}{national}"
    if cc == "1":
        a, b, c = national[:3], national[3:6], national[6:]
        raw = rng.choice([f"({a}) {b}-{c}", f"{a}.{b}.{c}", f"+1 {a} {b} {c}", national, f"1-{a}-{b}-{c}"])
        return raw, canonical
    return rng.choice([f"+{cc} {national[:3]} {national[3:]}", f"00{cc}{national}", f"+{cc}-{national}"]), canonical


def _valid(rng: random.Random, i: int) -> tuple[dict[str, Any], dict[str, Any]]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    country = rng.choice(list(COUNTRIES))
    phone_raw, phone = _phone(rng, country)
    date_raw, date = _date(rng)
    cents = rng.randrange(100, 400_000)
    amount = cents / 100
    amount_raw: Any = rng.choice([amount, f"{amount:,.2f}", f"${amount:.2f}", str(amount)])
    quantity = rng.randrange(1, 20)
    status = rng.choice(STATUSES if amount <= 2000 else ["active"])
    name_raw = rng.choice([f"{first} {last}", f"  {first.upper()}  {last.upper()} ", f"{first.title()} {last}"])
    email = f"{first}.{last}{i}@example.com"
    raw = {
        "CustomerID": f"C{i:07d}",
        "full_name": name_raw,
        "Email": rng.choice([email, email.upper(), f"  {email} "]),
        "phone": phone_raw,
        "country": rng.choice(COUNTRIES[country]),
        "signup_date": date_raw,
        "amount": amount_raw,
        "quantity": rng.choice([quantity, str(quantity)]),
        "status": rng.choice([status, status.upper(), f" {status.title()} "]),
    }
    canonical = {
        "customer_id": f"C{i:07d}",
        "name": f"{first.title()} {last.title()}",
        "email": email,
        "phone": phone,
        "country": country,
        "signup_date": date,
        "amount": amount,
        "quantity": quantity,
        "status": status,
    }
    return raw, canonical


def _break(rng: random.Random, raw: dict[str, Any], kind: str) -> dict[str, Any] | bytes:
    if kind == "missing_email":
        raw.pop("Email")
    elif kind == "bad_email":
        raw["Email"] = raw["Email"].strip().replace("@", " at ")
    elif kind == "negative_amount":
        raw["amount"] = -rng.randrange(1, 1000)
    elif kind == "bad_status":
        raw["status"] = rng.choice(["deleted", "unknown", "???"])
    elif kind == "amount_not_number":
        raw["amount"] = rng.choice(["abc", "12,34x", "N/A"])
    elif kind == "bad_date":
        raw["signup_date"] = rng.choice(["31/31/2020", "yesterday", "2020-13-45"])
    elif kind == "unknown_country":
        raw["country"] = rng.choice(["Atlantis", "XX", "Narnia"])
    elif kind == "bad_phone":
        raw["phone"] = rng.choice(["12345", "call me", "+0 000"])
    elif kind == "big_inactive":
        raw["amount"], raw["status"] = 5000 + rng.randrange(5000), "inactive"
    elif kind == "not_json":
        return b"{not json: " + json.dumps(raw).encode()[:40]
    return raw


def records(
    total: int | None,
    *,
    pattern: str = "mixed",
    invalid_ratio: float = 0.1,
    duplicate_ratio: float = 0.0,
    seed: int = 7,
) -> Iterator[TestRecord]:
    """``total`` messages (``None``: endless): valid, invalid (``pattern='invalid'``) or mixed with
    ``invalid_ratio``. Duplicates re-send one of the last 10,000 valid records, so memory stays bounded."""
    kinds = list(INVALID_KINDS)
    sent_valid: list[TestRecord] = []
    for i in itertools.count() if total is None else range(total):
        rng = random.Random(seed * 1_000_003 + i)
        if pattern == "mixed" and sent_valid and rng.random() < duplicate_ratio:
            original = sent_valid[rng.randrange(len(sent_valid))]
            yield TestRecord(i, original.key, original.raw, "duplicate", original.expected)
            continue
        raw, canonical = _valid(rng, i)
        invalid = pattern == "invalid" or (pattern == "mixed" and rng.random() < invalid_ratio)
        if not invalid:
            rec = TestRecord(i, canonical["customer_id"], json.dumps(raw).encode(), "valid", canonical)
            sent_valid.append(rec)
            if len(sent_valid) > 20_000:
                del sent_valid[:10_000]
            yield rec
            continue
        kind = kinds[rng.randrange(len(kinds))]
        broken = _break(rng, raw, kind)
        body = broken if isinstance(broken, bytes) else json.dumps(broken).encode()
        yield TestRecord(i, canonical["customer_id"], body, kind, None)
