"""How many rows make a file of a given size: what ``--file-count N --file-size S`` turns into.

milvus-ingest derives the total row count from the pair (``N x rows that fit in S``), measuring a
sample written in the output format, because encoded size (Parquet compression, JSON text) is far
from the in-memory size. We do the same with a sample of generated rows, encoded the way the
partition task encodes them, so ``N`` files of about ``S`` each come out.
"""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from task_components.generation.columns import generate_chunk
from task_components.schema.arrow import row_bytes
from task_components.schema.models import CollectionSchema

__all__ = ["DEFAULT_FILE_SIZE", "DEFAULT_ROWS_PER_FILE", "SAMPLE_ROWS", "encoded_row_bytes", "rows_for_files"]

DEFAULT_FILE_SIZE = "256MB"  # milvus-ingest's file limits when none is given
DEFAULT_ROWS_PER_FILE = 1_000_000
SAMPLE_ROWS = (1000, 10_000)  # milvus-ingest samples 1000..10000 rows
SAMPLE_BYTES = 8 << 20


def encoded_row_bytes(schema: CollectionSchema, fmt: str, seed: int, sample_rows: int | None = None) -> float:
    """Bytes one row takes in a ``fmt`` file, from a sample of generated rows.

    The sample is as large as ~8 MB allows (up to 10,000 rows): Parquet encodes a large sample
    smaller per row (dictionaries, compression), so a small sample would make files fall short.
    """
    if sample_rows is None:
        sample_rows = min(max(SAMPLE_BYTES // row_bytes(schema), SAMPLE_ROWS[0]), SAMPLE_ROWS[1])
    batch = generate_chunk(schema.model_dump_json(), seed, 0, 0, sample_rows, sample_rows)
    if fmt == "parquet":
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_batches([batch]), buf, compression="snappy")
        size = buf.tell()
    else:
        size = sum(len(json.dumps(row, default=str)) + 2 for row in batch.to_pylist())
    return max(size / max(batch.num_rows, 1), 1.0)


def rows_for_files(file_count: int, file_bytes: int, row_bytes: float) -> tuple[int, int]:
    """(rows per file, total rows) for ``file_count`` files of ``file_bytes`` each; at least one row a file."""
    per_file = max(1, int(file_bytes // row_bytes))
    return per_file, per_file * file_count
