"""Rows the checks compare: a spread sample of the source files, and Milvus' rows by primary key."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from task_components import keyexpr
from task_components.clients import MilvusTarget
from task_components.contracts import ImportResult, Manifest
from task_components.datafiles import read_table
from task_components.schema.models import FieldType

__all__ = ["KeyedRows", "milvus_rows", "sample_source_rows"]


def sample_source_rows(manifest: Manifest, n: int) -> pa.Table:
    """``n`` rows spread evenly over the whole dataset, read with column projection per file."""
    total = manifest.total_rows
    wanted = set(np.linspace(0, total - 1, num=min(n, total), dtype=np.int64).tolist())
    pieces, offset = [], 0
    for entry in manifest.files:
        local = sorted(i - offset for i in wanted if offset <= i < offset + entry.rows)
        if local:
            table = read_table(manifest, entry)
            pieces.append(table.take(pa.array(local)))
        offset += entry.rows
    return pa.concat_tables(pieces)


class KeyedRows(dict[Any, dict[str, Any]]):
    """Rows by primary key, remembering keys Milvus returned more than once (it does not enforce uniqueness)
    and keys it holds but returns from no query (``unreadable``: 2**63-1 on Milvus 2.3, see ``keyexpr``)."""

    duplicates: dict[Any, int]
    unreadable: set[Any]


def milvus_rows(result: ImportResult, keys: list[Any], fields: list[Any], target: MilvusTarget | None = None) -> KeyedRows:
    """Milvus' rows of ``keys``; ``target`` (with its token) defaults to the recorded one."""
    primary = result.info.collection_schema.primary
    pk, ints = primary.name, primary.type is FieldType.INT64
    rows = KeyedRows()
    rows.duplicates, rows.unreadable = {}, set()
    if not keys:
        return rows
    client = (target or result.info.milvus()).client()
    try:
        got = client.query(
            result.collection,
            filter=keyexpr.pk_in(pk, keys, ints),
            output_fields=[pk, *(f.name for f in fields)],
            consistency_level="Strong",
        )
        seen = Counter(row[pk] for row in got)
        hidden = ints and keyexpr.INT64_MAX in keys and keyexpr.INT64_MAX not in seen
        if hidden and keyexpr.max_key_present(client, result.collection, pk):
            rows.unreadable.add(keyexpr.INT64_MAX)
    finally:
        client.close()
    rows.update((row[pk], row) for row in got)
    rows.duplicates = {k: n for k, n in seen.items() if n > 1}
    return rows
