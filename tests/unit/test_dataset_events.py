"""dataset.events without a broker: the send schedule, the day's lifecycle events, deterministic trace ids,
dead letters and the circuit breaker (a stand-in producer: what is tested is our classification and resend)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

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
    p = EventsParams(tables=["receipts", "online_orders", "truck_moves"], event_types="table")
    events = day_events(data, p.tables, "2024-03-01", p.event_types)
    rows = {t: fact(data, t).filter(fact(data, t)["dt"].cast(str) == "2024-03-01").height for t in p.tables}
    assert events.num_rows == sum(rows.values()) > 0
    ts = events["event_ts"].to_pylist()
    assert ts == sorted(ts)
    assert set(events["event_type"].to_pylist()) == {f"retail.{t}" for t, n in rows.items() if n}


def test_each_fact_row_becomes_its_lifecycle_events_in_time_order_per_key(data: Path) -> None:
    p = EventsParams()
    events = day_events(data, p.tables, "2024-03-01").to_pylist()
    day = {t: fact(data, t).filter(fact(data, t)["dt"].cast(str) == "2024-03-01") for t in p.tables}
    kinds = Counter(e["event_type"] for e in events)
    assert kinds["receipt_created"] == kinds["payment_processed"] == day["receipts"].height > 0
    assert kinds["receipt_line_added"] == day["receipt_lines"].height
    orders = day["online_orders"].height
    assert kinds["online_order_created"] == kinds["online_order_picked"] == kinds["online_order_shipped"] == orders > 0
    txns = day["store_inventory_txn"].height + day["dc_inventory_txn"].height
    assert kinds["inventory_updated"] == txns
    zero = sum(int((day[t]["balance_after"] == 0).sum()) for t in ("store_inventory_txn", "dc_inventory_txn"))
    assert kinds["stockout_detected"] == zero
    assert kinds["truck_departed"] == kinds["truck_arrived"] == day["truck_moves"].height
    by_key: dict[str, list[Any]] = defaultdict(list)
    for e in events:
        by_key[e["key"]].append(e["event_ts"])
    assert all(ts == sorted(ts) for ts in by_key.values())
    # one order's three events: created < picked < shipped; a receipt is created before its lines, paid after
    first = json.loads(next(e for e in events if e["event_type"] == "online_order_created")["payload"])["order_id"]
    mine = [e["event_type"] for e in events if e["table"] == "online_orders" and json.loads(e["payload"])["order_id"] == first]
    assert mine == ["online_order_created", "online_order_picked", "online_order_shipped"]
    rid = json.loads(next(e for e in events if e["event_type"] == "receipt_created")["payload"])["receipt_id"]
    steps = [
        e["event_type"] for e in events if e["table"] in ("receipts", "receipt_lines") and json.loads(e["payload"])["receipt_id"] == rid
    ]
    assert steps[0] == "receipt_created" and steps[-1] == "payment_processed" and set(steps[1:-1]) == {"receipt_line_added"}
    line = next(e for e in events if e["event_type"] == "receipt_line_added")
    assert json.loads(line["payload"])["store_id"] == int(line["key"].removeprefix("store-"))


def test_envelopes_carry_the_row_and_the_same_trace_id_every_time(data: Path) -> None:
    p = EventsParams(tables=["receipts"], schema_version="2.1", source="test", event_types="table")
    events = day_events(data, p.tables, "2024-03-02", p.event_types)
    first = events.slice(0, 1).to_pylist()[0]
    a, b = json.loads(envelope(first, "2024-03-02", p)), json.loads(envelope(first, "2024-03-02", p))
    assert a["trace_id"] == b["trace_id"] and a["event_type"] == "retail.receipts"
    assert a["schema_version"] == "2.1" and a["source"] == "test" and a["event_timestamp"].startswith("2024-03-02")
    receipts = fact(data, "receipts")
    match = receipts.filter(receipts["receipt_id"] == a["payload"]["receipt_id"])
    assert match.height == 1 and match["total_cents"][0] == a["payload"]["total_cents"]
    other = events.slice(1, 1).to_pylist()[0]
    assert json.loads(envelope(other, "2024-03-02", p))["trace_id"] != a["trace_id"]


class _Producer:
    """A unit-test stand-in for AIOKafkaProducer: refuses one event at send, fails another's delivery."""

    def __init__(self, refuse: int, fail: int) -> None:
        self.refuse, self.fail, self.calls = refuse, fail, 0
        self.sent: list[tuple[str, bytes]] = []

    async def send(self, topic: str, value: bytes, key: bytes) -> object:
        import asyncio

        self.calls += 1
        if self.calls == self.refuse:
            raise RuntimeError("buffer full")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.calls == self.fail:
            fut.set_exception(TimeoutError("no broker"))
        else:
            self.sent.append((topic, value))
            fut.set_result(None)
        return fut

    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> None:
        self.sent.append((topic, value))


