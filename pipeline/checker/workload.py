"""The long-running correctness checker: N writers through the shadowing client, a validation every
``compare_interval`` seconds, until ``duration`` or a stop signal.

How a validation sees a quiet collection (pymilvus-pg's rule, kept): writers are paused at a gate,
the validator waits until no batch is in flight, compares, then reopens the gate; a divergence is then
Milvus' or the shadow's, never a batch half-written by the checker. Writes go through one
``ShadowMilvusClient``, which orders a collection's writes on both sides under one lock: the writers
share its throughput, as pymilvus-pg's threads share theirs. Crash safety is ``journal``'s: every
batch is written down first and replayed at the next start.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import anyio
import structlog

from pipeline.checker import rows
from pipeline.checker.journal import Intent, Journal
from pipeline.checker.validation import validate_collection
from task_components.clients import pg_pool
from task_components.errors import CollectionNotFoundError, ShadowSchemaError
from task_components.schema.postgres import quote, table_name
from task_components.shadow.diff import Comparison

log = structlog.get_logger("checker")
PK = quote(rows.PK)

BATCH = {"insert": 10_000, "upsert": 3_000, "delete": 5_000}  # pymilvus-pg's batch sizes
RETRY_SECONDS = 2.0
# failures no retry can fix: the collection is gone, or its shadow table does not match this run's flags
PERMANENT = (ShadowSchemaError, CollectionNotFoundError)
PROGRESS_EVERY = 30.0  # seconds between progress log lines when there is no live view


@dataclass(frozen=True)
class CheckerOptions:
    collection: str = rows.DEFAULT_COLLECTION
    threads: int = 10
    compare_interval: float = 60.0
    duration: float = 0.0  # 0: until stopped
    drop_existing: bool = False
    include_vector: bool = False
    dim: int = 8
    full_scan: bool = True
    sample_size: int = 1000  # keys whose rows are compared when not full_scan
    batch: dict[str, int] = field(default_factory=lambda: dict(BATCH))


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    ops: Counter[str] = field(default_factory=Counter)
    rows: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    replayed: int = 0
    validations: int = 0
    failed_validations: int = 0
    last: Comparison | None = None  # the latest validation
    first_failure: Comparison | None = None
    in_doubt: int = 0  # batches still journaled at the end (replayed at the next start)
    phase: str = "writing"

    @property
    def ok(self) -> bool:
        return self.failed_validations == 0 and self.in_doubt == 0

    def to_dict(self) -> dict[str, Any]:
        failing = self.first_failure
        return {
            "ok": self.ok,
            "seconds": round(time.monotonic() - self.started, 1),
            "ops": dict(self.ops),
            "rows": dict(self.rows),
            "errors": self.errors,
            "replayed": self.replayed,
            "validations": self.validations,
            "failed_validations": self.failed_validations,
            "in_doubt": self.in_doubt,
            "last_validation": self.last.summary() if self.last else None,
            "first_failure": failing.to_dict() if failing else None,
        }


class Checker:
    """Writers, validator and journal around one shadowing client (``client``, owned by the caller)."""

    def __init__(self, client: Any, dsn: str, options: CheckerOptions, journal: Journal) -> None:
        self.client = client
        self.dsn = dsn
        self.o = options
        self.journal = journal
        self.stats = Stats()
        self.table = table_name(options.collection)
        self._gate = anyio.Event()
        self._gate.set()
        self._in_flight = 0
        self._idle = anyio.Event()
        self._next_id = 0
        self._inserting: set[int] = set()  # first keys of the inserts in flight
        self._stop = anyio.Event()  # the run's stop (set by run())
        self._rng = random.Random()

    # --- set-up -------------------------------------------------------------------------------
    def prepare(self) -> None:
        """The collection (created, or checked for the fields the writers fill), loaded."""
        c, name = self.client, self.o.collection
        if self.o.drop_existing and c.has_collection(name):
            c.drop_collection(name)
        if not c.has_collection(name):
            rows.create(c, name, self.o.dim)
        else:
            fields = {f["name"]: f for f in c.describe_collection(name)["fields"]}
            missing = [f for f in ("id", "category", "name", "age", "json_field", "array_field", rows.VECTOR) if f not in fields]
            if missing:
                raise ValueError(f"collection {name!r} lacks the checker's fields {missing}: use --drop-existing or another --collection")
            dim = int(fields[rows.VECTOR].get("params", {}).get("dim", self.o.dim))
            self.o = replace(self.o, dim=dim)  # the collection's dimension wins
        c.load_collection(name)

    def replay(self) -> int:
        """Apply every batch a previous process left in doubt, through the shadowing client."""
        n = 0
        for slot, intent in self.journal.pending():
            self._apply(intent, replay=True)
            self.journal.done(slot)
            n += 1
        if n:
            log.info("checker.replayed", batches=n, collection=self.o.collection)
        self.stats.replayed = n
        return n

    # --- writes -------------------------------------------------------------------------------
    def _apply(self, intent: Intent, *, replay: bool = False) -> None:
        c, name = self.client, self.o.collection
        if intent.op == "delete":
            c.delete(name, ids=intent.keys)
            return
        data = rows.make_rows(intent.keys, intent.version, self.o.dim)
        if intent.op == "insert" and not replay:
            c.insert(name, data)
        else:  # a replayed insert may have reached one side: an upsert of the same rows converges
            c.upsert(name, data)

    async def _intent(self, pool: Any) -> Intent:
        # upserts and deletes stay below the inserts still in flight: an upsert creating a key an insert
        # is about to write would turn that insert into a (counted, retried) duplicate-key refusal
        safe = min(self._inserting, default=self._next_id)
        op = "insert" if safe == 0 else self._rng.choice(("insert", "upsert", "delete"))
        size = self.o.batch[op]
        if op == "insert":
            start, self._next_id = self._next_id, self._next_id + size
            self._inserting.add(start)
            return Intent(op, list(range(start, start + size)), 0)
        start = self._rng.randrange(0, max(1, safe - size))
        if op == "upsert":
            return Intent(op, list(range(start, min(start + size, safe))), self._rng.randrange(1, 2**31))
        sql = f"SELECT {PK} FROM {quote(self.table)} WHERE {PK} >= $1 AND {PK} < $2 ORDER BY 1 LIMIT $3"
        found = await pool.fetch(sql, start, safe, size)
        return Intent(op, [r[0] for r in found], 0)

    async def _write(self, slot: int, intent: Intent, stop: anyio.Event) -> None:
        """One batch, journaled; a failed one is retried as its replay until it lands or the run is told to
        stop (``stop`` is the run's own: a SIGTERM ends the retries, it does not wait for Milvus to return).
        A wrong collection or shadow table is no passing failure: it ends the run (exit 2)."""
        self.journal.begin(slot, intent)
        try:
            await anyio.to_thread.run_sync(self._apply, intent)
        except PERMANENT:
            raise
        except Exception as exc:  # noqa: BLE001 - a refused batch is counted and retried, the line goes on
            self.stats.errors += 1
            log.warning("checker.write_failed", op=intent.op, keys=len(intent.keys), error=f"{type(exc).__name__}: {exc}")
            while True:
                try:
                    await anyio.to_thread.run_sync(partial(self._apply, intent, replay=True))
                    break
                except PERMANENT:
                    raise
                except Exception as again:  # noqa: BLE001
                    if stop.is_set():
                        self.stats.in_doubt += 1
                        log.error("checker.in_doubt", op=intent.op, keys=len(intent.keys), error=str(again), journal=str(self.journal.dir))
                        return
                    await anyio.sleep(RETRY_SECONDS)
        self.journal.done(slot)
        self.stats.ops[intent.op] += 1
        self.stats.rows[intent.op] += len(intent.keys)

    async def _writer(self, slot: int, pool: Any, stop: anyio.Event) -> None:
        while not stop.is_set():
            while True:  # Event.wait() yields even when set: the gate may have closed meanwhile, look again
                gate = self._gate
                await gate.wait()
                if self._gate.is_set() or stop.is_set():
                    break
            if stop.is_set():
                return
            self._in_flight += 1  # no await since the gate was seen open: a validation cannot start in between
            intent = Intent("none", [], 0)
            try:
                intent = await self._intent(pool)
                if intent.keys:
                    await self._write(slot, intent, self._stop)
            finally:
                if intent.op == "insert" and intent.keys:
                    self._inserting.discard(intent.keys[0])
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._idle.set()
            await anyio.sleep(0)  # let the validator close the gate between batches

    # --- validation ---------------------------------------------------------------------------
    async def _quiet(self) -> None:
        self._gate = anyio.Event()  # closed: writers wait at their next batch
        while self._in_flight:
            self._idle = anyio.Event()
            await self._idle.wait()

    async def validate_once(self, pool: Any) -> Comparison:
        t0 = time.monotonic()
        result = await validate_collection(
            self.client,
            pool,
            self.o.collection,
            full_scan=self.o.full_scan,
            sample_size=self.o.sample_size,
            ignore_vectors=not self.o.include_vector,
            tracker=self.client.tracker,
            rng=self._rng,
        )
        self.stats.validations += 1
        self.stats.last = result
        if not result.ok:
            self.stats.failed_validations += 1
            self.stats.first_failure = self.stats.first_failure or result
            for d in result.differences[:20]:
                log.warning("checker.divergence", key=d.key, field=d.field, kind=d.kind, side=d.side, detail=d.detail)
        log.info(
            "checker.validation",
            ok=result.ok,
            summary=result.summary(),
            differences=result.total,
            seconds=round(time.monotonic() - t0, 2),
        )
        return result

    # --- the run ------------------------------------------------------------------------------
    async def run(self, stop: anyio.Event, on_tick: Callable[[Stats], None] | None = None) -> Stats:
        self.journal.lock()
        try:
            return await self._run(stop, on_tick)
        finally:
            self.journal.unlock()

    async def _run(self, stop: anyio.Event, on_tick: Callable[[Stats], None] | None) -> Stats:
        await anyio.to_thread.run_sync(self.prepare)
        await anyio.to_thread.run_sync(self.replay)
        self.stats.started = time.monotonic()  # --duration and rows/s count the writing, not the set-up
        self._stop = stop
        pool = await pg_pool(self.dsn, min_size=1, max_size=2)
        try:
            top = await pool.fetchval(f"SELECT max({PK}) FROM {quote(self.table)}")
            self._next_id = 0 if top is None else int(top) + 1
            writers_stop = anyio.Event()
            async with anyio.create_task_group() as tg:
                for slot in range(self.o.threads):
                    tg.start_soon(self._writer, slot, pool, writers_stop)
                await self._validate_until(stop, pool, on_tick)
                writers_stop.set()
                self._gate.set()  # writers waiting at a closed gate see the stop
            await self.validate_once(pool)  # the final one, on what the writers left
        finally:
            await pool.close()
        return self.stats

    async def _validate_until(self, stop: anyio.Event, pool: Any, on_tick: Callable[[Stats], None] | None) -> None:
        end = self.stats.started + self.o.duration if self.o.duration else float("inf")
        next_check = time.monotonic() + self.o.compare_interval
        next_note = time.monotonic() + PROGRESS_EVERY
        while not stop.is_set() and time.monotonic() < end:
            with anyio.move_on_after(min(0.5, max(0.0, min(end, next_check) - time.monotonic()))):
                await stop.wait()
            if on_tick is not None:
                on_tick(self.stats)
            elif time.monotonic() >= next_note:  # no live view: a progress line now and then
                next_note = time.monotonic() + PROGRESS_EVERY
                log.info("checker.progress", rows=dict(self.stats.rows), errors=self.stats.errors, validations=self.stats.validations)
            if time.monotonic() >= next_check and not stop.is_set() and time.monotonic() < end:
                self.stats.phase = "validating (writers paused)"
                if on_tick is not None:
                    on_tick(self.stats)
                await self._quiet()
                try:
                    await self.validate_once(pool)
                finally:
                    self._gate.set()
                    self.stats.phase = "writing"
                next_check = time.monotonic() + self.o.compare_interval
        await self._quiet()  # writers finish their batch; the final validation follows
