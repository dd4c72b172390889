"""The REST import-jobs path (Milvus 2.4+) against a real local HTTP server answering documented JSON.

No Milvus 2.4+ server runs in this project's services, so these responses are the documented ones
(Milvus REST v2 "Import" reference: create -> ``data.jobId``; get_progress -> ``data.state``,
``importedRows``, ``reason``, ``details[].fileName``, details empty until the job's pre-import is done;
list -> ``data.records``), served by a tiny http.server on 127.0.0.1. The create body checked holds the
fields pymilvus 3.0's bulk_import sends; progress is polled at Milvus' documented ``get_progress``
(pymilvus 3.0's get_import_progress posts ``describe``).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest

from dag_orchestrator import PipelineContext
from task_components.milvus.bulk import MilvusImportError, adopt_listed_jobs, wait_jobs
from task_components.milvus.import_jobs import ImportJobsError, RestImportJobs, _paths, parse_version, rest_base

JOB = "448707763884413158"
FILE = "runs/abc/data-00001.parquet"


class FakeMilvusRest:
    """Answers /v2/vectordb/jobs/import/* like Milvus 2.4 does; records every request it got."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.polls = 0
        self.complete_after = 2  # get_progress polls before the job reports Completed
        self.fail_with = ""
        self.delay = 0.0
        self.file_name = f"[{FILE}]"
        self.pre_importing = 0  # get_progress polls answered "PreImporting" with no details (no tasks yet)

    def answer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        action = path.rsplit("/", 1)[-1]
        if action == "create":
            if body.get("collectionName") == "missing":
                return {"code": 100, "message": "collection not found[collection=missing]"}
            return {"code": 0, "data": {"jobId": JOB}}
        if action == "get_progress":
            self.polls += 1
            if self.polls <= self.pre_importing:
                return {
                    "code": 0,
                    "data": {
                        "collectionName": "c",
                        "jobId": body["jobId"],
                        "state": "PreImporting",
                        "progress": 10,
                        "importedRows": 0,
                        "totalRows": 0,
                        "fileSize": 0,
                        "details": [],
                    },
                }
            done = self.polls > self.complete_after
            state = "Failed" if self.fail_with else ("Completed" if done else "Importing")
            detail = {
                "fileName": self.file_name,
                "fileSize": 31567874,
                "importedRows": 3000 if done else 1000,
                "progress": 100 if done else 40,
                "state": state,
                "totalRows": 3000,
                "completeTime": "2024-05-18T02:57:11Z" if done else "",
            }
            return {
                "code": 0,
                "data": {
                    "collectionName": "c",
                    "jobId": body["jobId"],
                    "state": state,
                    "progress": detail["progress"],
                    "importedRows": detail["importedRows"],
                    "totalRows": 3000,
                    "fileSize": 31567874,
                    "reason": self.fail_with,
                    "completeTime": detail["completeTime"],
                    "details": [detail],
                },
            }
        if action == "list":
            return {
                "code": 0,
                "data": {
                    "records": [
                        {"collectionName": body["collectionName"], "jobId": JOB, "progress": 100, "state": "Completed"},
                        {"collectionName": "other", "jobId": "7", "progress": 100, "state": "Completed"},
                    ]
                },
            }
        return {"code": 404, "message": f"unknown action {action}"}


def _serve(fake: FakeMilvusRest, port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fake.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            time.sleep(fake.delay)
            raw = json.dumps(fake.answer(self.path, body)).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (the timeout test)

        def log_message(self, *args: Any) -> None:
            pass  # keep test output clean

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


@pytest.fixture
def milvus_rest() -> Iterator[tuple[FakeMilvusRest, str]]:
    fake = FakeMilvusRest()
    server = _serve(fake)
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_submit_sends_pymilvus_request_shape_and_returns_the_job_id(milvus_rest: tuple[FakeMilvusRest, str]) -> None:
    fake, uri = milvus_rest
    api = RestImportJobs(uri, "root:Milvus", "analytics")
    assert api.submit("c", FILE) == int(JOB)
    path, headers, body = fake.requests[0]
    assert path == "/v2/vectordb/jobs/import/create"
    assert body == {"collectionName": "c", "dbName": "analytics", "files": [[FILE]]}
    assert headers["authorization"] == "Bearer root:Milvus" and headers["db-name"] == "analytics"


def test_state_reads_progress_rows_and_files(milvus_rest: tuple[FakeMilvusRest, str]) -> None:
    fake, uri = milvus_rest
    fake.complete_after = 0
    state = RestImportJobs(uri, None).state(int(JOB))
    assert fake.requests[0][0] == "/v2/vectordb/jobs/import/get_progress"
    assert fake.requests[0][2]["jobId"] == JOB  # a string, as Milvus documents it
    assert "authorization" not in fake.requests[0][1]
    assert (state.state, state.rows, state.files, state.completed, state.failed) == ("Completed", 3000, (FILE,), True, False)


@pytest.mark.parametrize("file_name", [f"[{FILE}]", f'id:449839014328146740 paths:"{FILE}" ', FILE])
def test_listed_jobs_are_matched_to_their_file_whatever_form_milvus_prints(milvus_rest: tuple[FakeMilvusRest, str], file_name: str) -> None:
    fake, uri = milvus_rest
    fake.file_name = file_name
    api = RestImportJobs(uri, None)
    adopted = anyio.run(adopt_listed_jobs, PipelineContext(run_id="adopt"), api, "c", {FILE}, 5.0)
    assert adopted == {FILE: int(JOB)}  # the other collection's job is not taken
    assert [r[0].rsplit("/", 1)[1] for r in fake.requests] == ["list", "get_progress"]


def test_a_job_still_pre_importing_is_awaited_until_it_names_its_file(milvus_rest: tuple[FakeMilvusRest, str]) -> None:
    """Killed between submit and journal entry, resumed while Milvus still pre-imports the job: it names
    no files yet (details come from its import tasks), and skipping it would submit the file again."""
    fake, uri = milvus_rest
    fake.pre_importing = 3
    ctx = PipelineContext(run_id="adopt")
    adopted = anyio.run(adopt_listed_jobs, ctx, RestImportJobs(uri, None), "c", {FILE}, 10.0, 0.2)
    assert adopted == {FILE: int(JOB)} and fake.polls == 4


def test_a_job_that_never_names_its_files_refuses_the_resume(milvus_rest: tuple[FakeMilvusRest, str]) -> None:
    fake, uri = milvus_rest
    fake.pre_importing = 10**6
    ctx = PipelineContext(run_id="adopt")
    started = time.monotonic()
    with pytest.raises(
        MilvusImportError,
        match=rf"import jobs {JOB} \(PreImporting\) of collection 'c' still name "
        r"no files after 1 s.*import them twice",
    ):
        anyio.run(adopt_listed_jobs, ctx, RestImportJobs(uri, None), "c", {FILE}, 1.0, 0.2)
    assert 1.0 <= time.monotonic() - started < 3.0


def test_a_path_holding_a_space_is_one_path() -> None:
    assert _paths("[runs/my run/data-00001.parquet]") == ("runs/my run/data-00001.parquet",)


def test_milvus_error_code_names_the_endpoint_and_milvus_message(milvus_rest: tuple[FakeMilvusRest, str]) -> None:
    _, uri = milvus_rest
    with pytest.raises(ImportJobsError, match=r"import/create: Milvus answered code 100: collection not found"):
        RestImportJobs(uri, None).submit("missing", FILE)


def test_a_call_that_gets_no_answer_fails_after_its_timeout(milvus_rest: tuple[FakeMilvusRest, str]) -> None:
    fake, uri = milvus_rest
    fake.delay = 2.0
    started = time.monotonic()
    with pytest.raises(ImportJobsError, match=r"no answer within 0.5 s"):
        RestImportJobs(uri, None, timeout=0.5).submit("c", FILE)
    assert time.monotonic() - started < 2.0
    assert len(fake.requests) == 1  # a submit that may have reached Milvus is never sent again


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("action", ["submit", "state"])
def test_calls_ride_out_a_milvus_that_is_not_listening_yet(action: str) -> None:
    """A Milvus restart mid-load: connections refused for a while. Nothing reached Milvus, so the submit
    too is sent again, within the call's timeout (pymilvus' gRPC calls retry the same way)."""
    port = _free_port()
    fake = FakeMilvusRest()
    fake.complete_after = 0
    server: list[ThreadingHTTPServer] = []

    def start_late() -> None:
        time.sleep(1.0)
        server.append(_serve(fake, port))

    late = threading.Thread(target=start_late)
    late.start()
    try:
        api = RestImportJobs(f"http://127.0.0.1:{port}", None, timeout=10.0)
        if action == "submit":
            assert api.submit("c", FILE) == int(JOB)
        else:
            assert api.state(int(JOB)).completed
    finally:
        late.join()
        for s in server:
            s.shutdown()
            s.server_close()
    assert len(fake.requests) == 1


def test_an_unreachable_milvus_fails_after_the_call_timeout() -> None:
    port = _free_port()
    started = time.monotonic()
    with pytest.raises(ImportJobsError, match=rf"POST http://127.0.0.1:{port}/v2/vectordb/jobs/import/get_progress: "):
        RestImportJobs(f"http://127.0.0.1:{port}", None, timeout=1.0).state(int(JOB))
    assert 0.8 <= time.monotonic() - started < 2.5


def test_wait_jobs_polls_fast_at_first_and_reports_completion(milvus_rest: tuple[FakeMilvusRest, str]) -> None:
    fake, uri = milvus_rest
    fake.complete_after = 3
    ctx = PipelineContext(run_id="jobs")
    started = time.monotonic()
    rows = anyio.run(wait_jobs, ctx, RestImportJobs(uri, None), {int(JOB): FILE}, 3000, 5.0)
    # 3 polls before Completed: sleeps of 0.1, 0.15, 0.225 s, not three 5 s poll intervals
    assert rows == 3000 and fake.polls == 4 and time.monotonic() - started < 2.0


def test_a_failed_job_raises_with_milvus_reason(milvus_rest: tuple[FakeMilvusRest, str]) -> None:
    fake, uri = milvus_rest
    fake.fail_with = "the field 'embedding' is not found in the parquet file"
    ctx = PipelineContext(run_id="jobs")
    with pytest.raises(MilvusImportError, match=rf"bulk import of {FILE} failed in Milvus: the field 'embedding'"):
        anyio.run(wait_jobs, ctx, RestImportJobs(uri, None), {int(JOB): FILE}, 3000, 0.1)


@pytest.mark.parametrize(("text", "want"), [("v2.3.5-lite", (2, 3)), ("2.4.0-rc.1", (2, 4)), ("2.6.6", (2, 6)), ("unknown", None)])
def test_server_versions_parse(text: str, want: tuple[int, int] | None) -> None:
    assert parse_version(text) == want


def test_rest_base_of_milvus_uris() -> None:
    assert rest_base("http://127.0.0.1:19530/") == "http://127.0.0.1:19530"
    assert rest_base("tcp://127.0.0.1:19530") == "http://127.0.0.1:19530"
    assert rest_base("127.0.0.1:19530") == "http://127.0.0.1:19530"
