"""meta.json as milvus-ingest writes and reads it, so a dataset directory works with either tool.

milvus-ingest's meta.json has ``schema`` (the same schema format ours accepts), ``generation_info``
(``total_rows``, ``format``, ``data_files``...) and ``collection_config``; it lists file names but no
per-file row counts or checksums. Reading one, we take the rows from each file (Parquet footer, or the
JSON rows) and compute sizes and sha256 once, which upload and verification rely on. Writing ours, we
add ``generation_info`` beside our own keys, because milvus-ingest's loader and verifier read the
expected row count and the format from there (its loader finds the data files itself, by globbing the
directory's top level).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from task_components.rawfiles import json_rows, sha256_file

__all__ = ["MetaError", "from_milvus_ingest", "generation_info", "is_milvus_ingest"]


class MetaError(ValueError):
    """A meta.json neither tool can use: the message names the file and the key."""


def is_milvus_ingest(data: dict[str, Any]) -> bool:
    return "files" not in data and "format" not in data and isinstance(data.get("generation_info"), dict)


def _data_files(meta: Path, info: dict[str, Any]) -> list[str]:
    listed = info.get("data_files")
    if isinstance(listed, list) and listed:
        return [str(p) for p in listed]
    return sorted(p.name for p in meta.parent.iterdir() if p.suffix in (".parquet", ".json") and p.name != meta.name)


def _rows(path: Path, fmt: str) -> int:
    if fmt == "parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    return len(json_rows(path))


def from_milvus_ingest(data: dict[str, Any], meta: Path, checksums: bool = True) -> dict[str, Any]:
    """A milvus-ingest meta.json (read from ``meta``) as our manifest's fields (files described by reading them).

    ``checksums=False`` leaves sha256 empty, for a look at the directory that uploads nothing.
    """
    directory = meta.parent
    info = data["generation_info"]
    names = _data_files(meta, info)
    if not names:
        raise MetaError(f"{meta}: generation_info.data_files is empty and {directory} holds no .parquet/.json files")
    fmt = str(info.get("format") or Path(names[0]).suffix.lstrip("."))
    if fmt not in ("parquet", "json"):
        raise MetaError(f"{meta}: generation_info.format must be parquet or json, got {fmt!r}")
    files: list[dict[str, Any]] = []
    for name in names:
        path = directory / name
        if not path.is_file():
            raise MetaError(f"{meta}: generation_info.data_files lists {name!r}, which is not in {directory}")
        files.append(
            {"path": name, "rows": _rows(path, fmt), "bytes": path.stat().st_size, "sha256": sha256_file(path) if checksums else ""}
        )
    total = sum(f["rows"] for f in files)
    expected = info.get("total_rows")
    if isinstance(expected, int) and expected != total:
        raise MetaError(f"{meta}: generation_info.total_rows is {expected:,} but the data files hold {total:,} rows")
    generation = {k: info[k] for k in ("seed", "total_rows") if k in info} | {"source": "milvus-ingest"}
    if not isinstance(data.get("schema"), dict):
        raise MetaError(f"{meta}: no 'schema' object (milvus-ingest writes the collection schema there)")
    return {
        "format": fmt,
        "schema": data["schema"],
        "generation": generation,
        "collection_config": data.get("collection_config") or {},
        "files": files,
    }


def generation_info(fmt: str, files: list[str], total_rows: int, generation: dict[str, Any]) -> dict[str, Any]:
    """The ``generation_info`` block milvus-ingest's loader and verifier read."""
    info = {"total_rows": total_rows, "format": fmt, "data_files": files, "file_count": len(files)}
    if "seed" in generation:
        info["seed"] = generation["seed"]
    return info
