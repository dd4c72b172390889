"""The shadowing core shared by the drop-in clients: one PostgreSQL transaction around each Milvus write.

Why one core for two clients: ``ShadowMilvusClient`` (sync) and ``AsyncShadowMilvusClient`` differ only
in how they call Milvus; the ordering rules below are the hard part and must be the same in both.

Ordering, per write (under a per-collection lock in the process and a per-table advisory lock in
PostgreSQL across processes, so concurrent callers reach both stores in the same order and an upsert
race cannot leave them holding different winners):
- keyed insert/upsert/delete: inside an open transaction, the shadow's statement runs beside Milvus'
  call (not after it: a shadowed write then costs about what Milvus' call costs), and the transaction
  commits once both succeeded. A Milvus refusal re-raises Milvus' own exception after the transaction
  rolls back (callers that catch ``MilvusException`` keep working). What the shadow would refuse is
  refused before Milvus is called: an insert's keys are first looked up (a key already in the table,
  or repeated in the batch, raises ``TransactionError``), an upsert's rows are first staged (COPY into
  a temporary table: a value PostgreSQL refuses raises there) and only the merge runs beside Milvus.
  An insert the COPY still refuses is taken back from Milvus (its keys were just checked absent);
  a merge or DELETE that fails beside an accepted Milvus call (a lost connection) is a split,
  reported as one.
- AUTO_ID insert: Milvus assigns the keys, so Milvus goes first; the rows are then written to the
  shadow under the ids Milvus returned (in the ``_row`` column); if that fails, the rows are deleted
  from Milvus again before ``TransactionError`` is raised.
- delete by filter: Milvus finds the keys (a Strong query), both sides delete exactly those keys, so
  the rows deleted are the ones Milvus' own delete would take (its filter semantics, not the SQL
  translation's). With a partition, Milvus says which keys live there.
The LMDB tracker records each key's new state once Milvus has accepted the write, before the shadow
commits: if that commit were lost, the tracker still names the shadow as the wrong side. Once Milvus
has accepted, the record and the commit are shielded from cancellation, and a failure there says
that Milvus holds the write and the shadow does not (it is never reported as "nothing changed").

Rows reach PostgreSQL by binary COPY built from Arrow buffers (``encode_batch``) when every column
converts; anything else (ragged vectors Milvus will refuse, ARRAY fields, bytes vectors) takes the
record path, which is slower but accepts what Milvus accepts (``mirror_rows``).

``ignore_vector=True``: tables are created without vector columns and the rows' vectors are dropped
before encoding (no vector byte reaches PostgreSQL); an existing table whose vector columns do not
match the flag is refused with ShadowSchemaError naming it and the fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import asyncpg
import structlog

from task_components.clients import pg_pool
from task_components.errors import (
    CollectionNotFoundError,
    ShadowConnectionError,
    ShadowSchemaError,
    TransactionError,
)
from task_components.schema.arrow import META_COLUMN
from task_components.schema.milvus import from_milvus
from task_components.schema.models import CollectionSchema
from task_components.schema.postgres import ROW_KEY, columns, create_table_sql, quote
from task_components.schema.postgres import table_name as shadow_table
from task_components.shadow.mirror_rows import as_rows, copy_rows, prepare_copy, rows_batch, with_defaults
from task_components.shadow.mirror_txn import Transaction, both
from task_components.shadow.sides import Shadow, check_table, vector_columns
from task_components.shadow.tracker import KeyStateTracker

log = structlog.get_logger(__name__)
Describe = Callable[[], Awaitable[dict[str, Any]]]
MilvusWrite = Callable[[list[dict[str, Any]]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Shadowed(Shadow):
    """A shadowed collection plus the lock that orders its writes on both sides (``ShadowStore.lock``:
    one per collection name, so every cached copy and a rename share it)."""

    lock: anyio.Lock = field(default_factory=anyio.Lock, compare=False)
    collection_id: int | None = field(default=None, compare=False)  # Milvus' id: a re-created collection has a new one


class ShadowStore:
    """PostgreSQL side of the drop-in clients: table per collection, mirrored writes, tracker updates."""

    def __init__(self, dsn: str, tracker: KeyStateTracker | None, pool_max: int = 4, *, ignore_vector: bool = False) -> None:
        self.dsn, self.tracker, self.pool_max = dsn, tracker, pool_max
        self.ignore_vector = ignore_vector  # tables created without vector columns; writes carry none
        self._pool: asyncpg.Pool | None = None
        self._known: dict[str, Shadowed] = {}
        self._locks: dict[str, anyio.Lock] = {}

    def lock(self, collection: str) -> anyio.Lock:
        """The lock ordering writes to ``collection`` by its name, whichever ``Shadowed`` a writer holds."""
        return self._locks.setdefault(collection, anyio.Lock())

    async def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            try:
                self._pool = await pg_pool(self.dsn, min_size=1, max_size=self.pool_max)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
                raise ShadowConnectionError(
                    f"cannot reach the shadow PostgreSQL ({type(exc).__name__}: {exc}); nothing was written"
                ) from exc
        return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def shadowed(self, collection: str, describe: Describe) -> Shadowed:
        """The collection's schema and shadow table, looked up once; a missing table is a clear error."""
        if collection in self._known:
            return self._known[collection]
        description = await describe()
        schema = from_milvus(description)
        table = shadow_table(collection)
        async with (await self.pool()).acquire() as conn:
            if await conn.fetchval("SELECT to_regclass($1)", quote(table)) is None:
                raise CollectionNotFoundError(
                    f"collection {collection!r} has no shadow table {table!r}: create the collection through "
                    "the shadowing client (or run `shadow sync` for one that already holds data)"
                )
        # a table left from an earlier collection of this name (re-created by a client that does not
        # shadow) would refuse every write with a column error that names none of this
        vectors = await check_table(await self.pool(), schema, table)
        self._check_vectors(schema, table, vectors)
        found = self._entry(collection, schema, table, description)
        return self._known.setdefault(collection, found)

    def _entry(self, collection: str, schema: CollectionSchema, table: str, description: dict[str, Any]) -> Shadowed:
        vectors = not (self.ignore_vector and vector_columns(schema))
        return Shadowed(
            collection,
            schema,
            table,
            vectors=vectors,
            lock=self.lock(collection),
            collection_id=_collection_id(description),
        )

    def _check_vectors(self, schema: CollectionSchema, table: str, holds_vectors: bool) -> None:
        """An existing table whose vector columns do not match this client's ``ignore_vector``."""
        names = vector_columns(schema)
        if not names or holds_vectors != self.ignore_vector:
            return
        if holds_vectors:
            what = f"has vector columns ({', '.join(names)}) but this client has ignore_vector=True"
            fix = "construct the client with ignore_vector=False to keep shadowing vectors"
        else:
            what = "has no vector columns (created with ignore_vector=True) but this client has ignore_vector=False"
            fix = "construct the client with ignore_vector=True"
        raise ShadowSchemaError(
            f"shadow table {table!r} of collection {schema.collection_name!r} {what}: {fix}, or drop the collection "
            "and create it again through this client (its table is then made to match); nothing was written"
        )

    async def recreated(self, collection: str, describe: Describe) -> str:
        """Why the cached schema of ``collection`` is stale ("" when it is not): another client dropped and
        re-created it (Milvus gives it a new id). The cache entry is dropped, so the next call reads the
        collection afresh; the caller turns the failed write's confusing error into this reason."""
        known = self._known.get(collection)
        if known is None or known.collection_id is None:
            return ""
        try:
            now = _collection_id(await describe())
        except Exception:  # noqa: BLE001 - dropped and not re-created: the original error says enough
            return ""
        if now is None or now == known.collection_id:
            return ""
        self._known.pop(collection, None)
        return (
            f"collection {collection!r} was dropped and re-created by another client (id {known.collection_id} -> "
            f"{now}) after this client read its schema; this write was refused and nothing was written by it; "
            "the schema is now re-read: retry the write"
        )

    async def rename(self, old: str, new: str, milvus: Callable[[], Awaitable[Any]]) -> Any:
        """Rename the collection in Milvus and its shadow table (and tracker namespace) with it.

        The table is renamed inside a transaction that commits only once Milvus has renamed the
        collection: a Milvus refusal (``new`` exists, ``old`` does not) leaves both unchanged. A stale
        table already named after ``new`` (no collection has that name, or Milvus refuses) is replaced.
        Both names' write locks are held throughout: an AUTO_ID write in flight (Milvus first, then the
        table) lands on both sides first, and a later one finds ``old`` gone before it writes (unlocked,
        its rows went along to ``new`` in Milvus while its COPY and undo failed on the old names).
        """
        async with contextlib.AsyncExitStack() as held:
            for name in sorted({old, new}):  # one order for every caller: two renames cannot deadlock
                await held.enter_async_context(self.lock(name))
            self._known.pop(old, None)
            self._known.pop(new, None)
            return await self._rename(old, new, milvus)

    async def _rename(self, old: str, new: str, milvus: Callable[[], Awaitable[Any]]) -> Any:
        old_table, new_table = shadow_table(old), shadow_table(new)
        async with (await self.pool()).acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                await conn.execute(f"DROP TABLE IF EXISTS {quote(new_table)}")
                await conn.execute(f"ALTER TABLE IF EXISTS {quote(old_table)} RENAME TO {quote(new_table)}")
                result = await milvus()
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await tx.rollback()
                raise
            with anyio.CancelScope(shield=True):
                try:
                    await tx.commit()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as failed:
                    raise TransactionError(
                        f"Milvus renamed {old!r} to {new!r} but the shadow table {old_table!r} could not be renamed "
                        f"({type(failed).__name__}: {failed}): rename it to {new_table!r} by hand"
                    ) from failed
                if self.tracker is not None:
                    await anyio.to_thread.run_sync(self.tracker.rename, old, new)
        return result

    async def create(self, collection: str, describe: Describe, *, new: bool) -> None:
        """A ``new`` collection gets a new, empty shadow table (a stale one of the same name is replaced);
        a create call on a collection that already existed (Milvus accepts it when nothing differs)
        keeps the shadow and its history, creating the table only if it is missing."""
        self._known.pop(collection, None)
        description = await describe()
        schema = from_milvus(description)
        table = shadow_table(collection)
        entry = self._entry(collection, schema, table, description)
        ddl = create_table_sql(entry.stored, table)
        existed = False
        try:
            async with (await self.pool()).acquire() as conn, conn.transaction():
                if new:
                    await conn.execute(f"DROP TABLE IF EXISTS {quote(table)}")
                    await conn.execute(ddl)
                elif await conn.fetchval("SELECT to_regclass($1)", quote(table)) is None:
                    await conn.execute(ddl)
                else:
                    existed = True
        except (OSError, asyncpg.PostgresError) as exc:
            raise ShadowSchemaError(f"cannot create shadow table {table!r}: {type(exc).__name__}: {exc}") from exc
        if existed:  # kept with its history: it must match this client's ignore_vector
            self._check_vectors(schema, table, await check_table(await self.pool(), schema, table))
        if self.tracker is not None and new:
            await anyio.to_thread.run_sync(self.tracker.forget, collection)
        self._known[collection] = entry

    async def drop(self, collection: str, table: str) -> None:
        self._known.pop(collection, None)
        async with (await self.pool()).acquire() as conn:
            await conn.execute(f"DROP TABLE IF EXISTS {quote(table)}")
        if self.tracker is not None:
            await anyio.to_thread.run_sync(self.tracker.forget, collection)

    async def _record(self, sh: Shadowed, keys: list[Any], op: str) -> None:
        """Milvus has the write: a tracker that cannot record it must not undo the shadow's copy."""
        if self.tracker is None or not keys:
            return
        try:
            await anyio.to_thread.run_sync(self.tracker.record, keys, op, sh.schema.collection_name)
        except Exception as exc:  # noqa: BLE001 - logged: the stores stay right, only the tiebreak is lost
            log.warning(
                "key tracker could not record a write",
                collection=sh.collection,
                op=op,
                keys=len(keys),
                error=f"{type(exc).__name__}: {exc}",
            )

    async def write(
        self,
        sh: Shadowed,
        rows: list[dict[str, Any]],
        milvus: MilvusWrite,
        op: str,
        undo: Callable[[list[Any]], Awaitable[Any]],
    ) -> Any:
        """insert or upsert ``rows`` on both sides; Milvus' own return value comes back.

        ``undo`` deletes keys from Milvus: an AUTO_ID insert the shadow refuses is taken back with it.
        """
        rows = with_defaults(rows, sh.schema)
        if sh.schema.primary.auto_id:
            if op == "upsert":
                raise TransactionError(
                    f"upsert into AUTO_ID collection {sh.schema.collection_name!r} is not mirrored: Milvus "
                    "re-keys upserted rows; delete and insert instead"
                )
            return await self._insert_auto(sh, rows, milvus, undo)
        if op == "upsert":  # one row per key, the last one, as Milvus applies them
            rows = list({r.get(sh.pk): r for r in rows}.values())
        keys = [r.get(sh.pk) for r in rows]
        async with sh.lock, self._transaction(sh, op) as txn:
            stage = ""
            if op == "insert":
                await self._refuse_present(txn.conn, sh, keys)
                send = await anyio.to_thread.run_sync(prepare_copy, sh, rows, None)
            else:  # staged first: what PostgreSQL refuses in the rows is refused before Milvus sees them
                stage = await self._stage(txn.conn, sh, rows)

            async def shadow() -> None:
                if op == "upsert":
                    await self._merge(txn.conn, sh, stage)
                else:
                    await send(txn.conn, sh.table)

            result, refused = await both(milvus(rows), shadow())  # Milvus' own exception re-raised: rolls back
            if refused is not None:
                if op == "insert":  # keys checked absent above: taking the rows back from Milvus loses nothing
                    await self._take_back(sh, txn, keys, undo, refused)
                    raise refused
                txn.accepted = True
                with anyio.CancelScope(shield=True):
                    await self._record(sh, keys, op)
                raise TransactionError(  # the rows were staged: only a lost connection gets here
                    f"Milvus accepted the upsert but the shadow {sh.table!r} could not apply it ({type(refused).__name__}: "
                    f"{refused}): the stores differ; `shadow validate {sh.collection}` lists the rows"
                ) from refused
            txn.accepted = True
            with anyio.CancelScope(shield=True):
                await self._record(sh, keys, op)
        return result

    async def _take_back(
        self, sh: Shadowed, txn: Transaction, keys: list[Any], undo: Callable[[list[Any]], Awaitable[Any]], refused: BaseException
    ) -> None:
        """Delete an insert the shadow refused from Milvus again; if that fails too, say the stores differ."""
        with anyio.CancelScope(shield=True):
            try:
                await undo(keys)
            except Exception as exc:  # noqa: BLE001 - any failure leaves Milvus holding the rows: said as a split
                txn.accepted = True
                await self._record(sh, keys, "insert")
                raise TransactionError(
                    f"the shadow {sh.table!r} refused the insert ({type(refused).__name__}: {refused}) and taking it back "
                    f"from Milvus failed ({type(exc).__name__}: {exc}): Milvus holds {len(keys)} rows the shadow does "
                    f"not; `shadow validate {sh.collection}` lists them"
                ) from refused

    async def _refuse_present(self, conn: Any, sh: Shadowed, keys: list[Any]) -> None:
        """An insert of a key the shadow holds (or one repeated in the batch) is refused before Milvus
        sees it: Milvus would keep both rows. Checked first because the COPY now runs beside Milvus' call."""
        if len(set(keys)) != len(keys):
            seen: set[Any] = set()
            twice = next(k for k in keys if k in seen or seen.add(k))  # type: ignore[func-returns-value]
            raise TransactionError(f"insert refused, nothing written: key {twice!r} is repeated in the batch; Milvus would store it twice")
        found = await conn.fetchval(f"SELECT {quote(sh.key)} FROM {quote(sh.table)} WHERE {quote(sh.key)} = ANY($1) LIMIT 1", keys)
        if found is not None:
            raise TransactionError(
                f"insert refused, nothing written: key {found!r} is already in {sh.table!r}; Milvus would store it "
                "twice; use upsert to replace rows"
            )

    async def _stage(self, conn: Any, sh: Shadowed, rows: list[dict[str, Any]]) -> str:
        stage = f"stage_{abs(hash(sh.table)) % 10**9}"
        await conn.execute(f"CREATE TEMP TABLE {stage} (LIKE {quote(sh.table)}) ON COMMIT DROP")
        await copy_rows(conn, stage, sh, rows, None)
        return stage

    async def _merge(self, conn: Any, sh: Shadowed, stage: str) -> None:
        cols = columns(sh.stored)
        names = ", ".join(quote(c) for c in cols)
        updates = ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in cols if c != sh.key)
        await conn.execute(
            f"INSERT INTO {quote(sh.table)} ({names}) SELECT {names} FROM {stage} ON CONFLICT ({quote(sh.key)}) DO UPDATE SET {updates}"
        )

    async def _insert_auto(
        self, sh: Shadowed, rows: list[dict[str, Any]], milvus: MilvusWrite, undo: Callable[[list[Any]], Awaitable[Any]]
    ) -> Any:
        async with sh.lock:
            result = await milvus(rows)
            ids = list(result["ids"])
            try:
                async with self._transaction(sh, "insert") as txn:
                    await copy_rows(txn.conn, sh.table, sh, rows, ids)
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await undo(ids)
                raise
            await self._record(sh, ids, "insert")
        return result

    async def delete(
        self,
        sh: Shadowed,
        keys: list[Any] | None,
        partitioned: bool,
        find: Callable[[list[Any] | None], Awaitable[list[Any]]],
        milvus: Callable[[list[Any]], Awaitable[Any]],
    ) -> Any:
        """Delete ``keys``, or the keys a filter selects, from both sides.

        A filter is always evaluated by Milvus (``find``, a Strong query: ~200 ms on 2.3 for its time
        tick), never by its SQL translation: the rows deleted must be the rows Milvus' own delete would
        take, and a filter Milvus refuses must be refused. With a partition, Milvus also says which of
        the given keys live there (the shadow has no partitions).
        """
        async with sh.lock:
            if keys is None or partitioned:
                keys = await find(keys)
            if not keys:  # nothing to delete on either side; Milvus is not asked to guess
                return {"delete_count": 0}
            async with self._transaction(sh, "delete") as txn:
                sql = f"DELETE FROM {quote(sh.table)} WHERE {quote(sh.key)} = ANY($1)"
                result, failed = await both(milvus(keys), txn.conn.execute(sql, keys))
                txn.accepted = True
                if failed is not None:  # a DELETE by key fails only when the connection does: a split
                    with anyio.CancelScope(shield=True):
                        await self._record(sh, keys, "delete")
                    raise TransactionError(
                        f"Milvus accepted the delete but the shadow {sh.table!r} could not apply it "
                        f"({type(failed).__name__}: {failed}): the stores differ; `shadow validate {sh.collection}` lists the rows"
                    ) from failed
                with anyio.CancelScope(shield=True):
                    await self._record(sh, keys, "delete")
        return result

    def _transaction(self, sh: Shadowed, op: str) -> Transaction:
        return Transaction(self, sh, op)


def _collection_id(description: dict[str, Any]) -> int | None:
    value = description.get("collection_id")
    return int(value) if value is not None else None


__all__ = ["META_COLUMN", "ROW_KEY", "ShadowStore", "Shadowed", "as_rows", "rows_batch", "with_defaults"]
