"""The checker's collection and its rows: pymilvus-pg's default test schema, generated with numpy.

Why this schema: pymilvus-pg users read its ``ingest`` results against these fields (a partition-key
VarChar, JSON, an Int64 array, an 8-d vector); the same shape keeps their dashboards meaningful. Rows
are a pure function of (keys, version): a batch lost to a crash is rebuilt from its journal entry and
written again byte for byte, which is what makes a restart after ``kill -9`` converge (see ``journal``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient

DEFAULT_COLLECTION = "data_correctness_checker"  # pymilvus-pg's name, so their scripts find it
PK = "id"
VECTOR = "embedding"


def create(client: MilvusClient, collection: str, dim: int) -> None:
    """The collection with an index on the vector and loaded, as pymilvus-pg's ingest creates it."""
    schema = client.create_schema(enable_dynamic_field=False)
    schema.add_field(PK, DataType.INT64, is_primary=True, auto_id=False)
    schema.add_field("category", DataType.VARCHAR, max_length=256, is_partition_key=True)
    schema.add_field("name", DataType.VARCHAR, max_length=256)
    schema.add_field("age", DataType.INT64)
    schema.add_field("json_field", DataType.JSON)
    schema.add_field("array_field", DataType.ARRAY, element_type=DataType.INT64, max_capacity=20)
    schema.add_field(VECTOR, DataType.FLOAT_VECTOR, dim=dim)
    index = client.prepare_index_params()
    index.add_index(field_name=VECTOR, index_type="FLAT", metric_type="L2")
    client.create_collection(collection, schema=schema, index_params=index)


def make_rows(keys: list[int], version: int, dim: int) -> list[dict[str, Any]]:
    """Rows for ``keys`` at ``version`` (0 for an insert, the upsert's number after): deterministic.

    Vectorized per column; only the final dicts (what MilvusClient takes) are built per row.
    """
    ids = np.asarray(keys, dtype=np.int64)
    first = int(ids[0]) % 2**63 if len(ids) else 0  # a seed must not be negative; keys may be
    rng = np.random.default_rng([int(version) % 2**63, first, len(ids)])
    ages = rng.integers(18, 61, len(ids)) + (100 if version else 0)
    extra = rng.integers(0, 101, len(ids))
    vectors = rng.random((len(ids), dim), dtype=np.float32)
    suffix = f"_v{version}" if version else ""
    return [
        {
            PK: int(k),
            "category": f"category_{k % 1000}",
            "name": f"name_{k}{suffix}",
            "age": int(a),
            "json_field": {"attr1": int(k), "attr2": f"val_{k}", "version": int(version)},
            "array_field": [int(k), int(k) + 1, int(k) + 2, int(e)],
            VECTOR: v.tolist(),
        }
        for k, a, e, v in zip(ids.tolist(), ages.tolist(), extra.tolist(), vectors, strict=True)
    ]
