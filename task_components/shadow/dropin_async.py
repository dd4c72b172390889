"""The async drop-in shadowing client (``AsyncMilvusClient``): the rules of ``dropin``'s module docstring."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
from pymilvus import AsyncMilvusClient

from task_components.errors import ShadowSchemaError
from task_components.lite_client import held, lite_write_lock
from task_components.schema.postgres import table_name
from task_components.shadow.dropin_base import _ids, _shadow_store, _stale
from task_components.shadow.mirror import Shadowed, as_rows


class AsyncShadowMilvusClient(AsyncMilvusClient):
    """``AsyncMilvusClient`` whose writes are mirrored into a PostgreSQL shadow; same rules as the sync one."""

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
        **kwargs: Any,
    ) -> None:
        self.tracker, self.shadow = _shadow_store(pg_dsn, tracker_path, ignore_vector)  # bad arguments fail before connecting
        self.ignore_vector = ignore_vector  # True: the shadow tables hold no vector columns
        try:
            super().__init__(uri=uri, user=user, password=password, db_name=db_name, token=token, timeout=timeout, **kwargs)
        except BaseException:
            if self.tracker is not None:
                self.tracker.close()
            raise
        self._lite_lock = lite_write_lock(uri)  # None unless a Lite file: see the module docstring

    def _describe(self, collection_name: str) -> Any:
        return partial(AsyncMilvusClient.describe_collection, self, collection_name)

    async def _shadowed(self, collection_name: str) -> Shadowed:
        return await self.shadow.shadowed(collection_name, self._describe(collection_name))

    async def create_collection(self, collection_name: str, *args: Any, **kwargs: Any) -> Any:
        new = not await AsyncMilvusClient.has_collection(self, collection_name)
        result = await AsyncMilvusClient.create_collection(self, collection_name, *args, **kwargs)
        try:
            await self.shadow.create(collection_name, self._describe(collection_name), new=new)
        except BaseException:
            if new:
                with anyio.CancelScope(shield=True):
                    await AsyncMilvusClient.drop_collection(self, collection_name)
            raise
        return result

    async def drop_collection(self, collection_name: str, timeout: float | None = None, **kwargs: Any) -> Any:
        await self.shadow.pool()  # PostgreSQL unreachable: fail before Milvus drops anything
        result = await AsyncMilvusClient.drop_collection(self, collection_name, timeout=timeout, **kwargs)
        await self.shadow.drop(collection_name, table_name(collection_name))
        return result

    async def flush(self, collection_name: str, timeout: float | None = None, **kwargs: Any) -> None:
        """Under the Lite file's write lock: a flush swaps the WAL another client's write may be appending to."""
        async with held(self._lite_lock):
            return await AsyncMilvusClient.flush(self, collection_name, timeout=timeout, **kwargs)

    async def _stale(self, collection_name: str, exc: Exception) -> ShadowSchemaError | None:
        reason = await self.shadow.recreated(collection_name, self._describe(collection_name))
        return _stale(reason, exc) if reason else None

    async def rename_collection(
        self, old_name: str, new_name: str, target_db: str | None = "", timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Milvus' rename, with the shadow table and the tracker's keys renamed alongside."""

        async def milvus() -> Any:
            return await AsyncMilvusClient.rename_collection(self, old_name, new_name, target_db, timeout=timeout, **kwargs)

        return await self.shadow.rename(old_name, new_name, milvus)

    async def _write(self, op: str, collection_name: str, data: Any, timeout: float | None, **kwargs: Any) -> Any:
        try:
            return await self._write_once(op, collection_name, data, timeout, **kwargs)
        except Exception as exc:
            if stale := await self._stale(collection_name, exc):
                raise stale from exc
            raise

    async def _write_once(self, op: str, collection_name: str, data: Any, timeout: float | None, **kwargs: Any) -> Any:
        sh = await self._shadowed(collection_name)
        call = getattr(AsyncMilvusClient, op)

        async def write(rows: list[dict[str, Any]]) -> Any:
            async with held(self._lite_lock):
                return await call(self, collection_name, rows, timeout=timeout, **kwargs)

        async def undo(ids: list[Any]) -> Any:
            async with held(self._lite_lock):
                return await AsyncMilvusClient.delete(self, collection_name, filter=sh.pk_in(ids))

        return await self.shadow.write(sh, as_rows(data), write, op, undo)

    async def insert(
        self,
        collection_name: str,
        data: dict | list[dict],
        timeout: float | None = None,
        partition_name: str | None = "",
        **kwargs: Any,
    ) -> dict:
        return await self._write("insert", collection_name, data, timeout, partition_name=partition_name, **kwargs)

    async def upsert(
        self,
        collection_name: str,
        data: dict | list[dict],
        timeout: float | None = None,
        partition_name: str | None = "",
        **kwargs: Any,
    ) -> dict:
        return await self._write("upsert", collection_name, data, timeout, partition_name=partition_name, **kwargs)

    async def delete(
        self,
        collection_name: str,
        ids: list | str | int | None = None,
        timeout: float | None = None,
        filter: str | None = None,
        partition_name: str | None = None,
        **kwargs: Any,
    ) -> dict[str, int]:
        if (ids is None) == (not filter):
            return await AsyncMilvusClient.delete(self, collection_name, ids, timeout, filter, partition_name, **kwargs)
        try:
            return await self._delete(collection_name, ids, timeout, filter, partition_name, **kwargs)
        except Exception as exc:
            if stale := await self._stale(collection_name, exc):
                raise stale from exc
            raise

    async def _delete(
        self,
        collection_name: str,
        ids: list | str | int | None,
        timeout: float | None,
        filter: str | None,
        partition_name: str | None,
        **kwargs: Any,
    ) -> dict[str, int]:
        sh = await self._shadowed(collection_name)
        parts = [partition_name] if partition_name else None

        async def find(keys: list[Any] | None) -> list[Any]:
            # AsyncMilvusClient has no query_iterator; a query without a limit returns every match
            expr = sh.pk_in(keys) if keys is not None else filter
            rows = await AsyncMilvusClient.query(
                self,
                collection_name,
                filter=expr,
                output_fields=[sh.pk],
                partition_names=parts,
                consistency_level="Strong",
            )
            return [r[sh.pk] for r in rows]

        async def milvus(keys: list[Any]) -> Any:
            async with held(self._lite_lock):
                return await AsyncMilvusClient.delete(
                    self,
                    collection_name,
                    filter=sh.pk_in(keys),
                    timeout=timeout,
                    partition_name=partition_name,
                    **kwargs,
                )

        keys = None if ids is None else _ids(ids)
        return await self.shadow.delete(sh, keys, bool(partition_name), find, milvus)

    async def close(self) -> None:
        try:
            await self.shadow.close()
            if self.tracker is not None:
                self.tracker.close()
                self.tracker = None
        finally:
            await super().close()


__all__ = ["AsyncShadowMilvusClient"]
