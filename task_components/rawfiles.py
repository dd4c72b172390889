"""One data file on its own, read without a manifest: its checksum and its JSON rows.

Both the manifest (describing a milvus-ingest directory, which lists neither row counts nor checksums)
and the data-file reader need these, and the reader needs the manifest: kept here, below both, so
neither has to import the other back.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson

__all__ = ["DataFileError", "json_rows", "sha256_file"]


class DataFileError(ValueError):
    """A data file that cannot be read as the schema says: the message names the file, field and value."""


def sha256_file(path: Path, block: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def json_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON data file in either shape (``{"rows": [...]}`` or ``[...]``)."""
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise DataFileError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        data = data["rows"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataFileError(f'{path}: expected a list of row objects or {{"rows": [...]}}')
    return data
