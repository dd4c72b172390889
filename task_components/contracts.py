"""The typed results components hand each other, in one place every component imports.

Components are siblings: generate, partition, upload, import, shadow and verify never import each
other's task modules. What one produces and the next consumes is declared here, and each component
names these types as its ``Result`` and ``needs_types`` so the registry can check a pipeline's wiring
before anything runs. The dataset manifest (``meta.json``) stays in ``partitioning.manifest``: it is a
file format as much as a result, and it is re-exported here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import BaseModel, Field

from task_components.manifest import FileEntry, Manifest
from task_components.schema.models import CollectionSchema

__all__ = [
    "GENERATION_KEY",
    "CollectionInfo",
    "DataFile",
    "FileEntry",
    "GenerationResult",
    "ImportResult",
    "Manifest",
    "MilvusTarget",
    "ShadowResult",
    "UploadResult",
    "UploadedFile",
    "read_info",
    "with_info",
]

# -- generate -> partition / shadow: batches carry their generation parameters ------------------------
GENERATION_KEY = b"generation"


def with_info(batch: pa.RecordBatch, info: bytes) -> pa.RecordBatch:
    meta = dict(batch.schema.metadata or {})
    meta[GENERATION_KEY] = info
    return batch.replace_schema_metadata(meta)


def read_info(schema: pa.Schema) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(GENERATION_KEY)
    return json.loads(raw) if raw else {}


@dataclass(slots=True)
class GenerationResult:
    """What ``generate`` returns once its stream of batches is complete."""

    collection: str
    total_rows: int
    seed: int
    chunks: int
    chunk_rows: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.total_rows / self.seconds if self.seconds else 0.0


# -- partition -> upload: each closed file, streamed; the Manifest when all are written ----------------
@dataclass(frozen=True, slots=True)
class DataFile:
    """What partition emits: a closed file, ready for upload."""

    entry: FileEntry
    local_path: Path
    root: Path


# -- upload -> import ---------------------------------------------------------------------------------
class UploadedFile(BaseModel):
    key: str
    location: str = Field(description="what an importer is given: S3 key, or absolute path for a local store")
    rows: int
    bytes: int
    sha256: str
    skipped: bool
    shard: int | None = None


class UploadResult(BaseModel):
    store: str
    bucket: str
    prefix: str
    files: list[UploadedFile]
    manifest_key: str
    manifest: Manifest
    aborted_uploads: int = Field(0, description="unfinished multipart uploads of earlier attempts, aborted")

    @property
    def uploaded(self) -> int:
        return sum(not f.skipped for f in self.files)


# -- create_collection -> import -> verify --------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MilvusTarget:
    uri: str
    token: str | None
    db_name: str
    lite: bool

    def client(self) -> Any:
        from pymilvus import MilvusClient  # heavy import, only where a client is made

        kwargs: dict[str, Any] = {"uri": self.uri}
        if self.token:
            kwargs["token"] = self.token
        if not self.lite and self.db_name != "default":
            kwargs["db_name"] = self.db_name
        return MilvusClient(**kwargs)


class CollectionInfo(BaseModel):
    name: str
    target: dict[str, Any]
    collection_schema: CollectionSchema
    indexes: dict[str, dict[str, Any]]

    def milvus(self) -> MilvusTarget:
        return MilvusTarget(**self.target)


class ImportResult(BaseModel):
    collection: str
    method: str
    rows_in_milvus: int
    rows_expected: int
    files: int
    seconds: float
    job_ids: list[int] = Field(default_factory=list)
    info: CollectionInfo
    manifest: Manifest
    resume: str = Field("", description="how an interrupted earlier attempt was taken over, if there was one")

    @property
    def rows_per_second(self) -> float:
        return self.rows_expected / self.seconds if self.seconds else 0.0


# -- shadow.sync -> verify ----------------------------------------------------------------------------
class ShadowResult(BaseModel):
    table: str
    key: str
    rows: int
    embedded: bool
    seconds: float
    collection_schema: CollectionSchema
    embedded_dir: str | None = Field(None, description="run directory holding the embedded PostgreSQL, if embedded")
