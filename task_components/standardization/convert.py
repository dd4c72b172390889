"""Type converters: one function per target type, each total on its domain and explicit about failure.

A converter returns the converted value or raises ``ConversionError`` with a one-line reason; the stage
turns that into a per-record rejection, so one bad field never fails the batch. ``None`` passes through
every converter unchanged: a missing value is the not-null rule's business, not the converter's.
Dates become ISO-8601 strings in UTC (``2024-03-05T08:00:00Z``): one representation that sorts, compares
and survives JSON on every sink. Naive times are taken as UTC (say so in the pipeline if that is wrong).
Integers are bounded to 64 bits (``INT64_MIN..INT64_MAX``), the range of MongoDB, Milvus and Parquet:
a larger one is this record's conversion error, not an encoder's ``OverflowError`` at a sink.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any

__all__ = [
    "CONVERTERS",
    "DEFAULT_DATE_FORMATS",
    "INT64_MAX",
    "INT64_MIN",
    "ConversionError",
    "to_bool",
    "to_float",
    "to_int",
    "to_iso_utc",
]

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class ConversionError(ValueError):
    """A value that cannot become the wanted type; ``str()`` is the reason shown in the dead-letter record."""


DEFAULT_DATE_FORMATS: tuple[str, ...] = (
    "%Y-%m-%d",
    "%Y/%m/%d",
    "%m/%d/%Y",
    "%d.%m.%Y",
    "%d %b %Y",
    "%d %B %Y",
    "%b %d, %Y",
    "%B %d, %Y",
    "%Y%m%d",
    "%m/%d/%Y %H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%d/%m/%Y %H:%M",
)
_NUMBER_NOISE = re.compile(r"[\s,_$€£]")
_TRUE = {"true", "t", "yes", "y", "1", "on"}
_FALSE = {"false", "f", "no", "n", "0", "off"}


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) > 240:
        value = value[:240]
    try:
        text = repr(value)
    except ValueError:  # an int of more digits than Python prints
        return f"an integer of {value.bit_length()} bits" if isinstance(value, int) else "an unprintable value"
    return text if len(text) <= 60 else text[:57] + "..."


def _int64(number: int, value: Any) -> int:
    if not INT64_MIN <= number <= INT64_MAX:
        raise ConversionError(f"{_short(value)} is outside the 64-bit integer range ({INT64_MIN}..{INT64_MAX})")
    return number


def to_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return _int64(value, value)
    if isinstance(value, float) and value.is_integer():
        return _int64(int(value), value)
    if isinstance(value, str):
        text = _NUMBER_NOISE.sub("", value)
        if len(text) > 40:  # longer than any 64-bit integer, even written as a float
            raise ConversionError(f"cannot convert {_short(value)} to a 64-bit int (too many characters)")
        try:
            return _int64(int(text), value)
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                pass
            else:
                if as_float.is_integer():
                    return _int64(int(as_float), value)
    raise ConversionError(f"cannot convert {_short(value)} to int")


def to_float(value: Any) -> float | None:
    if value is None:
        return None
    result: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            result = float(value)
        except OverflowError:  # an int beyond 1e308
            result = None
    elif isinstance(value, str):
        try:
            result = float(_NUMBER_NOISE.sub("", value))
        except ValueError:
            result = None
    if result is None or not math.isfinite(result):
        raise ConversionError(f"cannot convert {_short(value)} to a finite float")
    return result


def to_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ConversionError(f"cannot convert {_short(value)} to bool")


def to_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return str(value)
    raise ConversionError(f"cannot convert {_short(value)} to str")


def format_utc(moment: datetime) -> str:
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if moment.microsecond else "%Y-%m-%dT%H:%M:%SZ")


def to_iso_utc(value: Any, formats: Sequence[str] = DEFAULT_DATE_FORMATS) -> str | None:
    """Dates and times in any listed format, ISO-8601 or epoch seconds (or ms) -> ISO-8601 UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return format_utc(value)
    if isinstance(value, date):
        return format_utc(datetime(value.year, value.month, value.day))
    if isinstance(value, int | float) and not isinstance(value, bool):
        # epoch milliseconds are common too: above 1e11 (year 5138 in seconds) a number is taken as ms,
        # so milliseconds before 1973-03-03 read as seconds (the one ambiguity, property-tested)
        try:
            seconds = value / 1000 if abs(value) > 1e11 else value
            return format_utc(datetime.fromtimestamp(seconds, UTC))
        except (OverflowError, OSError, ValueError):
            raise ConversionError(f"epoch {_short(value)} is out of range") from None
    if isinstance(value, str):
        text = value.strip()
        try:
            return format_utc(datetime.fromisoformat(text))
        except ValueError:
            pass
        for fmt in formats:
            try:
                return format_utc(datetime.strptime(text, fmt))
            except ValueError:
                continue
    raise ConversionError(f"cannot read {_short(value)} as a date")


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "int": to_int,
    "float": to_float,
    "bool": to_bool,
    "str": to_str,
    "datetime": to_iso_utc,
}
