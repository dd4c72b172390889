"""Which source keys Milvus lacks (or holds twice), when count(*) says something is off.

A failed count says *that* rows differ; a sample names them only if it happened to pick them. This
walks every source key (primary-key column only) and looks each batch up in Milvus by key, so the
report can name the missing rows whatever the dataset size. It costs one query per batch, which is
why it runs only after the count check failed. String keys holding a quote or backslash are not sent
(they are counted as unchecked): a filter built from them could be malformed, and a malformed filter
can crash a Milvus 2.3 server.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from task_components.contracts import ImportResult
from task_components.datafiles import iter_batches
from task_components.verification.task_types import Check

__all__ = ["missing_keys"]


def _literal(keys: list[Any]) -> str:
    return ", ".join(f'"{k}"' if isinstance(k, str) else str(int(k)) for k in keys)


def missing_keys(
    imported: ImportResult, batch_rows: int = 4000, show: int = 5, progress: Callable[[int], None] | None = None
) -> Check:
    schema = imported.info.collection_schema
    pk = schema.primary.name
    manifest = imported.manifest
    missing: list[Any] = []
    repeated: dict[Any, int] = {}
    unchecked = checked = 0
    client = imported.info.milvus().client()
    try:
        for entry in manifest.files:
            for batch in iter_batches(manifest, entry, batch_rows, columns=[pk]):
                keys = batch.column(pk).to_pylist()
                safe = [k for k in keys if not (isinstance(k, str) and ('"' in k or "\\" in k))]
                unchecked += len(keys) - len(safe)
                if safe:
                    got = client.query(imported.collection, filter=f"{pk} in [{_literal(safe)}]", output_fields=[pk],
                                       consistency_level="Strong")  # fmt: skip
                    seen = Counter(row[pk] for row in got)
                    missing += [k for k in safe if k not in seen]
                    repeated.update({k: n for k, n in seen.items() if n > 1})
                checked += len(keys)
                if progress is not None:
                    progress(checked)
    finally:
        client.close()
    parts = []
    if missing:
        shown = ", ".join(f"{pk}={k}" for k in missing[:show]) + (
            f" (+{len(missing) - show} more)" if len(missing) > show else ""
        )
        parts.append(f"{len(missing):,} of {checked:,} source keys missing in Milvus: {shown}")
    if repeated:
        shown = ", ".join(f"{pk}={k} x{n}" for k, n in list(repeated.items())[:show])
        parts.append(f"{len(repeated):,} keys stored more than once: {shown}")
    if unchecked:
        parts.append(f"{unchecked:,} string keys with quotes or backslashes not looked up")
    detail = (
        "; ".join(parts) or f"all {checked:,} source keys are in Milvus exactly once (extra rows not from the source?)"
    )
    return Check(name="keys", passed=not (missing or repeated), detail=detail)
