"""Milvus primary-key expressions and the key walk, written so that no key can break them.

Milvus 2.3 facts that shape this module (all seen on the 2.3.5 server):
- pymilvus builds expressions from keys without escaping them: ``ids=`` and ``query_iterator``'s next
  page (``pk > "<last key>"``) break on a VarChar key holding ``"`` or ``\\`` (the server refuses the
  expression, or a malformed one crashes it). Here every string literal is JSON-quoted, which is a
  valid Milvus string literal with quotes and backslashes escaped.
- A row keyed 2**63-1 (INT64_MAX) is stored and counted (``count(*)`` with any filter sees it, search
  returns it), but no query returns it: the server uses INT64_MAX as its own "no key" bound. So a key
  walk never sees it and a ``pk in [...]`` lookup comes back without it; ``max_key_present`` asks
  ``count(*)`` instead, and callers report such a row as present but unreadable rather than missing.
- -2**63 (INT64_MIN) is stored and returned like any key, but cannot be written in an expression (the
  parser reads the digits before the sign, and 9223372036854775808 overflows): ``pk in [...]`` names it
  as ``pk < -9223372036854775807`` and the walk continues after it with ``pk >= -9223372036854775807``.
- A query carrying pymilvus' ``iterator`` flag (which makes the server return the smallest keys of a
  limited query) is sent with the collection's default consistency whatever ``consistency_level`` says:
  pymilvus' ``construct_guarantee_ts`` returns before reading it. On a Bounded collection (MilvusClient's
  default) such pages miss rows written a moment before. So the walk first asks a Strong ``count(*)``
  (the server answers once it has consumed everything written before the call; later pages read past
  that point) and hands the count to its caller.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
UNREADABLE = "Milvus 2.3 stores and counts a row keyed 2**63-1 but no query returns it: present, fields not compared"

__all__ = ["INT64_MAX", "INT64_MIN", "UNREADABLE", "Walk", "count", "literal", "max_key_present", "pk_in", "walk"]


def literal(key: Any, int_keys: bool) -> str:
    """One key as a Milvus literal: an integer, or a JSON-quoted (escaped) string.

    INT64_MIN has no literal Milvus parses: ``pk_in`` and the walk write it as a bound instead.
    """
    return str(int(key)) if int_keys else json.dumps(str(key), ensure_ascii=False)


def pk_in(pk: str, keys: list[Any], int_keys: bool) -> str:
    """``pk in [...]`` with escaped literals; INT64_MIN, which cannot be written, as ``pk < INT64_MIN + 1``."""
    if not int_keys:
        return f"{pk} in [{', '.join(literal(k, False) for k in keys)}]"
    rest = [k for k in keys if int(k) != INT64_MIN]
    listed = f"{pk} in [{', '.join(literal(k, True) for k in rest)}]"
    if len(rest) == len(keys):
        return listed
    lowest = f"{pk} < {INT64_MIN + 1}"
    return f"({listed} or {lowest})" if rest else lowest


def _after(pk: str, last: Any, int_keys: bool) -> str:
    if int_keys and int(last) == INT64_MIN:
        return f"{pk} >= {INT64_MIN + 1}"
    return f"{pk} > {literal(last, int_keys)}"


def _and(bound: str, filter: str) -> str:
    if not bound:
        return filter
    return f"{bound} and ({filter})" if filter else bound


def count(client: Any, collection: str, filter: str = "") -> int:
    """Rows matching ``filter``, as a Strong query: every write acknowledged before the call is counted."""
    reply = client.query(collection, filter=filter, output_fields=["count(*)"], consistency_level="Strong")
    return int(reply[0]["count(*)"]) if reply else 0


class Walk:
    """Pages of rows matching ``filter`` in key order, after a Strong ``count(*)`` (see the module docstring).

    Each iteration walks afresh: ``count`` is the Strong count(*) of the latest one, taken before its
    first page (rows keyed INT64_MAX are counted but never in a page). Pages are ``pk > <last>`` with a
    limit, the keyset walk pymilvus' query_iterator does, with escaped literals and without the
    iterator's client-side session timestamp (on 2.3 it misses rows written a moment before).
    """

    def __init__(
        self,
        client: Any,
        collection: str,
        pk: str,
        int_keys: bool,
        filter: str,
        output_fields: list[str],
        batch_size: int,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.client, self.collection, self.pk, self.int_keys = client, collection, pk, int_keys
        self.filter, self.output_fields, self.batch_size = filter, output_fields, batch_size
        self.count: int | None = None

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        self.count = count(self.client, self.collection, self.filter)  # the freshness fence, before any page
        if not self.count:
            return
        last: Any = None
        while True:
            bound = "" if last is None else _after(self.pk, last, self.int_keys)
            rows = self.client.query(
                self.collection,
                filter=_and(bound, self.filter),
                output_fields=self.output_fields,
                limit=self.batch_size,
                consistency_level="Strong",
                iterator="True",
            )
            # (pymilvus 3.0 sends these with the collection's default consistency; "Strong" takes effect
            # should it ever honour the level with the iterator flag)
            if rows:
                yield rows
            if len(rows) < self.batch_size:  # a short page is the last one: no query for an empty page
                return
            last = max(r[self.pk] for r in rows)


def walk(
    client: Any,
    collection: str,
    pk: str,
    int_keys: bool,
    filter: str,
    output_fields: list[str],
    batch_size: int,
) -> Walk:
    """The pages of ``filter`` in key order, fenced by a Strong count(*): see ``Walk``."""
    return Walk(client, collection, pk, int_keys, filter, output_fields, batch_size)


def max_key_present(client: Any, collection: str, pk: str, filter: str = "") -> int:
    """How many rows keyed INT64_MAX (matching ``filter``) Milvus holds: its queries never return them."""
    return count(client, collection, _and(f"{pk} == {INT64_MAX}", filter))
