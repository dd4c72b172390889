"""The data-reading half of ``MilvusPGClient``: pymilvus-pg's ``query`` / ``export`` / ``sample_data`` frames
and ``generate_milvus_filter``, built on ``sides`` (key walk, server-side cursor, filter conversion).

Why DataFrames: pymilvus-pg's checkers index these results with pandas. Both sides come back in one
shape so a person (or ``DataFrame.equals``) can compare them: indexed by the primary key, sorted, the
columns both sides hold, JSON parsed, the shadow's ``$meta`` spread into the dynamic fields Milvus
returns, vectors as lists of floats.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import asyncpg
import numpy as np
import pandas as pd  # type: ignore[import-untyped]  # pymilvus depends on it; no stubs installed

from task_components.errors import FilterConversionError
from task_components.schema.arrow import META_COLUMN
from task_components.schema.models import CollectionSchema, FieldType
from task_components.schema.postgres import quote
from task_components.shadow import sides
from task_components.shadow.diff import dynamic_part
from task_components.shadow.filters import to_sql

__all__ = ["export_frame", "milvus_filters", "query_frames", "sample_frame"]

_SCALARS = {
    FieldType.BOOL,
    FieldType.INT8,
    FieldType.INT16,
    FieldType.INT32,
    FieldType.INT64,
    FieldType.FLOAT,
    FieldType.DOUBLE,
    FieldType.VARCHAR,
}


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list) and value and isinstance(value[0], np.floating | float):
        return [float(v) for v in value]
    return value


def _normal(row: dict[str, Any], schema: CollectionSchema, side: str, cols: list[str], spread: bool = True) -> dict[str, Any]:
    """One row as both sides show it: JSON parsed, dynamic fields spread out, only ``cols`` (+ dynamic)."""
    out: dict[str, Any] = {}
    for name in cols:
        if name == META_COLUMN or name not in row:
            continue
        value = row[name]
        f = next((f for f in schema.fields if f.name == name), None)
        if f is not None and f.type is FieldType.JSON and isinstance(value, str):
            value = json.loads(value)
        out[name] = _plain(value)
    if schema.enable_dynamic_field and spread:
        out.update(dynamic_part(row, schema, side))
    return out


def _frame(rows: list[dict[str, Any]], pk: str) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    if pk in df.columns:
        df = df.set_index(pk).sort_index()
    return df


async def query_frames(
    milvus: Any, pool: asyncpg.Pool, collection: str, filter: str, output_fields: list[str] | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows ``filter`` selects, from Milvus and from the shadow, aligned (pymilvus-pg's ``query``)."""
    shadow = await sides.resolve(milvus, pool, collection)
    where = shadow.where(filter)  # first: an unsupported filter never reaches Milvus
    wanted = None if not output_fields or output_fields == ["*"] else [n for n in output_fields if n != shadow.pk]
    fields = shadow.fields(wanted)
    dynamic = shadow.dynamic(wanted)
    m_cols, p_cols = sides.milvus_output(shadow, fields, dynamic), sides.pg_columns(shadow, fields, dynamic)
    m_rows: list[dict[str, Any]] = []
    async with contextlib.aclosing(sides.milvus_batches(milvus, shadow, filter, m_cols)) as batches:
        async for batch in batches:
            m_rows += [_normal(r, shadow.schema, "milvus", m_cols) for r in batch]
    p_rows: list[dict[str, Any]] = []
    async with contextlib.aclosing(sides.pg_batches(pool, shadow, p_cols, where)) as pg:
        async for batch in pg:
            for r in batch:
                row = dict(r)
                if shadow.key != shadow.pk:  # AUTO_ID: the shadow keys rows by Milvus' id in ``_row``
                    row[shadow.pk] = row.pop(shadow.key)
                p_rows.append(_normal(row, shadow.schema, "postgres", [shadow.pk, *p_cols]))
    m_df, p_df = _frame(m_rows, shadow.pk), _frame(p_rows, shadow.pk)
    common = [c for c in m_df.columns if c in p_df.columns]
    return m_df.loc[:, common], p_df.loc[:, common]


