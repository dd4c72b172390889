"""Field standardizations: trim, case, dates, e-mail, phone and country, each a function of one value.

Every operation is idempotent (applying it twice changes nothing: property-tested), returns ``None``
for ``None``, and raises ``ConversionError`` with a reason when a value cannot be standardized (an
e-mail without a domain, a phone number with too few digits, a country nobody calls that). Phones
become E.164 (``+14155550123``): a national number without a country code gets ``default_country_code``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from task_components.standardization.convert import ConversionError, to_iso_utc
from task_components.standardization.countries import COUNTRY_ALIASES

__all__ = ["OPERATIONS", "normalize_country", "normalize_email", "normalize_phone"]

_SPACES = re.compile(r"\s+")
_LABEL = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?"
_EMAIL = re.compile(rf"^[a-z0-9!#$%&'*+/=?^_`{{|}}~.-]+@{_LABEL}(?:\.{_LABEL})+$")
_NOT_DIGIT = re.compile(r"\D")


def _text(value: Any, op: str) -> str:
    if not isinstance(value, str):
        raise ConversionError(f"{op} needs text, got {type(value).__name__}")
    return value


def trim(value: Any) -> Any:
    return None if value is None else _SPACES.sub(" ", _text(value, "trim")).strip()


def lower(value: Any) -> Any:
    return None if value is None else _text(value, "lower").lower()


def upper(value: Any) -> Any:
    return None if value is None else _text(value, "upper").upper()


def title(value: Any) -> Any:
    if value is None:
        return None
    # str.title() breaks on apostrophes (O'Brien -> O'Brien is fine, but "o'BRIEN" -> "O'Brien" too)
    return " ".join(w[:1].upper() + w[1:].lower() for w in _text(value, "title").split(" "))


def normalize_email(value: Any) -> str | None:
    if value is None:
        return None
    email = _text(value, "email").strip().lower()
    if email.startswith("mailto:"):
        email = email[len("mailto:") :]
    if not _EMAIL.match(email):
        raise ConversionError(f"{value!r} is not an e-mail address")
    return email


def normalize_phone(value: Any, default_country_code: str = "1") -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    text = _text(value, "phone").strip()
    digits = _NOT_DIGIT.sub("", text)
    if not text.startswith("+"):
        if digits.startswith("00"):  # international call prefix
            digits = digits[2:]
        elif len(digits) == 10:  # a national number: the configured country's
            digits = default_country_code + digits
    if not 8 <= len(digits) <= 15 or digits.startswith("0"):
        raise ConversionError(f"{value!r} is not a phone number (E.164: 8-15 digits with the country code)")
    return "+" + digits


def normalize_country(value: Any) -> str | None:
    if value is None:
        return None
    key = _SPACES.sub(" ", _text(value, "country")).strip().lower().replace(".", "")
    code = COUNTRY_ALIASES.get(key)
    if code is None:
        raise ConversionError(f"{value!r} is not a known country (ISO 3166 code or name)")
    return code


OPERATIONS: dict[str, Callable[[Any], Any]] = {
    "trim": trim,
    "lower": lower,
    "upper": upper,
    "title": title,
    "email": normalize_email,
    "phone": normalize_phone,
    "country": normalize_country,
    "date": to_iso_utc,
}
