"""Where Milvus is, and Arrow batches turned into the rows pymilvus inserts.

With no ``MILVUS__URI`` the target is Milvus Lite in the run directory: the embedded default that
lets the quickstart run with no server. pymilvus is synchronous, so callers run it in worker threads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pymilvus import MilvusClient

from config.settings import Settings
from task_components.schema.arrow import META_COLUMN
from task_components.schema.models import CollectionSchema, FieldType


@dataclass(frozen=True, slots=True)
class MilvusTarget:
    uri: str
    token: str | None
    db_name: str
    lite: bool

    def client(self) -> MilvusClient:
        kwargs: dict[str, Any] = {"uri": self.uri}
        if self.token:
            kwargs["token"] = self.token
        if not self.lite and self.db_name != "default":
            kwargs["db_name"] = self.db_name
        return MilvusClient(**kwargs)


def target_for(settings: Settings, run_dir: Path | None) -> MilvusTarget:
    m = settings.milvus
    token = m.token.get_secret_value() if m.token else None
    if m.uri:
        return MilvusTarget(m.uri, token, m.db_name, lite=m.uri.endswith(".db"))
    if run_dir is None:
        raise ValueError("MILVUS__URI is not set and the run has no run directory for Milvus Lite")
    return MilvusTarget(str(Path(run_dir).resolve() / "milvus.db"), None, "default", lite=True)


def count_rows(client: MilvusClient, collection: str) -> int:
    reply = client.query(collection, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return int(reply[0]["count(*)"])


def _vectors(col: pa.ListArray | pa.ChunkedArray, n: int, dtype: Any) -> list[np.ndarray]:
    values = pa.concat_arrays(col.chunks).values if isinstance(col, pa.ChunkedArray) else col.values
    return list(np.asarray(values.to_numpy(zero_copy_only=False), dtype=dtype).reshape(n, -1))


def arrow_to_rows(batch: pa.RecordBatch | pa.Table, schema: CollectionSchema) -> list[dict[str, Any]]:
    """Rows for MilvusClient.insert: numpy row views for vectors, dicts for JSON/sparse, merged $meta."""
    n = batch.num_rows
    columns: dict[str, list[Any]] = {}
    for f in schema.data_fields():
        col = batch.column(f.name)
        t = f.type
        if t is FieldType.FLOAT_VECTOR:
            columns[f.name] = _vectors(col, n, np.float32)
        elif t in (FieldType.FLOAT16_VECTOR, FieldType.BFLOAT16_VECTOR):
            raw = _vectors(col, n, np.uint8)
            if t is FieldType.FLOAT16_VECTOR:
                columns[f.name] = [r.view(np.float16) for r in raw]
            else:
                columns[f.name] = [r.tobytes() for r in raw]
        elif t is FieldType.BINARY_VECTOR:
            columns[f.name] = [r.tobytes() for r in _vectors(col, n, np.uint8)]
        elif t is FieldType.INT8_VECTOR:
            columns[f.name] = _vectors(col, n, np.int8)
        elif t is FieldType.SPARSE_FLOAT_VECTOR:
            columns[f.name] = [{int(k): float(v) for k, v in json.loads(s).items()} for s in col.to_pylist()]
        elif t is FieldType.JSON:
            columns[f.name] = [None if s is None else json.loads(s) for s in col.to_pylist()]
        else:
            columns[f.name] = col.to_pylist()
    names = list(columns)
    rows = [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    if schema.enable_dynamic_field and META_COLUMN in batch.schema.names:
        for row, meta in zip(rows, batch.column(META_COLUMN).to_pylist(), strict=True):
            if meta:
                row.update(json.loads(meta))
    return rows
