"""The insert journal on Milvus Lite: an interrupted insert resumed (same or another batch size) is exact.

The interruption is staged the way a SIGKILL leaves it: some batches acknowledged and journaled as
landed, one batch written to Milvus but only journaled as started. (The kill matrix does the same with
real kills on the real server; this pins the journal's decisions down, fast, without services.)
"""

from __future__ import annotations

import inspect
import json
import os
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import anyio
import grpc
import pyarrow.parquet as pq
import pytest
from pymilvus import MilvusClient
from pymilvus.decorators import retry_on_rpc_failure
from pymilvus.exceptions import MilvusException
from pymilvus.grpc_gen import common_pb2, milvus_pb2, milvus_pb2_grpc, schema_pb2

from dag_orchestrator import PipelineContext
from task_components.connect import count_rows
from task_components.contracts import CollectionInfo, MilvusTarget
from task_components.milvus.client import arrow_to_rows
from task_components.milvus.insert import InsertJournal, insert_files, landing_window
from task_components.schema.milvus import index_params, to_milvus_schema
from tests.integration.conftest import service_uri
from tests.unit.test_partitioning import make

ROWS = 3000


def _collection(tmp_path: Path, manifest: object, server: str = "", name: str = "resume") -> CollectionInfo:
    """The collection on Milvus Lite in tmp_path, or on the Milvus server at ``server`` (dropped first)."""
    schema = manifest.collection_schema  # type: ignore[attr-defined]
    lite = not server
    target = MilvusTarget(server or str(tmp_path / "milvus.db"), None, "default", lite=lite)
    client = target.client()
    try:
        if client.has_collection(name):
            client.drop_collection(name)
        client.create_collection(name, schema=to_milvus_schema(schema))
        client.create_index(name, index_params(schema, lite, {})[0])
        client.load_collection(name)
    finally:
        client.close()
    return CollectionInfo(
        name=name, target={"uri": target.uri, "token": None, "db_name": "default", "lite": lite}, collection_schema=schema, indexes={}
    )


def _stage_interruption(info: CollectionInfo, manifest: object, journal_path: Path, batch_rows: int) -> None:
    """Batches 0-2 landed and journaled; batch 3 landed in Milvus but journaled only as started, by an
    attempt killed long enough ago that its calls' deadlines have passed."""
    entry = manifest.files[0]  # type: ignore[attr-defined]
    batches = list(pq.ParquetFile(manifest.file_path(entry)).iter_batches(batch_size=batch_rows))  # type: ignore[attr-defined]
    client = info.milvus().client()
    lines = [{"before": 0}]
    try:
        for i, batch in enumerate(batches[:4]):
            key = f"{entry.path}@{batch_rows}#{i}"
            client.insert("resume", arrow_to_rows(batch, info.collection_schema))
            lines.append({"started": key, "rows": batch.num_rows, "deadline": time.time() - 1})
            if i < 3:
                lines.append({"landed": key})
        client.flush("resume")
    finally:
        client.close()
    journal_path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def _distinct_keys(info: CollectionInfo) -> tuple[int, int]:
    client = info.milvus().client()
    try:
        n = count_rows(client, info.name)
        keys = {r["id"] for r in client.query(info.name, filter="id >= 0", output_fields=["id"], limit=16384, consistency_level="Strong")}
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
    # on the server: Milvus Lite serves inside the process that sent the calls, so after a kill none can land
    info = _collection(tmp_path, manifest, service_uri("TEST_MILVUS_URI"), f"resume_auto_{os.getpid()}")
    entry = manifest.files[0]  # type: ignore[attr-defined]
    batches = list(pq.ParquetFile(manifest.file_path(entry)).iter_batches(batch_size=250))  # type: ignore[attr-defined]
    client = info.milvus().client()
    lines: list[dict[str, object]] = [{"before": 0}]
    for i in (0, 1):
        client.insert(info.name, arrow_to_rows(batches[i], info.collection_schema))
        lines += [{"started": f"{entry.path}@250#{i}", "rows": 250}, {"landed": f"{entry.path}@250#{i}"}]
    client.flush(info.name)
    deadline = time.time() + 2.0  # the killed attempt's call for batch 2 could land until then
    lines.append({"started": f"{entry.path}@250#2", "rows": 250, "deadline": deadline})
    journal_path = tmp_path / "import.inserted.jsonl"
    journal_path.write_text("".join(json.dumps(x) + "\n" for x in lines))

    def late_landing() -> None:
        time.sleep(1.0)
        client.insert(info.name, arrow_to_rows(batches[2], info.collection_schema))

    late = threading.Thread(target=late_landing)
    late.start()
    try:
        ctx = PipelineContext(run_id="late", run_dir=tmp_path)
        stats = anyio.run(lambda: insert_files(ctx, info, manifest, 250, 2, InsertJournal(journal_path)))
    finally:
        late.join()
    check = info.milvus().client()
    try:
        check.flush(info.name)
        assert count_rows(check, info.name) == 1000  # not 1250: batch 2 is in Milvus once
    finally:
        check.close()
        client.drop_collection(info.name)
        client.close()
    assert (stats.skipped, stats.adopted, stats.inserted) == (500, 250, 250)
    assert time.time() >= deadline  # decided only once the late call could no longer land


