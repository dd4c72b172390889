"""Bulk-import jobs behind one interface: Milvus 2.4+'s REST jobs API, or 2.3's legacy gRPC calls.

Why two: Milvus 2.3 knows only the gRPC ``Import`` calls, which pymilvus offers only through its ORM
API (removed in pymilvus 3.1; see ``legacy.py``); Milvus 2.4 added the REST v2 import-jobs API
(``/v2/vectordb/jobs/import/create``, ``/get_progress``, ``/list``), the one pymilvus' own
``bulk_writer.bulk_import`` / ``get_import_progress`` / ``list_import_jobs`` call. The server's version
(``MilvusClient.get_server_version``) picks the path, so nothing else in the task knows which it is.

The REST client is written here on the standard library (request and response shapes as pymilvus'
bulk_import.py sends and Milvus documents them) rather than calling pymilvus' helpers, so every call
has a timeout we choose and every failure names the endpoint and Milvus' own message. No Milvus 2.4+
server runs in this project's test services: the REST path is tested against a local HTTP server
answering the documented responses (tests/unit/test_import_jobs.py).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "SUBMIT_TIMEOUT",
    "ImportJobs",
    "ImportJobsError",
    "JobState",
    "RestImportJobs",
    "open_import_jobs",
    "parse_version",
    "rest_base",
]

SUBMIT_TIMEOUT = 30.0  # seconds any one job call may take (a submit runs under a cancel shield)


class ImportJobsError(RuntimeError):
    """A job call failed or went unanswered; the message names the endpoint and Milvus' reason."""


@dataclass(frozen=True, slots=True)
class JobState:
    state: str  # Milvus' own name: Pending, Importing, Completed, Failed, ... (2.3 adds Started, Persisted)
    rows: int  # rows imported (2.3: parsed) so far
    reason: str = ""
    files: tuple[str, ...] = ()

    @property
    def completed(self) -> bool:
        return self.state == "Completed"

    @property
    def failed(self) -> bool:
        return self.state.startswith("Failed")  # 2.3 also reports "Failed and cleaned"


class ImportJobs(Protocol):
    kind: str

    def submit(self, collection: str, location: str) -> int: ...
    def state(self, job: int) -> JobState: ...
    def listed(self, collection: str) -> list[tuple[int, JobState]]: ...
    def close(self) -> None: ...


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
    """A job detail's ``fileName`` as paths: Milvus prints the file list as ``[a b]``; some builds print
    the protobuf (``id:1 paths:"a"``); a plain path is taken as it is."""
    quoted = re.findall(r'paths:"([^"]*)"', file_name)
    if quoted:
        return tuple(quoted)
    text = file_name.strip()
    if text.startswith("[") and text.endswith("]"):
        return tuple(text[1:-1].split())
    return (text,) if text else ()


class RestImportJobs:
    """Import jobs through Milvus 2.4+'s REST v2 API (the calls pymilvus' bulk_writer.bulk_import makes)."""

    kind = "REST jobs API (Milvus 2.4+)"

    def __init__(self, uri: str, token: str | None, db_name: str = "default", timeout: float = SUBMIT_TIMEOUT) -> None:
        self.base = rest_base(uri)
        self.token = token
        self.db_name = "" if db_name in ("", "default") else db_name
        self.timeout = timeout

    def _post(self, action: str, body: dict[str, Any]) -> Any:
        url = f"{self.base}/v2/vectordb/jobs/import/{action}"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if self.db_name:
            headers["DB-Name"] = self.db_name
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise ImportJobsError(f"POST {url}: HTTP {exc.code} {exc.reason}") from exc
        except TimeoutError as exc:
            raise ImportJobsError(f"POST {url}: no answer within {self.timeout:g} s") from exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise ImportJobsError(f"POST {url}: no answer within {self.timeout:g} s") from exc
            raise ImportJobsError(f"POST {url}: {exc.reason}") from exc
        try:
            reply = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ImportJobsError(f"POST {url}: the answer is not JSON: {raw[:200]!r}") from exc
        if not isinstance(reply, dict) or reply.get("code", 0) != 0:
            message = reply.get("message", "") if isinstance(reply, dict) else reply
            code = reply.get("code") if isinstance(reply, dict) else "?"
            raise ImportJobsError(f"POST {url}: Milvus answered code {code}: {message}")
        return reply.get("data") or {}

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
        return JobState(state=str(data.get("state", "")), rows=int(data.get("importedRows", 0) or 0),
                        reason=str(data.get("reason", "") or ""), files=tuple(files))  # fmt: skip

    def listed(self, collection: str) -> list[tuple[int, JobState]]:
        """Jobs of the collection, each with its files (the list holds none: each is asked for its progress)."""
        data = self._post("list", {"collectionName": collection, "dbName": self.db_name,
                                   "pageSize": 1000, "currentPage": 1})  # fmt: skip
        found = []
        for record in data.get("records") or []:
            if record.get("collectionName", collection) == collection and record.get("jobId"):
                job = int(record["jobId"])
                found.append((job, self.state(job)))
        return found

    def close(self) -> None:
        """Nothing held between calls (one HTTP request each)."""


def open_import_jobs(uri: str, token: str | None, db_name: str, timeout: float = SUBMIT_TIMEOUT) -> ImportJobs:
    """The job API this server speaks: REST from Milvus 2.4, legacy gRPC before (or if it will not say)."""
    from pymilvus import MilvusClient

    kwargs: dict[str, Any] = {"uri": uri, "timeout": timeout}
    if token:
        kwargs["token"] = token
    if db_name and db_name != "default":
        kwargs["db_name"] = db_name
    client = MilvusClient(**kwargs)
    try:
        version = parse_version(str(client.get_server_version(timeout=timeout)))
    finally:
        client.close()
    if version is not None and version >= (2, 4):
        return RestImportJobs(uri, token, db_name, timeout)
    from task_components.milvus.legacy import LegacyImportJobs

    return LegacyImportJobs(uri, token, db_name, timeout)
