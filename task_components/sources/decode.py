"""Consumed message -> ``StreamRecord``: every way a message can be unreadable is that record's rejection.

A tombstone (no value), a message above ``max_bytes``, bytes that are not UTF-8 JSON, JSON that is not
an object, and JSON nested deeper than ``max_depth`` are rejected at step ``decode`` with a rule naming
the kind (``tombstone``, ``size``, ``json``, ``depth``). Nothing here raises for a message: a 10,000-deep
nesting is caught as the decoder's ``RecursionError`` and a shallower one above ``max_depth`` by an
iterative walk (run only when the message holds more brackets than ``max_depth``), so every later step
(rules, BSON, JSON out) only ever sees bounded nesting. Header values are bounded too. ``NaN``,
``Infinity`` and numbers beyond a double (``1e400``) are not JSON numbers and no sink can write them back
as JSON: rule ``number``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from task_components.contracts import StreamRecord

__all__ = ["MAX_DEPTH", "MAX_RECORD_BYTES", "decode", "deeper_than", "loads_finite"]

MAX_DEPTH = 64
MAX_RECORD_BYTES = 4 * 1024 * 1024
MAX_CORRELATION_ID = 200


class _NotANumber(ValueError):
    """A JSON constant (``NaN``, ``Infinity``) or a literal beyond a double: raised from inside the decoder."""


def _constant(text: str) -> Any:
    raise _NotANumber(f"{text} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _NotANumber(f"{text[:40]} is beyond the range of a double")
    return number


def loads_finite(raw: str | bytes) -> Any:
    """``json.loads`` refusing ``NaN``/``Infinity`` and numbers beyond a double (a ValueError, like bad JSON)."""
    return json.loads(raw, parse_constant=_constant, parse_float=_finite)


def deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest more than ``limit`` levels (an object is level 1); no recursion."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def decode(msg: Any, max_bytes: int = MAX_RECORD_BYTES, max_depth: int = MAX_DEPTH) -> StreamRecord:
    headers = dict(msg.headers or ())
    cid = headers.get("correlation_id")
    record = StreamRecord(
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        raw=msg.value or b"",
        value=None,
        correlation_id=cid[:MAX_CORRELATION_ID].decode(errors="replace") if cid else f"{msg.topic}-{msg.partition}-{msg.offset}",
        key=msg.key,
    )
    if msg.value is None:
        record.reject("decode", "tombstone", "tombstone: the message has no value (a deletion marker)")
        return record
    if len(record.raw) > max_bytes:
        record.reject("decode", "size", f"record of {len(record.raw)} bytes is above max_record_bytes {max_bytes}")
        return record
    try:
        value = loads_finite(record.raw)
    except _NotANumber as exc:
        record.reject("decode", "number", f"not JSON: {exc}")
        return record
    except UnicodeDecodeError as exc:
        record.reject("decode", "json", f"not JSON: not UTF-8 text: {exc}")
        return record
    except ValueError as exc:  # JSONDecodeError, or an integer of more digits than Python converts
        record.reject("decode", "json", f"not JSON: {str(exc)[:300]}")
        return record
    except RecursionError:
        record.reject("decode", "depth", f"JSON nested deeper than the decoder's limit (max_json_depth {max_depth})")
        return record
    if not isinstance(value, dict):
        record.reject("decode", "json", f"not a JSON object but {type(value).__name__}")
    elif record.raw.count(b"{") + record.raw.count(b"[") > max_depth and deeper_than(value, max_depth):
        record.reject("decode", "depth", f"JSON nested deeper than max_json_depth {max_depth}")
    else:
        record.value = value
    return record