def test_a_keyed_resume_upserts_an_in_flight_batch_only_after_the_killed_attempt_could_land(tmp_path: Path) -> None:
    """The killed process' insert of batch 3 lands after the resume began: had the resume upserted it at
    once, the late insert would add those keys a second time (the server's count(*) shows both copies).
    The batches never started go at once."""
    manifest = make(tmp_path, "simple", 2000, rows_per_file=2000)
    server = service_uri("TEST_MILVUS_URI")
    info = _collection(tmp_path, manifest, server, f"resume_keyed_{os.getpid()}")
    entry = manifest.files[0]  # type: ignore[attr-defined]
    batches = list(pq.ParquetFile(manifest.file_path(entry)).iter_batches(batch_size=250))  # type: ignore[attr-defined]
    client = info.milvus().client()
    lines: list[dict[str, object]] = [{"before": 0}]
    for i in range(3):
        client.insert(info.name, arrow_to_rows(batches[i], info.collection_schema))
        lines += [{"started": f"{entry.path}@250#{i}", "rows": 250}, {"landed": f"{entry.path}@250#{i}"}]
    client.flush(info.name)
    deadline = time.time() + 2.5  # the killed attempt's call for batch 3 could land until then
    lines.append({"started": f"{entry.path}@250#3", "rows": 250, "deadline": deadline})
    journal_path = tmp_path / "import.inserted.jsonl"
    journal_path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    landed_at: list[float] = []

    def late_landing() -> None:
        time.sleep(1.5)
        client.insert(info.name, arrow_to_rows(batches[3], info.collection_schema))
        landed_at.append(time.time())

    late = threading.Thread(target=late_landing)
    late.start()
    try:
        ctx = PipelineContext(run_id="late-keyed", run_dir=tmp_path)
        stats = anyio.run(lambda: insert_files(ctx, info, manifest, 250, 2, InsertJournal(journal_path), 0.5))
        late.join()
        n_keys = _distinct_keys(info)
    finally:
        late.join()
        if server:
            client.drop_collection(info.name)
        client.close()
    assert n_keys == (2000, 2000)  # batch 3's keys once, not 250 of them twice
    assert (stats.skipped, stats.upserted, stats.inserted) == (750, 250, 1000)
    resent = [json.loads(x) for x in journal_path.read_text().splitlines()[len(lines) :]]
    upsert = next(e for e in resent if e.get("started") == f"{entry.path}@250#3")
    sent_at = upsert["deadline"] - landing_window(0.5)
    assert sent_at >= deadline > landed_at[0]  # upserted only once the late insert could no longer land


def test_an_interrupted_attempt_records_its_answered_calls_so_the_resume_does_not_wait(tmp_path: Path) -> None:
    """A SIGTERM while a call is out cancels the task once the call returns: the journal must say it
    landed (else the resume would wait out its whole deadline, call_timeout 240 s by default, twice over)."""
    manifest = make(tmp_path, "simple", 1000, rows_per_file=1000)
    info = _collection(tmp_path, manifest)
    journal_path = tmp_path / "import.inserted.jsonl"
    ctx = PipelineContext(run_id="interrupted", run_dir=tmp_path)

    async def interrupted() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(insert_files, ctx, info, manifest, 100, 2, InsertJournal(journal_path))
            while not InsertJournal(journal_path).in_flight:  # cancel while a call is out, as a SIGTERM can
                await anyio.sleep(0.001)
            tg.cancel_scope.cancel()

    anyio.run(interrupted)
    journal = InsertJournal(journal_path)
    assert len(journal.landed) < 10, "the cancel came after the load: the test checks nothing"
    unsettled = [k for k in journal.in_flight if journal.deadlines[k] > time.time()]
    assert unsettled == []  # every call out at the cancel is recorded landed (or settled), none left to wait for
    started = time.monotonic()
    anyio.run(lambda: insert_files(ctx, info, manifest, 100, 2, InsertJournal(journal_path)))
    assert time.monotonic() - started < 30 and _distinct_keys(info) == (1000, 1000)


