"""LMDB record of every key's last known state: the tiebreaker between Milvus and PostgreSQL.

Each mirrored write records, per collection and primary key, whether the row EXISTS or was DELETED
and by which operation. When Milvus and the shadow disagree on whether a row exists, the tracker's
vote decides which side is wrong. LMDB because it is transactional, crash-safe and memory-mapped:
recording a 10k-key batch is one write transaction, and readers never block the writer.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lmdb

EXISTS, DELETED = "EXISTS", "DELETED"


def _key(collection: str, k: Any) -> bytes:
    # the type tag keeps Int64 7 and VarChar "7" apart; the NUL keeps collection names from bleeding
    return f"{collection}\x00{'i' if isinstance(k, int) else 's'}:{k}".encode()


_OPEN: dict[str, tuple[Any, int]] = {}  # resolved path -> (LMDB environment, users in this process)
_OPEN_LOCK = threading.Lock()


class KeyStateTracker:
    """One tracker per directory; LMDB allows one open environment per path and process, so clients
    pointing at the same directory (a sync and an async client, one per thread) share it."""

    def __init__(self, path: Path | str, map_size: int = 1 << 30) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self.path = Path(path)
        self._key = str(self.path.resolve())
        with _OPEN_LOCK:
            env, users = _OPEN.get(self._key, (None, 0))
            if env is None:
                env = lmdb.open(self._key, map_size=map_size, max_dbs=1, sync=True)
            _OPEN[self._key] = (env, users + 1)
        self.env = env
        self._closed = False

    def record(self, keys: Iterable[Any], operation: str, collection: str = "") -> None:
        state = DELETED if operation == "delete" else EXISTS
        value = json.dumps({"state": state, "op": operation, "at": time.time()}).encode()
        with self.env.begin(write=True) as txn:
            for k in keys:
                txn.put(_key(collection, k), value)

    def state(self, key: Any, collection: str = "") -> str | None:
        with self.env.begin() as txn:
            raw = txn.get(_key(collection, key))
        return json.loads(raw)["state"] if raw else None

    def keys(self, collection: str, state: str = EXISTS) -> list[Any]:
        """Every key of ``collection`` whose last recorded state is ``state`` (the third vote of a
        three-way key validation); Int64 keys come back as ints, VarChar keys as strings."""
        prefix = f"{collection}\x00".encode()
        out: list[Any] = []
        with self.env.begin() as txn:
            cursor = txn.cursor()
            if not cursor.set_range(prefix):
                return out
            for raw, value in cursor:
                if not raw.startswith(prefix):
                    break
                if json.loads(value)["state"] != state:
                    continue
                tag, text = raw[len(prefix) :].decode().split(":", 1)
                out.append(int(text) if tag == "i" else text)
        return out

    def forget(self, collection: str) -> None:
        """Drop a collection's keys (it was dropped): a re-created collection starts with no history."""
        prefix = f"{collection}\x00".encode()
        with self.env.begin(write=True) as txn:
            cursor = txn.cursor()
            if cursor.set_range(prefix):
                while cursor.key().startswith(prefix):
                    if not cursor.delete():
                        break

    def rename(self, old: str, new: str) -> None:
        """Move a collection's keys to its new name (it was renamed); ``new``'s old history is dropped."""
        self.forget(new)
        prefix, target = f"{old}\x00".encode(), f"{new}\x00".encode()
        with self.env.begin(write=True) as txn:
            cursor = txn.cursor()
            moved: list[tuple[bytes, bytes]] = []
            if cursor.set_range(prefix):
                while cursor.key().startswith(prefix):
                    moved.append((target + cursor.key()[len(prefix) :], cursor.value()))
                    if not cursor.delete():
                        break
            for k, v in moved:
                txn.put(k, v)

    def close(self) -> None:
        with _OPEN_LOCK:
            if self._closed:
                return
            self._closed = True
            env, users = _OPEN[self._key]
            if users > 1:
                _OPEN[self._key] = (env, users - 1)
            else:
                del _OPEN[self._key]
                env.close()


def judge(key: Any, in_milvus: bool, in_postgres: bool, tracker: KeyStateTracker | None, collection: str = "") -> str:
    """Which side is wrong about ``key`` existing; "" when they agree.

    With no tracker, or no record of the key, the shadow is presumed wrong: Milvus is the system of record.
    """
    if in_milvus == in_postgres:
        return ""
    state = tracker.state(key, collection) if tracker is not None else None
    if state is None:
        return "postgres"
    return "postgres" if in_milvus == (state == EXISTS) else "milvus"
