"""Compare a Milvus collection with its PostgreSQL shadow from your own tests (pymilvus-pg parity).

Every helper takes a sync ``pymilvus.MilvusClient`` (its calls run in a worker thread) and an
``asyncpg.Pool``, checks that the collection and its table exist (CollectionNotFoundError /
ShadowSchemaError naming them), and returns a ``Comparison`` (``.ok``, ``.compared``,
``.differences``, ``str()`` for people, ``to_dict()`` for machines). Differences are attributed to a
side by the optional key tracker (see ``diff``).

How memory stays bounded: the key sets are streamed (the Milvus key walk, PostgreSQL server-side
cursor) and only the keys are kept (an int64 array for Int64 keys: 8 bytes a row); rows are then
fetched ``batch_size`` keys at a time from both sides and compared, so one batch of rows is in memory.
A user filter is converted with ``to_sql`` before Milvus sees it (FilterConversionError otherwise).
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import Any

import anyio
import asyncpg
import numpy as np

from task_components import keyexpr
from task_components.errors import ShadowValidationError
from task_components.schema.models import FieldSchema, FieldType
from task_components.shadow import sides
from task_components.shadow.diff import (
    Comparison,
    SearchComparison,
    TopK,
    key_differences,
    row_differences,
    sample_dims,
)
from task_components.shadow.export import export
from task_components.shadow.tracker import KeyStateTracker

__all__ = [
    "Comparison",
    "SearchComparison",
    "compare_entities",
    "compare_primary_keys",
    "compare_query",
    "compare_search",
    "export",
    "validate",
]

SEARCH_METRICS = ("COSINE", "L2", "IP")


async def _compare_keys_and_rows(
    milvus: Any,
    pool: asyncpg.Pool,
    shadow: sides.Shadow,
    result: Comparison,
    filter: str,
    *,
    rows: bool,
    output_fields: list[str] | None,
    tolerance: float,
    ignore_vectors: bool,
    tracker: KeyStateTracker | None,
    batch_size: int,
    vector_sample: int | None = None,
    vector_seed: int = 0,
) -> Comparison:
    where = shadow.where(filter)  # first: an unsupported filter never reaches Milvus
    fields = shadow.fields(output_fields, ignore_vectors)
    dynamic = shadow.dynamic(output_fields)
    samples = _vector_notes(result, shadow, fields, rows=rows, ignore_vectors=ignore_vectors, size=vector_sample, seed=vector_seed)
    m_keys, result.milvus_count = await sides.milvus_keys(milvus, shadow, filter)
    p_keys = await sides.pg_keys(pool, shadow, where)
    result.postgres_count = len(p_keys)
    result.add(key_differences(m_keys, p_keys, tracker, shadow.collection))
    if isinstance(m_keys, np.ndarray):
        common: Any = np.intersect1d(m_keys, p_keys)  # stays an int64 array: 8 bytes a key
        result.compared = len(np.union1d(m_keys, p_keys))
    else:
        common = sorted(set(m_keys) & set(p_keys))
        result.compared = len(set(m_keys) | set(p_keys))
    del m_keys, p_keys
    if rows and (fields or dynamic):
        m_out, p_cols = sides.milvus_output(shadow, fields, dynamic), sides.pg_columns(shadow, fields, dynamic)
        for start in range(0, len(common), batch_size):
            part = common[start : start + batch_size]
            chunk = part.tolist() if isinstance(part, np.ndarray) else part
            m_rows = await sides.milvus_rows(milvus, shadow, chunk, m_out)
            p_rows = await sides.pg_rows(pool, shadow, chunk, p_cols)
            _note_unreadable(result, m_rows)
            diffs = await anyio.to_thread.run_sync(
                partial(row_differences, shadow.schema, fields, m_rows, p_rows, tolerance, dynamic, samples)
            )
            result.add(diffs)
    return result


def _vector_notes(
    result: Comparison,
    shadow: sides.Shadow,
    fields: list[FieldSchema],
    *,
    rows: bool,
    ignore_vectors: bool,
    size: int | None,
    seed: int,
) -> dict[str, Any]:
    """Vectors compared in part or not at all are said in the notes (never as differences); the
    dimensions sampled per vector field come back (``diff.sample_dims``)."""
    samples = sample_dims(fields, size, seed)
    if not rows:
        return samples
    if not ignore_vectors and (skipped := shadow.skipped_vectors()):
        result.notes.append(skipped)
    for name, dims in samples.items():
        width = shadow.schema.field(name).dim
        result.notes.append(f"vector field {name!r}: {len(dims)} of {width} dimensions compared (sampled, seed {seed})")
    return samples


def _note_unreadable(result: Comparison, rows: sides.MilvusRows) -> None:
    """A key Milvus holds but cannot return is present (no key difference); its fields go unread."""
    for k in sorted(rows.unreadable):
        note = f"key {k}: {keyexpr.UNREADABLE}"
        if note not in result.notes:
            result.notes.append(note)


async def compare_query(
    milvus: Any,
    pool: asyncpg.Pool,
    collection: str,
    filter: str,
    *,
    output_fields: list[str] | None = None,
    tolerance: float = 1e-6,
    ignore_vectors: bool = False,
    tracker: KeyStateTracker | None = None,
    table: str | None = None,
    batch_size: int = 1000,
    vector_sample: int | None = None,
    vector_seed: int = 0,
) -> Comparison:
    """The rows ``filter`` selects on each side: the same keys, and equal fields on every common row.

    ``vector_sample``: compare that many dimensions of each dense vector (the same ones on both sides,
    drawn with ``vector_seed``) instead of all of them. A shadow table without vector columns (an
    ``ignore_vector`` client's) skips vectors, and says so in ``notes``.
    """
    shadow = await sides.resolve(milvus, pool, collection, table)
    result = Comparison("query", collection, shadow.table, filter=filter)
    return await _compare_keys_and_rows(
        milvus,
        pool,
        shadow,
        result,
        filter,
        rows=True,
        output_fields=output_fields,
        tolerance=tolerance,
        ignore_vectors=ignore_vectors,
        tracker=tracker,
        batch_size=batch_size,
        vector_sample=vector_sample,
        vector_seed=vector_seed,
    )


async def compare_primary_keys(
    milvus: Any,
    pool: asyncpg.Pool,
    collection: str,
    *,
    tracker: KeyStateTracker | None = None,
    table: str | None = None,
) -> Comparison:
    """The full key sets, streamed from both sides; keys on one side only (or stored twice) are differences."""
    shadow = await sides.resolve(milvus, pool, collection, table)
    result = Comparison("primary keys", collection, shadow.table)
    return await _compare_keys_and_rows(
        milvus,
        pool,
        shadow,
        result,
        "",
        rows=False,
        output_fields=None,
        tolerance=0.0,
        ignore_vectors=True,
        tracker=tracker,
        batch_size=1000,
    )


async def validate(
    milvus: Any,
    pool: asyncpg.Pool,
    collection: str,
    *,
    tolerance: float = 1e-6,
    ignore_vectors: bool = False,
    tracker: KeyStateTracker | None = None,
    table: str | None = None,
    batch_size: int = 1000,
    vector_sample: int | None = None,
    vector_seed: int = 0,
) -> Comparison:
    """Everything: both counts, the full key sets, and every field of every row, a batch at a time
    (vectors as ``compare_query`` says)."""
    shadow = await sides.resolve(milvus, pool, collection, table)
    result = Comparison("validate", collection, shadow.table)
    return await _compare_keys_and_rows(
        milvus,
        pool,
        shadow,
        result,
        "",
        rows=True,
        output_fields=None,
        tolerance=tolerance,
        ignore_vectors=ignore_vectors,
        tracker=tracker,
        batch_size=batch_size,
        vector_sample=vector_sample,
        vector_seed=vector_seed,
    )


async def compare_entities(
    milvus: Any,
    pool: asyncpg.Pool,
    collection: str,
    ids: list[Any],
    *,
    tolerance: float = 1e-6,
    ignore_vectors: bool = False,
    tracker: KeyStateTracker | None = None,
    table: str | None = None,
    batch_size: int = 1000,
    vector_sample: int | None = None,
    vector_seed: int = 0,
) -> Comparison:
    """These keys fetched from both sides: held by one side only, or with a field that differs.

    A key neither side holds is not a difference (they agree it does not exist). Vectors as
    ``compare_query`` says.
    """
    shadow = await sides.resolve(milvus, pool, collection, table)
    keys = list(dict.fromkeys(shadow.coerce(list(ids))))
    fields, dynamic = shadow.fields(None, ignore_vectors), shadow.dynamic()
    m_out, p_cols = sides.milvus_output(shadow, fields, dynamic), sides.pg_columns(shadow, fields, dynamic)
    result = Comparison("entities", collection, shadow.table, compared=len(keys))
    samples = _vector_notes(result, shadow, fields, rows=True, ignore_vectors=ignore_vectors, size=vector_sample, seed=vector_seed)
    result.milvus_count = result.postgres_count = 0
    for start in range(0, len(keys), batch_size):
        chunk = keys[start : start + batch_size]
        m_rows = await sides.milvus_rows(milvus, shadow, chunk, m_out)
        p_rows = await sides.pg_rows(pool, shadow, chunk, p_cols)
        _note_unreadable(result, m_rows)
        result.milvus_count += len(m_rows) + len(m_rows.unreadable)
        result.postgres_count += len(p_rows)
        result.add(key_differences([*m_rows, *m_rows.unreadable], list(p_rows), tracker, collection))
        result.add(row_differences(shadow.schema, fields, m_rows, p_rows, tolerance, dynamic, samples))
    return result


def _vector_field(shadow: sides.Shadow, anns_field: str | None) -> FieldSchema:
    if not shadow.vectors:
        raise ShadowValidationError(
            f"shadow table {shadow.table!r} has no vector columns (created with ignore_vector): "
            "an exact search over the shadow needs its vectors; shadow the collection with ignore_vector=False"
        )
    vectors = [f for f in shadow.schema.fields if f.type.is_vector]
    if anns_field is None:
        if len(vectors) != 1:
            names = ", ".join(f.name for f in vectors)
            raise ShadowValidationError(f"collection {shadow.collection!r} has vector fields {names}: pass anns_field")
        f = vectors[0]
    else:
        named = next((v for v in vectors if v.name == anns_field), None)
        if named is None:
            raise ShadowValidationError(f"collection {shadow.collection!r} has no vector field {anns_field!r}")
        f = named
    if f.type is not FieldType.FLOAT_VECTOR:
        raise ShadowValidationError(f"compare_search computes exact search for FloatVector fields only; {f.name!r} is {f.type.value}")
    return f


async def _index_of(milvus: Any, collection: str, field: str) -> dict[str, Any]:
    def find() -> dict[str, Any]:
        for name in milvus.list_indexes(collection, field_name=field) or []:
            return dict(milvus.describe_index(collection, name))
        return {}

    return await anyio.to_thread.run_sync(find)


async def compare_search(
    milvus: Any,
    pool: asyncpg.Pool,
    collection: str,
    vectors: Any,
    *,
    limit: int = 10,
    anns_field: str | None = None,
    metric_type: str | None = None,
    search_params: dict[str, Any] | None = None,
    filter: str = "",
    table: str | None = None,
    min_recall: float = 1.0,
    batch_size: int = 4096,
) -> SearchComparison:
    """Milvus' top-``limit`` per query vector against the exact top-k over the shadow's vectors.

    The exact answer streams the table's vectors in batches (numpy, a running top-k per query), so
    memory is the queries plus one batch. The metric is the index's unless given; the default search
    parameters are near-exhaustive (this checks the data is findable, not index quality).
    """
    from task_components.vectors import search_params as near_exhaustive

    shadow = await sides.resolve(milvus, pool, collection, table)
    where = shadow.where(filter)
    f = _vector_field(shadow, anns_field)
    if limit < 1:
        raise ShadowValidationError(f"limit must be at least 1, got {limit}")
    dim = f.dim or 0
    queries = np.asarray(vectors, dtype=np.float32).reshape(-1, dim) if len(vectors) else np.empty((0, dim), np.float32)
    index = await _index_of(milvus, collection, f.name)
    given = dict(search_params or {})
    full = "params" in given or "metric_type" in given  # pymilvus' whole form, or just its params
    metric = str(metric_type or given.get("metric_type") or index.get("metric_type") or "COSINE").upper()
    if metric not in SEARCH_METRICS:
        raise ShadowValidationError(f"compare_search supports metrics {', '.join(SEARCH_METRICS)}, not {metric!r}")
    inner = given.get("params", {}) if full else given
    params = {"metric_type": metric, "params": inner or near_exhaustive({"params": index}, limit, None)}
    result = SearchComparison(collection, f.name, metric, limit, min_recall=min_recall)
    got: list[list[Any]] = []
    for start in range(0, len(queries), 100):
        part = queries[start : start + 100].tolist()
        hits = await anyio.to_thread.run_sync(
            partial(
                milvus.search,
                collection,
                data=part,
                limit=limit,
                filter=filter,
                anns_field=f.name,
                search_params=params,
                consistency_level="Strong",
            )
        )
        got += [[h[shadow.pk] if shadow.pk in h else h["id"] for h in q] for q in hits]
    top = TopK(queries, limit, metric)
    batches = sides.pg_batches(pool, shadow, [shadow.key, f.name], where, batch_size)
    async with contextlib.aclosing(batches):
        async for batch in batches:
            rows = [r for r in batch if r[1] is not None]  # a NULL vector is never a neighbour
            matrix = np.asarray([r[1] for r in rows], dtype=np.float32).reshape(len(rows), dim)
            await anyio.to_thread.run_sync(top.add, [r[0] for r in rows], matrix)
    for i, (g, exact) in enumerate(zip(got, top.result(), strict=True)):
        result.add_query(i, g, exact)
    return result
