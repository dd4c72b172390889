"""Bulk-import jobs that a resumed run never submits twice, and the wait until every row is searchable.

Bulk import is not idempotent: importing a file twice doubles its rows. ``JobJournal`` records which
file went to which job (``<run dir>/<task>.jobs.json``); a submission and its journal entry happen
under a cancel shield, so a signal cannot separate them. A SIGKILL still can (the job exists, the
journal does not know it), so on resume the jobs Milvus lists for the collection are matched to files
by their file list and adopted instead of submitted again (a job that names no files yet is waited
for until it does).

"Done" means searchable, not merely Completed: in Milvus 2.3 a Completed job's segments are flushed but
handed to the query nodes only after their index is built, one segment at a time, and count(*) can
see rows that search still serves without their index. So the wait is: every job Completed, every
index Finished over at least the expected rows, the loaded segments equal the persisted ones, Strong
count(*) equals the expected rows, and all of that unchanged over consecutive polls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio

from dag_orchestrator.context import PipelineContext
from dag_orchestrator.retry import RetryPolicy, delays
from task_components.clients import MilvusTarget, milvus_client
from task_components.connect import count_rows
from task_components.milvus.import_jobs import ImportJobs, JobState

__all__ = [
    "JobJournal",
    "MilvusImportError",
    "adopt_listed_jobs",
    "backoff",
    "searchable_snapshot",
    "wait_jobs",
    "wait_searchable",
]


class MilvusImportError(RuntimeError):
    """A bulk-import job failed; the message carries Milvus' own reason."""


class JobJournal:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.existed = path is not None and path.exists()  # written by an earlier, interrupted attempt
        data = json.loads(path.read_text()) if path is not None and self.existed else {}
        self.jobs: dict[str, int] = {k: int(v) for k, v in data.get("jobs", {}).items()}
        self._rows_before: int | None = data.get("rows_before")

    @property
    def rows_before(self) -> int | None:
        return self._rows_before

    @rows_before.setter
    def rows_before(self, value: int) -> None:
        self._rows_before = value
        self._save()

    def record(self, location: str, job: int) -> None:
        self.jobs[location] = job
        self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"jobs": self.jobs, "rows_before": self._rows_before}))
        tmp.replace(self.path)


async def adopt_listed_jobs(
    ctx: PipelineContext, api: ImportJobs, collection: str, locations: set[str] | None, wait: float, poll: float = 1.0
) -> dict[str, int]:
    """Jobs Milvus knows for these files (None: any single-file job) that the journal missed (a kill
    between submit and record, or a submit whose answer timed out after Milvus took it).

    A job that names no files yet (Milvus 2.4 fills a job's file list only once its pre-import is done,
    seconds to minutes after the submit) may be one of this run's: it is polled until it names them or
    fails, for at most ``wait`` seconds, after which the resume is refused rather than risk importing a
    file twice.
    """
    found: dict[str, int] = {}
    unnamed: dict[int, JobState] = {}

    def take(job: int, state: JobState) -> None:
        if state.failed:
            return
        if not state.files:
            unnamed[job] = state
        elif len(state.files) == 1 and (locations is None or state.files[0] in locations):
            found.setdefault(state.files[0], job)

    for job, state in await anyio.to_thread.run_sync(api.listed, collection):
        take(job, state)
    if unnamed:
        ctx.log.info(
            "import jobs of the collection name no files yet: waiting until they do, to tell whether they import this run's files",
            jobs=sorted(unnamed),
            collection=collection,
        )
    give_up, sleeps = time.monotonic() + wait, backoff(poll)
    while unnamed:
        if time.monotonic() >= give_up:
            named = ", ".join(f"{job} ({state.state or 'no state'})" for job, state in sorted(unnamed.items()))
            raise MilvusImportError(
                f"import jobs {named} of collection {collection!r} still name no files after {wait:g} s, so the "
                "resume cannot tell whether they import this run's files (submitting those again would import "
                "them twice): resume once Milvus lists their files, or after they fail"
            )
        await anyio.sleep(min(next(sleeps), max(0.0, give_up - time.monotonic())))
        for job in list(unnamed):
            del unnamed[job]
            take(job, await anyio.to_thread.run_sync(api.state, job))
    return found


