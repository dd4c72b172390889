"""The transaction around one mirrored write, and Milvus' call run beside the shadow's statement.

Kept apart from ``mirror`` (the ordering rules) because this is the mechanics every rule uses: how a
PostgreSQL refusal is worded, when a commit failure is a split, and how two calls run side by side
without either being cut short.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

import anyio
import asyncpg

from task_components.errors import CollectionNotFoundError, TransactionError


class Store(Protocol):
    """What a transaction needs of ``mirror.ShadowStore`` (named structurally: mirror imports this module)."""

    _known: dict[str, Any]

    async def pool(self) -> asyncpg.Pool: ...


class Target(Protocol):
    @property
    def table(self) -> str: ...

    @property
    def collection(self) -> str: ...


async def both(milvus: Awaitable[Any], shadow: Awaitable[Any]) -> tuple[Any, BaseException | None]:
    """Milvus' call and the shadow's statement side by side, both run to their end (neither is cancelled
    half way: a COPY cut short would leave the connection mid-protocol). Milvus' exception is raised
    (the caller's transaction rolls back); the shadow's is returned for the caller to judge."""
    out: dict[str, Any] = {}

    async def run(name: str, call: Awaitable[Any]) -> None:
        try:
            out[name] = await call
        except Exception as exc:  # noqa: BLE001 - judged below, by side
            out[name + "_error"] = exc

    # shielded: a caller's cancellation (a timeout around an async client's write) lands after both
    # calls ended, never between Milvus applying a write and the shadow learning of it
    with anyio.CancelScope(shield=True):
        async with anyio.create_task_group() as tg:
            tg.start_soon(run, "milvus", milvus)
            tg.start_soon(run, "shadow", shadow)
    if "milvus_error" in out:
        raise out["milvus_error"]
    return out["milvus"], out.get("shadow_error")


class Transaction:
    """A pooled connection and a transaction; PostgreSQL refusals become TransactionError naming the table.

    ``accepted`` is set once Milvus has taken the write: from then on the commit is shielded, and a
    failure to commit is reported as a split (Milvus has it, the shadow does not), never as a refusal.
    """

    def __init__(self, store: Store, sh: Target, op: str) -> None:
        self.store, self.sh, self.op = store, sh, op
        self.accepted = False

    async def __aenter__(self) -> Transaction:
        self.conn = await (await self.store.pool()).acquire()
        self.tx = self.conn.transaction()
        await self.tx.start()
        try:
            # one writer per table across processes: the shadow's statement runs beside Milvus' call, so
            # row locks no longer order two clients' Milvus calls; this lock does (held to commit/rollback)
            await self.conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", self.sh.table)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._rollback()
                await (await self.store.pool()).release(self.conn)
            raise
        return self

    async def _rollback(self) -> None:
        """Roll back, quietly when the connection is already gone: the error that got us here is the one to tell."""
        try:
            await self.tx.rollback()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pass

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        try:
            with anyio.CancelScope(shield=True):
                if exc is None:
                    try:
                        await self.tx.commit()
                    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as failed:
                        raise TransactionError(
                            f"Milvus accepted the {self.op} but the shadow {self.sh.table!r} could not commit it "
                            f"({type(failed).__name__}: {failed}): the stores differ; `shadow validate "
                            f"{self.sh.collection}` lists the rows"
                        ) from failed
                else:
                    await self._rollback()
        finally:
            await (await self.store.pool()).release(self.conn)
        if exc is None:
            return
        if isinstance(exc, asyncpg.UndefinedTableError):
            self.store._known.pop(self.sh.collection, None)
            raise CollectionNotFoundError(f"shadow table {self.sh.table!r} does not exist: {exc}") from exc
        if isinstance(exc, asyncpg.UniqueViolationError):
            raise TransactionError(
                f"{self.op} refused, nothing written: a primary key is already in {self.sh.table!r} or repeated in "
                f"the batch ({exc.detail or exc}); Milvus would store it twice; use upsert to replace rows"
            ) from exc
        if isinstance(exc, asyncpg.PostgresError | asyncpg.DataError) and not self.accepted:
            raise TransactionError(
                f"{self.op} refused by the shadow {self.sh.table!r}, nothing written: {type(exc).__name__}: {exc}"
            ) from exc
        if isinstance(exc, Exception) and not self.accepted and not isinstance(exc, TimeoutError | TransactionError):
            exc.add_note(f"the shadow's {self.op} in {self.sh.table!r} was rolled back: both stores are unchanged")
