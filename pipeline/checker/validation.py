"""One validation of a collection against its shadow: everything, or the key sets plus a sample of rows.

Why a sample: a full compare reads every row of both sides (minutes for tens of millions of rows),
while the key sets alone are cheap (keys only, streamed) and catch every lost or extra row; a random
sample of rows then catches field corruption with high probability at a fraction of the cost.
"""

from __future__ import annotations

import random
from typing import Any

from task_components.schema.postgres import quote, table_name
from task_components.shadow.compare import compare_entities, compare_primary_keys, validate
from task_components.shadow.diff import Comparison

# rows fetched per Strong query: on Milvus 2.3 each Strong query waits ~0.3 s for its guarantee timestamp,
# so 1,000-row batches spent 80% of a validation waiting (80k rows: 35 s at 1,000, 7 s at 10,000)
BATCH = 10_000


async def sample_keys(pool: Any, table: str, pk: str, n: int, rng: random.Random) -> list[Any]:
    """About ``n`` keys of the shadow, in runs of up to 100 from random starting points (index range
    scans: ``ORDER BY random()`` would sort the whole table)."""
    low, high = await pool.fetchrow(f"SELECT min({quote(pk)}), max({quote(pk)}) FROM {quote(table)}")
    if low is None or n <= 0:
        return []
    keys: set[Any] = set()
    runs = max(1, n // 100)
    for _ in range(runs * 3):  # gaps (deleted keys) can make a run short: a few more tries
        if len(keys) >= n:
            break
        start = rng.randint(int(low), int(high)) if isinstance(low, int) else low
        found = await pool.fetch(f"SELECT {quote(pk)} FROM {quote(table)} WHERE {quote(pk)} >= $1 ORDER BY 1 LIMIT 100", start)
        keys.update(r[0] for r in found)
    return sorted(keys)[:n]


async def validate_collection(
    milvus: Any,
    pool: Any,
    collection: str,
    *,
    full_scan: bool,
    sample_size: int,
    ignore_vectors: bool,
    tracker: Any,
    pk: str,
    rng: random.Random | None = None,
    batch_size: int = BATCH,
) -> Comparison:
    if full_scan:
        return await validate(milvus, pool, collection, ignore_vectors=ignore_vectors, tracker=tracker, batch_size=batch_size)
    result = await compare_primary_keys(milvus, pool, collection, tracker=tracker)
    sample = await sample_keys(pool, table_name(collection), pk, sample_size, rng or random.Random())
    rows = await compare_entities(milvus, pool, collection, sample, ignore_vectors=ignore_vectors, tracker=tracker, batch_size=batch_size)
    result.add(rows.differences)
    result.notes.extend(rows.notes)
    result.what = f"primary keys + {len(sample)} sampled rows"
    return result
