"""sink.milvus on an embedded Milvus Lite file (records with vectors upserted idempotently, rows refused), and
on the real Milvus server reached through a loopback forwarder this test closes: an unreachable server is an
outage (retried, then the run fails), never rows dead-lettered."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from config.settings import Settings
from task_components.contracts import StreamRecord
from task_components.sinks.milvus import MilvusSink, MilvusSinkParams
from task_components.streaming.resilience import (
    CircuitBreaker,
    RecordsRefused,
    RetrySettings,
    SinkDownError,
    write_with_retry,
)
from tests.integration.conftest import service_uri

pytestmark = pytest.mark.integration


def record(i: int, vector: list[float] | None) -> StreamRecord:
    value = {"customer_id": f"C{i:04d}", "amount": i * 1.5, "country": "US", "vector": vector, "note": None}
    return StreamRecord("in", 0, i, b"", value, f"cid-{i}")


@pytest.mark.slow
@pytest.mark.anyio
async def test_records_with_vectors_are_upserted_once_whatever_the_redeliveries(tmp_path: Path) -> None:
    sink = MilvusSink(MilvusSinkParams(collection="stream_vectors", key="customer_id", dimension=4, uri=str(tmp_path / "milvus.db")))
    batch = [record(i, [float(i), 0.0, 1.0, 0.5] if i % 3 else None) for i in range(30)]
    async with sink.open(Settings()) as writer:
        assert await writer.write(batch) == 20
        assert await writer.write(batch[:10]) == 6  # a redelivered batch: same rows again
        rows = writer.client.query("stream_vectors", filter="", output_fields=["count(*)"], consistency_level="Strong")
        assert rows[0]["count(*)"] == 20
        fields = ["amount", "country", "vector"]
        (got,) = writer.client.query("stream_vectors", filter='customer_id == "C0004"', output_fields=fields, consistency_level="Strong")
        assert got["amount"] == 6.0 and got["country"] == "US" and list(got["vector"]) == [4.0, 0.0, 1.0, 0.5]


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_missing_collection_without_dimension_is_a_clear_error(tmp_path: Path) -> None:
    sink = MilvusSink(MilvusSinkParams(collection="nowhere", key="id", uri=str(tmp_path / "m.db")))
    with pytest.raises(LookupError, match="'nowhere' does not exist"):
        async with sink.open(Settings()):
            pass


@pytest.mark.slow
def test_without_any_milvus_uri_the_task_names_the_setting() -> None:
    from task_components.sinks.milvus import MilvusSinkComponent

    task = MilvusSinkComponent("vectors", MilvusSinkParams(collection="c", key="id"))
    assert "MILVUS__URI is not set" in (task.settings_problem(Settings.model_validate({})) or "")


@pytest.mark.slow
@pytest.mark.anyio
async def test_rows_milvus_cannot_take_are_refused_and_the_others_upserted(tmp_path: Path) -> None:
    sink = MilvusSink(MilvusSinkParams(collection="stream_refusals", key="customer_id", dimension=4, uri=str(tmp_path / "milvus.db")))
    batch = [record(i, [float(i), 0.0, 1.0, 0.5]) for i in range(6)]
    batch[1].value["vector"] = [1.0, 2.0]  # type: ignore[index]  # not the collection's dimension
    batch[2].value["vector"] = ["a", "b", "c", "d"]  # type: ignore[index]
    batch[3].value["customer_id"] = "K" * 600  # type: ignore[index]  # above the VarChar's 512
    batch[4].value["amount"] = {"deep": [1, {"x": None}]}  # type: ignore[index]  # a dynamic JSON field: fine
    batch[5].value["big"] = 10**30  # type: ignore[index]  # pymilvus refuses the whole call: found row by row
    async with sink.open(Settings()) as writer:
        with pytest.raises(RecordsRefused) as refused:
            await writer.write(batch)
        rows = writer.client.query("stream_refusals", filter="", output_fields=["customer_id"], consistency_level="Strong")
    assert sorted(r["customer_id"] for r in rows) == ["C0000", "C0004"]
    why = {f.record.offset: (f.rule, f.reason) for f in refused.value.refused}
    assert sorted(why) == [1, 2, 3, 5] and refused.value.written == 2
    assert why[5][0] == "refused" and "DataNotMatchException" in why[5][1]
    assert why[1] == ("row", "vector has 2 numbers, the collection's dimension is 4")
    assert why[2] == ("row", "vector is not a list of numbers")
    assert why[3][0] == "row" and "above max_key_bytes 512" in why[3][1]


class Forwarder:
    """A loopback TCP forwarder to the Milvus server: closing it makes the server unreachable for the sink's
    client (connections cut, the port refused), as a server that went away, without touching the server."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.sockets = target, []  # type: ignore[var-annotated]
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        for s in (self.server, *self.sockets):
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept/recv (close alone does not)
            except OSError:
                pass
            s.close()


@pytest.mark.anyio
async def test_an_unreachable_milvus_server_is_an_outage_never_rows_dead_lettered() -> None:
    """pymilvus 3 raises a plain MilvusException (code 2) when the server is gone: it was taken for bad rows,
    so a one-row batch was dead-lettered and its offset committed."""
    from pymilvus import MilvusClient

    server = service_uri("TEST_MILVUS_URI")
    host, port = server.rsplit("//", 1)[-1].rsplit(":", 1)
    forwarder = Forwarder((host, int(port)))
    name = f"outage_{uuid.uuid4().hex[:8]}"
    sink = MilvusSink(
        MilvusSinkParams(collection=name, key="customer_id", dimension=4, call_timeout=5, uri=f"http://127.0.0.1:{forwarder.port}")
    )
    vector = [0.1, 0.2, 0.3, 0.4]
    try:
        async with sink.open(Settings()) as writer:
            assert await writer.write([record(0, vector)]) == 1
            forwarder.close()
            started = time.monotonic()
            breaker = CircuitBreaker(threshold=1)
            with pytest.raises(SinkDownError, match="sink milvus failed"):
                await write_with_retry("milvus", writer, [record(1, vector)], RetrySettings(3, 0.1, 0.1, 1.0), breaker)
            assert breaker.outages == 1
            with pytest.raises(Exception) as outage:  # a larger batch: not tried row by row, not refused
                await writer.write([record(i, vector) for i in range(2, 6)])
            assert not isinstance(outage.value, RecordsRefused), outage.value
            assert time.monotonic() - started < 30
    finally:
        forwarder.close()
        direct = MilvusClient(uri=server)
        direct.drop_collection(name)
        direct.close()
