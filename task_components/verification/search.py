"""Search check: Milvus' top-k against exact top-k computed with numpy over every source vector.

Queries are source vectors taken at evenly spread positions. The exact answer streams the dataset's
files in batches and keeps a running top-k per query (one matrix product per batch), so memory is the
queries plus one batch whatever the dataset size. Recall@k = share of the exact neighbours Milvus
returns, averaged over queries; the search uses the metric the collection was indexed with.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from task_components.clients import MilvusTarget
from task_components.contracts import ImportResult
from task_components.datafiles import iter_batches
from task_components.vectors import scores, search_params
from task_components.verification.rows import sample_source_rows
from task_components.verification.task_types import Check


def exact_top_k(imported: ImportResult, field: str, pk: str, queries: np.ndarray, k: int, metric: str) -> np.ndarray:
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_id = np.zeros((len(queries), k), dtype=np.int64)
    for entry in imported.manifest.files:
        for batch in iter_batches(imported.manifest, entry, 8192, columns=[pk, field]):
            vec = np.asarray(batch.column(field).values.to_numpy(), np.float32).reshape(batch.num_rows, -1)
            ids = batch.column(pk).to_numpy()
            s = np.concatenate([best_s, scores(queries, vec, metric).astype(np.float32)], axis=1)
            i = np.concatenate([best_id, np.broadcast_to(ids, (len(queries), len(ids)))], axis=1)
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]
            best_s, best_id = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    return best_id


def sample_queries(imported: ImportResult, field: str, n: int) -> np.ndarray:

    table = sample_source_rows(imported.manifest, n)
    return np.asarray(table.column(field).combine_chunks().values.to_numpy(), np.float32).reshape(table.num_rows, -1)


def search_recall(
    imported: ImportResult,
    queries_n: int,
    k: int,
    threshold: float,
    overrides: dict[str, Any] | None = None,
    target: MilvusTarget | None = None,
) -> Check | None:
    schema = imported.info.collection_schema
    vector = next((f for f in schema.fields if f.type.value == "FloatVector"), None)
    if vector is None or schema.primary.auto_id or schema.primary.type.value != "Int64":
        return None
    index = imported.info.indexes.get(vector.name, {})
    metric = index.get("metric_type", "COSINE")
    queries = sample_queries(imported, vector.name, queries_n)
    exact = exact_top_k(imported, vector.name, schema.primary.name, queries, k, metric)
    params: dict[str, Any] = {"metric_type": metric, "params": search_params(index, k, overrides)}
    client = (target or imported.info.milvus()).client()
    try:
        hits: list[Any] = []
        for start in range(0, len(queries), 100):
            hits += client.search(
                imported.collection,
                data=queries[start : start + 100].tolist(),
                limit=k,
                anns_field=vector.name,
                search_params=params,
                consistency_level="Strong",
            )
    finally:
        client.close()
    pk = schema.primary.name
    ids = [{h[pk] if pk in h else h["id"] for h in got} for got in hits]  # pymilvus versions differ here
    recalls = [len(got & set(want.tolist())) / k for got, want in zip(ids, exact, strict=True)]
    recall = float(np.mean(recalls))
    detail = f"recall@{k} {recall:.3f} over {len(queries)} queries ({metric}, {index.get('index_type', '?')})"
    return Check(name="search", passed=recall >= threshold, detail=detail + f", threshold {threshold}")
