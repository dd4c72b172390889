"""Milvus primary-key expressions and the key walk, written so that no key can break them.

Two Milvus 2.3 facts shape this module (both seen on the 2.3.5 server):
- pymilvus builds expressions from keys without escaping them: ``ids=`` and ``query_iterator``'s next
  page (``pk > "<last key>"``) break on a VarChar key holding ``"`` or ``\\`` (the server refuses the
  expression, or a malformed one crashes it). Here every string literal is JSON-quoted, which is a
  valid Milvus string literal with quotes and backslashes escaped.
- A row keyed 2**63-1 (INT64_MAX) is stored and counted (``count(*)`` with any filter sees it, search
  returns it), but no query returns it: the server uses INT64_MAX as its own "no key" bound. So a key
  walk never sees it and a ``pk in [...]`` lookup comes back without it; ``max_key_present`` asks
  ``count(*)`` instead, and callers report such a row as present but unreadable rather than missing.
  -2**63 cannot even be written in an expression (the parser reads the digits before the sign), so a
  walk starts with no bound at all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

INT64_MAX = 2**63 - 1
UNREADABLE = "Milvus 2.3 stores and counts a row keyed 2**63-1 but no query returns it: present, fields not compared"

__all__ = ["INT64_MAX", "UNREADABLE", "literal", "max_key_present", "pk_in", "walk"]


def literal(key: Any, int_keys: bool) -> str:
    """One key as a Milvus literal: an integer, or a JSON-quoted (escaped) string."""
    return str(int(key)) if int_keys else json.dumps(str(key), ensure_ascii=False)


def pk_in(pk: str, keys: list[Any], int_keys: bool) -> str:
    return f"{pk} in [{', '.join(literal(k, int_keys) for k in keys)}]"


def _and(bound: str, filter: str) -> str:
    if not bound:
        return filter
    return f"{bound} and ({filter})" if filter else bound


def walk(
    client: Any, collection: str, pk: str, int_keys: bool, filter: str, output_fields: list[str], batch_size: int,
) -> Iterator[list[dict[str, Any]]]:  # fmt: skip
    """Pages of rows matching ``filter`` in key order: ``pk > <last>`` with a limit, as Strong queries.

    The keyset walk pymilvus' query_iterator does (``iterator`` asks the server for its smallest
    keys first), with escaped literals, and without the iterator's client-side session timestamp,
    which on 2.3 misses rows written a moment before.
    """
    last: Any = None
    while True:
        bound = "" if last is None else f"{pk} > {literal(last, int_keys)}"
        expr = _and(bound, filter)
        rows = client.query(collection, filter=expr, output_fields=output_fields, limit=batch_size,
                            consistency_level="Strong", iterator="True")  # fmt: skip
        if not rows:
            return
        yield rows
        last = max(r[pk] for r in rows)


def max_key_present(client: Any, collection: str, pk: str, filter: str = "") -> int:
    """How many rows keyed INT64_MAX (matching ``filter``) Milvus holds: its queries never return them."""
    expr = _and(f"{pk} == {INT64_MAX}", filter)
    reply = client.query(collection, filter=expr, output_fields=["count(*)"], consistency_level="Strong")
    return int(reply[0]["count(*)"]) if reply else 0