async def _pg_frame(pool: asyncpg.Pool, shadow: sides.Shadow, sql: str, *args: Any) -> pd.DataFrame:
    async with pool.acquire() as conn:
        records = await conn.fetch(sql, *args)
    cols = [c for c in (records[0].keys() if records else [])]
    stored = shadow.stored
    rows = [_normal(dict(r), stored, "postgres", cols, spread=False) for r in records]
    if stored.enable_dynamic_field:  # the table's own ``$meta`` column, as pymilvus-pg's SELECT * gives it
        for row, r in zip(rows, records, strict=True):
            raw = r[META_COLUMN]
            row[META_COLUMN] = json.loads(raw) if isinstance(raw, str) else raw
    return pd.DataFrame(rows, columns=None if rows else cols)


async def export_frame(milvus: Any, pool: asyncpg.Pool, collection: str) -> pd.DataFrame:
    """Every row of the shadow table (pymilvus-pg's ``export``), in key order."""
    shadow = await sides.resolve(milvus, pool, collection)
    return await _pg_frame(pool, shadow, f"SELECT * FROM {quote(shadow.table)} ORDER BY {quote(shadow.key)}")


async def sample_frame(milvus: Any, pool: asyncpg.Pool, collection: str, num_samples: int) -> pd.DataFrame:
    """``num_samples`` random rows of the shadow table (pymilvus-pg's ``sample_data``)."""
    shadow = await sides.resolve(milvus, pool, collection)
    return await _pg_frame(pool, shadow, f"SELECT * FROM {quote(shadow.table)} ORDER BY random() LIMIT $1", num_samples)


def _literal(value: Any, t: FieldType) -> str:
    if t is FieldType.VARCHAR:
        return json.dumps(str(value))  # a JSON string is a valid, escaped Milvus string literal
    if t is FieldType.BOOL:
        return "true" if value else "false"
    return repr(int(value)) if t in (FieldType.INT8, FieldType.INT16, FieldType.INT32, FieldType.INT64) else repr(float(value))


def _candidates(name: str, t: FieldType, values: list[Any], has_null: bool) -> list[str]:
    out = [f"{name} is null", f"{name} is not null"] if has_null else []
    if not values:
        return out
    lit = [_literal(v, t) for v in values[:5]]
    out += [f"{name} == {lit[0]}", f"{name} != {lit[0]}"]
    if t is FieldType.BOOL:
        return out
    out += [f"{name} in [{', '.join(lit)}]", f"{name} not in [{', '.join(lit)}]"]
    if t is FieldType.VARCHAR:
        out += [f"{name} like {json.dumps(str(v)[:2] + '%')}" for v in values[:3] if len(str(v)) > 2]
        return out
    lo, hi = _literal(min(values), t), _literal(max(values), t)
    out += [f"{name} > {lo}", f"{name} < {hi}", f"{name} >= {lo}", f"{name} <= {hi}", f"{name} >= {lo} and {name} <= {hi}"]
    if t in (FieldType.INT8, FieldType.INT16, FieldType.INT32, FieldType.INT64):
        out.append(f"{name} % 2 == 0")
    return out


def milvus_filters(sample: pd.DataFrame, schema: CollectionSchema) -> list[str]:
    """Filter expressions drawn from sampled rows (pymilvus-pg's ``generate_milvus_filter``): equality,
    ranges, ``in`` lists, prefix ``like`` and null checks on the scalar fields. Only expressions the
    shadow's filter conversion accepts are kept: each one can be run by ``query_result_compare``."""
    exprs: list[str] = []
    for f in schema.fields:
        if f.type not in _SCALARS or f.name not in sample.columns:
            continue
        series = sample[f.name]
        values = sorted({v.item() if isinstance(v, np.generic) else v for v in series.dropna()})
        exprs += _candidates(f.name, f.type, values, bool(series.isna().any()) and f.nullable)
    kept = []
    for expr in dict.fromkeys(exprs):
        try:
            to_sql(expr, schema)
        except FilterConversionError:
            continue
        kept.append(expr)
    return kept
