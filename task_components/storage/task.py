"""The ``storage.upload`` component: put every dataset file (and meta.json) into the object store.

It streams from ``partition``: each file is uploaded as soon as it is closed, so uploading overlaps
writing. Files already stored unchanged are skipped, so a re-run or ``--resume`` uploads only what is
missing, and unfinished multipart uploads an interrupted attempt left under the prefix are aborted first.
A transient S3 error (connection, timeout, 5xx) is retried per file with backoff: a stream consumer
cannot be re-run as a whole once it has read files, so it rides out a short outage where it happens.
Keys are ``<prefix>/<path in dataset>``, the prefix defaulting to ``<S3__PREFIX>/<run id>``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, field_validator

from config.settings import Settings
from dag_orchestrator.context import PipelineContext
from dag_orchestrator.retry import with_retries
from task_components.base import Component
from task_components.contracts import DataFile, UploadedFile, UploadResult
from task_components.manifest import MANIFEST_NAME, Manifest, parse_size, sha256_file
from task_components.storage.stores import LocalStore, ObjectStore, S3Store, StorageError, s3_transient


class UploadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prefix: str | None = Field(None, description="key prefix (default: <S3__PREFIX>/<run id>)")
    backend: Literal["auto", "s3", "local"] = Field("auto", description="auto: S3 when S3__ENDPOINT_URL/keys are set")
    concurrency: int = Field(4, ge=1, le=64, description="files uploaded at once")
    part_size: str = "16MB"
    multipart_threshold: str = "64MB"
    local_root: str | None = Field(None, description="local store directory (default: <run dir>/object-store)")

    @field_validator("part_size", "multipart_threshold")
    @classmethod
    def _size(cls, v: str) -> str:
        parse_size(v)
        return v


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """Where files go, as a picklable value: what a worker process opens its own store from.

    On a Dask deployment the spec travels without keys (``without_secrets``): secrets never pass through
    the scheduler in a task's arguments. The worker takes its keys, and its endpoint when it sets one
    (it may reach S3 by another address than the engine), from its own ``S3__*`` settings; a worker
    without keys for a store that needs them is refused by name, before botocore goes looking for
    credentials elsewhere (a cloud metadata address) or finds some for another account.
    """

    kind: Literal["s3", "local"]
    bucket: str
    root: str | None = None
    part_size: int = 16 << 20
    multipart_threshold: int = 64 << 20
    connection: dict[str, Any] | None = None
    keys_from_worker: bool = False

    def without_secrets(self) -> StoreSpec:
        if self.kind != "s3" or self.connection is None:
            return self
        public = {k: v for k, v in self.connection.items() if k not in ("access_key", "secret_key")}
        return replace(self, connection=public, keys_from_worker=bool(self.connection.get("access_key")))

    def open(self) -> ObjectStore:
        if self.kind == "local":
            assert self.root is not None
            return LocalStore(Path(self.root), self.bucket)
        conn = dict(self.connection) if self.connection is not None else s3_connection(Settings())
        if "access_key" not in conn:  # keys withheld: this worker's own settings
            own = s3_connection(Settings())
            where = ("endpoint_url", "region", "verify_ssl") if own["endpoint_url"] else ()
            conn |= {k: own[k] for k in ("access_key", "secret_key", *where)}
            if self.keys_from_worker and not (conn["access_key"] and conn["secret_key"]):
                raise StorageError(
                    f"this worker has no S3__ACCESS_KEY/S3__SECRET_KEY for bucket {self.bucket!r} at {conn.get('endpoint_url') or 'AWS'}: "
                    "a Dask deployment's workers need the S3__* settings in their environment (docs/scaling.md)"
                )
        return S3Store(bucket=self.bucket, part_size=self.part_size, multipart_threshold=self.multipart_threshold, **conn)


def s3_connection(settings: Settings) -> dict[str, Any]:
    s3 = settings.s3
    return {
        "endpoint_url": s3.endpoint_url,
        "access_key": s3.access_key.get_secret_value() if s3.access_key else None,
        "secret_key": s3.secret_key.get_secret_value() if s3.secret_key else None,
        "region": s3.region,
        "verify_ssl": s3.verify_ssl,
    }


def store_spec(settings: Settings, run_dir: Path | None, p: UploadParams) -> StoreSpec:
    s3 = settings.s3
    if p.backend == "s3" or (p.backend == "auto" and (s3.endpoint_url or s3.access_key)):
        return StoreSpec(
            "s3",
            s3.bucket,
            part_size=parse_size(p.part_size),
            multipart_threshold=parse_size(p.multipart_threshold),
            connection=s3_connection(settings),
        )
    if p.local_root:
        root = Path(p.local_root).resolve()
    elif run_dir is not None:
        root = (Path(run_dir) / "object-store").resolve()
    else:
        raise ValueError("storage.upload needs local_root when the run has no run directory")
    return StoreSpec("local", s3.bucket, root=str(root))


def open_store(settings: Settings, run_dir: Path | None, p: UploadParams) -> ObjectStore:
    return store_spec(settings, run_dir, p).open()


class Upload(Component[UploadParams]):
    __slots__ = ()
    component = "storage.upload"
    Result = UploadResult
    needs_types = (Manifest,)
    summary = "upload dataset files to S3 (or a local directory) as they are written; skips unchanged files"
    Params = UploadParams
    stream_input = True
    emits = True  # each file once it is stored: an importer can start on it while the rest upload
    retries_inside = True
    default_kind = "io"

    async def run(self, ctx: PipelineContext) -> UploadResult:
        p = self.params
        settings: Settings = ctx.services.settings
        prefix = (p.prefix or f"{settings.s3.prefix}/{ctx.run_id}").strip("/")
        store = open_store(settings, ctx.run_dir, p)
        done: list[UploadedFile] = []
        limiter = anyio.CapacityLimiter(p.concurrency)

        policy = self.inner_retry()

        async def one(df: DataFile) -> None:
            key = f"{prefix}/{df.entry.path}"
            async with limiter:
                obj = await with_retries(
                    lambda: store.put_file(df.local_path, key, df.entry.sha256), policy, s3_transient, what=f"upload of {key}", log=ctx.log
                )
            e = df.entry
            uploaded = UploadedFile(
                key=obj.key,
                location=store.locate(obj.key),
                rows=e.rows,
                bytes=obj.bytes,
                sha256=obj.sha256,
                skipped=obj.skipped,
                shard=e.shard,
            )
            done.append(uploaded)
            await ctx.emit(uploaded)
            ctx.progress(done=len(done), unit="files")

        try:
            aborted = await with_retries(
                lambda: store.abort_unfinished(prefix + "/"), policy, s3_transient, what="listing unfinished uploads", log=ctx.log
            )
            if aborted:
                ctx.log.warning("aborted unfinished multipart uploads of an interrupted attempt", count=aborted)
            async with anyio.create_task_group() as tg:
                if self.streams_from:
                    async for df in ctx.stream(self.streams_from[0]):
                        tg.start_soon(one, df)
                    manifest = ctx.result(self.streams_from[0])
                else:
                    manifest = self._manifest(ctx)
                    root = Path(manifest.root or ".")
                    for entry in manifest.files:
                        tg.start_soon(one, DataFile(entry, root / entry.path, root))
            meta = Path(manifest.root or ".") / MANIFEST_NAME
            manifest_key = f"{prefix}/{MANIFEST_NAME}"
            meta_sha = await anyio.to_thread.run_sync(sha256_file, meta)
            await with_retries(
                lambda: store.put_file(meta, manifest_key, meta_sha), policy, s3_transient, what=f"upload of {manifest_key}", log=ctx.log
            )
        finally:
            with anyio.CancelScope(shield=True):
                await store.aclose()
        order = {f.path: i for i, f in enumerate(manifest.files)}
        done.sort(key=lambda f: order.get(f.key.removeprefix(prefix + "/"), 0))
        ctx.log.info("upload finished", store=store.kind, uploaded=sum(not f.skipped for f in done), skipped=sum(f.skipped for f in done))
        return UploadResult(
            store=store.kind,
            bucket=store.bucket,
            prefix=prefix,
            files=done,
            manifest_key=manifest_key,
            manifest=manifest,
            aborted_uploads=aborted,
        )

    def _manifest(self, ctx: PipelineContext) -> Manifest:
        manifest = self.upstream(ctx, Manifest)
        if manifest is None:
            raise ValueError(f"storage.upload needs a partition task among its needs, got {list(self.needs)}")
        return manifest

    def summarize(self, result: UploadResult) -> dict[str, Any]:
        out = {"store": result.store, "uploaded": result.uploaded, "skipped": len(result.files) - result.uploaded}
        return {**out, "aborted stale uploads": result.aborted_uploads} if result.aborted_uploads else out
