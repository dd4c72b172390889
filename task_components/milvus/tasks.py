"""Milvus tasks: create the collection, bulk-import the uploaded files, or insert them in batches.

Bulk import is Milvus' fast path (the server reads Parquet straight from its object store). Milvus
Lite cannot do it, so there ``milvus.bulk_import`` falls back to batched inserts and says so in the
log and the report; with ``method: auto`` a small load is inserted too (import's fixed cost loses).
``wait`` means *queryable*: jobs are polled until Completed (at Persisted count(*)
can still be 0), then count(*) until the imported rows are visible, since Milvus 2.3 hands imported
segments to the query node some seconds after Completed. Milvus offers no notification for either,
so both are polled, briefly at first and then at ``poll_interval``. Jobs go through the REST jobs API
on Milvus 2.4+ and the legacy gRPC calls on 2.3 (``import_jobs.open_import_jobs``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dag_orchestrator.context import PipelineContext
from task_components.base import Component
from task_components.clients import milvus_client, milvus_target
from task_components.connect import count_at, guard_collection
from task_components.contracts import (
    CollectionInfo,
    ImportResult,
    Manifest,
    MilvusTarget,
    UploadedFile,
    UploadResult,
)
from task_components.milvus.bulk import JobJournal, adopt_listed_jobs, wait_jobs, wait_searchable
from task_components.milvus.import_jobs import CALL_TIMEOUT, open_import_jobs
from task_components.milvus.insert import INSERT_TIMEOUT, InsertJournal, insert_files
from task_components.schema.library import resolve_schema
from task_components.schema.milvus import index_params, to_milvus_schema
from task_components.schema.models import CollectionSchema


class CreateParams(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_ref: str | dict[str, Any] | None = Field(None, alias="schema", description="default: the upstream manifest's")
    collection: str | None = Field(None, description="collection name (default: the schema's)")
    if_exists: Literal["fail", "drop", "append"] = "fail"
    drop_if_exists: bool = Field(False, description="shorthand for if_exists: drop")
    num_partitions: int | None = Field(None, ge=1)
    num_shards: int | None = Field(None, ge=1)
    indexes: dict[str, dict[str, Any]] = Field(default_factory=dict)
    index: bool = Field(True, description="false: no index and no load (milvus-ingest --no-index); index later")
    load: bool = True

    @model_validator(mode="after")
    def _shorthand(self) -> CreateParams:
        if self.drop_if_exists:
            self.if_exists = "drop"
        if self.schema_ref is not None:
            to_milvus_schema(resolve_schema(self.schema_ref))  # e.g. no vector field: refused before any run
        return self


class CreateCollection(Component[CreateParams]):
    __slots__ = ()
    component = "milvus.create_collection"
    Result = CollectionInfo
    summary = "create the Milvus collection from the schema (drop/append/fail if it exists), index it, load it"
    Params = CreateParams
    default_kind = "milvus"

    def required_inputs(self) -> list[tuple[type, ...]]:
        return [] if self.params.schema_ref is not None else [(Manifest,)]

    async def run(self, ctx: PipelineContext) -> CollectionInfo:
        p = self.params
        schema = self._schema(ctx, p)
        target = milvus_target(ctx.services.settings, ctx.run_dir)
        name = p.collection or schema.collection_name
        milvus_schema = to_milvus_schema(schema)
        params, chosen = index_params(schema, target.lite, p.indexes)
        guard_collection(ctx, target, name)

        def create() -> None:
            client = milvus_client(target)
            try:
                if client.has_collection(name):
                    if p.if_exists == "fail":
                        raise RuntimeError(f"collection {name!r} exists at {target.uri}; set if_exists: drop or append")
                    if p.if_exists == "drop":
                        client.drop_collection(name)
                if not client.has_collection(name):
                    kwargs: dict[str, Any] = {}
                    if schema.partition_key is not None and (p.num_partitions or schema.num_partitions):
                        kwargs["num_partitions"] = p.num_partitions or schema.num_partitions
                    if p.num_shards or schema.num_shards:
                        kwargs["shards_num"] = p.num_shards or schema.num_shards
                    client.create_collection(name, schema=milvus_schema, **kwargs)
                    if p.index:
                        client.create_index(name, params)
                if p.load and p.index:
                    client.load_collection(name)
            finally:
                client.close()

        await anyio.to_thread.run_sync(create)
        ctx.log.info("collection ready", collection=name, uri=target.uri, lite=target.lite, indexes=chosen)
        return CollectionInfo(
            name=name,
            target=target.public(),  # never the token: results are written to the run directory
            collection_schema=schema,
            indexes=chosen if p.index else {},
        )

    def _schema(self, ctx: PipelineContext, p: CreateParams) -> CollectionSchema:
        if p.schema_ref is not None:
            return resolve_schema(p.schema_ref)
        manifest = self.upstream(ctx, Manifest)
        if manifest is None:
            raise ValueError("milvus.create_collection needs `schema` or a partition task among its needs")
        return manifest.collection_schema

    def summarize(self, result: CollectionInfo) -> dict[str, Any]:
        return {"collection": result.name, "target": "Milvus Lite" if result.target["lite"] else result.target["uri"]}


class ImportParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait: bool = True
    timeout: float = Field(
        3600,
        gt=0,
        description="seconds to wait for all import jobs (on resume also for a listed job to name its files)",
    )
    poll_interval: float = Field(1.0, gt=0, description="longest pause between polls (the first are shorter)")
    call_timeout: float = Field(
        CALL_TIMEOUT, gt=0, description="seconds one Milvus call (job submit/state, insert) may take, retries included"
    )
    method: Literal["auto", "bulk_import", "insert"] = Field(
        "auto", description="auto: bulk import, except on Milvus Lite and for a load under both insert_below_* limits"
    )
    insert_below_rows: int = Field(100_000, ge=0, description="auto inserts a load of fewer rows (and MB); 0: never")
    insert_below_mb: float = Field(128, ge=0, description="auto inserts a load of fewer MB (and rows); 0: never")
    batch_rows: int = Field(5000, ge=1, description="rows per insert when inserting")
    concurrency: int = Field(2, ge=1, le=16)


class BulkImport(Component[ImportParams]):
    __slots__ = ()
    component = "milvus.bulk_import"
    Result = ImportResult
    needs_types = (CollectionInfo, UploadResult)
    summary = "bulk-import uploaded files into Milvus and wait for the jobs (falls back to insert on Milvus Lite)"
    Params = ImportParams
    default_kind = "milvus"
    stream_input = True  # each uploaded file is submitted as soon as it lands
    stream_replay = True  # resumed after the upload finished: its result lists the files, nothing re-uploads

    async def run(self, ctx: PipelineContext) -> ImportResult:
        p = self.params
        info: CollectionInfo | None = self.upstream(ctx, CollectionInfo)
        if info is None:
            raise ValueError(_NEEDS)
        started = time.perf_counter()
        target = info.milvus(ctx.services.settings)
        guard_collection(ctx, target, info.name)
        files = self._uploaded(ctx)
        method: str = p.method
        label: str = p.method
        held: list[UploadedFile] = []
        if method == "auto" and target.lite:
            method, label = "insert", "insert (fallback: Milvus Lite has no bulk import)"
            ctx.log.warning("Milvus Lite cannot bulk-import: inserting the files in batches instead")
        elif method == "auto":
            method, held = await self._small_load(ctx, p, info, files)
            label = method if method == "bulk_import" else "insert (auto: a load this small inserts faster)"
        resume = ""
        phases: dict[str, float] = {}
        if method == "bulk_import":
            job_ids, resume, upload = await self._bulk_import(ctx, p, info, _chain(held, files), phases, started)
        else:
            async for _ in files:  # inserting reads the files once all are up
                pass
            upload = self._upload(ctx)
            stats = await insert_files(ctx, info, upload.manifest, p.batch_rows, p.concurrency, _journal(ctx, self), p.call_timeout)
            resume = stats.describe()
            job_ids = []
        if resume:
            ctx.log.info("resumed without duplicates", how=resume)
        rows = await anyio.to_thread.run_sync(count_at, target, info.name) if p.wait or method == "insert" else -1
        return ImportResult(
            collection=info.name,
            method=label,
            rows_in_milvus=rows,
            rows_expected=upload.manifest.total_rows,
            files=len(upload.files),
            seconds=time.perf_counter() - started,
            job_ids=job_ids,
            info=info,
            manifest=upload.manifest,
            resume=resume,
            phases=phases,
        )

    def _upload(self, ctx: PipelineContext) -> UploadResult:
        upload = self.upstream(ctx, UploadResult)
        if upload is None:
            raise ValueError(_NEEDS)
        return upload

    async def _uploaded(self, ctx: PipelineContext) -> AsyncIterator[UploadedFile]:
        """Each file as soon as it is in the object store (streamed by the upload task), else all at once
        (no stream, or a resumed run whose upload finished in an earlier attempt)."""
        if self.streams_from and self.streams_from[0] not in ctx.results:
            async for f in ctx.stream(self.streams_from[0]):
                yield f
        else:
            for f in self._upload(ctx).files:
                yield f

    async def _small_load(
        self, ctx: PipelineContext, p: ImportParams, info: CollectionInfo, files: AsyncIterator[UploadedFile]
    ) -> tuple[str, list[UploadedFile]]:
        """``auto`` on a server: insert a load under both limits, else bulk-import (the files read to decide
        are returned, to be imported first).

        Why: a bulk import pays a fixed cost whatever its size (a job Milvus 2.3 runs alone, an index
        build per segment, a handoff to the query node: ~10 s here), so below a few tens of thousands of
        rows batched inserts finish first (bench/load.py --method: 40k x 768-d end to end 13.4 s inserted,
        25.4 s imported; from 100k rows Milvus imports uploaded files faster than it takes inserts).
        Files are read only until the load is known to be large, so a large load's first job is not
        delayed once its first file alone crosses a limit. An interrupted earlier attempt's journal
        decides a resume, so a run never switches method half way.
        """
        if not p.wait or not p.insert_below_rows or not p.insert_below_mb:  # inserting always waits
            return "bulk_import", []
        for suffix, method in ((_JOBS, "bulk_import"), (_INSERTED, "insert")):
            journal = _run_file(ctx, self, suffix)
            if journal is not None and journal.exists():
                return method, []
        # Milvus unreachable: fail before reading the stream, while the task can still be retried whole
        await anyio.to_thread.run_sync(_reachable, info.milvus(ctx.services.settings), info.name)
        held: list[UploadedFile] = []
        rows = size = 0
        async for f in files:
            held.append(f)
            rows, size = rows + f.rows, size + f.bytes
            if rows >= p.insert_below_rows or size >= p.insert_below_mb * 2**20:
                return "bulk_import", held
        ctx.log.info(
            "a small load: inserting instead of bulk-importing",
            rows=rows,
            mb=round(size / 2**20, 1),
            insert_below_rows=p.insert_below_rows,
            insert_below_mb=p.insert_below_mb,
        )
        return "insert", held

    async def _bulk_import(
        self,
        ctx: PipelineContext,
        p: ImportParams,
        info: CollectionInfo,
        files: AsyncIterator[UploadedFile],
        phases: dict[str, float],
        started: float,
    ) -> tuple[list[int], str, UploadResult]:
        """Submit each file's job the moment it is uploaded, then wait for all of them.

        Why per file: Milvus 2.3 runs import jobs one at a time, so the first job starting while later
        files are still being generated and uploaded takes that time off the end-to-end wait.
        """

        def mark(step: str) -> None:  # where the import's time goes (bench/load.py prints these)
            phases.setdefault(step, round(time.perf_counter() - started, 2))

        target = info.milvus(ctx.services.settings)
        journal = JobJournal(_run_file(ctx, self, _JOBS))
        api = await anyio.to_thread.run_sync(open_import_jobs, target.uri, target.token, target.db_name, p.call_timeout)
        ctx.log.info("import jobs", api=api.kind, collection=info.name)
        try:
            jobs: dict[int, str] = {}
            for location, job in journal.jobs.items():  # submitted by an interrupted earlier attempt
                state = await anyio.to_thread.run_sync(api.state, job)
                if not state.failed:
                    jobs[job] = location
            before = journal.rows_before
            if before is None:
                before = await anyio.to_thread.run_sync(count_at, target, info.name)
                journal.rows_before = before
            resumed = set(jobs.values())
            listed: dict[str, int] = {}
            if journal.existed:  # a resume: jobs Milvus knows that the journal missed (a kill after submit)
                listed = await adopt_listed_jobs(ctx, api, info.name, None, p.timeout, p.poll_interval)
            adopted = 0
            async for f in files:
                if f.location in resumed:
                    continue
                if f.location in listed:
                    jobs[listed[f.location]] = f.location
                    journal.record(f.location, listed[f.location])
                    adopted += 1
                    continue
                # a signal must not separate a job from its journal entry; the call's own timeout
                # (call_timeout) bounds how long the shield can hold a shutdown
                with anyio.CancelScope(shield=True):
                    job = await anyio.to_thread.run_sync(api.submit, info.name, f.location)
                    jobs[int(job)] = f.location
                    journal.record(f.location, int(job))
                    mark("first job submitted")
            upload = self._upload(ctx)
            mark("last job submitted")
            ctx.log.info("bulk import submitted", jobs=len(jobs), resumed=len(resumed), adopted=adopted, collection=info.name)
            if p.wait:
                with anyio.fail_after(p.timeout):
                    imported = await wait_jobs(ctx, api, jobs, upload.manifest.total_rows, p.poll_interval)
                    mark("jobs completed")
                    await wait_searchable(ctx, target, info.name, before + imported, p.poll_interval)
                    mark("searchable")
            how = ""
            if resumed or adopted:
                how = f"resumed from the job journal: {len(resumed)} jobs of the interrupted attempt waited on" + (
                    f", {adopted} found in Milvus' job list and adopted" if adopted else ""
                )
            return list(jobs), how, upload
        finally:
            await anyio.to_thread.run_sync(api.close)

    def summarize(self, result: ImportResult) -> dict[str, Any]:
        out: dict[str, Any] = {"method": result.method, "rows in milvus": result.rows_in_milvus, "rows/s": f"{result.rows_per_second:,.0f}"}
        phases = getattr(result, "phases", None)  # absent from a result stored by an older version
        if phases:
            out["timeline"] = ", ".join(f"{step} {at:.1f} s" for step, at in phases.items())
        return {**out, "resume": result.resume} if result.resume else out


async def _chain(first: list[UploadedFile], rest: AsyncIterator[UploadedFile]) -> AsyncIterator[UploadedFile]:
    for f in first:
        yield f
    async for f in rest:
        yield f


_NEEDS = "milvus.bulk_import needs a storage.upload task and a milvus.create_collection task"
_JOBS, _INSERTED = "jobs.json", "inserted.jsonl"  # the journals of a bulk import and of inserts


def _run_file(ctx: PipelineContext, task: Component, suffix: str) -> Path | None:
    """``<run dir>/<task>.<suffix>``: where a task's journal lives (none without a run directory)."""
    return Path(ctx.run_dir) / f"{task.name}.{suffix}" if ctx.run_dir else None