def backoff(poll: float, first: float = 0.1) -> Iterator[float]:
    """Sleeps that start short and grow to ``poll``: a small import is done within a second or two, so a
    fixed interval would add up to a whole interval per wait to what Milvus needs."""
    return delays(RetryPolicy(backoff=min(first, poll), factor=1.5, max_delay=poll, jitter=0.0))


async def wait_jobs(ctx: PipelineContext, api: ImportJobs, jobs: dict[int, str], total: int, poll: float) -> int:
    """Poll every job until Completed; raise with Milvus' reason on the first Failed."""
    pending = dict(jobs)
    imported: dict[int, int] = {}
    sleeps = backoff(poll)
    while pending:
        for job, location in list(pending.items()):
            state = await anyio.to_thread.run_sync(api.state, job)
            imported[job] = state.rows
            if state.failed:
                reason = state.reason or "no reason given"
                raise MilvusImportError(f"bulk import of {location} failed in Milvus: {reason}")
            if state.completed:
                del pending[job]
        ctx.progress(done=sum(imported.values()), total=total, unit="rows")
        if pending:
            await anyio.sleep(next(sleeps))
    return sum(imported.values())


def searchable_snapshot(client: Any, collection: str, want: int, refresh: bool = True) -> tuple[bool, bool, tuple[Any, ...]]:
    """(ready, index_built, what was seen) for one poll; blocking, run in a worker thread.

    With ``refresh``, a built index whose segments are not all loaded yet asks Milvus to refresh the
    load (every such poll, not once: a refresh issued just before the handoff finds nothing new, and
    the segment would then wait for the next 10 s target cycle). The refresh returns when Milvus'
    load progress is complete, so it is itself the wait, no extra polling.
    """
    built = True
    for name in client.list_indexes(collection):
        d = client.describe_index(collection, name)
        total, indexed = int(d.get("total_rows", 0) or 0), int(d.get("indexed_rows", 0) or 0)
        pending = int(d.get("pending_index_rows", 0) or 0)
        built &= str(d.get("state", "Finished")) == "Finished" and indexed == total >= want and not pending

    def segments() -> tuple[dict[int, int], dict[int, int]]:
        loaded = {s.segment_id: s.num_rows for s in client.list_loaded_segments(collection)}
        return loaded, {s.segment_id: s.num_rows for s in client.list_persistent_segments(collection)}

    loaded, persisted = segments()
    if built and refresh and not set(persisted) <= set(loaded):
        try:
            client.refresh_load(collection, timeout=60)  # pick up the new segments without the 10 s target cycle
        except Exception:  # noqa: BLE001 - older servers lack refresh; the segment comparison still decides
            pass
        loaded, persisted = segments()
    n = count_rows(client, collection)
    ready = built and n == want and set(persisted) <= set(loaded)
    return ready, built, (n, tuple(sorted(loaded.items())))


async def wait_searchable(ctx: PipelineContext, target: MilvusTarget, collection: str, want: int, poll: float, settle: int = 2) -> None:
    """Until ``searchable_snapshot`` is ready and unchanged over ``settle`` polls (the first polls short)."""
    client = await anyio.to_thread.run_sync(milvus_client, target)
    stable, last, started = 0, None, time.monotonic()
    sleeps = backoff(poll)
    try:
        while True:
            ready, built, seen = await anyio.to_thread.run_sync(searchable_snapshot, client, collection, want)
            stable = stable + 1 if ready and seen == last else int(ready)
            last = seen
            if stable >= settle:
                ctx.log.info("imported rows searchable", rows=want, waited=round(time.monotonic() - started, 1))
                return
            if not ready:
                ctx.log.info(
                    "waiting for imported rows to become searchable",
                    visible=seen[0],
                    expected=want,
                    index_built=built,
                    loaded_segments=len(seen[1]),
                )
            await anyio.sleep(next(sleeps))
    finally:
        await anyio.to_thread.run_sync(client.close)
