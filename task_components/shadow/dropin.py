"""Drop-in shadowing clients: a ``MilvusClient`` (and ``AsyncMilvusClient``) that mirrors writes into PostgreSQL.

Why subclasses: pymilvus-pg users swap one import in their application and keep writing; every other
method (query, search, get, indexes, load...) must be Milvus' own, with the same signatures and return
values. Mirrored: create_collection / drop_collection / rename_collection (the shadow table and the
tracker's keys follow), insert, upsert and delete (by ids or by filter). The ordering rules live in
``mirror.ShadowStore``. A write that fails because another client dropped and re-created the collection
since this client read its schema raises ShadowSchemaError saying so (the schema is re-read for the next
call), not the stale schema's confusing column error.

Differences from a bare MilvusClient, all deliberate:
- an ``insert`` of a key already present (or repeated in the batch) is refused with TransactionError
  before Milvus sees it: Milvus would keep both rows, and no later read could say which one is right;
- ``upsert`` into an AUTO_ID collection is refused (Milvus re-keys the rows);
- partitions are not shadowed: the shadow holds the collection's rows, whatever partition they are in.

The sync client runs its PostgreSQL work on a private event loop thread (an anyio blocking portal),
so it is safe to share between threads; the async client uses the caller's loop. Both serialize writes
per collection, so concurrent writers reach Milvus and PostgreSQL in the same order. On a Milvus Lite
file both clients' Milvus writes and flushes take the file's write lock (``milvus.lite.write_lock``), shared with
every other client of that file in the process: Lite corrupts its WAL under concurrent writes.
"""

from __future__ import annotations

import contextlib
import weakref
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
from pymilvus import MilvusClient

from task_components.lite_client import lite_write_lock
from task_components.schema.postgres import table_name
from task_components.shadow.dropin_async import AsyncShadowMilvusClient
from task_components.shadow.dropin_base import _ids, _shadow_store, _stale, _stop_portal, default_tracker_path
from task_components.shadow.mirror import Shadowed, as_rows


