"""The ``shadow.files`` component: the dataset's files COPYed into the shadow table on the workers.

``shadow.sync`` mirrors the generation stream from the engine process; this one takes a finished dataset
(a ``Manifest``, or the ``UploadResult`` of ``generate.upload`` / ``storage.upload``) and gives each file to
a worker (``copy_work.copy_file``: Dask workers with ``--backend dask``, worker processes on the local
backend), so the engine only creates the table and adds up row counts. Table naming, creation and the
result are ``shadow.sync``'s, so ``verify`` and ``shadow validate`` read it the same way.
"""

from __future__ import annotations

import time
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, model_validator

from config.settings import Settings
from dag_orchestrator.backends import make_backend
from dag_orchestrator.context import PipelineContext
from dag_orchestrator.retry import with_retries
from task_components.connect import shadow_dsn
from task_components.contracts import ShadowResult, UploadResult
from task_components.fused.copy_work import CopyWork, copy_file
from task_components.manifest import Manifest
from task_components.shadow.sync import ShadowParams, ShadowSync, pg_transient
from task_components.storage.task import StoreSpec, s3_connection


def _absolute(manifest: Manifest) -> Manifest:
    """The dataset directory absolute: a worker's working directory is not the engine's."""
    manifest.root = str(Path(manifest.root).resolve()) if manifest.root else None
    return manifest


class ShadowFilesParams(ShadowParams):
    batch_rows: int = Field(8192, ge=1, description="rows per COPY inside a file's transaction")
    workers: int | None = Field(None, ge=0, description="worker processes (default: the run's; 0 = a thread)")

    @model_validator(mode="after")
    def _workers_copy(self) -> ShadowFilesParams:
        if "concurrency" in self.model_fields_set:
            raise ValueError("concurrency: each worker copies its own files; set `workers` (or the Dask cluster's size)")
        return self


class ShadowFiles(ShadowSync):
    __slots__ = ()
    component = "shadow.files"
    Result = ShadowResult
    needs_types: ClassVar[tuple[type | tuple[type, ...], ...]] = ((Manifest, UploadResult),)
    summary = "COPY a dataset's files into the PostgreSQL shadow table on the workers (Dask or local), one file per unit"
    Params = ShadowFilesParams
    stream_input = False
    stream_spill = False
    default_kind = "cpu"

    async def run(self, ctx: PipelineContext) -> ShadowResult:
        p = self.params
        assert isinstance(p, ShadowFilesParams)
        upload = self.upstream(ctx, UploadResult)
        manifest = self.upstream(ctx, Manifest) or (upload.manifest if upload else None)
        if manifest is None or manifest.root is None:
            raise ValueError(
                f"shadow.files needs a dataset (partition, dataset.load, generate.upload) among its needs, got {list(self.needs)}"
            )
        settings: Settings = ctx.services.settings
        deployed = ctx.services.backend == "dask" and bool(ctx.services.scheduler)
        if deployed and settings.postgres.dsn is None:  # before an embedded server is started for nothing
            raise ValueError("shadow.files on a Dask deployment needs POSTGRES__DSN: an embedded PostgreSQL lives in this run's directory")
        dsn, embedded = await shadow_dsn(settings, ctx.run_dir)
        schema = manifest.collection_schema
        started = time.perf_counter()
        pool = await self._connect(ctx, dsn, p)
        try:
            create = partial(self._create, pool, schema, p.drop_if_exists)
            await with_retries(create, self.inner_retry(), pg_transient, what="creating the shadow table", log=ctx.log)
        finally:
            await pool.close()
        work = CopyWork(
            manifest=_absolute(manifest.model_copy(update={"files": []})),
            table=self._table(schema),
            dsn=None if deployed else dsn,  # a deployment's workers use their own POSTGRES__DSN
            store=self._store(ctx, upload, deployed),
            prefix=upload.prefix if upload is not None else None,
            retry=self.inner_retry(),
            batch_rows=p.batch_rows,
        )
        offsets, at = [], 0
        for entry in manifest.files:
            offsets.append(at)
            at += entry.rows
        placement: Counter[str] = Counter()
        rows = 0
        backend = make_backend(
            ctx.services.backend, p.workers if p.workers is not None else ctx.services.workers, ctx.services.scheduler, group=1
        )
        async with backend:
            jobs = ((work, entry, offset) for entry, offset in zip(manifest.files, offsets, strict=True))
            async for done in backend.map_ordered(copy_file, jobs):
                rows += done.rows
                placement[done.worker] += 1
                ctx.progress(done=rows, total=manifest.total_rows, unit="rows")
        ctx.log.info("shadow copied on workers", files=len(manifest.files), rows=rows, workers=dict(placement))
        return self._result(ctx, schema, rows, embedded, started)

    def _store(self, ctx: PipelineContext, upload: UploadResult | None, deployed: bool) -> StoreSpec | None:
        """Where a worker on another host fetches a file: the bucket the upload used, through this run's S3
        settings (keys withheld on a deployment: its workers use their own)."""
        if upload is None or upload.store != "s3":
            return None
        spec = StoreSpec("s3", upload.bucket, connection=s3_connection(ctx.services.settings))
        return spec.without_secrets() if deployed else spec

    def summarize(self, result: ShadowResult) -> dict[str, Any]:
        return super().summarize(result) | {"rows/s": f"{result.rows / result.seconds:,.0f}" if result.seconds else "-"}