def _journal(ctx: PipelineContext, task: Component) -> InsertJournal:
    return InsertJournal(_run_file(ctx, task, _INSERTED))


def _reachable(target: MilvusTarget, collection: str) -> None:
    client = milvus_client(target)
    try:
        if not client.has_collection(collection):
            raise LookupError(f"Milvus collection {collection!r} does not exist at {target.uri}")
    finally:
        client.close()


class InsertParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_rows: int = Field(5000, ge=1)
    concurrency: int = Field(2, ge=1, le=16)
    call_timeout: float = Field(INSERT_TIMEOUT, gt=0, description="seconds one insert call may take, retries included")


class Insert(Component[InsertParams]):
    __slots__ = ()
    component = "milvus.insert"
    Result = ImportResult
    needs_types = (CollectionInfo, (Manifest, UploadResult))
    summary = "insert the dataset's files into Milvus in batches (no object store needed)"
    Params = InsertParams
    default_kind = "milvus"

    async def run(self, ctx: PipelineContext) -> ImportResult:
        p = self.params
        info: CollectionInfo | None = self.upstream(ctx, CollectionInfo)
        manifest: Manifest | None = self.upstream(ctx, Manifest)
        upload: UploadResult | None = self.upstream(ctx, UploadResult)
        if manifest is None and upload is not None:
            manifest = upload.manifest
        if info is None or manifest is None:
            raise ValueError("milvus.insert needs a milvus.create_collection task and a partition (or upload) task")
        started = time.perf_counter()
        guard_collection(ctx, info.milvus(ctx.services.settings), info.name)
        stats = await insert_files(ctx, info, manifest, p.batch_rows, p.concurrency, _journal(ctx, self), p.call_timeout)
        rows = await anyio.to_thread.run_sync(count_at, info.milvus(ctx.services.settings), info.name)
        return ImportResult(
            collection=info.name,
            method="insert",
            rows_in_milvus=rows,
            rows_expected=manifest.total_rows,
            files=len(manifest.files),
            seconds=time.perf_counter() - started,
            info=info,
            manifest=manifest,
            resume=stats.describe(),
        )

    def summarize(self, result: ImportResult) -> dict[str, Any]:
        out = {"rows in milvus": result.rows_in_milvus, "rows/s": f"{result.rows_per_second:,.0f}"}
        return {**out, "resume": result.resume} if result.resume else out
