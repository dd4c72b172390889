"""The insert journal on Milvus Lite: an interrupted insert resumed (same or another batch size) is exact.

The interruption is staged the way a SIGKILL leaves it: some batches acknowledged and journaled as
landed, one batch written to Milvus but only journaled as started. (The kill matrix does the same with
real kills on the real server; this pins the journal's decisions down, fast, without services.)
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import anyio
import pyarrow.parquet as pq
import pytest

from dag_orchestrator import PipelineContext
from task_components.connect import count_rows
from task_components.contracts import CollectionInfo, MilvusTarget
from task_components.milvus.client import arrow_to_rows
from task_components.milvus.insert import InsertJournal, insert_files
from task_components.milvus.schema_map import index_params, to_milvus_schema
from tests.unit.test_partitioning import make

ROWS = 3000


def _collection(tmp_path: Path, manifest: object) -> CollectionInfo:
    schema = manifest.collection_schema  # type: ignore[attr-defined]
    target = MilvusTarget(str(tmp_path / "milvus.db"), None, "default", lite=True)
    client = target.client()
    try:
        client.create_collection("resume", schema=to_milvus_schema(schema))
        client.create_index("resume", index_params(schema, True, {})[0])
        client.load_collection("resume")
    finally:
        client.close()
    return CollectionInfo(name="resume", target={"uri": target.uri, "token": None, "db_name": "default",
                                                 "lite": True}, collection_schema=schema, indexes={})  # fmt: skip


def _stage_interruption(info: CollectionInfo, manifest: object, journal_path: Path, batch_rows: int) -> None:
    """Batches 0-2 landed and journaled; batch 3 landed in Milvus but journaled only as started."""
    entry = manifest.files[0]  # type: ignore[attr-defined]
    batches = list(pq.ParquetFile(manifest.file_path(entry)).iter_batches(batch_size=batch_rows))  # type: ignore[attr-defined]
    client = info.milvus().client()
    lines = [{"before": 0}]
    try:
        for i, batch in enumerate(batches[:4]):
            key = f"{entry.path}@{batch_rows}#{i}"
            client.insert("resume", arrow_to_rows(batch, info.collection_schema))
            lines.append({"started": key, "rows": batch.num_rows})
            if i < 3:
                lines.append({"landed": key})
        client.flush("resume")
    finally:
        client.close()
    journal_path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def _distinct_keys(info: CollectionInfo) -> tuple[int, int]:
    client = info.milvus().client()
    try:
        n = count_rows(client, "resume")
        keys = {r["id"] for r in client.query("resume", filter="id >= 0", output_fields=["id"], limit=16384)}
        return n, len(keys)
    finally:
        client.close()


@pytest.mark.parametrize("resume_batch", [250, 400], ids=["same-batch-size", "other-batch-size"])
def test_an_interrupted_insert_resumes_without_duplicates(resume_batch: int, tmp_path: Path) -> None:
    manifest = make(tmp_path, "simple", ROWS, rows_per_file=ROWS)
    info = _collection(tmp_path, manifest)
    journal_path = tmp_path / "import.inserted.jsonl"
    _stage_interruption(info, manifest, journal_path, 250)
    assert _distinct_keys(info) == (1000, 1000)

    ctx = PipelineContext(run_id="resume", run_dir=tmp_path)
    stats = anyio.run(lambda: insert_files(ctx, info, manifest, resume_batch, 2, InsertJournal(journal_path)))
    assert _distinct_keys(info) == (ROWS, ROWS)
    if resume_batch == 250:  # the journal matches: landed skipped, the in-flight batch upserted
        assert (stats.skipped, stats.upserted, stats.inserted) == (750, 250, ROWS - 1000)
    else:  # it cannot match batches: everything is upserted by key
        assert (stats.skipped, stats.upserted, stats.inserted) == (0, ROWS, 0)
    assert "resumed from the insert journal" in stats.describe()


def test_an_auto_id_resume_waits_for_a_late_insert_of_the_killed_attempt(tmp_path: Path) -> None:
    """The killed process' last insert lands after the resume began (it was still on its way into Milvus):
    counting at once would see it missing, insert the batch again and end with its rows twice."""
    manifest = make(tmp_path, "dynamic_example", 1000, rows_per_file=1000)  # AUTO_ID primary key
    info = _collection(tmp_path, manifest)
    entry = manifest.files[0]  # type: ignore[attr-defined]
    batches = list(pq.ParquetFile(manifest.file_path(entry)).iter_batches(batch_size=250))  # type: ignore[attr-defined]
    client = info.milvus().client()
    lines: list[dict[str, object]] = [{"before": 0}]
    for i in (0, 1):
        client.insert("resume", arrow_to_rows(batches[i], info.collection_schema))
        lines += [{"started": f"{entry.path}@250#{i}", "rows": 250}, {"landed": f"{entry.path}@250#{i}"}]
    client.flush("resume")
    deadline = time.time() + 2.0  # the killed attempt's call for batch 2 could land until then
    lines.append({"started": f"{entry.path}@250#2", "rows": 250, "deadline": deadline})
    journal_path = tmp_path / "import.inserted.jsonl"
    journal_path.write_text("".join(json.dumps(x) + "\n" for x in lines))

    def late_landing() -> None:
        time.sleep(1.0)
        client.insert("resume", arrow_to_rows(batches[2], info.collection_schema))

    late = threading.Thread(target=late_landing)
    late.start()
    try:
        ctx = PipelineContext(run_id="late", run_dir=tmp_path)
        stats = anyio.run(lambda: insert_files(ctx, info, manifest, 250, 2, InsertJournal(journal_path)))
    finally:
        late.join()
        client.close()
    check = info.milvus().client()
    try:
        assert count_rows(check, "resume") == 1000  # not 1250: batch 2 is in Milvus once
    finally:
        check.close()
    assert (stats.skipped, stats.adopted, stats.inserted) == (500, 250, 250)
    assert time.time() >= deadline  # decided only once the late call could no longer land