class ShadowMilvusClient(MilvusClient):
    """``MilvusClient`` whose writes are mirrored into a PostgreSQL shadow (``pg_dsn``) and key tracker.

    ``ignore_vector=True``: shadow tables are created without vector columns and writes send no vector
    data to PostgreSQL (cheaper); comparisons then skip vectors and say so in their notes.
    ``tracker_map_size``: the LMDB map's size in bytes (the tracker holds about 100 bytes a key).
    """

    def __init__(
        self,
        uri: str = "http://localhost:19530",
        user: str = "",
        password: str = "",
        db_name: str = "",
        token: str = "",
        timeout: float | None = None,
        *,
        pg_dsn: str | None = None,
        tracker_path: str | Path | None = None,
        ignore_vector: bool = False,
        tracker_map_size: int = 1 << 30,
        **kwargs: Any,
    ) -> None:
        self.tracker, self.shadow = _shadow_store(
            pg_dsn, tracker_path, ignore_vector, tracker_map_size
        )  # bad arguments fail before connecting
        self.ignore_vector = ignore_vector  # True: the shadow tables hold no vector columns
        try:
            super().__init__(uri=uri, user=user, password=password, db_name=db_name, token=token, timeout=timeout, **kwargs)
        except BaseException:
            if self.tracker is not None:
                self.tracker.close()
            raise
        self._lite_lock = lite_write_lock(uri)
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        # close at interpreter exit while the loop thread still runs (a portal left to garbage
        # collection at shutdown waits forever for its already-frozen thread)
        self._finalizer = weakref.finalize(self, _stop_portal, self._portal, self._portal_cm, self.shadow)

    def _in_thread(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return anyio.to_thread.run_sync(partial(fn, self, *args, **kwargs))

    def _locked(self, fn: Any) -> Any:
        """``fn`` (a Milvus write) under the Lite file's write lock, when this client writes to one."""
        lock = self._lite_lock
        if lock is None:
            return fn

        def call(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return fn(*args, **kwargs)

        return call

    def _describe(self, collection_name: str) -> Any:
        return partial(self._in_thread, MilvusClient.describe_collection, collection_name)

    def _shadowed(self, collection_name: str) -> Shadowed:
        return self._portal.call(self.shadow.shadowed, collection_name, self._describe(collection_name))

    @contextlib.contextmanager
    def _fresh(self, collection_name: str) -> Any:
        """A write's failure caused by another client re-creating the collection, said as such."""
        try:
            yield
        except Exception as exc:
            reason = self._portal.call(self.shadow.recreated, collection_name, self._describe(collection_name))
            if reason:
                raise _stale(reason, exc) from exc
            raise

    def flush(self, collection_name: str, timeout: float | None = None, **kwargs: Any) -> None:
        return self._locked(MilvusClient.flush)(self, collection_name, timeout=timeout, **kwargs)

    def rename_collection(
        self, old_name: str, new_name: str, target_db: str | None = "", timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Milvus' rename, with the shadow table and the tracker's keys renamed alongside."""

        async def milvus() -> Any:
            return await self._in_thread(MilvusClient.rename_collection, old_name, new_name, target_db, timeout=timeout, **kwargs)

        return self._portal.call(self.shadow.rename, old_name, new_name, milvus)

    def create_collection(self, collection_name: str, *args: Any, **kwargs: Any) -> Any:
        new = not MilvusClient.has_collection(self, collection_name)
        result = MilvusClient.create_collection(self, collection_name, *args, **kwargs)
        try:
            describe = partial(self._in_thread, MilvusClient.describe_collection, collection_name)
            self._portal.call(partial(self.shadow.create, collection_name, describe, new=new))
        except BaseException:
            if new:  # no collection without its shadow; one that existed before is the user's data
                MilvusClient.drop_collection(self, collection_name)
            raise
        return result

    def drop_collection(self, collection_name: str, timeout: float | None = None, **kwargs: Any) -> Any:
        self._portal.call(self.shadow.pool)  # PostgreSQL unreachable: fail before Milvus drops anything
        result = MilvusClient.drop_collection(self, collection_name, timeout=timeout, **kwargs)
        self._portal.call(self.shadow.drop, collection_name, table_name(collection_name))
        return result

    def _write(self, op: str, collection_name: str, data: Any, timeout: float | None, **kwargs: Any) -> Any:
        with self._fresh(collection_name):
            sh = self._shadowed(collection_name)
            call = self._locked(getattr(MilvusClient, op))
            write = partial(self._in_thread, call, collection_name, timeout=timeout, **kwargs)
            undo = partial(self._in_thread, self._locked(MilvusClient.delete), collection_name)
            # undone by an escaped `pk in [...]` (keyexpr), as deletes are: pymilvus' ids= escapes nothing
            return self._portal.call(self.shadow.write, sh, as_rows(data), write, op, lambda ids: undo(filter=sh.pk_in(ids)))

    def insert(
        self,
        collection_name: str,
        data: dict | list[dict],
        timeout: float | None = None,
        partition_name: str | None = "",
        **kwargs: Any,
    ) -> dict:
        return self._write("insert", collection_name, data, timeout, partition_name=partition_name, **kwargs)

    def upsert(
        self,
        collection_name: str,
        data: dict | list[dict],
        timeout: float | None = None,
        partition_name: str | None = "",
        **kwargs: Any,
    ) -> dict:
        return self._write("upsert", collection_name, data, timeout, partition_name=partition_name, **kwargs)

    def delete(
        self,
        collection_name: str,
        ids: list | str | int | None = None,
        timeout: float | None = None,
        filter: str | None = None,
        partition_name: str | None = None,
        **kwargs: Any,
    ) -> dict[str, int]:
        if (ids is None) == (not filter):  # neither or both: Milvus' own error, nothing mirrored
            return MilvusClient.delete(self, collection_name, ids, timeout, filter, partition_name, **kwargs)
        with self._fresh(collection_name):
            return self._delete(collection_name, ids, timeout, filter, partition_name, **kwargs)

    def _delete(
        self,
        collection_name: str,
        ids: list | str | int | None,
        timeout: float | None,
        filter: str | None,
        partition_name: str | None,
        **kwargs: Any,
    ) -> dict[str, int]:
        sh = self._shadowed(collection_name)
        parts = [partition_name] if partition_name else None

        def find(keys: list[Any] | None) -> list[Any]:
            # a query without a limit returns every match (bounded by Milvus' output quota, ~100 MB of
            # keys); query_iterator is not used: on Milvus 2.3 it misses rows written a moment before
            expr = sh.pk_in(keys) if keys is not None else filter
            rows = MilvusClient.query(
                self,
                collection_name,
                filter=expr,
                output_fields=[sh.pk],
                consistency_level="Strong",
                partition_names=parts,
            )
            return [r[sh.pk] for r in rows]

        async def find_async(keys: list[Any] | None) -> list[Any]:
            return await anyio.to_thread.run_sync(find, keys)

        async def milvus(keys: list[Any]) -> Any:
            # by an escaped `pk in [...]`: pymilvus' ids= does not escape quotes or backslashes in keys
            return await self._in_thread(
                self._locked(MilvusClient.delete),
                collection_name,
                filter=sh.pk_in(keys),
                timeout=timeout,
                partition_name=partition_name,
                **kwargs,
            )

        keys = None if ids is None else _ids(ids)
        return self._portal.call(self.shadow.delete, sh, keys, bool(partition_name), find_async, milvus)

    def close(self) -> None:
        try:
            self._finalizer()  # runs once: later calls do nothing
            if self.tracker is not None:
                self.tracker.close()
                self.tracker = None
        finally:
            super().close()


__all__ = ["AsyncShadowMilvusClient", "ShadowMilvusClient", "default_tracker_path"]
