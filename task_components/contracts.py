"""The typed results components hand each other, in one place every component imports.

Components are siblings: generate, partition, upload, import, shadow and verify never import each
other's task modules. What one produces and the next consumes is declared here, and each component
names these types as its ``Result`` and ``needs_types`` so the registry can check a pipeline's wiring
before anything runs. The dataset manifest (``meta.json``) stays in ``task_components.manifest``: it is a
file format as much as a result, and it is re-exported here.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import pyarrow as pa
from pydantic import BaseModel, Field, field_serializer, field_validator

from config.settings import Settings
from task_components.clients import MilvusTarget, milvus_token
from task_components.manifest import FileEntry, Manifest
from task_components.schema.models import CollectionSchema

__all__ = [
    "GENERATION_KEY",
    "CollectionInfo",
    "DataFile",
    "DatasetTableResult",
    "FileEntry",
    "GenerationResult",
    "ImportResult",
    "Manifest",
    "MilvusTarget",
    "SeedResult",
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
    placement: dict[str, int] = field(default_factory=dict)  # Dask worker -> chunks it generated

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
def _without_token(state: dict[Any, Any]) -> dict[Any, Any]:
    """A pickled ``CollectionInfo``'s state with ``target`` minus its token (the other keys untouched)."""
    fields = state.get("__dict__") or {}
    target = fields.get("target")
    if not isinstance(target, dict) or "token" not in target:
        return state
    clean = {k: v for k, v in target.items() if k != "token"}
    return {**state, "__dict__": {**fields, "target": clean}}


class CollectionInfo(BaseModel):
    """A collection and where it lives. ``target`` never holds the Milvus token: results are pickled into
    the run directory, and a secret there outlives the run; ``milvus()`` reads it back from the settings."""

    name: str
    target: dict[str, Any]
    collection_schema: CollectionSchema
    indexes: dict[str, dict[str, Any]]

    @field_validator("target")
    @classmethod
    def _no_token(cls, target: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in target.items() if k != "token"}

    @field_serializer("target")
    def _dump_no_token(self, target: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in target.items() if k != "token"}  # report.json, model_dump: as for pickle

    def __getstate__(self) -> dict[Any, Any]:
        """Pickled without the token even when built without validation (``model_construct``, ``model_copy``)."""
        return _without_token(super().__getstate__())

    def __setstate__(self, state: dict[Any, Any]) -> None:
        """Unpickling runs no validator: results pickled before the token was dropped still carry it."""
        super().__setstate__(_without_token(state))

    def milvus(self, settings: Settings | None = None) -> MilvusTarget:
        """The recorded target with the token of the configured server (``clients.milvus_token``)."""
        uri = str(self.target["uri"])
        return MilvusTarget(
            uri,
            milvus_token(uri, settings),
            str(self.target.get("db_name", "default")),
            lite=bool(self.target.get("lite", uri.endswith(".db"))),
        )


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
    phases: dict[str, float] = Field(default_factory=dict, description="seconds from the task's start to each step")

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


# -- streaming: source.kafka drives the stages and sinks it needs, batch by batch -------------------------
# The streaming components are configuration-only tasks (standardize, quality.check, sink.*) whose
# results are the stage and sink objects below; ``source.kafka`` needs them, finds them by type and
# runs them per batch, so one task sees every sink's outcome before it commits a batch's offsets.
@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record was dead-lettered: the step (decode, mapping, conversion, standardization,
    quality) and the rule or field that rejected it, with a reason a person can act on."""

    step: str
    rule: str
    reason: str


@dataclass(slots=True)
class StreamRecord:
    """One consumed message as it moves through a batch. ``value`` is rewritten by each stage;
    ``raw`` is kept untouched for the dead-letter topic."""

    topic: str
    partition: int
    offset: int
    raw: bytes
    value: dict[str, Any] | None
    correlation_id: str
    key: bytes | None = None
    rejection: Rejection | None = None
    duplicate: bool = False

    def reject(self, step: str, rule: str, reason: str) -> None:
        if self.rejection is None:  # the first reason is the one that matters
            self.rejection = Rejection(step, rule, reason)


@dataclass(slots=True)
class StreamBatch:
    """Records fetched together; ``positions`` are the offsets to commit once every sink took them."""

    seq: int
    records: list[StreamRecord]
    positions: dict[tuple[str, int], int] = field(default_factory=dict)

    def valid(self) -> list[StreamRecord]:
        return [r for r in self.records if r.rejection is None and not r.duplicate]

    def rejected(self) -> list[StreamRecord]:
        return [r for r in self.records if r.rejection is not None]


class BatchThresholdError(RuntimeError):
    """The invalid share of a batch exceeded the configured threshold: the batch (and the run) fails."""


class BatchProcessor(Protocol):
    def __call__(self, batch: StreamBatch) -> None: ...


class BatchStage(ABC):
    """A configured per-batch step. ``processor()`` gives a fresh one per run, so run state (such as
    the recent keys of the duplicate check) lives in the run, not in the stored result."""

    step: ClassVar[str] = "stage"

    @abstractmethod
    def processor(self) -> BatchProcessor: ...


class SinkWriter(Protocol):
    async def write(self, records: Sequence[StreamRecord]) -> int: ...


class BatchSink(ABC):
    """A configured sink of valid records. ``open`` connects (once per run) and yields a writer whose
    ``write`` must be idempotent: a batch is written again after a crash or a retry."""

    label: str = "sink"

    @abstractmethod
    def open(self, settings: Any) -> AbstractAsyncContextManager[SinkWriter]: ...


class DeadLetterSink(BatchSink):
    """A sink of rejected records (original record, step, rule, reason, source position, correlation id)."""


class StreamResult(BaseModel):
    """What ``source.kafka`` returns: counts of the run, the offsets it committed and why it stopped."""

    topic: str
    group: str
    records_in: int
    valid: int
    invalid: int
    duplicates: int
    batches: int
    written: dict[str, int]
    committed: dict[str, int] = Field(description="'topic:partition' -> next offset committed")
    stopped_by: str
    seconds: float
    busy_seconds: float = Field(0.0, description="from the first record fetched to the end (no group join)")
    sink_outages: int = 0
    refused: int = Field(0, description="refusals of a valid record by a sink (dead-lettered as step sink.<name>)")

    @property
    def records_per_second(self) -> float:
        return self.records_in / self.seconds if self.seconds else 0.0


class ProducedTestData(BaseModel):
    """What ``testdata.produce`` returns: how many records of each kind it sent, and where."""

    output: str
    topic: str | None
    produced: int
    valid: int
    invalid: int
    duplicates: int
    kinds: dict[str, int]
    seconds: float


# -- dataset packs: one table task -> the tables that reference it, and the pack's closing task ------------
@dataclass(frozen=True, slots=True)
class DatasetTableResult:
    """What one table task of a dataset pack wrote (a task may write a header table and its lines)."""

    pack: str
    table: str
    out: str
    rows: dict[str, int]  # table written -> rows written by this run
    days: int  # days of facts written (0 for a dimension)
    seconds: float

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


@dataclass(frozen=True, slots=True)
class SeedResult:
    """What seeding one document collection did (duplicates are reported, not fatal by default)."""

    pack: str
    collection: str
    database: str
    inserted: int
    duplicates: int
    batches: int
    indexes: tuple[str, ...]
    seconds: float
