"""Realistic text, vectorized: every string is a pure function of a 64-bit key per row.

Deriving text from keys (rather than drawing words directly) is what makes cardinality controls
work for any pattern: ``cardinality=500`` draws keys from 500 values, and equal keys give equal
names, emails or sentences. All work is numpy hashing plus Arrow compute kernels (take, join,
concatenate); no Python code runs per row.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from task_components.schema.types.vocab import arrow_words

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def mix(keys: np.ndarray, salt: int) -> np.ndarray:
    """splitmix64 finalizer: a well-spread uint64 per key, different for each salt."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) + np.uint64((salt * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def pick(vocab: str, keys: np.ndarray, salt: int) -> pa.Array:
    words = arrow_words(vocab)
    return words.take(pa.array((mix(keys, salt) % np.uint64(len(words))).astype(np.int64)))


def _num(keys: np.ndarray, salt: int, lo: int, hi: int) -> np.ndarray:
    return (mix(keys, salt) % np.uint64(hi - lo + 1)).astype(np.int64) + lo


def word_runs(keys: np.ndarray, salt: int, lo: int, hi: int) -> pa.Array:
    """``lo..hi`` words per row joined by spaces (hi may be large for paragraphs)."""
    counts = _num(keys, salt, lo, hi)
    offsets = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    total = int(offsets[-1])
    row_of = np.repeat(np.arange(len(keys)), counts)
    position = np.arange(total, dtype=np.int64) - offsets[:-1][row_of]
    word_keys = mix(keys[row_of], salt + 1) ^ position.astype(np.uint64)
    words = pick("WORDS", word_keys, salt + 2)
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), words)
    return pc.binary_join(lists, " ")


def _cat(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _digits(keys: np.ndarray, salt: int, width: int) -> pa.Array:
    n = pa.array(_num(keys, salt, 0, 10**width - 1))
    return pc.utf8_lpad(pc.cast(n, pa.string()), width=width, padding="0")


def _uuid(keys: np.ndarray, salt: int) -> pa.Array:
    raw = np.stack([mix(keys, salt), mix(keys, salt + 1)], axis=1).view(np.uint8).reshape(len(keys), 16)
    hexchars = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    chars = np.empty((len(keys), 32), dtype=np.uint8)
    chars[:, 0::2] = hexchars[raw >> 4]
    chars[:, 1::2] = hexchars[raw & 15]
    dash = np.full((len(keys), 1), ord("-"), dtype=np.uint8)
    out = np.concatenate([chars[:, :8], dash, chars[:, 8:12], dash, chars[:, 12:16], dash, chars[:, 16:20], dash, chars[:, 20:]], axis=1)
    offsets = pa.array(np.arange(0, 36 * (len(keys) + 1), 36, dtype=np.int32))
    return pa.StringArray.from_buffers(len(keys), offsets.buffers()[1], pa.py_buffer(out.tobytes()))


def text(pattern: str, keys: np.ndarray, *, prefix: str = "id", min_length: int = 0) -> pa.Array:
    """Strings of the given pattern, one per key (see schema.models.PATTERNS)."""
    if pattern == "word" or pattern == "category":
        return pick("WORDS", keys, 1)
    if pattern == "words":
        return word_runs(keys, 3, 2, 4)
    if pattern == "title":
        return pc.utf8_title(word_runs(keys, 5, 3, 7))
    if pattern in ("sentence", "paragraph"):
        lo, hi = (6, 16) if pattern == "sentence" else (40, 120)
        lo = max(lo, -(-min_length // 3) + 1)  # words are >= 2 letters + a space: this reaches min_length
        return _cat(pc.utf8_capitalize(word_runs(keys, 7, lo, max(lo, hi))), ".")
    if pattern == "first_name":
        return pick("FIRST", keys, 11)
    if pattern == "last_name":
        return pick("LAST", keys, 12)
    if pattern == "name":
        return pc.binary_join_element_wise(pick("FIRST", keys, 11), pick("LAST", keys, 12), " ")
    if pattern == "email":
        user = pc.utf8_lower(_cat(pick("FIRST", keys, 11), ".", pick("LAST", keys, 12)))
        return _cat(user, pc.cast(pa.array(_num(keys, 13, 1, 999)), pa.string()), "@", pick("DOMAINS", keys, 14))
    if pattern == "address":
        number = pc.cast(pa.array(_num(keys, 15, 1, 9999)), pa.string())
        return _cat(number, " ", pick("STREETS", keys, 16), " ", pick("STREET_KINDS", keys, 17), ", ", pick("CITIES", keys, 18))
    if pattern == "city":
        return pick("CITIES", keys, 18)
    if pattern == "country":
        return pick("COUNTRIES", keys, 19)
    if pattern == "url":
        return _cat(
            "https://",
            pick("WORDS", keys, 20),
            ".",
            pick("TLDS", keys, 21),
            "/",
            pick("WORDS", keys, 22),
            "/",
            pc.cast(pa.array(_num(keys, 23, 1, 99999)), pa.string()),
        )
    if pattern == "phone":
        return _cat("+1-", _digits(keys, 24, 3), "-", _digits(keys, 25, 3), "-", _digits(keys, 26, 4))
    if pattern == "uuid":
        return _uuid(keys, 27)
    if pattern == "id":
        return _cat(prefix, "-", _digits(keys, 28, 8))
    raise ValueError(f"unknown text pattern {pattern!r}")


_BY_NAME = (
    ("email", "email"),
    ("mail", "email"),
    ("first_name", "first_name"),
    ("last_name", "last_name"),
    ("name", "name"),
    ("author", "name"),
    ("speaker", "name"),
    ("address", "address"),
    ("city", "city"),
    ("country", "country"),
    ("url", "url"),
    ("link", "url"),
    ("source", "url"),
    ("phone", "phone"),
    ("uuid", "uuid"),
    ("title", "title"),
    ("headline", "title"),
    ("caption", "sentence"),
    ("body", "paragraph"),
    ("content", "paragraph"),
    ("text", "paragraph"),
    ("description", "sentence"),
    ("category", "category"),
    ("tag", "word"),
    ("label", "word"),
    ("_id", "id"),
)


def infer_pattern(field_name: str, max_length: int) -> str:
    """A sensible pattern from the field's name, for schemas (like milvus-ingest's) that give none."""
    lower = field_name.lower()
    for needle, pattern in _BY_NAME:
        if needle in lower:
            return pattern
    return "sentence" if max_length >= 64 else "words"
