"""Which source keys Milvus lacks (or holds twice), when count(*) says something is off.

A failed count says *that* rows differ; a sample names them only if it happened to pick them. This
walks every source key (primary-key column only) and looks each batch up in Milvus by key, so the
report can name the missing rows whatever the dataset size. It costs one query per batch, which is
why it runs only after the count check failed. Keys are written as escaped literals (``keyexpr``), so
string keys holding a quote or backslash are looked up too; a key of 2**63-1, which no Milvus 2.3
query returns, is confirmed by count(*).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from task_components import keyexpr
from task_components.clients import MilvusTarget
from task_components.contracts import ImportResult
from task_components.datafiles import iter_batches
from task_components.keyexpr import INT64_MAX
from task_components.schema.models import FieldType
from task_components.verification.task_types import Check

__all__ = ["missing_keys"]


def missing_keys(
    imported: ImportResult,
    batch_rows: int = 4000,
    show: int = 5,
    progress: Callable[[int], None] | None = None,
    target: MilvusTarget | None = None,
) -> Check:
    schema = imported.info.collection_schema
    pk = schema.primary.name
    manifest = imported.manifest
    missing: list[Any] = []
    repeated: dict[Any, int] = {}
    checked = 0
    ints = schema.primary.type is FieldType.INT64
    client = (target or imported.info.milvus()).client()
    try:
        for entry in manifest.files:
            for batch in iter_batches(manifest, entry, batch_rows, columns=[pk]):
                keys = batch.column(pk).to_pylist()
                got = client.query(
                    imported.collection, filter=keyexpr.pk_in(pk, keys, ints), output_fields=[pk], consistency_level="Strong"
                )
                seen = Counter(row[pk] for row in got)
                if ints and INT64_MAX in keys and INT64_MAX not in seen:
                    seen[INT64_MAX] = keyexpr.max_key_present(client, imported.collection, pk)
                missing += [k for k in keys if not seen.get(k)]
                repeated.update({k: n for k, n in seen.items() if n > 1})
                checked += len(keys)
                if progress is not None:
                    progress(checked)
    finally:
        client.close()
    parts = []
    if missing:
        shown = ", ".join(f"{pk}={k}" for k in missing[:show]) + (f" (+{len(missing) - show} more)" if len(missing) > show else "")
        parts.append(f"{len(missing):,} of {checked:,} source keys missing in Milvus: {shown}")
    if repeated:
        shown = ", ".join(f"{pk}={k} x{n}" for k, n in list(repeated.items())[:show])
        parts.append(f"{len(repeated):,} keys stored more than once: {shown}")
    detail = "; ".join(parts) or f"all {checked:,} source keys are in Milvus exactly once (extra rows not from the source?)"
    return Check(name="keys", passed=not (missing or repeated), detail=detail)
