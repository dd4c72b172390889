"""sink.milvus on an embedded Milvus Lite file (no server): records with vectors upserted, idempotently."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import Settings
from task_components.contracts import StreamRecord
from task_components.sinks.milvus import MilvusSink, MilvusSinkParams
from task_components.sinks.resilience import RecordsRefused

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def record(i: int, vector: list[float] | None) -> StreamRecord:
    value = {"customer_id": f"C{i:04d}", "amount": i * 1.5, "country": "US", "vector": vector, "note": None}
    return StreamRecord("in", 0, i, b"", value, f"cid-{i}")


@pytest.mark.anyio
async def test_records_with_vectors_are_upserted_once_whatever_the_redeliveries(tmp_path: Path) -> None:
    sink = MilvusSink(MilvusSinkParams(collection="stream_vectors", key="customer_id", dimension=4,
                                       uri=str(tmp_path / "milvus.db")))  # fmt: skip
    batch = [record(i, [float(i), 0.0, 1.0, 0.5] if i % 3 else None) for i in range(30)]
    async with sink.open(Settings()) as writer:
        assert await writer.write(batch) == 20
        assert await writer.write(batch[:10]) == 6  # a redelivered batch: same rows again
        rows = writer.client.query("stream_vectors", filter="", output_fields=["count(*)"], consistency_level="Strong")
        assert rows[0]["count(*)"] == 20
        fields = ["amount", "country", "vector"]
        (got,) = writer.client.query(
            "stream_vectors", filter='customer_id == "C0004"', output_fields=fields, consistency_level="Strong"
        )
        assert got["amount"] == 6.0 and got["country"] == "US" and list(got["vector"]) == [4.0, 0.0, 1.0, 0.5]


@pytest.mark.anyio
async def test_a_missing_collection_without_dimension_is_a_clear_error(tmp_path: Path) -> None:
    sink = MilvusSink(MilvusSinkParams(collection="nowhere", key="id", uri=str(tmp_path / "m.db")))
    with pytest.raises(LookupError, match="'nowhere' does not exist"):
        async with sink.open(Settings()):
            pass


def test_without_any_milvus_uri_the_task_names_the_setting() -> None:
    from task_components.sinks.milvus import MilvusSinkComponent

    task = MilvusSinkComponent("vectors", MilvusSinkParams(collection="c", key="id"))
    assert "MILVUS__URI is not set" in (task.settings_problem(Settings.model_validate({})) or "")


@pytest.mark.anyio
async def test_rows_milvus_cannot_take_are_refused_and_the_others_upserted(tmp_path: Path) -> None:
    sink = MilvusSink(MilvusSinkParams(collection="stream_refusals", key="customer_id", dimension=4,
                                       uri=str(tmp_path / "milvus.db")))  # fmt: skip
    batch = [record(i, [float(i), 0.0, 1.0, 0.5]) for i in range(6)]
    batch[1].value["vector"] = [1.0, 2.0]  # type: ignore[index]  # not the collection's dimension
    batch[2].value["vector"] = ["a", "b", "c", "d"]  # type: ignore[index]
    batch[3].value["customer_id"] = "K" * 600  # type: ignore[index]  # above the VarChar's 512
    batch[4].value["amount"] = {"deep": [1, {"x": None}]}  # type: ignore[index]  # a dynamic JSON field: fine
    batch[5].value["big"] = 10**30  # type: ignore[index]  # pymilvus refuses the whole call: found row by row
    async with sink.open(Settings()) as writer:
        with pytest.raises(RecordsRefused) as refused:
            await writer.write(batch)
        rows = writer.client.query("stream_refusals", filter="", output_fields=["customer_id"],
                                   consistency_level="Strong")  # fmt: skip
    assert sorted(r["customer_id"] for r in rows) == ["C0000", "C0004"]
    why = {f.record.offset: (f.rule, f.reason) for f in refused.value.refused}
    assert sorted(why) == [1, 2, 3, 5] and refused.value.written == 2
    assert why[5][0] == "refused" and "DataNotMatchException" in why[5][1]
    assert why[1] == ("row", "vector has 2 numbers, the collection's dimension is 4")
    assert why[2] == ("row", "vector is not a list of numbers")
    assert why[3][0] == "row" and "above max_key_bytes 512" in why[3][1]
