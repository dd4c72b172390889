"""Every row, three ways: source files vs Milvus vs the PostgreSQL shadow, in key batches.

Source batches are read from the Parquet files; the same keys are fetched from Milvus (``pk in [...]``)
and PostgreSQL (``pk = ANY($1)``); each field is then compared as a whole column: numpy for vectors
(``|a - b| <= tolerance``), polars ``eq_missing`` for scalars and arrays. Only JSON and sparse vectors
are compared per row (parsed objects have no columnar form). Memory is one batch per side.
A disagreement is attributed like the sample check: the side that differs from the other two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from task_components.clients import MilvusTarget, pg_connect
from task_components.contracts import ImportResult, ShadowResult
from task_components.datafiles import iter_batches
from task_components.schema.models import FieldSchema
from task_components.schema.postgres import quote
from task_components.verification.compare import column_ok
from task_components.verification.rows import milvus_rows
from task_components.verification.threeway import attribute, missing_side


@dataclass(slots=True)
class ScanReport:
    rows: int = 0
    by_side: dict[str, int] = field(default_factory=dict)
    findings: list[dict[str, Any]] = field(default_factory=list)  # the first 100
    unreadable: set[Any] = field(default_factory=set)  # in Milvus but returned by no query (see keyexpr)

    def add(self, key: Any, fname: str | None, side: str, problem: str, **more: Any) -> None:
        self.by_side[side] = self.by_side.get(side, 0) + 1
        if len(self.findings) < 100:
            self.findings.append({"key": key, "field": fname, "side": side, "problem": problem, **more})


async def scan(
    imported: ImportResult,
    shadow: ShadowResult,
    dsn: str,
    fields: list[FieldSchema],
    tolerance: float,
    batch_rows: int = 4000,
    target: MilvusTarget | None = None,
) -> ScanReport:
    import anyio

    schema = imported.info.collection_schema
    pk = schema.primary.name
    report = ScanReport()
    conn = await pg_connect(dsn)
    cols = ", ".join(quote(c) for c in [pk, *(f.name for f in fields)])
    sql = f"SELECT {cols} FROM {quote(shadow.table)} WHERE {quote(pk)} = ANY($1)"
    columns = [pk, *(f.name for f in fields)]
    batches = (b for e in imported.manifest.files for b in iter_batches(imported.manifest, e, batch_rows, columns))
    try:
        while (batch := await anyio.to_thread.run_sync(next, batches, None)) is not None:  # reads off the loop
            keys = batch.column(pk).to_pylist()
            milvus = await anyio.to_thread.run_sync(milvus_rows, imported, keys, fields, target)
            for key, n in milvus.duplicates.items():
                report.add(key, None, "milvus", f"key stored {n} times")
            if len(set(keys)) != len(keys):
                for key in {k for k in keys if keys.count(k) > 1}:
                    report.add(key, None, "source", "key appears more than once in the source files")
            pg = {r[pk]: dict(r) for r in await conn.fetch(sql, keys)}
            report.unreadable |= milvus.unreadable
            await anyio.to_thread.run_sync(_compare_batch, batch, keys, milvus, pg, fields, tolerance, report)
    finally:
        await conn.close()
    return report


def _compare_batch(
    batch: pa.RecordBatch,
    keys: list[Any],
    milvus: dict[Any, dict],
    pg: dict[Any, dict],
    fields: list[FieldSchema],
    tolerance: float,
    report: ScanReport,
) -> None:
    present = np.array([k in milvus and k in pg for k in keys], dtype=bool)
    for k, ok in zip(keys, present, strict=True):
        if not ok and not (k in report.unreadable and k in pg):  # unreadable: present, fields not compared
            report.add(k, None, missing_side(k, milvus, pg), "row missing")
    idx = np.flatnonzero(present)
    report.rows += len(keys)
    if not len(idx):
        return
    sub = batch.take(pa.array(idx))
    both = [keys[i] for i in idx]
    for f in fields:
        source = sub.column(f.name)
        m_ok = column_ok(f, source, [milvus[k].get(f.name) for k in both], tolerance)
        s_ok = column_ok(f, source, [pg[k].get(f.name) for k in both], tolerance)
        for i in np.flatnonzero(~(m_ok & s_ok)):
            report.add(both[i], f.name, attribute(bool(m_ok[i]), bool(s_ok[i])) or "source", "value differs")
