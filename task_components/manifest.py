"""The dataset manifest (``meta.json``): the contract between partitioning and everything after it.

Upload, import, shadow sync and verification read this and nothing else: which files exist, how many
rows each holds, their size and sha256, the schema they follow and how the collection must be made.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from task_components.interop import from_milvus_ingest, generation_info, is_milvus_ingest
from task_components.rawfiles import sha256_file
from task_components.schema.models import CollectionSchema

__all__ = ["MANIFEST_NAME", "FileEntry", "Manifest", "parse_size", "sha256_file"]  # sha256_file: rawfiles'

MANIFEST_NAME = "meta.json"


class FileEntry(BaseModel):
    path: str = Field(description="relative to the manifest's directory")
    rows: int
    bytes: int
    sha256: str
    shard: int | None = None


class Manifest(BaseModel):
    format: str
    collection_schema: CollectionSchema = Field(alias="schema")
    generation: dict[str, Any] = Field(default_factory=dict)
    collection_config: dict[str, Any] = Field(default_factory=dict)
    files: list[FileEntry] = Field(default_factory=list)
    created_at: float = Field(default_factory=time.time)
    root: str | None = Field(None, exclude=True, description="directory holding the files (not stored)")

    model_config = {"populate_by_name": True}

    @property
    def total_rows(self) -> int:
        return sum(f.rows for f in self.files)

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def file_path(self, entry: FileEntry) -> Path:
        assert self.root is not None, "manifest has no root directory"
        return Path(self.root) / entry.path

    def save(self, directory: Path) -> Path:
        target = directory / MANIFEST_NAME
        tmp = target.with_suffix(".tmp")
        data = self.model_dump(mode="json", by_alias=True, exclude={"root", "collection_schema"})
        # no null-valued keys: milvus-ingest passes e.g. default_value on to pymilvus when the key is present
        data["schema"] = self.collection_schema.model_dump(mode="json", by_alias=True, exclude_none=True)
        data["total_rows"] = self.total_rows
        data["generation_info"] = generation_info(self.format, [f.path for f in self.files], self.total_rows, self.generation)
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(target)
        return target

    @classmethod
    def load(cls, path: str | Path, checksums: bool = True) -> Manifest:
        """``checksums=False``: a milvus-ingest directory (which lists none) is read without hashing its files."""
        p = Path(path)
        if p.is_dir():
            p = p / MANIFEST_NAME
        data = json.loads(p.read_text())
        if is_milvus_ingest(data):
            data = from_milvus_ingest(data, p, checksums)
        for key in ("total_rows", "generation_info"):  # derived from the files: written for milvus-ingest
            data.pop(key, None)
        m = cls.model_validate(data)
        m.root = str(p.parent)
        return m


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?B?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1 << 20,
    "B": 1,
    "K": 1 << 10,
    "KB": 1 << 10,
    "M": 1 << 20,
    "MB": 1 << 20,
    "G": 1 << 30,
    "GB": 1 << 30,
    "T": 1 << 40,
    "TB": 1 << 40,
}


def parse_size(value: str | int) -> int:
    """``"256MB"``, ``"1.5GB"``, ``"512KB"``; a bare number means MB (as milvus-ingest reads it)."""
    if isinstance(value, int):
        return value << 20
    m = _SIZE.match(value)
    if not m:
        raise ValueError(f"file size {value!r} is not a size like 256MB, 1GB or 512KB")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").upper()])
