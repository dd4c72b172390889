"""Vector maths shared by verification and the shadow's comparisons: similarity scores and the search
settings under which Milvus' answer is near exhaustive."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["scores", "search_params"]


def scores(q: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Higher is better for every metric."""
    if metric == "L2":
        return -(np.sum(q * q, axis=1)[:, None] - 2 * q @ b.T + np.sum(b * b, axis=1)[None, :])
    if metric == "COSINE":
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        bn = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
        return qn @ bn.T
    return q @ b.T


def search_params(index: dict[str, Any], k: int, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Near-exhaustive settings: this checks that the data is findable, not how good the index is.

    On random vectors an IVF index has no useful clusters, so partial probing (nprobe < nlist) scores
    a recall of roughly nprobe/nlist whatever the data's health; HNSW needs a generous ef. Pass
    ``search_params`` to measure index quality at production settings instead.
    """
    if overrides:
        return dict(overrides)
    nlist = int(index.get("params", {}).get("nlist", 128))
    return {"nprobe": nlist, "ef": max(256, 2 * k)}
