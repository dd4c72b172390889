"""Batched inserts that a resumed run never duplicates.

Inserts are not idempotent: a batch inserted twice is two copies of its rows (Milvus does not enforce
primary-key uniqueness). So every batch is journaled twice in ``<run dir>/<task>.inserted.jsonl``:
"started" before the call and "landed" after Milvus acknowledged it. On resume:

* a landed batch is skipped;
* a started-but-unacknowledged batch may or may not be in Milvus: with caller-chosen keys it is
  *upserted* (delete + insert by key: exact either way); in an AUTO_ID collection (Milvus assigns the
  keys, so there is nothing to upsert by) the Strong count(*) decides: it must equal the landed rows,
  or the landed rows plus every in-flight batch, else the task refuses with a clear error;
* no in-flight batch is written again, and no count taken, while an insert of the killed process can
  still land: a gRPC call the process sent before dying may still be on its way into Milvus (an upsert
  sent before it would be followed by a second copy; count(*), even Strong, sees only what Milvus has
  timestamped). So every insert carries a deadline (``call_timeout``; gRPC hands it to the server,
  which drops a call whose deadline has passed) and the "started" entry records when the last
  possible attempt's deadline ends: pymilvus retries within the timeout, each attempt with the whole
  timeout, after a back-off of up to 3 s and a request build that runs before the deadline starts, so
  start + 2 x timeout + 3 s + ``PREP_SLACK``. A call that failed records "settled": nothing of it
  lands after one more timeout (its last attempt was sent before it failed); a call an interrupt
  (SIGTERM, SIGHUP) found answered is recorded landed, so only a SIGKILL leaves the whole wait. With
  keys the resume sends the batches never started at once and upserts the in-flight ones once that
  time has passed; AUTO_ID waits first, then flushes and counts until two counts agree;
* a batch never started is inserted normally.

The journal is append-only lines (a torn last line from a SIGKILL is ignored), so recording costs one
small write per batch. Batch identity is (file, batch size, index): a resume with another batch size
treats everything unacknowledged as in flight, which is slower but still exact.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa

from dag_orchestrator.context import PipelineContext
from task_components.clients import milvus_client
from task_components.connect import count_rows
from task_components.contracts import CollectionInfo, Manifest
from task_components.datafiles import iter_batches
from task_components.milvus.client import arrow_to_rows

__all__ = ["INSERT_TIMEOUT", "PREP_SLACK", "InsertJournal", "InsertStats", "insert_files", "landing_window"]

# seconds one insert call may take, pymilvus' retries included (it uses the timeout as its whole retry budget):
# above the ~210 s its retries rode out before calls carried a timeout, so a Milvus restart mid-load still
# passes; a resume after a SIGKILL waits up to landing_window() of it for the killed attempt's calls
INSERT_TIMEOUT = 240.0
PREP_SLACK = 10.0  # seconds pymilvus may spend building a batch's request before its gRPC deadline starts
MAX_BACKOFF = 3.0  # pymilvus' longest sleep between two attempts (retry_on_rpc_failure's max_back_off)


def landing_window(timeout: float) -> float:
    """Seconds after a call starts until nothing of it can land: its last retry may begin just before the
    budget ends, after the longest back-off and a request build, and carries the whole timeout."""
    return 2 * timeout + MAX_BACKOFF + PREP_SLACK


class InsertJournal:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.started: dict[str, int] = {}  # batch key -> rows
        self.deadlines: dict[str, float] = {}  # batch key -> epoch after which its call cannot land
        self.landed: set[str] = set()
        self.rows_before: int | None = None
        settled: set[str] = set()
        caps: dict[str, float] = {}  # batch key -> its call's own timeout (newer journals record it)
        opened = time.time()
        if path is not None and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # torn by a kill
                if "before" in entry:
                    self.rows_before = int(entry["before"])
                elif "landed" in entry:
                    self.landed.add(entry["landed"])
                elif "settled" in entry:  # the call returned: nothing of it lands after "at"
                    self.deadlines[entry["settled"]] = float(entry["at"])
                    settled.add(entry["settled"])
                else:
                    key = entry["started"]
                    self.started[key] = int(entry["rows"])
                    if "deadline" in entry:
                        self.deadlines[key] = max(float(entry["deadline"]), self.deadlines.get(key, 0.0))
                    if "timeout" in entry:
                        caps[key] = float(entry["timeout"])
        self.resumed = bool(self.started)
        self.in_flight = {k: n for k, n in self.started.items() if k not in self.landed}
        # started, never answered nor settled: the process that sent it died (a live one records an outcome
        # for every call, cancelled or not), so pymilvus retries nothing more and the last attempt it sent,
        # before now, carries a deadline at most its timeout from now
        for key in self.in_flight.keys() - settled:
            if key in caps and key in self.deadlines:
                self.deadlines[key] = min(self.deadlines[key], opened + caps[key])
        self.batch_sizes = {k.rsplit("@", 1)[1].split("#")[0] for k in self.started if "@" in k}
        self._fh: Any = None

    def _write(self, entry: dict[str, Any]) -> None:
        if self.path is None:
            return
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._fh.write(json.dumps(entry) + "\n")
        self._fh.flush()  # in the OS once written: a SIGKILL of this process cannot lose it

    def note_before(self, rows: int) -> None:
        self.rows_before = rows
        self._write({"before": rows})

    def start(self, key: str, rows: int, timeout: float) -> None:
        deadline = round(time.time() + landing_window(timeout), 3)
        self._write({"started": key, "rows": rows, "deadline": deadline, "timeout": timeout})

    def expire(self) -> None:
        """Nothing of the interrupted attempt can land any more (Milvus Lite served it inside the process
        that died: opening its file again means that server is gone)."""
        self.deadlines.update(dict.fromkeys(self.in_flight, 0.0))

    def settle(self, key: str, after: float) -> None:
        """The call for ``key`` failed or was interrupted without an answer: nothing of it can land after
        ``after`` seconds from now (a resume waits that long, not the whole started deadline)."""
        self._write({"settled": key, "at": round(time.time() + after, 3)})

    def landing_deadline(self, fallback: float) -> float:
        """Epoch after which no in-flight batch of the interrupted attempt can still land (entries of an
        older journal carry no deadline: its file's last write plus ``fallback`` seconds)."""
        if not self.in_flight:
            return 0.0
        missing = [k for k in self.in_flight if k not in self.deadlines]
        last_write = self.path.stat().st_mtime if missing and self.path is not None else 0.0
        known = [self.deadlines[k] for k in self.in_flight if k in self.deadlines]
        return max([*known, last_write + landing_window(fallback) if missing else 0.0])

    def land(self, key: str) -> None:
        self._write({"landed": key})

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@dataclass(slots=True)
class InsertStats:
    inserted: int = 0
    skipped: int = 0  # rows of batches that had landed before a resume
    upserted: int = 0  # rows of batches in flight at the interruption, written again by key
    adopted: int = 0  # AUTO_ID: rows of in-flight batches the count showed had landed

    def describe(self) -> str:
        if not (self.skipped or self.upserted or self.adopted):
            return ""
        parts = [f"resumed from the insert journal: {self.skipped:,} rows already in Milvus skipped"]
        if self.upserted:
            parts.append(f"{self.upserted:,} rows of batches in flight at the interruption upserted by key")
        if self.adopted:
            parts.append(f"{self.adopted:,} rows in flight found landed by count(*) (AUTO_ID)")
        return "; ".join(parts)


def _batches(manifest: Manifest, batch_rows: int) -> Iterator[tuple[str, pa.RecordBatch]]:
    for entry in manifest.files:
        for i, batch in enumerate(iter_batches(manifest, entry, batch_rows)):
            yield f"{entry.path}@{batch_rows}#{i}", batch


async def _wait_landings(ctx: PipelineContext, info: CollectionInfo, journal: InsertJournal, timeout: float, why: str) -> None:
    """Until no insert of the interrupted attempt can still land (its calls' deadlines have passed)."""
    wait = journal.landing_deadline(timeout) - time.time()
    if wait > 0:
        ctx.log.info(
            f"waiting for the interrupted attempt's inserts to land or expire before {why}",
            seconds=round(wait, 1),
            collection=info.name,
            batches=len(journal.in_flight),
        )
        await anyio.sleep(wait)


async def _settled_count(ctx: PipelineContext, client: Any, info: CollectionInfo, journal: InsertJournal, timeout: float) -> int:
    """count(*) once no insert of the interrupted attempt can still land, flushing and counting until two
    counts agree (a landing in between shows as a difference)."""
    await _wait_landings(ctx, info, journal, timeout, "counting")
    count = await anyio.to_thread.run_sync(count_rows, client, info.name)
    for _ in range(10):
        await anyio.to_thread.run_sync(lambda: client.flush(info.name))
        again = await anyio.to_thread.run_sync(count_rows, client, info.name)
        if again == count:
            return count
        count = again
        await anyio.sleep(1.0)
    raise RuntimeError(
        f"collection {info.name!r} (AUTO_ID) keeps changing while the load resumes (last count "
        f"{count:,}): is another writer loading it? Stop it, or drop the collection and load again"
    )


async def _reconcile_auto_id(ctx: PipelineContext, client: Any, info: CollectionInfo, journal: InsertJournal, timeout: float) -> set[str]:
    """AUTO_ID: which in-flight batches to treat as landed, decided by a settled count(*) (all or none)."""
    if not journal.in_flight:
        return set()
    count = await _settled_count(ctx, client, info, journal, timeout)
    landed_rows = (journal.rows_before or 0) + sum(journal.started[k] for k in journal.landed if k in journal.started)
    flying = sum(journal.in_flight.values())
    if count == landed_rows:
        return set()
    if count == landed_rows + flying:
        return set(journal.in_flight)
    raise RuntimeError(
        f"collection {info.name!r} (AUTO_ID) holds {count:,} rows; the journal accounts for {landed_rows:,} landed "
        f"plus {flying:,} in flight at the interruption, so it cannot tell which in-flight batches landed: "
        "drop the collection and load again (if_exists: drop)"
    )


async def insert_files(
    ctx: PipelineContext,
    info: CollectionInfo,
    manifest: Manifest,
    batch_rows: int,
    concurrency: int,
    journal: InsertJournal,
    call_timeout: float = INSERT_TIMEOUT,
) -> InsertStats:
    """Insert every manifest file in batches, at most ``concurrency`` batches read ahead or in flight."""
    schema = info.collection_schema
    keyed = not schema.primary.auto_id
    # a resume with another batch size cannot match batches to the journal: every unacknowledged row may be in
    # Milvus, so with keys everything not landed under this size is upserted; without keys nothing is safe
    unsure = journal.resumed and journal.batch_sizes != {str(batch_rows)}
    if unsure and not keyed:
        raise RuntimeError(
            f"collection {info.name!r} (AUTO_ID) was being loaded with batch_rows "
            f"{', '.join(sorted(journal.batch_sizes))}; resume with the same batch_rows, or drop it and load again"
        )
    stats = InsertStats()
    slots = anyio.Semaphore(concurrency)  # held from reading a batch until Milvus acknowledged it
    target = info.milvus(ctx.services.settings)
    client = await anyio.to_thread.run_sync(milvus_client, target)
    if target.lite:
        journal.expire()
    try:
        if journal.rows_before is None:
            journal.note_before(await anyio.to_thread.run_sync(count_rows, client, info.name))
        adopted = set() if keyed else await _reconcile_auto_id(ctx, client, info, journal, call_timeout)

        if keyed and unsure:  # any upsert may hold rows of an in-flight batch of the other size
            await _wait_landings(ctx, info, journal, call_timeout, "upserting")

        async def send(key: str, batch: pa.RecordBatch) -> None:
            rows = await anyio.to_thread.run_sync(arrow_to_rows, batch, schema)
            again = keyed and (key in journal.in_flight or unsure)
            call = client.upsert if again else client.insert
            answered, failure = False, None

            def write() -> None:  # its outcome is seen even if the task is cancelled (the thread runs its course)
                nonlocal answered, failure
                try:
                    call(info.name, rows, timeout=call_timeout)
                except BaseException as exc:
                    failure = exc
                    raise
                answered = True

            journal.start(key, len(rows), call_timeout)
            try:
                await anyio.to_thread.run_sync(write)
            except BaseException:
                if answered:
                    journal.land(key)
                else:  # never sent (0 s), or failed: its last attempt, sent before now, may still be in Milvus
                    journal.settle(key, call_timeout + MAX_BACKOFF if failure is not None else 0.0)
                raise
            journal.land(key)
            if again:
                stats.upserted += len(rows)
            else:
                stats.inserted += len(rows)
            ctx.progress(done=stats.inserted + stats.upserted + stats.skipped, total=manifest.total_rows, unit="rows")

        async def send_now(key: str, batch: pa.RecordBatch) -> None:
            try:
                await send(key, batch)
            finally:
                slots.release()

        async def send_late(key: str, batch: pa.RecordBatch, at: float) -> None:
            """An in-flight batch of the interrupted attempt, upserted once that attempt's call for it can no
            longer land (an upsert before would be followed by the late insert: the keys twice)."""
            await anyio.sleep(max(0.0, at - time.time()))
            async with slots:
                await send(key, batch)

        late_at = journal.landing_deadline(call_timeout) if keyed and not unsure else 0.0
        if late_at > time.time():
            ctx.log.info(
                "in-flight batches of the interrupted attempt are upserted once its inserts can no longer land; the other batches go now",
                seconds=round(late_at - time.time(), 1),
                batches=len(journal.in_flight),
                collection=info.name,
            )

        batches = _batches(manifest, batch_rows)
        async with anyio.create_task_group() as tg:
            while True:
                await slots.acquire()
                item = await anyio.to_thread.run_sync(next, batches, None)  # Parquet reads off the event loop
                if item is None:
                    slots.release()
                    break
                key, batch = item
                if key in journal.landed or key in adopted:
                    if key in adopted:
                        journal.land(key)  # so a second interruption still counts these rows as landed
                        stats.adopted += batch.num_rows
                    else:
                        stats.skipped += batch.num_rows
                    slots.release()
                    continue
                if keyed and key in journal.in_flight and late_at > time.time():
                    slots.release()  # held back in memory (at most the earlier attempt's concurrency of them)
                    tg.start_soon(send_late, key, batch, late_at)
                    continue
                tg.start_soon(send_now, key, batch)
        await anyio.to_thread.run_sync(lambda: client.flush(info.name))
    finally:
        journal.close()
        await anyio.to_thread.run_sync(client.close)
    return stats
