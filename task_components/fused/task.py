"""The ``generate.upload`` component: generate, encode, hash and upload each file on the workers.

``generate -> partition -> storage.upload`` makes the same files, but there the engine process receives
every generated row, encodes every file and sends every byte to the store: the one process a larger
cluster cannot speed up. Here each file is one unit of work on a worker (``work.make_and_upload``:
Dask workers with ``--backend dask``, worker processes on the local backend) and the engine receives
manifest entries only. It emits each file as it lands, like ``storage.upload``, so ``milvus.bulk_import``
submits an import job per file while the rest are still being made, and returns an ``UploadResult``.

Files are planned from row counts (``rows_per_file`` or ``file_count``; by default whole chunks making
about 256 MB), never from encoded sizes, so the plan is known before any row exists. Sharded schemas
(rows split by key hash across the whole dataset) still need the streaming path.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field, model_validator

from config.settings import Settings
from dag_orchestrator.backends import make_backend
from dag_orchestrator.context import PipelineContext
from dag_orchestrator.retry import with_retries
from task_components.base import Component
from task_components.contracts import UploadedFile, UploadResult
from task_components.fused.work import FileJob, FileWork, make_and_upload
from task_components.generation.task import ChunkPlan, GenerateParams, generation_info, info_bytes
from task_components.manifest import MANIFEST_NAME, FileEntry, Manifest, sha256_file
from task_components.partitioning.task import clear_dataset, collection_config
from task_components.schema.arrow import arrow_schema, row_bytes, schema_of
from task_components.storage.stores import ObjectStore, s3_transient
from task_components.storage.task import UploadParams, store_spec

DEFAULT_FILE_BYTES = 256 << 20


class FilesParams(BaseModel):
    """The files' layout: ``partition``'s options that a plan by row counts can honour."""

    model_config = ConfigDict(extra="forbid")

    format: str = Field("parquet", pattern="^(parquet|json)$")
    rows_per_file: int | None = Field(None, ge=1)
    file_count: int | None = Field(None, ge=1, description="split total rows evenly into this many files")
    compression: str = Field("snappy", pattern="^(snappy|zstd|lz4|gzip|none)$")
    out: str | None = Field(None, description="dataset directory on the engine's host (default: <run dir>/data)")

    @model_validator(mode="after")
    def _one_split(self) -> FilesParams:
        if self.file_count and self.rows_per_file:
            raise ValueError("set either file_count or rows_per_file, not both")
        return self


class GenerateUploadParams(GenerateParams):
    files: FilesParams = Field(default_factory=FilesParams)
    upload: UploadParams = Field(default_factory=UploadParams)

    @model_validator(mode="after")
    def _planable(self) -> GenerateUploadParams:
        if (self.schema.num_shards or 1) > 1:
            raise ValueError(
                f"num_shards={self.schema.num_shards}: sharded files take rows by key hash from the whole dataset, "
                "which no single file's worker can plan; use generate -> partition -> storage.upload"
            )
        if "concurrency" in self.upload.model_fields_set:
            raise ValueError("upload.concurrency: each worker uploads its own files; set `workers` (or the Dask cluster's size)")
        return self


def rows_per_file(p: GenerateUploadParams, chunks: ChunkPlan) -> int:
    if p.files.rows_per_file:
        return p.files.rows_per_file
    if p.files.file_count:
        return -(-p.total_rows // p.files.file_count)
    whole_chunks = max(1, DEFAULT_FILE_BYTES // (row_bytes(p.schema) * chunks.chunk_rows))
    return whole_chunks * chunks.chunk_rows


def plan_files(total_rows: int, per_file: int, fmt: str) -> list[FileJob]:
    count = -(-total_rows // per_file)
    return [FileJob(i, f"data-{i + 1:05d}.{fmt}", i * per_file, min(per_file, total_rows - i * per_file)) for i in range(count)]


class GenerateUpload(Component[GenerateUploadParams]):
    __slots__ = ()
    component = "generate.upload"
    Result = UploadResult
    summary = "generate, encode, hash and upload each file on the workers (Dask or local); the engine only coordinates"
    Params = GenerateUploadParams
    emits = True  # each file once stored: an importer submits it while the rest are made
    retries_inside = True
    default_kind = "cpu"

    async def run(self, ctx: PipelineContext) -> UploadResult:
        p = self.params
        settings: Settings = ctx.services.settings
        chunks = ChunkPlan.for_schema(p.schema, p.total_rows, p.chunk_rows)
        jobs = plan_files(p.total_rows, rows_per_file(p, chunks), p.files.format)
        out = self._out(ctx).resolve()  # absolute: a worker's working directory is not the engine's
        prefix = (p.upload.prefix or f"{settings.s3.prefix}/{ctx.run_id}").strip("/")
        spec = store_spec(settings, ctx.run_dir, p.upload)
        deployed = ctx.services.backend == "dask" and bool(ctx.services.scheduler)
        if deployed and spec.kind == "local":
            raise ValueError(
                "generate.upload on a Dask deployment needs S3 (S3__ENDPOINT_URL, S3__BUCKET and keys, for the engine and the "
                "workers): a local store is a directory on each worker's own disk"
            )
        await anyio.to_thread.run_sync(clear_dataset, out)
        out.mkdir(parents=True, exist_ok=True)
        info = generation_info(p, chunks)
        work = FileWork(
            schema_json=p.schema.model_dump_json(),
            seed=p.seed,
            chunk_rows=chunks.chunk_rows,
            total_rows=p.total_rows,
            info=info_bytes(p, chunks),
            fmt=p.files.format,
            compression=p.files.compression,
            out=str(out),
            store=spec.without_secrets() if deployed else spec,  # a deployment's workers use their own S3__ settings
            prefix=prefix,
            retry=self.inner_retry(),
        )
        store = spec.open()
        policy = self.inner_retry()
        entries: list[FileEntry] = []
        files: list[UploadedFile] = []
        placement: Counter[str] = Counter()
        worker_cpu, rows, started = 0.0, 0, time.perf_counter()
        try:
            aborted = await self._abort(ctx, store, prefix)
            backend = make_backend(
                ctx.services.backend, p.workers if p.workers is not None else ctx.services.workers, ctx.services.scheduler, group=1
            )
            async with backend:
                dashboard = getattr(backend, "dashboard", None)
                if dashboard:
                    ctx.log.info("dask dashboard", url=dashboard)
                async for done in backend.map_ordered(make_and_upload, ((work, job) for job in jobs)):
                    entries.append(done.entry)
                    files.append(done.uploaded)
                    placement[done.worker] += 1
                    worker_cpu += done.cpu_seconds
                    rows += done.entry.rows
                    await ctx.emit(done.uploaded)
                    ctx.progress(done=rows, total=p.total_rows, unit="rows")
            cs = schema_of(arrow_schema(p.schema))
            manifest = Manifest(
                format=p.files.format, collection_schema=cs, generation=info, files=entries, collection_config=collection_config(cs)
            )
            await anyio.to_thread.run_sync(manifest.save, out)
            manifest.root = str(out)
            meta, manifest_key = out / MANIFEST_NAME, f"{prefix}/{MANIFEST_NAME}"
            meta_sha = await anyio.to_thread.run_sync(sha256_file, meta)
            await with_retries(
                lambda: store.put_file(meta, manifest_key, meta_sha), policy, s3_transient, what=f"upload of {manifest_key}", log=ctx.log
            )
            aborted += await self._abort(ctx, store, prefix)  # what a worker killed mid-multipart left
        except BaseException:
            with anyio.CancelScope(shield=True), anyio.move_on_after(30):  # best effort: the error is what matters
                await _quietly(store.abort_unfinished(prefix + "/"))
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await store.aclose()
        seconds = time.perf_counter() - started
        ctx.log.info(
            "files made and uploaded on workers", files=len(files), rows=rows, seconds=round(seconds, 2), worker_cpu=round(worker_cpu, 2)
        )
        return FusedUploadResult(
            store=spec.kind,
            bucket=spec.bucket,
            prefix=prefix,
            files=files,
            manifest_key=manifest_key,
            manifest=manifest,
            aborted_uploads=aborted,
            placement=dict(placement),
            worker_cpu_seconds=worker_cpu,
            seconds=seconds,
        )

    def _out(self, ctx: PipelineContext) -> Path:
        if self.params.files.out:
            return Path(self.params.files.out)
        if ctx.run_dir is None:
            raise ValueError("generate.upload needs files.out when the run has no run directory")
        return Path(ctx.run_dir) / "data"

    async def _abort(self, ctx: PipelineContext, store: ObjectStore, prefix: str) -> int:
        aborted = await with_retries(
            lambda: store.abort_unfinished(prefix + "/"), self.inner_retry(), s3_transient, what="listing unfinished uploads", log=ctx.log
        )
        if aborted:
            ctx.log.warning("aborted unfinished multipart uploads", count=aborted)
        return aborted

    def summarize(self, result: UploadResult) -> dict[str, Any]:
        out: dict[str, Any] = {"files": len(result.files), "rows": result.manifest.total_rows, "uploaded": result.uploaded}
        if isinstance(result, FusedUploadResult):
            out["rows/s"] = f"{result.manifest.total_rows / result.seconds:,.0f}" if result.seconds else "-"
            out["worker CPU s"] = round(result.worker_cpu_seconds, 1)
            if result.placement:
                out["workers"] = ", ".join(f"{w}: {n}" for w, n in sorted(result.placement.items()))
        if result.aborted_uploads:
            out["aborted stale uploads"] = result.aborted_uploads
        return out


class FusedUploadResult(UploadResult):
    """An ``UploadResult`` (what an importer reads) plus where the files were made and what that cost."""

    placement: dict[str, int] = Field(default_factory=dict)
    worker_cpu_seconds: float = 0.0
    seconds: float = 0.0


async def _quietly(call: Awaitable[int]) -> None:
    """A failed run's multipart uploads aborted (a resume would abort them too; a run never resumed would
    leave them billed), without hiding the run's own error behind this one's."""
    with contextlib.suppress(Exception):
        await call
