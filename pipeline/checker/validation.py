"""One validation of a collection against its shadow: everything, or the key sets plus a sample of rows.

Why a sample: a full compare reads every row of both sides (minutes for tens of millions of rows),
while the key sets alone are cheap (keys only, streamed) and catch every lost or extra row; a random
sample of rows then catches field corruption with high probability at a fraction of the cost.
"""

from __future__ import annotations

import random
from typing import Any

from task_components.shadow import sides
from task_components.shadow.compare import compare_entities, compare_primary_keys, validate
from task_components.shadow.diff import Comparison

# rows fetched per Strong query: on Milvus 2.3 each Strong query waits ~0.3 s for its guarantee timestamp,
# so 1,000-row batches spent 80% of a validation waiting (80k rows: 35 s at 1,000, 7 s at 10,000)
BATCH = 10_000


async def validate_collection(
    milvus: Any,
    pool: Any,
    collection: str,
    *,
    full_scan: bool,
    sample_size: int,
    ignore_vectors: bool,
    tracker: Any,
    rng: random.Random | None = None,
    batch_size: int = BATCH,
) -> Comparison:
    if full_scan:
        return await validate(milvus, pool, collection, ignore_vectors=ignore_vectors, tracker=tracker, batch_size=batch_size)
    result = await compare_primary_keys(milvus, pool, collection, tracker=tracker)
    shadow = await sides.resolve(milvus, pool, collection)
    sample = await sides.sample_keys(pool, shadow, sample_size, rng)
    rows = await compare_entities(milvus, pool, collection, sample, ignore_vectors=ignore_vectors, tracker=tracker, batch_size=batch_size)
    result.add(rows.differences)
    result.notes.extend(rows.notes)
    result.what = f"primary keys + {len(sample)} sampled rows"
    return result
