"""Read a dataset's data files as Arrow whatever their format, so loaders and verifiers need one code path.

Parquet is read as it is. JSON comes in the two shapes a dataset directory may hold: Milvus 2.3's
bulk-import form ``{"rows": [...]}`` (what `generate --format json` writes) and a bare list of rows
(what milvus-ingest writes). JSON rows are turned into the same Arrow columns the Parquet writer makes
(JSON and sparse fields as JSON text, dynamic keys gathered into ``$meta``), so everything downstream
(insert, sample comparison, exact search) sees one representation. A JSON file is parsed whole: JSON
datasets are the small ones; Parquet is the format for volume.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from task_components.manifest import FileEntry, Manifest
from task_components.rawfiles import DataFileError, json_rows, sha256_file
from task_components.schema.arrow import META_COLUMN, arrow_schema
from task_components.schema.models import CollectionSchema
from task_components.schema.types import spec

__all__ = [
    "DataFileError",
    "check_files",
    "iter_batches",
    "json_rows",
    "parquet_mismatches",
    "read_table",
    "rewrite_parquet",
]


def _json_table(path: Path, schema: CollectionSchema, columns: list[str] | None) -> pa.Table:
    rows = json_rows(path)
    target = arrow_schema(schema)
    wanted = [n for n in target.names if columns is None or n in columns]
    known = set(target.names)
    by_name = {f.name: f for f in schema.fields}
    arrays = []
    for name in wanted:
        if name == META_COLUMN:
            values: list[Any] = [orjson.dumps({k: v for k, v in r.items() if k not in known}).decode() for r in rows]
        else:
            f = by_name[name]
            values = [r.get(name) for r in rows]
            if spec(f).storage == "json":  # JSON text in Arrow (JSON, sparse vectors, a plugin's)
                values = [v if v is None or isinstance(v, str) else orjson.dumps(v).decode() for v in values]
        try:
            arrays.append(pa.array(values, type=target.field(name).type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError) as exc:
            bad = next((i for i, v in enumerate(values) if not _fits(v, target.field(name).type)), None)
            where = f" row {bad}: value {str(values[bad])[:60]!r}" if bad is not None else ""
            raise DataFileError(f"{path}: field {name!r}{where} is not {target.field(name).type} as the schema says ({exc})") from None
    return pa.Table.from_arrays(arrays, schema=pa.schema([target.field(n) for n in wanted]))


def _fits(value: Any, type_: pa.DataType) -> bool:
    try:
        pa.array([value], type=type_)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return False
    return True


def read_table(manifest: Manifest, entry: FileEntry, columns: list[str] | None = None) -> pa.Table:
    """One data file as an Arrow table (only ``columns`` when given)."""
    path = manifest.file_path(entry)
    if manifest.format == "json" or path.suffix == ".json":
        return _json_table(path, manifest.collection_schema, columns)
    return pq.read_table(path, columns=columns)


def iter_batches(manifest: Manifest, entry: FileEntry, batch_rows: int, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
    """A data file in record batches of at most ``batch_rows`` rows (Parquet streams; JSON is parsed once)."""
    path = manifest.file_path(entry)
    if manifest.format == "json" or path.suffix == ".json":
        yield from read_table(manifest, entry, columns).to_batches(max_chunksize=batch_rows)
        return
    yield from pq.ParquetFile(path).iter_batches(batch_size=batch_rows, columns=columns)


def parquet_mismatches(manifest: Manifest) -> list[str]:
    """Parquet columns whose Arrow type is not the one the schema maps to (e.g. pandas' large_string).

    Milvus 2.3's bulk import accepts only the exact types (it rejects ``large_utf8`` for a VarChar), so
    such files must be rewritten before an import; insert reads them either way.
    """
    if manifest.format != "parquet":
        return []
    target = arrow_schema(manifest.collection_schema)
    found: list[str] = []
    for entry in manifest.files:
        have = pq.read_schema(manifest.file_path(entry))
        for name in target.names:
            if name in have.names and not have.field(name).type.equals(target.field(name).type):
                found.append(f"{entry.path}: {name} is {have.field(name).type}, not {target.field(name).type}")
    return found


def rewrite_parquet(manifest: Manifest, out: Path, batch_rows: int = 65_536, on_file: Callable[[int, str], None] | None = None) -> Manifest:
    """Copies of the data files with exactly the schema's Arrow types, streamed, and a manifest for them."""
    target = arrow_schema(manifest.collection_schema)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for entry in manifest.files:
        dest = out / entry.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        with pq.ParquetWriter(dest, target) as writer:
            for batch in iter_batches(manifest, entry, batch_rows, columns=target.names):
                try:
                    writer.write_table(pa.Table.from_batches([batch]).select(target.names).cast(target))
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    where = manifest.file_path(entry)
                    raise DataFileError(f"{where}: cannot convert to the schema's types: {exc}") from None
        entries.append(entry.model_copy(update={"bytes": dest.stat().st_size, "sha256": sha256_file(dest)}))
        if on_file is not None:
            on_file(len(entries), entry.path)
    copy = manifest.model_copy(update={"files": entries, "root": str(out)})
    copy.save(out)
    return copy


def check_files(manifest: Manifest) -> None:
    """Refuse, before any work, data files that lack a schema column or hold a value of the wrong type.

    Parquet is checked by its footer (every schema column present, not a whole-file read); JSON files are
    parsed and converted, which the load does anyway (JSON datasets are small).
    """
    target = arrow_schema(manifest.collection_schema)
    for entry in manifest.files:
        path = manifest.file_path(entry)
        if manifest.format == "json" or path.suffix == ".json":
            read_table(manifest, entry)
            continue
        try:
            have = pq.read_schema(path).names
        except (pa.ArrowInvalid, OSError) as exc:  # truncated, overwritten, not Parquet at all
            raise DataFileError(f"{path}: not a readable Parquet file ({exc}); restore or regenerate it") from exc
        absent = [n for n in target.names if n not in have and n != META_COLUMN]
        if absent:
            raise DataFileError(f"{path}: no column for schema field {absent[0]!r} (the file has: {', '.join(have)})")
