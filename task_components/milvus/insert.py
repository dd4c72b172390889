"""Batched inserts that a resumed run never duplicates.

Inserts are not idempotent: a batch inserted twice is two copies of its rows (Milvus does not enforce
primary-key uniqueness). So every batch is journaled twice in ``<run dir>/<task>.inserted.jsonl``:
"started" before the call and "landed" after Milvus acknowledged it. On resume:

* a landed batch is skipped;
* a started-but-unacknowledged batch may or may not be in Milvus: with caller-chosen keys it is
  *upserted* (delete + insert by key: exact either way); in an AUTO_ID collection (Milvus assigns the
  keys, so there is nothing to upsert by) the Strong count(*) decides: it must equal the landed rows,
  or the landed rows plus every in-flight batch, else the task refuses with a clear error;
* a batch never started is inserted normally.

The journal is append-only lines (a torn last line from a SIGKILL is ignored), so recording costs one
small write per batch. Batch identity is (file, batch size, index): a resume with another batch size
treats everything unacknowledged as in flight, which is slower but still exact.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa

from task_components.connect import count_rows
from task_components.contracts import CollectionInfo, Manifest
from task_components.datafiles import iter_batches
from task_components.milvus.client import arrow_to_rows

__all__ = ["InsertJournal", "InsertStats", "insert_files"]


class InsertJournal:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.started: dict[str, int] = {}  # batch key -> rows
        self.landed: set[str] = set()
        self.rows_before: int | None = None
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
                else:
                    self.started[entry["started"]] = int(entry["rows"])
        self.resumed = bool(self.started)
        self.in_flight = {k: n for k, n in self.started.items() if k not in self.landed}
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

    def start(self, key: str, rows: int) -> None:
        self._write({"started": key, "rows": rows})

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


async def _reconcile_auto_id(client: Any, info: CollectionInfo, journal: InsertJournal) -> set[str]:
    """AUTO_ID: which in-flight batches to treat as landed, decided by count(*) (all or none)."""
    if not journal.in_flight:
        return set()
    count = await anyio.to_thread.run_sync(count_rows, client, info.name)
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
    ctx: Any, info: CollectionInfo, manifest: Manifest, batch_rows: int, concurrency: int, journal: InsertJournal,
) -> InsertStats:  # fmt: skip
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
    client = await anyio.to_thread.run_sync(info.milvus().client)
    try:
        if journal.rows_before is None:
            journal.note_before(await anyio.to_thread.run_sync(count_rows, client, info.name))
        adopted = set() if keyed else await _reconcile_auto_id(client, info, journal)

        async def send(key: str, batch: pa.RecordBatch) -> None:
            try:
                rows = await anyio.to_thread.run_sync(arrow_to_rows, batch, schema)
                again = keyed and (key in journal.in_flight or unsure)
                journal.start(key, len(rows))
                call = client.upsert if again else client.insert
                await anyio.to_thread.run_sync(lambda: call(info.name, rows))
                journal.land(key)
                if again:
                    stats.upserted += len(rows)
                else:
                    stats.inserted += len(rows)
                ctx.progress(done=stats.inserted + stats.upserted + stats.skipped, total=manifest.total_rows,
                             unit="rows")  # fmt: skip
            finally:
                slots.release()

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
                tg.start_soon(send, key, batch)
        await anyio.to_thread.run_sync(lambda: client.flush(info.name))
    finally:
        journal.close()
        await anyio.to_thread.run_sync(client.close)
    return stats