class _UnavailableInsertMilvus(milvus_pb2_grpc.MilvusServiceServicer):
    """A real gRPC server speaking Milvus' service whose Insert is always UNAVAILABLE (a Milvus restarting):
    it notes, per attempt pymilvus sends, when that attempt's deadline ends on the server's side."""

    def __init__(self) -> None:
        self.deadlines: list[float] = []

    def Connect(self, request: Any, context: Any) -> Any:
        return milvus_pb2.ConnectResponse(status=common_pb2.Status(), identifier=1)

    def DescribeCollection(self, request: Any, context: Any) -> Any:
        fields = [
            schema_pb2.FieldSchema(fieldID=100, name="id", is_primary_key=True, data_type=schema_pb2.Int64),
            schema_pb2.FieldSchema(
                fieldID=101, name="v", data_type=schema_pb2.FloatVector, type_params=[common_pb2.KeyValuePair(key="dim", value="2")]
            ),
        ]
        schema = schema_pb2.CollectionSchema(name="c", fields=fields)
        return milvus_pb2.DescribeCollectionResponse(status=common_pb2.Status(), collectionID=1, schema=schema)

    def Insert(self, request: Any, context: Any) -> Any:
        self.deadlines.append(time.time() + context.time_remaining())
        context.abort(grpc.StatusCode.UNAVAILABLE, "Milvus is restarting")


def test_the_journaled_deadline_covers_pymilvus_last_retry_of_an_insert(tmp_path: Path) -> None:
    """pymilvus retries an UNAVAILABLE insert for the whole call_timeout, each attempt with the whole
    timeout, after back-offs of up to 3 s: its last attempt can end near start + 2 x timeout + 3 s, later
    than start + 2 x timeout; a resume deciding before the journaled deadline could be overtaken by it."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    fake = _UnavailableInsertMilvus()
    milvus_pb2_grpc.add_MilvusServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    journal = InsertJournal(tmp_path / "import.inserted.jsonl")
    client = MilvusClient(uri=f"http://127.0.0.1:{port}")
    try:
        journal.start("data.parquet@2#0", 2, 2.0)
        with pytest.raises(MilvusException):
            client.insert("c", [{"id": 1, "v": [0.1, 0.2]}, {"id": 2, "v": [0.3, 0.4]}], timeout=2.0)
    finally:
        journal.close()
        client.close()
        server.stop(0)
    entry = json.loads((tmp_path / "import.inserted.jsonl").read_text().splitlines()[0])
    recorded = entry["deadline"]  # as journaled by the live sender (a resume caps it once the sender died)
    assert len(fake.deadlines) > 3  # retried, as during an outage
    assert max(fake.deadlines) > recorded - landing_window(2.0) + 2 * 2.0  # beyond start + 2 x timeout
    assert max(fake.deadlines) <= recorded  # but within what the journal recorded


def test_the_default_call_timeout_rides_out_what_pymilvus_retries_rode_out_without_one() -> None:
    """pymilvus uses a call's timeout as its whole retry budget; without one it retried ``retry_times``
    times with growing back-offs (~210 s), which is how a load rode out a Milvus restart before every call
    carried a timeout. A shorter default would fail a load that used to pass."""
    from task_components.milvus.tasks import ImportParams, InsertParams

    defaults = {k: v.default for k, v in inspect.signature(retry_on_rpc_failure).parameters.items()}
    window, back_off = 0.0, defaults["initial_back_off"]
    for _ in range(defaults["retry_times"]):
        window += back_off
        back_off = min(back_off * defaults["back_off_multiplier"], defaults["max_back_off"])
    assert window > 200
    assert ImportParams().call_timeout >= window and InsertParams().call_timeout >= window


def test_a_resume_on_milvus_lite_waits_for_nothing_since_its_server_died_with_the_killed_process(
    tmp_path: Path,
) -> None:
    """Lite serves inside the process that sent the calls: once the resume opened the file (Lite's flock),
    no call of the killed attempt can land, so its in-flight batch is upserted at once, not minutes later."""
    manifest = make(tmp_path, "simple", 1000, rows_per_file=1000)
    info = _collection(tmp_path, manifest)
    entry = manifest.files[0]  # type: ignore[attr-defined]
    journal_path = tmp_path / "import.inserted.jsonl"
    far = time.time() + 600  # what the killed attempt journaled with call_timeout 240 s
    journal_path.write_text(
        json.dumps({"before": 0})
        + "\n"
        + json.dumps({"started": f"{entry.path}@250#0", "rows": 250, "deadline": far, "timeout": 240})
        + "\n"
    )
    ctx = PipelineContext(run_id="lite-resume", run_dir=tmp_path)
    started = time.monotonic()
    stats = anyio.run(lambda: insert_files(ctx, info, manifest, 250, 2, InsertJournal(journal_path)))
    assert time.monotonic() - started < 60
    assert (stats.upserted, stats.inserted) == (250, 750) and _distinct_keys(info) == (1000, 1000)
