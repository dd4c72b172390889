"""Bulk-import jobs behind one interface: Milvus 2.4+'s REST jobs API, or 2.3's legacy gRPC calls.

Why two: Milvus 2.3 knows only the gRPC ``Import`` calls, which pymilvus offers only through its ORM
API (removed in pymilvus 3.1; see ``legacy.py``); Milvus 2.4 added the REST v2 import-jobs API, the
one pymilvus' ``bulk_writer`` helpers call. The server's version (``MilvusClient.get_server_version``)
picks the path, so nothing else in the task knows which it is.

The REST client is written here on the standard library rather than calling pymilvus' helpers, so
every call has a timeout we choose and every failure names the endpoint and Milvus' own message. It
posts ``/v2/vectordb/jobs/import/create`` and ``/list`` with the fields pymilvus 3.0's ``bulk_import``
and ``list_import_jobs`` send (less the cloud-only ones), and polls ``/get_progress``, the progress
endpoint Milvus documents from 2.4.0 on (pymilvus 3.0's ``get_import_progress`` posts ``/describe``
instead, which later Milvus releases answer the same way). Within ``timeout`` a call rides out an
outage as pymilvus' gRPC retries do: reads are sent again after any connection failure, a submit only
when it never reached Milvus (connection refused, HTTP 503), since a second submit imports the file
twice. No Milvus 2.4+ server runs in this project's test services: the REST path is tested against a
local HTTP server answering the documented responses (tests/unit/test_import_jobs.py).
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
import urllib.request
from typing import Any

from dag_orchestrator.retry import RetryPolicy, with_retries_sync
from task_components.clients import MilvusTarget, milvus_client
from task_components.milvus.jobs import CALL_TIMEOUT, ImportJobs, ImportJobsError, JobState

__all__ = [
    "CALL_TIMEOUT",
    "ImportJobs",
    "ImportJobsError",
    "JobState",
    "RestImportJobs",
    "open_import_jobs",
    "parse_version",
    "rest_base",
]


def parse_version(text: str) -> tuple[int, int] | None:
    """(major, minor) of what get_server_version returns ("v2.3.5", "2.4.0-rc.1", "2.6.6"), None if unknown."""
    m = re.search(r"(\d+)\.(\d+)", text or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def rest_base(uri: str) -> str:
    """The HTTP base of a Milvus URI: 2.4+ serves REST v2 on the gRPC port (19530)."""
    uri = uri.rstrip("/")
    for scheme in ("tcp://", "grpc://"):
        if uri.startswith(scheme):
            return "http://" + uri[len(scheme) :]
    if uri.startswith(("http://", "https://")):
        return uri
    return "http://" + uri


def _paths(file_name: str) -> tuple[str, ...]:
    """A job detail's ``fileName`` as paths. A detail is one import file, whose path list Milvus prints
    with Go's ``%v`` (``[a]``), several joined by a space, which a path may hold too: the bracket's text
    is taken as one path (the pipeline submits one path per file; a multi-path file matches no location).
    Some builds print the protobuf (``id:1 paths:"a"``); a plain path is taken as it is."""
    quoted = re.findall(r'paths:"([^"]*)"', file_name)
    if quoted:
        return tuple(quoted)
    text = file_name.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return (text,) if text else ()


# a call unanswered is sent again until its deadline: pauses from 0.1 s doubling up to 3 s
_UNANSWERED = RetryPolicy(attempts=1_000_000, backoff=0.1, factor=2.0, max_delay=3.0, jitter=0.1)


class _Unanswered(Exception):
    """A request that got no answer; ``unsent``: it certainly never reached Milvus (safe to send again)."""

    def __init__(self, message: str, unsent: bool) -> None:
        super().__init__(message)
        self.unsent = unsent


class RestImportJobs:
    """Import jobs through Milvus 2.4+'s REST v2 API (the endpoints pymilvus' bulk_writer helpers use)."""

    kind = "REST jobs API (Milvus 2.4+)"

    def __init__(self, uri: str, token: str | None, db_name: str = "default", timeout: float = CALL_TIMEOUT) -> None:
        self.base = rest_base(uri)
        self.token = token
        self.db_name = "" if db_name in ("", "default") else db_name
        self.timeout = timeout

    def _post(self, action: str, body: dict[str, Any]) -> Any:
        """One job call within ``timeout``, sent again while Milvus is unreachable if that is harmless
        (reads always; a submit only if it never reached Milvus)."""
        url = f"{self.base}/v2/vectordb/jobs/import/{action}"
        deadline = time.monotonic() + self.timeout

        def resend(exc: BaseException) -> bool:  # a second submit that reached Milvus imports the file twice
            return isinstance(exc, _Unanswered) and (action != "create" or exc.unsent)

        try:
            raw = with_retries_sync(
                lambda: self._send(url, body, max(0.05, deadline - time.monotonic())),
                _UNANSWERED,
                resend,
                what=f"POST {url}",
                deadline=deadline,
            )
        except _Unanswered as exc:
            raise ImportJobsError(f"POST {url}: {exc}") from exc
        try:
            reply = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ImportJobsError(f"POST {url}: the answer is not JSON: {raw[:200]!r}") from exc
        if not isinstance(reply, dict) or reply.get("code", 0) != 0:
            message = reply.get("message", "") if isinstance(reply, dict) else reply
            code = reply.get("code") if isinstance(reply, dict) else "?"
            raise ImportJobsError(f"POST {url}: Milvus answered code {code}: {message}")
        return reply.get("data") or {}

    def _send(self, url: str, body: dict[str, Any], timeout: float) -> bytes:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.db_name:
            headers["DB-Name"] = self.db_name
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code in (502, 503, 504):  # Milvus (re)starting behind a proxy; 503: the request not taken
                raise _Unanswered(f"HTTP {exc.code} {exc.reason}", unsent=exc.code == 503) from exc
            raise ImportJobsError(f"POST {url}: HTTP {exc.code} {exc.reason}") from exc
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets are OSErrors
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            if isinstance(reason, TimeoutError):
                raise _Unanswered(f"no answer within {self.timeout:g} s", unsent=False) from exc
            if isinstance(reason, (OSError, http.client.HTTPException)):
                raise _Unanswered(str(reason), unsent=isinstance(reason, ConnectionRefusedError)) from exc
            raise ImportJobsError(f"POST {url}: {reason}") from exc

    def submit(self, collection: str, location: str) -> int:
        data = self._post("create", {"collectionName": collection, "dbName": self.db_name, "files": [[location]]})
        try:
            return int(data["jobId"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ImportJobsError(f"import/create answered without a numeric data.jobId: {data!r}") from exc

    def state(self, job: int) -> JobState:
        data = self._post("get_progress", {"jobId": str(job), "dbName": self.db_name})
        files: list[str] = []
        for detail in data.get("details") or []:
            files.extend(_paths(str(detail.get("fileName", ""))))
        return JobState(
            state=str(data.get("state", "")),
            rows=int(data.get("importedRows", 0) or 0),
            reason=str(data.get("reason", "") or ""),
            files=tuple(files),
        )

    def listed(self, collection: str) -> list[tuple[int, JobState]]:
        """Jobs of the collection, each with its files (the list holds none: each is asked for its progress)."""
        data = self._post("list", {"collectionName": collection, "dbName": self.db_name, "pageSize": 1000, "currentPage": 1})
        found = []
        for record in data.get("records") or []:
            if record.get("collectionName", collection) == collection and record.get("jobId"):
                job = int(record["jobId"])
                found.append((job, self.state(job)))
        return found

    def close(self) -> None:
        """Nothing held between calls (one HTTP request each)."""


def open_import_jobs(uri: str, token: str | None, db_name: str, timeout: float = CALL_TIMEOUT) -> ImportJobs:
    """The job API this server speaks: REST from Milvus 2.4, legacy gRPC before or if it will not say
    (a server that cannot answer GetVersion is older than both); ``kind`` then says why."""
    client = milvus_client(MilvusTarget(uri, token, db_name, lite=False), timeout=timeout)
    unknown = ""
    try:
        version = parse_version(str(client.get_server_version(timeout=timeout)))
    except Exception as exc:  # noqa: BLE001 - whatever the refusal, the path every server has
        version, unknown = None, f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    if version is not None and version >= (2, 4):
        return RestImportJobs(uri, token, db_name, timeout)
    from task_components.milvus.legacy import LegacyImportJobs

    api = LegacyImportJobs(uri, token, db_name, timeout)
    if unknown:
        api.kind = f"{api.kind}; the server did not say its version ({unknown[:200]})"
    return api
