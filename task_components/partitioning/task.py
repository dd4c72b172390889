"""The ``partition`` component: stream batches into Parquet/JSON files and a manifest.

It consumes the generation stream while generation runs, writes in a worker thread (pyarrow encodes
without the GIL) so the event loop stays free, and emits every file as soon as it is closed, so an
upload task streaming from it overlaps with writing. Memory is the batches in flight, never the dataset.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dag_orchestrator.context import PipelineContext
from task_components.base import Component
from task_components.contracts import DataFile, GenerationResult, read_info
from task_components.manifest import MANIFEST_NAME, FileEntry, Manifest, parse_size
from task_components.partitioning.writer import DatasetWriter
from task_components.schema.arrow import schema_of


class PartitionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["parquet", "json"] = "parquet"
    rows_per_file: int | None = Field(None, ge=1)
    file_size: str | int | None = Field(None, description="e.g. 256MB, 1GB; a bare number is MB")
    file_count: int | None = Field(None, ge=1, description="split total rows evenly into this many files")
    compression: Literal["snappy", "zstd", "lz4", "gzip", "none"] = "snappy"
    out: str | None = Field(None, description="output directory (default: <run dir>/data)")
    writer_threads: int = Field(2, ge=1, le=16, description="files encoded concurrently")

    @field_validator("file_size")
    @classmethod
    def _size(cls, v: Any) -> Any:
        if v is not None:
            parse_size(v)
        return v

    @model_validator(mode="after")
    def _one_split(self) -> PartitionParams:
        if self.file_count and self.rows_per_file:
            raise ValueError("set either file_count or rows_per_file, not both")
        return self

    def size_limit(self) -> int | None:
        return parse_size(self.file_size) if self.file_size is not None else None


def clear_dataset(out: Path) -> None:
    """Remove what an earlier (possibly interrupted) write left, so no stale file joins the dataset."""
    if not out.exists():
        return
    for pattern in ("data-*.parquet", "data-*.json", MANIFEST_NAME):
        for p in out.glob(pattern):
            p.unlink()
    for shard_dir in out.glob("shard-*"):
        shutil.rmtree(shard_dir)


class Partition(Component[PartitionParams]):
    __slots__ = ()
    component = "partition"
    Result = Manifest
    needs_types = (GenerationResult,)
    summary = "write the generated stream to Parquet/JSON files plus a meta.json manifest (emits closed files)"
    Params = PartitionParams
    stream_input = True
    emits = True
    default_kind = "io"

    def output_dir(self, ctx: PipelineContext) -> Path:
        p = self.params
        if p.out:
            return Path(p.out)
        if ctx.run_dir is None:
            raise ValueError("partition needs `out` when the run has no run directory")
        return Path(ctx.run_dir) / "data"

    async def run(self, ctx: PipelineContext) -> Manifest:
        p = self.params
        if len(self.streams_from) != 1:
            raise ValueError(f"partition streams from exactly one generate task, got {list(self.streams_from)}")
        out = self.output_dir(ctx)
        clear_dataset(out)
        out.mkdir(parents=True, exist_ok=True)
        writer: DatasetWriter | None = None
        info: dict[str, Any] = {}
        rows = emitted = 0
        try:
            async for batch in ctx.stream(self.streams_from[0]):
                if writer is None:
                    info = read_info(batch.schema)
                    writer = self._writer(out, batch.schema, info)
                await anyio.to_thread.run_sync(writer.write, batch)
                rows += batch.num_rows
                emitted += await self._emit(ctx, writer.finished(), out)
                ctx.progress(done=rows, total=info.get("total_rows"), unit="rows")
            if writer is None:
                raise ValueError(f"stream from {self.streams_from[0]!r} carried no data")
            entries = await anyio.to_thread.run_sync(writer.close)
        except BaseException:
            if writer is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(_abandon, writer)
            raise
        await self._emit(ctx, entries[emitted:], out)
        cs = schema_of(writer.schema)
        manifest = Manifest(
            format=p.format,
            collection_schema=cs,
            generation=info,
            files=entries,
            collection_config=collection_config(cs),
        )
        manifest.save(out)
        manifest.root = str(out)
        return manifest

    def _writer(self, out: Path, schema: Any, info: dict[str, Any]) -> DatasetWriter:
        p = self.params
        rows_per_file = p.rows_per_file
        if p.file_count:
            rows_per_file = -(-int(info.get("total_rows", 0)) // p.file_count) or None
        return DatasetWriter(
            out,
            schema,
            fmt=p.format,
            rows_per_file=rows_per_file,
            file_size=p.size_limit(),
            compression=p.compression,
            threads=p.writer_threads,
        )

    async def _emit(self, ctx: PipelineContext, entries: list[FileEntry], out: Path) -> int:
        """Emit closed files in plan order; returns how many were emitted."""
        if ctx.has_stream_consumers():
            for entry in entries:
                await ctx.emit(DataFile(entry, out / entry.path, out))
        return len(entries)

    def summarize(self, result: Manifest) -> dict[str, Any]:
        return {"files": len(result.files), "rows": result.total_rows, "MB": round(result.total_bytes / 1e6, 1)}


def _abandon(writer: DatasetWriter) -> None:
    """On failure or cancellation: finish what the lanes hold, so no thread outlives the task."""
    try:
        writer.close()
    except Exception:  # noqa: BLE001 - the original error is what the user must see
        pass


def collection_config(schema: Any) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if schema.num_partitions and schema.partition_key is not None:
        config |= {"num_partitions": schema.num_partitions, "partition_key_field": schema.partition_key.name}
    if schema.num_shards:
        config["num_shards"] = schema.num_shards
    return config


class LoadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="a dataset directory (with meta.json), e.g. one made by `generate`")


class LoadDataset(Component[LoadParams]):
    """An existing dataset as a task result, so upload/import can run on files made earlier."""

    __slots__ = ()
    component = "dataset.load"
    Result = Manifest
    summary = "read an existing dataset directory's meta.json (files made by `generate` or milvus-ingest)"
    Params = LoadParams

    async def run(self, ctx: PipelineContext) -> Manifest:
        p = self.params
        path = Path(p.path)
        if not (path / MANIFEST_NAME).exists():
            raise FileNotFoundError(f"{path} has no {MANIFEST_NAME}: is it a dataset directory made by `generate`?")
        ctx.log.info("reading dataset", path=str(path))  # a milvus-ingest directory's files are hashed here
        manifest = await anyio.to_thread.run_sync(Manifest.load, path)  # off the loop: the progress view stays live
        missing = [f.path for f in manifest.files if not manifest.file_path(f).exists()]
        if missing:
            raise FileNotFoundError(f"{path}: files listed in {MANIFEST_NAME} are missing: {', '.join(missing[:5])}")
        return manifest

    def summarize(self, result: Manifest) -> dict[str, Any]:
        return {"files": len(result.files), "rows": result.total_rows}
