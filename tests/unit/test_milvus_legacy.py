"""pymilvus' legacy (ORM) calls live in one module, and only its own known warnings are silenced.

pymilvus 3.1 removes ``connections`` and the ``utility`` bulk-insert calls; the move to whatever
replaces them must be one file (task_components/milvus/legacy.py). These tests read the project's
sources, so a legacy call added anywhere else fails here, and check that the silencing is narrow:
the same deprecated call made from any other module still raises under pytest's ``error`` filter.
"""

from __future__ import annotations

import ast
import time
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from pymilvus.decorators import PyMilvusDeprecationWarning
from pymilvus.grpc_gen import common_pb2, milvus_pb2, milvus_pb2_grpc

from task_components.milvus import legacy
from task_components.milvus.import_jobs import ImportJobsError, open_import_jobs

ROOT = Path(__file__).resolve().parents[2]
LEGACY = ROOT / "task_components" / "milvus" / "legacy.py"
ORM_NAMES = {"connections", "utility", "Collection", "Partition", "Index"}  # pymilvus' ORM entry points


def _sources() -> list[Path]:
    found = [
        p
        for d in ("task_components", "pipeline", "dag_orchestrator", "config", "bench", "deploy")
        for p in (ROOT / d).rglob("*.py")
        if ".venvs" not in p.parts
    ]
    return [*found, *ROOT.glob("*.py")]


def _orm_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pymilvus"):
            hits += [f"{path.relative_to(ROOT)}:{node.lineno} {a.name}" for a in node.names if a.name in ORM_NAMES]
            if (node.module or "").startswith("pymilvus.orm"):
                hits.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
        if isinstance(node, ast.Import):
            hits += [f"{path.relative_to(ROOT)}:{node.lineno} {a.name}" for a in node.names if a.name.startswith("pymilvus.orm")]
    return hits


def test_only_the_legacy_module_uses_pymilvus_orm_api() -> None:
    sources = _sources()
    assert LEGACY in sources and len(sources) > 50  # the scan really covers the project
    offenders = [hit for p in sources if p != LEGACY for hit in _orm_imports(p)]
    assert offenders == [], "legacy pymilvus calls belong in task_components/milvus/legacy.py"
    assert _orm_imports(LEGACY), "legacy.py is where the ORM calls are (else this test checks nothing)"


def test_the_legacy_silencing_covers_only_calls_made_from_the_legacy_module() -> None:
    from pymilvus import connections

    legacy._quiet()  # what every legacy call installs first
    # the same deprecated call from here (any module but legacy.py) is still an error under pytest
    with pytest.raises(PyMilvusDeprecationWarning, match=r"connections\.connect.*removed in PyMilvus 3\.1"):
        connections.connect("never", uri="http://127.0.0.1:9")


def test_the_silenced_names_are_the_legacy_calls_the_module_makes() -> None:
    called = set()
    for node in ast.walk(ast.parse(LEGACY.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ORM_NAMES:
            called.add(f"{node.value.id}.{node.attr}")
    assert called == {
        "connections.connect",
        "connections.disconnect",
        "utility.do_bulk_insert",
        "utility.get_bulk_insert_state",
        "utility.list_bulk_insert_tasks",
    }
    assert all(name.replace(".", r"\.") in legacy._KNOWN for name in called)


class _SlowImportMilvus(milvus_pb2_grpc.MilvusServiceServicer):
    """A real gRPC server on 127.0.0.1 speaking Milvus' service: it accepts connections and sits on Import."""

    def __init__(self) -> None:
        self.imports: list[list[str]] = []

    def Connect(self, request: Any, context: Any) -> Any:
        return milvus_pb2.ConnectResponse(status=common_pb2.Status(), identifier=1)

    def Import(self, request: Any, context: Any) -> Any:
        self.imports.append(list(request.files))
        time.sleep(3.0)
        return milvus_pb2.ImportResponse(status=common_pb2.Status(), tasks=[7])


def test_a_legacy_submit_that_gets_no_answer_fails_after_its_timeout() -> None:
    """The submit runs under a cancel shield (job and journal entry together): without a timeout a
    server that never answers would hold the task, and a SIGTERM, for ever."""
    fake = _SlowImportMilvus()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    milvus_pb2_grpc.add_MilvusServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        api = legacy.LegacyImportJobs(f"http://127.0.0.1:{port}", None, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(ImportJobsError, match=r"do_bulk_insert of a/data-1\.parquet: no answer within 0\.5 s"):
            api.submit("c", "a/data-1.parquet")
        assert time.monotonic() - started < 2.0 and fake.imports == [["a/data-1.parquet"]]  # sent once, not retried
        api.close()
    finally:
        server.stop(0)


class _VersionMilvus(milvus_pb2_grpc.MilvusServiceServicer):
    """A real gRPC server speaking Milvus' service that answers GetVersion with ``version`` (or, empty,
    does not implement it, as a server older than the call)."""

    def __init__(self, version: str) -> None:
        self.version = version

    def Connect(self, request: Any, context: Any) -> Any:
        return milvus_pb2.ConnectResponse(status=common_pb2.Status(), identifier=1)

    def GetVersion(self, request: Any, context: Any) -> Any:
        if not self.version:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "unknown method GetVersion")
        return milvus_pb2.GetVersionResponse(status=common_pb2.Status(), version=self.version)


@pytest.mark.parametrize(("version", "kind"), [("", "gRPC"), ("v2.3.5", "gRPC"), ("v2.4.1", "REST")])
def test_the_job_api_follows_the_server_version_and_a_server_that_will_not_say_gets_the_legacy_one(version: str, kind: str) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    milvus_pb2_grpc.add_MilvusServiceServicer_to_server(_VersionMilvus(version), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        api = open_import_jobs(f"http://127.0.0.1:{port}", None, "default", timeout=2.0)
        try:
            assert api.kind.startswith(kind)
            assert ("did not say its version" in api.kind) == (not version)
        finally:
            api.close()
    finally:
        server.stop(0)
