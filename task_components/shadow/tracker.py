"""LMDB record of every key's last known state: the tiebreaker between Milvus and PostgreSQL.

Each mirrored write records, per primary key, whether the row EXISTS or was DELETED and by which
operation. When Milvus and the shadow disagree on whether a row exists, the tracker's vote decides
which side is wrong. LMDB because it is transactional, crash-safe and memory-mapped: recording a
10k-key batch is one write transaction.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lmdb

EXISTS, DELETED = "EXISTS", "DELETED"


def _key(k: Any) -> bytes:
    return (f"i:{k}" if isinstance(k, int) else f"s:{k}").encode()


class KeyStateTracker:
    def __init__(self, path: Path, map_size: int = 1 << 30) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(str(path), map_size=map_size, max_dbs=1, sync=True)

    def record(self, keys: Iterable[Any], operation: str) -> None:
        state = DELETED if operation == "delete" else EXISTS
        stamp = time.time()
        with self.env.begin(write=True) as txn:
            for k in keys:
                txn.put(_key(k), json.dumps({"state": state, "op": operation, "at": stamp}).encode())

    def state(self, key: Any) -> str | None:
        with self.env.begin() as txn:
            raw = txn.get(_key(key))
        return json.loads(raw)["state"] if raw else None

    def close(self) -> None:
        self.env.close()


def judge(key: Any, in_milvus: bool, in_postgres: bool, tracker: KeyStateTracker) -> str | None:
    """Which side is wrong about ``key`` existing, by majority with the tracker; None when they agree."""
    if in_milvus == in_postgres:
        return None
    expected = tracker.state(key) == EXISTS
    return "postgres" if in_milvus == expected else "milvus"
