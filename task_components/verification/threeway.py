"""Three-way comparison of a sample: source files vs Milvus vs the PostgreSQL shadow.

With three copies, a disagreement can be attributed: when Milvus differs from the source and the
shadow agrees with the source, Milvus is wrong (and vice versa); when both differ, the source itself
is the odd one out. Each finding names the key, the field and the side.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from task_components.clients import pg_connect
from task_components.contracts import ShadowResult
from task_components.schema.models import FieldSchema
from task_components.schema.postgres import quote
from task_components.verification.compare import same_value


async def fetch_shadow(dsn: str, shadow: ShadowResult, keys: list[Any], fields: list[FieldSchema]) -> dict[Any, dict]:
    cols = ", ".join(quote(c) for c in [shadow.key, *(f.name for f in fields)])
    conn = await pg_connect(dsn)
    try:
        rows = await conn.fetch(f"SELECT {cols} FROM {quote(shadow.table)} WHERE {quote(shadow.key)} = ANY($1)", keys)
    finally:
        await conn.close()
    return {r[shadow.key]: dict(r) for r in rows}


def missing_side(key: Any, milvus: dict[Any, Any], shadow: dict[Any, Any]) -> str:
    """Which side lacks a row the source has."""
    if key not in milvus and key in shadow:
        return "milvus"
    return "postgres" if key in milvus else "both"


def attribute(milvus_ok: bool, shadow_ok: bool) -> str | None:
    """The side that differs from the other two; None when all three agree."""
    if milvus_ok and shadow_ok:
        return None
    if not milvus_ok and shadow_ok:
        return "milvus"
    if milvus_ok and not shadow_ok:
        return "postgres"
    return "source"


def three_way(
    source: pa.Table,
    keys: list[Any],
    milvus: dict[Any, dict],
    shadow: dict[Any, dict],
    fields: list[FieldSchema],
    tolerance: float,
) -> list[dict[str, Any]]:
    """Findings: {key, field, side, source, milvus, postgres}; empty when all three agree."""
    findings: list[dict[str, Any]] = []
    for key in keys:
        if key not in milvus or key not in shadow:
            findings.append({"key": key, "field": None, "side": missing_side(key, milvus, shadow), "problem": "row missing"})
    columns = {f.name: source.column(f.name).to_pylist() for f in fields}
    for i, key in enumerate(keys):
        if key not in milvus or key not in shadow:
            continue
        for f in fields:
            want = columns[f.name][i]
            m_ok = same_value(f, want, milvus[key].get(f.name), tolerance)
            s_ok = same_value(f, want, shadow[key].get(f.name), tolerance)
            side = attribute(m_ok, s_ok)
            if side:
                findings.append({"key": key, "field": f.name, "side": side, "problem": "value differs"})
    return findings


__all__ = ["attribute", "fetch_shadow", "missing_side", "three_way"]
