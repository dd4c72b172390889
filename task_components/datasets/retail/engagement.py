"""In-store BLE pings and marketing campaigns with their conversions, both derived from the receipts.

BLE pings: a loyalty member carries the app, so each of their store visits leaves a few beacon pings
in the 20 minutes before the receipt (never before opening), the last one at the checkout zone.

Campaigns start on Mondays (0-3 a week, each 7-21 days, aimed at one customer segment), drawn from a
generator keyed by the Monday alone, so any day can rebuild the campaigns active on it without state.
A campaign is written in its start day's partition; the first day of the first run also writes the
campaigns that started before it and are still running, so every conversion's campaign exists. A
receipt of a targeted customer during a campaign converts with a small probability, and each day's
``marketing`` row counts exactly the conversions attributed to that campaign that day.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from task_components.datasets.pack import PackRun, rng_for
from task_components.datasets.retail.dims import SEGMENTS, day_no, day_start
from task_components.datasets.retail.fast_io import Writer, read_columns, read_dim, strings
from task_components.datasets.retail.sales import KEY_STRIDE, TS, receipt_ids, seconds_of, ts_array

__all__ = ["ble_pings", "campaigns_starting", "marketing"]

ZONES = np.array(["entrance", "produce", "aisles", "electronics", "apparel", "checkout"])
ZONE_NAMES = pa.array(ZONES.tolist(), pa.string())
PING_SCHEMA = pa.schema(
    [
        ("ping_id", pa.int64()),
        ("store_id", pa.int32()),
        ("beacon_id", pa.int32()),
        ("zone", pa.string()),
        ("customer_id", pa.int64()),
        ("receipt_id", pa.int64()),
        ("ts", TS),
        ("rssi_dbm", pa.int16()),
    ]
)


def ble_pings(run: PackRun) -> dict[str, int]:
    c = run.config
    st = read_dim(run, "stores")
    member = read_dim(run, "customers")["loyalty_member"].to_numpy()
    open_h = st["open_hour"].to_numpy().astype(np.int64)
    rows = 0
    with Writer() as out:
        for day in run.dates():
            rng = rng_for(c.seed, "ble_pings", day)
            rc = read_columns(run.fact_path("receipts", day), ["store_id", "customer_id", "ts"])
            keep = member[rc["customer_id"].to_numpy() - 1]
            rid, store = receipt_ids(day, rc.num_rows)[keep], rc["store_id"].to_numpy()[keep]
            cust, at = rc["customer_id"].to_numpy()[keep], seconds_of(rc["ts"])[keep]
            k = 2 + rng.poisson(1.5, rid.size)
            visit = np.repeat(np.arange(rid.size), k)
            last = np.cumsum(k) - 1
            opened = day_start(day) + open_h[store[visit] - 1] * 3600
            ts = np.maximum(at[visit] - rng.integers(0, 1200, visit.size), opened)
            ts[last] = at  # the last ping of a visit is at the till, at the receipt's time
            zone = rng.integers(0, ZONES.size - 1, visit.size)
            zone[last] = ZONES.size - 1
            order = np.argsort(visit * 86_400 + (ts - day_start(day)), kind="stable")  # by visit, then time
            visit, ts, zone = visit[order], ts[order], zone[order]
            table = pa.table(
                {
                    "ping_id": day_no(day) * KEY_STRIDE * 10 + np.arange(1, visit.size + 1, dtype=np.int64),
                    "store_id": store[visit].astype(np.int32),
                    "beacon_id": (store[visit] * 100 + zone).astype(np.int32),
                    "zone": strings(ZONE_NAMES, zone),
                    "customer_id": cust[visit],
                    "receipt_id": rid[visit],
                    "ts": ts_array(ts),
                    "rssi_dbm": (-rng.integers(40, 95, visit.size)).astype(np.int16),
                },
                schema=PING_SCHEMA,
            )
            rows += out.put(table, run.fact_path("ble_pings", day))
    return {"ble_pings": rows}


CHANNELS = np.array(["email", "social", "search", "display"])
CHANNEL_CONVERSION = np.array([0.04, 0.02, 0.05, 0.01])  # share of targeted receipts a campaign converts
CAMPAIGN_SCHEMA = pa.schema(
    [
        ("campaign_id", pa.int64()),
        ("channel", pa.string()),
        ("target_segment", pa.string()),
        ("start_date", pa.date32()),
        ("end_date", pa.date32()),
        ("daily_budget_cents", pa.int64()),
    ]
)
MARKETING_SCHEMA = pa.schema(
    [
        ("campaign_id", pa.int64()),
        ("day", pa.date32()),
        ("impressions", pa.int64()),
        ("clicks", pa.int64()),
        ("spend_cents", pa.int64()),
        ("conversions", pa.int64()),
        ("conversion_revenue_cents", pa.int64()),
    ]
)
CONVERSION_SCHEMA = pa.schema(
    [("campaign_id", pa.int64()), ("receipt_id", pa.int64()), ("customer_id", pa.int64()), ("ts", TS), ("revenue_cents", pa.int64())]
)


def campaigns_starting(seed: int, monday: date) -> dict[str, np.ndarray]:
    rng = rng_for(seed, "campaigns", monday)
    n = int(rng.integers(0, 4))
    days = rng.integers(7, 22, n)
    return {
        "campaign_id": day_no(monday) * 100 + np.arange(1, n + 1, dtype=np.int64),
        "channel": CHANNELS[rng.choice(CHANNELS.size, n, p=[0.35, 0.3, 0.2, 0.15])],
        "target_segment": np.array(list(SEGMENTS))[rng.integers(0, len(SEGMENTS), n)],
        "start_date": np.full(n, np.datetime64(monday)),
        "end_date": np.datetime64(monday) + (days - 1),
        "daily_budget_cents": rng.integers(20_000, 500_000, n),
    }


def _active(seed: int, day: date) -> dict[str, np.ndarray]:
    """Every campaign running on ``day`` (started on one of the last three Mondays)."""
    monday = day - timedelta(days=day.weekday())
    parts = [campaigns_starting(seed, monday - timedelta(weeks=w)) for w in (2, 1, 0)]
    allc = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    live = allc["end_date"] >= np.datetime64(day)
    return {k: v[live] for k, v in allc.items()}


def marketing(run: PackRun) -> dict[str, int]:
    c = run.config
    seg_index = {s: i for i, s in enumerate(SEGMENTS)}
    seg_of = pc.index_in(read_dim(run, "customers")["segment"], value_set=pa.array(list(SEGMENTS))).to_numpy()
    rate_of = dict(zip(CHANNELS, CHANNEL_CONVERSION, strict=True))
    rows = {"campaigns": 0, "marketing": 0, "campaign_conversions": 0}
    with Writer() as out:
        for day in run.dates():
            rng = rng_for(c.seed, "marketing", day)
            active = _active(c.seed, day)
            new = active["start_date"] == np.datetime64(day)
            if run.first_run and day == run.start:
                new[:] = True  # campaigns already running when the data begins
            written = pa.table({k: v[new] for k, v in active.items()}, schema=CAMPAIGN_SCHEMA)
            rows["campaigns"] += out.put(written, run.fact_path("campaigns", day))
            rc = read_columns(run.fact_path("receipts", day), ["customer_id", "ts", "total_cents"])
            seg = seg_of[rc["customer_id"].to_numpy() - 1]
            target = [seg_index[t] for t in active["target_segment"]]
            # each receipt converts for at most one campaign: the first targeting its segment that wins its draw
            owner = np.full(rc.num_rows, -1)
            for j, t in enumerate(target):
                hit = (owner < 0) & (seg == t) & (rng.random(rc.num_rows) < rate_of[active["channel"][j]])
                owner[hit] = j
            conv = np.nonzero(owner >= 0)[0]
            revenue = rc["total_cents"].to_numpy()
            cid = active["campaign_id"]
            conversions = pa.table(
                {
                    "campaign_id": cid[owner[conv]],
                    "receipt_id": receipt_ids(day, rc.num_rows)[conv],
                    "customer_id": rc["customer_id"].to_numpy()[conv],
                    "ts": ts_array(seconds_of(rc["ts"])[conv]),
                    "revenue_cents": revenue[conv],
                },
                schema=CONVERSION_SCHEMA,
            )
            rows["campaign_conversions"] += out.put(conversions, run.fact_path("campaign_conversions", day))
            budget = active["daily_budget_cents"]
            impressions = rng.poisson(budget / 10)  # about a cent an impression
            clicks = rng.binomial(impressions, 0.02)
            count = np.bincount(owner[conv], minlength=cid.size) if conv.size else np.zeros(cid.size, np.int64)
            value = np.bincount(owner[conv], weights=revenue[conv], minlength=cid.size) if conv.size else count
            daily = pa.table(
                {
                    "campaign_id": cid,
                    "day": pa.array(np.full(cid.size, np.datetime64(day)), pa.date32()),
                    "impressions": impressions,
                    "clicks": clicks,
                    "spend_cents": np.minimum(impressions * 9, budget),
                    "conversions": count.astype(np.int64),
                    "conversion_revenue_cents": value.astype(np.int64),
                },
                schema=MARKETING_SCHEMA,
            )
            rows["marketing"] += out.put(daily, run.fact_path("marketing", day))
    return rows
