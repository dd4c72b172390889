"""The realtime streamer's simulation without a broker: bursts of the configured size, an online order's
lifecycle completed across bursts (and across a saved and reloaded state), per-key time order, ids that
continue instead of repeating, and the same burst drawn again (same trace ids) when it was not adopted."""

from __future__ import annotations

import json
from collections import Counter, defaultdict

import pytest

from task_components.datasets import get_pack, load_pack_config
from task_components.datasets.pack import PackRun
from task_components.datasets.retail.live import LiveRetail, LiveState
from tests.unit.datasets_helpers import SMALL, run_pack


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> LiveRetail:
    root = tmp_path_factory.mktemp("live")
    config = {**SMALL, "out": str(root / "d"), "days": 1}
    run_pack("retail", config, root / "runs")
    pack = get_pack("retail")
    return LiveRetail(PackRun.open(pack, load_pack_config(pack, config, {})), fulfilment_seconds=10.0, interval_seconds=1.0)


def test_bursts_complete_each_order_and_keep_every_key_in_time_order(live: LiveRetail) -> None:
    state, sent = LiveState(), []
    for k in range(40):  # 40 bursts, 1 s apart: every order created early is picked and shipped (<= 16 s)
        events, state = live.burst(state, 50, 1_000_000.0 + k)
        assert len(events) == 50
        sent += events
        state = LiveState.from_dict(json.loads(json.dumps(state.to_dict())))  # saved and loaded, as between runs
    kinds = Counter(e["event_type"] for e in sent)
    assert 0 <= kinds["receipt_created"] - kinds["payment_processed"] <= 1  # the last receipt may wait in the outbox
    assert kinds["receipt_created"] > 0 and kinds["online_order_created"] > 0 and kinds["inventory_updated"] > 0
    by_order: dict[int, list[str]] = defaultdict(list)
    for e in sent:
        if e["event_type"].startswith("online_order"):
            by_order[e["payload"]["order_id"]].append(e["event_type"])
    early = [o for o in by_order if o <= min(by_order) + 5]
    assert all(by_order[o] == ["online_order_created", "online_order_picked", "online_order_shipped"] for o in early)
    by_key: dict[str, list[str]] = defaultdict(list)
    for e in sent:
        by_key[e["key"]].append(e["ts"])
    assert all(ts == sorted(ts) for ts in by_key.values())
    receipts = [e["payload"]["receipt_id"] for e in sent if e["event_type"] == "receipt_created"]
    assert len(set(receipts)) == len(receipts) and min(receipts) > 10**15  # above every historical key
    assert len({e["trace_id"] for e in sent}) == len(sent)


def test_a_burst_not_adopted_is_drawn_again_with_the_same_trace_ids(live: LiveRetail) -> None:
    _, state = live.burst(LiveState(), 30, 2_000_000.0)
    first, _ = live.burst(state, 30, 2_000_001.0)
    again, after = live.burst(state, 30, 2_000_001.0)  # the same state: as after a stop mid-burst
    assert [e["trace_id"] for e in first] == [e["trace_id"] for e in again]
    later, held = live.burst(state, 30, 2_000_009.0)  # redrawn later: due orders first, then the same draws
    kept = {e["trace_id"] for e in [*later, *held.outbox, *held.pending]}
    assert {e["trace_id"] for e in first} <= kept
    nxt, _ = live.burst(after, 30, 2_000_010.0)
    assert not {e["trace_id"] for e in nxt} & {e["trace_id"] for e in again}


def test_a_leftover_of_a_burst_is_sent_first_by_the_next(live: LiveRetail) -> None:
    events, state = live.burst(LiveState(), 3, 3_000_000.0)  # a receipt is more than 3 events: some wait
    assert state.outbox and len(events) == 3
    following, _ = live.burst(state, 3 + len(state.outbox), 3_000_001.0)
    assert [e["trace_id"] for e in following[: len(state.outbox)]] == [e["trace_id"] for e in state.outbox]
