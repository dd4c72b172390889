"""dataset.events without a broker: the send schedule, the day's envelope rows, deterministic trace ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from task_components.datasets.events import EventsParams, day_events, envelope, pace
from tests.unit.datasets_helpers import SMALL, fact, run_pack


def test_pace_keeps_the_rate_and_bursts() -> None:
    steady = list(pace(1000, rate=100))
    assert steady[0] == 0 and steady[-1] == pytest.approx(999 / 100)
    bursty = list(pace(5400, rate=100, burst_factor=5, burst_every=10, burst_seconds=2))  # three whole cycles
    in_burst = [t for t in bursty if t % 10 < 2]
    outside = [t for t in bursty if t % 10 >= 2]
    # 2 s at 500/s then 8 s at 100/s per 10 s: 1000 + 800 events per cycle
    assert len(in_burst) / len(outside) == pytest.approx(1000 / 800, rel=0.05)
    assert list(pace(5, rate=0)) == [0.0] * 5  # no limit: everything at once


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("retail")
    run_pack("retail", {**SMALL, "out": str(root / "data"), "start_date": "2024-03-01", "days": 2}, root / "runs")
    return root / "data"


def test_a_day_of_events_is_every_row_in_event_time_order(data: Path) -> None:
    p = EventsParams()
    events = day_events(data, p.tables, "2024-03-01", p)
    rows = {t: fact(data, t).filter(fact(data, t)["dt"].cast(str) == "2024-03-01").height for t in p.tables}
    assert events.num_rows == sum(rows.values()) > 0
    ts = events["event_ts"].to_pylist()
    assert ts == sorted(ts)
    assert set(events["event_type"].to_pylist()) == {f"retail.{t}" for t, n in rows.items() if n}


def test_envelopes_carry_the_row_and_the_same_trace_id_every_time(data: Path) -> None:
    p = EventsParams(tables=["receipts"], schema_version="2.1", source="test")
    events = day_events(data, p.tables, "2024-03-02", p)
    first = events.slice(0, 1).to_pylist()[0]
    a, b = json.loads(envelope(first, "2024-03-02", p)), json.loads(envelope(first, "2024-03-02", p))
    assert a["trace_id"] == b["trace_id"] and a["event_type"] == "retail.receipts"
    assert a["schema_version"] == "2.1" and a["source"] == "test" and a["event_timestamp"].startswith("2024-03-02")
    receipts = fact(data, "receipts")
    match = receipts.filter(receipts["receipt_id"] == a["payload"]["receipt_id"])
    assert match.height == 1 and match["total_cents"][0] == a["payload"]["total_cents"]
    other = events.slice(1, 1).to_pylist()[0]
    assert json.loads(envelope(other, "2024-03-02", p))["trace_id"] != a["trace_id"]