@pytest.mark.anyio
async def test_refused_and_undelivered_events_are_dead_lettered_once_and_never_resent(data: Path) -> None:
    from task_components.datasets.events import DatasetEvents, _Clock

    p = EventsParams(tables=["receipts"], topic="t", dead_letter_topic="dlq", event_types="table")
    events = day_events(data, p.tables, "2024-03-01", p.event_types).slice(0, 50)
    producer = _Producer(refuse=3, fail=7)
    task = DatasetEvents("events", p)
    pub = task.publisher(producer)
    await task._send(pub, events, "2024-03-01", p, _Clock(0.0))
    assert (pub.sent, pub.dead_lettered) == (48, 2) and producer.calls == 50  # no event sent twice
    letters = [json.loads(v) for t, v in producer.sent if t == "dlq"]
    assert sorted(lt["reason"].split(":")[0] for lt in letters) == ["RuntimeError", "TimeoutError"]
    order = [json.loads(v)["trace_id"] for t, v in producer.sent if t == "t"]
    expected = [json.loads(envelope(r, "2024-03-01", p))["trace_id"] for r in events.to_pylist()]
    assert order == [x for i, x in enumerate(expected) if i not in (2, 6)]


class _Outage(_Producer):
    """The broker unreachable for the first ``down`` send attempts (aiokafka's timeout), then back."""

    def __init__(self, down: int) -> None:
        super().__init__(refuse=0, fail=0)
        self.down = down

    async def send(self, topic: str, value: bytes, key: bytes) -> object:
        import asyncio

        from aiokafka.errors import KafkaTimeoutError

        self.calls += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.calls <= self.down:
            fut.set_exception(KafkaTimeoutError())
        else:
            self.sent.append((topic, value))
            fut.set_result(None)
        return fut


@pytest.mark.anyio
async def test_an_outage_opens_the_breaker_and_its_events_are_delivered_once_it_closes(data: Path) -> None:
    from task_components.datasets.events import DatasetEvents, _Clock

    p = EventsParams(tables=["receipts"], topic="t", retry_delay=0.01, breaker_threshold=2)
    events = day_events(data, p.tables, "2024-03-01").slice(0, 10)
    producer = _Outage(down=10 + 10 + 3)  # two whole attempts lost, the third loses its first 3 events
    task = DatasetEvents("events", p)
    pub = task.publisher(producer)
    await task._send(pub, events, "2024-03-01", p, _Clock(0.0))
    assert pub.breaker.outages == 1 and not pub.breaker.is_open  # opened at the 2nd failure, closed on delivery
    assert (pub.sent, pub.dead_lettered) == (10, 0)
    delivered = [json.loads(v)["trace_id"] for t, v in producer.sent if t == "t"]
    assert sorted(delivered) == sorted(json.loads(envelope(r, "2024-03-01", p))["trace_id"] for r in events.to_pylist())
    down = DatasetEvents("events", EventsParams(retry_delay=0.01, max_outage_seconds=0.05)).publisher(_Outage(down=10**9))
    from task_components.datasets.publish import Outgoing, PublishDownError

    await down.submit(Outgoing(b"k", b"{}", "receipt_created", "x", "2024-03-01"))
    with pytest.raises(PublishDownError, match="max_outage_seconds"):
        await down.settle()


def test_realtime_spacing_and_bursts_carry_over_day_ends(data: Path) -> None:
    from task_components.datasets.events import _Clock

    p = EventsParams(tables=["receipts"], mode="realtime", speedup=3600.0)
    clock = _Clock(0.0)
    day1 = clock.offsets(day_events(data, p.tables, "2024-03-01"), p)
    day2 = clock.offsets(day_events(data, p.tables, "2024-03-02"), p)
    assert day1[0] == 0 and day2[0] - day1[-1] > 3  # the night between (hours, at 3600x: seconds) is kept
    h = EventsParams(rate=10, burst_factor=2, burst_every=10, burst_seconds=5)
    clock = _Clock(0.0)
    first = clock.offsets(day_events(data, ["receipts"], "2024-03-01").slice(0, 30), h)
    second = clock.offsets(day_events(data, ["receipts"], "2024-03-02").slice(0, 30), h)
    assert second[0] > first[-1] and second == list(pace(30, 10, 2, 10, 5, start=second[0]))
