"""The comparisons behind ``MilvusPGClient`` (pymilvus-pg's checker methods), built on ``compare``/``sides``.

Each function is async (it runs on the client's private loop) and returns pymilvus-pg's result shape:
``count`` a dict of both counts, ``primary_keys`` pymilvus-pg's ``compare_primary_keys`` dict,
``three_way`` its ``three_way_pk_validation`` dict, ``entity_compare`` a bool. What differs is logged
(key, field and the side judged wrong), never row positions; the ``Comparison`` itself is kept by the
client (``last_comparison``) for callers that want more than a bool.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import anyio
import asyncpg
import numpy as np

from task_components import keyexpr
from task_components.shadow import compare, sides
from task_components.shadow.diff import Comparison, _one_side_only, key_differences
from task_components.shadow.tracker import EXISTS, KeyStateTracker

log = logging.getLogger("task_components.shadow.pgclient")

__all__ = ["CompareOptions", "count", "entity_compare", "log_comparison", "primary_keys", "three_way"]


class CompareOptions:
    """How rows are compared: the vector tolerance, sampled vector dimensions, the tiebreaking tracker."""

    def __init__(self, tolerance: float, vector_sample: int | None, tracker: KeyStateTracker | None) -> None:
        self.tolerance, self.vector_sample, self.tracker = tolerance, vector_sample, tracker


def log_comparison(result: Comparison, level: int = logging.ERROR, limit: int = 20) -> None:
    """The summary, the notes, and the first ``limit`` differences (key, field, side), one line each."""
    log.log(logging.INFO if result.ok else level, "%s", result.summary())
    for note in result.notes:
        log.info("note: %s", note)
    for d in result.differences[:limit]:
        log.log(level, "difference: %s", d)
    if result.total > limit:
        log.log(level, "... and %d more differences", result.total - limit)


async def count(milvus: Any, pool: asyncpg.Pool, collection: str) -> dict[str, int]:
    """Milvus' Strong count(*) and the shadow table's count (pymilvus-pg's keys)."""
    shadow = await sides.resolve(milvus, pool, collection)
    milvus_count = await anyio.to_thread.run_sync(keyexpr.count, milvus, collection, "")
    return {"milvus_count": int(milvus_count), "pg_count": await sides.pg_count(pool, shadow)}


def _as_list(keys: Any) -> list[Any]:
    return [int(k) for k in keys] if isinstance(keys, np.ndarray) else list(keys)


async def _key_sets(milvus: Any, pool: asyncpg.Pool, collection: str) -> tuple[sides.Shadow, Any, Any]:
    shadow = await sides.resolve(milvus, pool, collection)
    m_keys, _ = await sides.milvus_keys(milvus, shadow)
    return shadow, m_keys, await sides.pg_keys(pool, shadow)


async def primary_keys(milvus: Any, pool: asyncpg.Pool, collection: str, tracker: KeyStateTracker | None) -> dict[str, Any]:
    """pymilvus-pg's ``compare_primary_keys`` dict, plus ``differences``: each one-sided key attributed
    to the side judged wrong by the key tracker (its first 1000, as ``Comparison`` keeps)."""
    _, m_keys, p_keys = await _key_sets(milvus, pool, collection)
    only_m, only_p = _one_side_only(m_keys, p_keys)
    common = len(np.intersect1d(m_keys, p_keys)) if isinstance(m_keys, np.ndarray) else len(set(m_keys) & set(p_keys))
    attributed = Comparison("primary keys", collection)
    attributed.add(key_differences(m_keys, p_keys, tracker, collection))
    result = {
        "milvus_count": len(m_keys),
        "pg_count": len(p_keys),
        "common_count": int(common),
        "only_in_milvus": only_m,
        "only_in_pg": only_p,
        "has_differences": not attributed.ok,
        "differences": [d.to_dict() for d in attributed.differences],
    }
    if attributed.ok:
        log.info("primary keys of %r: %d in both, no differences", collection, common)
    else:
        log.error(
            "primary keys of %r differ: %d only in Milvus, %d only in PostgreSQL, %d common",
            collection,
            len(only_m),
            len(only_p),
            common,
        )
        for d in attributed.differences[:20]:
            log.error("difference: %s", d)
    return result


async def three_way(
    milvus: Any, pool: asyncpg.Pool, collection: str, tracker: KeyStateTracker, sample_size: int | None, seed: int | None
) -> dict[str, Any]:
    """pymilvus-pg's ``three_way_pk_validation``: Milvus, the shadow and the key tracker vote on each key's
    existence; the minority is the side in error. ``sample_size`` keys of the union are drawn (``seed``)."""
    _, m_keys, p_keys = await _key_sets(milvus, pool, collection)
    in_m, in_p = set(_as_list(m_keys)), set(_as_list(p_keys))
    in_t = set(await anyio.to_thread.run_sync(tracker.keys, collection, EXISTS))
    every = in_m | in_p | in_t
    if sample_size is not None and sample_size < 1:
        raise ValueError(f"sample_size must be at least 1, got {sample_size}")
    if sample_size and len(every) > sample_size:
        ordered = sorted(every, key=lambda k: (isinstance(k, str), k))  # a seed draws the same keys again
        every = set(random.Random(seed).sample(ordered, sample_size))
    result: dict[str, Any] = {
        "total_pks": len(every),
        "consistent_pks": 0,
        "inconsistent_pks": 0,
        "milvus_errors": [],
        "pg_errors": [],
        "lmdb_errors": [],
        "details": [],
    }
    for k in sorted(every, key=lambda k: (isinstance(k, str), k)):
        votes = {"milvus": k in in_m, "pg": k in in_p, "lmdb": k in in_t}
        if len(set(votes.values())) == 1:
            result["consistent_pks"] += 1
            continue
        result["inconsistent_pks"] += 1
        exists = sum(votes.values()) >= 2
        for side, present in votes.items():
            if present != exists:
                result[f"{side}_errors"].append(k)
        result["details"].append(
            {
                "pk": k,
                "in_milvus": votes["milvus"],
                "in_pg": votes["pg"],
                "in_lmdb": votes["lmdb"],
                "correct_state": "exists" if exists else "deleted",
                "vote_count": sum(votes.values()),
            }
        )
    level = logging.WARNING if result["inconsistent_pks"] else logging.INFO
    log.log(
        level,
        "three-way key validation of %r: %d/%d consistent; in error: Milvus %d, PostgreSQL %d, LMDB %d",
        collection,
        result["consistent_pks"],
        result["total_pks"],
        len(result["milvus_errors"]),
        len(result["pg_errors"]),
        len(result["lmdb_errors"]),
    )
    return result


async def _sampled_keys(pool: asyncpg.Pool, shadow: sides.Shadow, percentage: float) -> list[Any]:
    size = max(1, int(await sides.pg_count(pool, shadow) * percentage / 100.0))
    return await sides.sample_keys(pool, shadow, size)


async def entity_compare(
    milvus: Any,
    pool: asyncpg.Pool,
    collection: str,
    options: CompareOptions,
    *,
    batch_size: int,
    retry: int,
    retry_interval: float,
    full_scan: bool,
    compare_pks_first: bool,
    sample_percentage: float,
) -> tuple[bool, Comparison | None]:
    """pymilvus-pg's stages: keys (optional), counts (retried: Milvus may still be catching up), then with
    ``full_scan`` every field of every row (or of ``sample_percentage`` percent of the keys)."""
    if batch_size <= 0 or retry < 0 or retry_interval < 0 or not 0.0 < sample_percentage <= 100.0:
        raise ValueError(
            "entity_compare needs batch_size > 0, retry >= 0, retry_interval >= 0 and 0 < sample_percentage <= 100; "
            f"got {batch_size}, {retry}, {retry_interval}, {sample_percentage}"
        )
    tracker = options.tracker
    keys_ok = True
    if compare_pks_first:
        keys = await compare.compare_primary_keys(milvus, pool, collection, tracker=tracker)
        log_comparison(keys)
        keys_ok = keys.ok
        if not keys.ok and not full_scan:
            return False, keys
    counts: dict[str, int] = {}
    for attempt in range(max(retry, 1)):
        counts = await count(milvus, pool, collection)
        if counts["milvus_count"] == counts["pg_count"]:
            break
        log.warning("count mismatch (attempt %d/%d): %s", attempt + 1, max(retry, 1), counts)
        if attempt < retry - 1:
            await anyio.sleep(retry_interval)  # pymilvus-pg's retry: a lagging Milvus gets time to catch up
    matched = counts["milvus_count"] == counts["pg_count"]
    if not matched:
        log.error("counts of %r differ: Milvus %d, PostgreSQL %d", collection, counts["milvus_count"], counts["pg_count"])
    if not full_scan:
        return matched, None
    shared: dict[str, Any] = {
        "tolerance": options.tolerance,
        "tracker": tracker,
        "batch_size": batch_size,
        "vector_sample": options.vector_sample,
    }
    if sample_percentage < 100.0:
        shadow = await sides.resolve(milvus, pool, collection)
        ids = await _sampled_keys(pool, shadow, sample_percentage)
        result = await compare.compare_entities(milvus, pool, collection, ids, **shared)
    else:
        result = await compare.validate(milvus, pool, collection, **shared)
    log_comparison(result)
    # a sample drawn from the shadow's keys cannot see a key only Milvus holds: the key and count stages
    # above can, and their verdict stands whatever the sample found
    return result.ok and keys_ok and matched, result
