"""The retail pack's business rules and referential integrity, checked over every generated row.

One dataset (32 days from 2024-11-26: Thanksgiving, Black Friday, the run-up to Christmas and Christmas
Day) is generated through the real runner; every check is a vectorized polars query over all of it.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from task_components.datasets.retail import names
from task_components.datasets.retail.dims import price_ladder
from tests.unit.datasets_helpers import SMALL, dim, fact, orphans, run_pack

START, DAYS = date(2024, 11, 26), 32


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("retail")
    run_pack("retail", {**SMALL, "out": str(root / "data"), "start_date": START, "days": DAYS}, root / "runs")
    return root / "data"


def test_every_day_has_a_partition_per_fact_table(out: Path) -> None:
    from task_components.datasets.retail.tables import FACT_TABLES, WEEKLY_TABLES

    days = [date.fromordinal(START.toordinal() + i) for i in range(DAYS)]
    for table in FACT_TABLES:
        parts = sorted(p.name for p in (out / "facts" / table).iterdir())
        assert parts == [f"dt={d}" for d in days], table
    for table in WEEKLY_TABLES:
        parts = sorted(p.name for p in (out / "facts" / table).iterdir())
        assert parts == [f"dt={d}" for d in days if d.weekday() == 6], table


def test_dimensions_resolve_and_stores_only_where_a_dc_serves(out: Path) -> None:
    geo, dcs, stores = dim(out, "geographies"), dim(out, "distribution_centers"), dim(out, "stores")
    trucks, customers = dim(out, "trucks"), dim(out, "customers")
    assert orphans(dcs, "geography_id", geo, "geography_id") == 0
    assert orphans(stores, "geography_id", geo, "geography_id") == 0
    assert orphans(stores, "dc_id", dcs, "dc_id") == 0
    assert orphans(trucks, "dc_id", dcs, "dc_id") == 0
    assert orphans(customers, "home_store_id", stores, "store_id") == 0
    served = stores.join(dcs.select("dc_id", "served_states"), on="dc_id")
    assert served.filter(~pl.col("served_states").list.contains(pl.col("state"))).height == 0
    same_state = stores.join(geo.select("geography_id", pl.col("state").alias("geo_state")), on="geography_id")
    assert (same_state["state"] == same_state["geo_state"]).all()
    assert (stores["open_hour"] < stores["close_hour"]).all()
    assert set(customers["segment"].unique()) == {"budget", "family", "premium", "convenience"}
    for table, key in [
        ("geographies", "geography_id"),
        ("stores", "store_id"),
        ("customers", "customer_id"),
        ("products", "product_id"),
        ("trucks", "truck_id"),
    ]:
        assert dim(out, table)[key].is_unique().all(), table


def test_product_pricing_rules_hold_for_every_product(out: Path) -> None:
    p = dim(out, "products")
    assert p.filter(pl.col("cost_cents") * 100 < pl.col("sale_price_cents") * 50).height == 0
    assert p.filter(pl.col("cost_cents") * 100 > pl.col("sale_price_cents") * 85).height == 0
    assert p.filter(pl.col("sale_price_cents") > pl.col("msrp_cents")).height == 0
    assert p.filter(pl.col("msrp_cents") * 100 < pl.col("base_price_cents") * 85).height == 0
    assert p.filter(pl.col("msrp_cents") * 100 > pl.col("base_price_cents") * 115).height == 0


def test_price_ladder_stays_in_bounds_at_the_edges_of_rounding() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(2, 300, 200_000)  # small prices: where rounding a cent matters most
    msrp, sale, cost = price_ladder(rng, base)
    assert (msrp * 100 >= base * 85).all() and (msrp * 100 <= base * 115).all()
    assert (sale <= msrp).all() and (cost * 100 >= sale * 50).all() and (cost * 100 <= sale * 85).all()


def test_names_are_synthetic_and_the_blocklist_rejects_real_brands(out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p, dcs, stores = dim(out, "products"), dim(out, "distribution_centers"), dim(out, "stores")
    names.check_synthetic([*p["brand"], *p["company"], *p["name"], *dcs["name"], *stores["name"]])
    for real in ["Nike", "Acme Walmart Supply", "best buy outlet", "Procter & Gamble"]:
        with pytest.raises(names.BlockedNameError):
            names.check_synthetic([real])
    first = names.synthetic_brands(np.random.default_rng(3), 1)[0]
    monkeypatch.setattr(names, "blocklist", lambda: frozenset({first.lower()}))
    again = names.synthetic_brands(np.random.default_rng(3), 3)
    assert first not in again and len(set(again)) == 3


def test_every_fact_foreign_key_resolves_and_keys_are_unique(out: Path) -> None:
    stores, customers, products = dim(out, "stores"), dim(out, "customers"), dim(out, "products")
    dcs, trucks = dim(out, "distribution_centers"), dim(out, "trucks")
    receipts, lines = fact(out, "receipts"), fact(out, "receipt_lines")
    online, moves = fact(out, "online_orders"), fact(out, "truck_moves")
    store_tx, dc_tx = fact(out, "store_inventory_txn"), fact(out, "dc_inventory_txn")
    checks = [
        (receipts, "store_id", stores, "store_id"),
        (receipts, "customer_id", customers, "customer_id"),
        (lines, "receipt_id", receipts, "receipt_id"),
        (lines, "product_id", products, "product_id"),
        (fact(out, "foot_traffic"), "store_id", stores, "store_id"),
        (online, "customer_id", customers, "customer_id"),
        (online, "product_id", products, "product_id"),
        (online, "dc_id", dcs, "dc_id"),
        (moves, "truck_id", trucks, "truck_id"),
        (moves, "dc_id", dcs, "dc_id"),
        (moves, "store_id", stores, "store_id"),
        (store_tx, "location_id", stores.rename({"store_id": "location_id"}), "location_id"),
        (store_tx, "product_id", products, "product_id"),
        (dc_tx, "location_id", dcs.rename({"dc_id": "location_id"}), "location_id"),
        (dc_tx, "product_id", products, "product_id"),
        (moves, "shipment_id", store_tx, "shipment_id"),
        (store_tx, "shipment_id", moves, "shipment_id"),
    ]
    for child, col, parent, key in checks:
        assert orphans(child, col, parent, key) == 0, (col, key)
    assert receipts.height > 5000 and lines.height > receipts.height
    for df, key in [
        (receipts, ["receipt_id"]),
        (lines, ["receipt_id", "line_no"]),
        (online, ["order_id"]),
        (moves, ["move_id"]),
        (store_tx, ["txn_id"]),
        (dc_tx, ["txn_id"]),
    ]:
        assert df.select(key).is_unique().all(), key


def test_receipt_totals_are_the_sum_of_lines_plus_tax(out: Path) -> None:
    receipts, lines, products = fact(out, "receipts"), fact(out, "receipt_lines"), dim(out, "products")
    rate = dim(out, "stores").join(dim(out, "geographies"), on="geography_id").select("store_id", "tax_rate_bp")
    priced = lines.join(products.select("product_id", "sale_price_cents"), on="product_id")
    assert (priced["unit_price_cents"] == priced["sale_price_cents"]).all()
    assert (priced["ext_price_cents"] == priced["qty"] * priced["unit_price_cents"]).all()
    sums = lines.group_by("receipt_id").agg(pl.col("ext_price_cents").sum().alias("lines"), pl.col("qty").sum())
    r = receipts.join(sums, on="receipt_id", how="left").join(rate, on="store_id")
    assert r.height == receipts.height
    assert (r["subtotal_cents"] == r["lines"]).all() and (r["item_count"] == r["qty"]).all()
    assert (r["tax_cents"] == (r["subtotal_cents"] * r["tax_rate_bp"] + 5000) // 10000).all()
    assert (r["total_cents"] == r["subtotal_cents"] + r["tax_cents"]).all()
    assert (r["subtotal_cents"] > 0).all()


def test_store_hours_closed_days_and_calendar_patterns(out: Path) -> None:
    hours = dim(out, "stores").select("store_id", "open_hour", "close_hour")
    receipts = fact(out, "receipts").with_columns(pl.col("ts").dt.hour().alias("h"), pl.col("ts").dt.date().alias("d"))
    timed = receipts.join(hours, on="store_id")
    assert timed.filter((pl.col("h") < pl.col("open_hour")) | (pl.col("h") >= pl.col("close_hour"))).height == 0
    assert (receipts["d"] == receipts["dt"]).all()
    per_day = dict(receipts.group_by("d").len().iter_rows())
    assert date(2024, 11, 28) not in per_day and date(2024, 12, 25) not in per_day  # Thanksgiving, Christmas
    black_friday = per_day[date(2024, 11, 29)]
    assert black_friday > 1.5 * np.mean([per_day[date(2024, 11, d)] for d in (26, 27)])
    daily = receipts.group_by(pl.col("d").dt.weekday().alias("wd"), "d").len()
    means = dict(daily.group_by("wd").agg(pl.col("len").mean()).iter_rows())
    assert means[6] > means[2]  # Saturday over Tuesday
    evening = receipts.filter(pl.col("h").is_between(17, 19)).height
    assert evening > receipts.filter(pl.col("h").is_in([9, 10, 11])).height


def test_foot_traffic_counts_the_hours_receipts_and_never_less(out: Path) -> None:
    hours = dim(out, "stores").select("store_id", "open_hour", "close_hour")
    traffic = fact(out, "foot_traffic").join(hours, on="store_id")
    assert traffic.filter((pl.col("hour") < pl.col("open_hour")) | (pl.col("hour") >= pl.col("close_hour"))).height == 0
    assert (traffic["visitors"] >= traffic["transactions"]).all()
    per_hour = fact(out, "receipts").group_by("store_id", pl.col("ts").dt.truncate("1h")).len()
    joined = per_hour.join(traffic.select("store_id", "ts", "transactions"), on=["store_id", "ts"], how="full")
    assert joined.filter(pl.col("len").fill_null(0) != pl.col("transactions").fill_null(-1)).height == 0


def _running_balances_ok(tx: pl.DataFrame) -> None:
    ordered = tx.sort("location_id", "product_id", "ts", "txn_id").with_columns(
        pl.col("qty").cum_sum().over("location_id", "product_id").alias("running"),
        pl.col("txn_type").first().over("location_id", "product_id").alias("first_type"),
    )
    assert (ordered["first_type"] == "INITIAL").all()
    assert (ordered["running"] == ordered["balance_after"]).all()
    assert (ordered["balance_after"] >= 0).all()


def test_inventory_never_negative_and_balances_follow_the_transactions(out: Path) -> None:
    _running_balances_ok(fact(out, "store_inventory_txn"))
    _running_balances_ok(fact(out, "dc_inventory_txn"))


def test_store_sales_are_the_receipt_lines_and_deliveries_arrive_by_truck(out: Path) -> None:
    tx, stores, moves = fact(out, "store_inventory_txn"), dim(out, "stores"), fact(out, "truck_moves")
    lines = fact(out, "receipt_lines").join(fact(out, "receipts").select("receipt_id", "store_id"), on="receipt_id")
    sold = lines.group_by(pl.col("store_id").alias("location_id"), "product_id", "dt").agg(pl.col("qty").sum())
    booked = tx.filter(pl.col("txn_type") == "SALE").select("location_id", "product_id", "dt", -pl.col("qty"))
    both = sold.join(booked, on=["location_id", "product_id", "dt"], how="full", suffix="_tx")
    assert both.filter(pl.col("qty").fill_null(0) != pl.col("qty_tx").fill_null(-1)).height == 0
    delivered = tx.filter(pl.col("txn_type") == "DELIVERY").group_by("shipment_id").agg(pl.col("qty").sum())
    carried = moves.group_by("shipment_id").agg(pl.col("units").sum())
    shipped = delivered.join(carried, on="shipment_id", how="full")  # a shipment on one side only: null != -1
    assert shipped.filter(pl.col("qty").fill_null(0) != pl.col("units").fill_null(-1)).height == 0
    m = moves.join(dim(out, "trucks"), on="truck_id", suffix="_truck").join(stores, on="store_id", suffix="_store")
    assert (m["units"] <= m["capacity_units"]).all() and (m["units"] > 0).all()
    assert (m["dc_id"] == m["dc_id_truck"]).all() and (m["dc_id"] == m["dc_id_store"]).all()
    assert (m["depart_ts"] < m["arrive_ts"]).all() and (m["arrive_ts"].dt.hour() < m["open_hour"]).all()
    assert m.select((pl.col("units") > pl.col("capacity_units") // 2).any()).item(), "some loads fill a truck"


def test_dc_shipments_match_store_deliveries_and_online_picks(out: Path) -> None:
    tx, stores = fact(out, "store_inventory_txn"), dim(out, "stores")
    store_dc = stores.select(pl.col("store_id").alias("location_id"), "dc_id")
    deliveries = tx.filter(pl.col("txn_type") == "DELIVERY").join(store_dc, on="location_id")
    to_stores = deliveries.group_by("dc_id", "product_id", "dt").agg(pl.col("qty").sum())
    dc = fact(out, "dc_inventory_txn").rename({"location_id": "dc_id"})
    shipped = dc.filter(pl.col("txn_type") == "SHIP_STORE").select("dc_id", "product_id", "dt", -pl.col("qty"))
    both = to_stores.join(shipped, on=["dc_id", "product_id", "dt"], how="full", suffix="_dc")
    assert both.filter(pl.col("qty").fill_null(0) != pl.col("qty_dc").fill_null(-1)).height == 0
    online = fact(out, "online_orders").group_by("dc_id", "product_id", "dt").agg(pl.col("qty").sum())
    picked = dc.filter(pl.col("txn_type") == "SHIP_ONLINE").select("dc_id", "product_id", "dt", -pl.col("qty"))
    both = online.join(picked, on=["dc_id", "product_id", "dt"], how="full", suffix="_dc")
    assert both.filter(pl.col("qty").fill_null(0) != pl.col("qty_dc").fill_null(-1)).height == 0


def test_online_orders_lifecycle_and_fulfilling_dc(out: Path) -> None:
    o = fact(out, "online_orders")
    assert (o["created_ts"] < o["picked_ts"]).all() and (o["picked_ts"] < o["shipped_ts"]).all()
    assert (o["shipped_ts"].dt.date() == o["dt"]).all() and (o["created_ts"].dt.date() == o["dt"]).all()
    assert (o["total_cents"] == o["qty"] * o["unit_price_cents"]).all()
    home_dc = dim(out, "customers").join(dim(out, "stores"), left_on="home_store_id", right_on="store_id")
    j = o.join(home_dc.select("customer_id", pl.col("dc_id").alias("home_dc")), on="customer_id")
    assert j.height == o.height and (j["dc_id"] == j["home_dc"]).all()


@pytest.mark.parametrize("level", ["store", "dc"])
def test_weekly_snapshots_are_the_balances_after_the_last_transaction(out: Path, level: str) -> None:
    tx = fact(out, f"{level}_inventory_txn").sort("ts", "txn_id")
    snaps = fact(out, f"{level}_inventory_snapshot")
    locations = dim(out, "stores" if level == "store" else "distribution_centers").height
    for day in snaps["dt"].unique():
        snap = snaps.filter(pl.col("dt") == day)
        assert snap.height == locations * dim(out, "products").height
        last = tx.filter(pl.col("dt") <= day).group_by("location_id", "product_id").agg(pl.col("balance_after").last())
        both = snap.join(last, on=["location_id", "product_id"], how="left")
        assert (both["on_hand"] == both["balance_after"]).all() and (both["on_hand"] >= 0).all()


def test_ble_pings_belong_to_loyalty_visits_before_their_receipt(out: Path) -> None:
    pings, receipts = fact(out, "ble_pings"), fact(out, "receipts")
    customers, stores = dim(out, "customers"), dim(out, "stores")
    assert orphans(pings, "receipt_id", receipts, "receipt_id") == 0
    assert orphans(pings, "customer_id", customers, "customer_id") == 0
    assert pings["ping_id"].is_unique().all() and pings.height > receipts.height // 2
    j = (
        pings.join(
            receipts.select("receipt_id", pl.col("customer_id").alias("buyer"), pl.col("store_id").alias("at"), pl.col("ts").alias("paid")),
            on="receipt_id",
        )
        .join(customers.select("customer_id", "loyalty_member"), on="customer_id")
        .join(stores.select("store_id", "open_hour"), on="store_id")
    )
    assert j.height == pings.height and j["loyalty_member"].all()
    assert (j["customer_id"] == j["buyer"]).all() and (j["store_id"] == j["at"]).all()
    assert (j["ts"] <= j["paid"]).all() and ((j["paid"] - j["ts"]).dt.total_seconds() < 1200).all()
    assert (j["ts"].dt.hour() >= j["open_hour"]).all()
    assert (j["beacon_id"] // 100 == j["store_id"]).all()
    till = j.filter(pl.col("ts") == pl.col("paid")).group_by("receipt_id").agg((pl.col("zone") == "checkout").any())
    assert till.height == j["receipt_id"].n_unique() and till["zone"].all()


def test_campaign_conversions_are_targeted_receipts_during_the_campaign(out: Path) -> None:
    campaigns, daily, conv = fact(out, "campaigns"), fact(out, "marketing"), fact(out, "campaign_conversions")
    receipts, customers = fact(out, "receipts"), dim(out, "customers")
    assert campaigns["campaign_id"].is_unique().all() and conv["receipt_id"].is_unique().all()
    assert orphans(daily, "campaign_id", campaigns, "campaign_id") == 0
    assert orphans(conv, "campaign_id", campaigns, "campaign_id") == 0
    assert orphans(conv, "receipt_id", receipts, "receipt_id") == 0
    assert conv.height > 0
    buyers = receipts.select("receipt_id", pl.col("customer_id").alias("buyer"), "total_cents")
    j = (
        conv.join(campaigns.drop("dt"), on="campaign_id")
        .join(customers.select("customer_id", "segment"), on="customer_id")
        .join(buyers, on="receipt_id")
    )
    assert (j["segment"] == j["target_segment"]).all() and (j["customer_id"] == j["buyer"]).all()
    assert (j["ts"].dt.date() >= j["start_date"]).all() and (j["ts"].dt.date() <= j["end_date"]).all()
    assert (j["revenue_cents"] == j["total_cents"]).all()
    keys = ["campaign_id", "day"]
    counted = conv.group_by("campaign_id", pl.col("dt").alias("day")).agg(pl.len().alias("n"), pl.col("revenue_cents").sum())
    assert counted.join(daily, on=keys, how="anti").height == 0, "every conversion's campaign-day has a marketing row"
    d = daily.join(counted, on=keys, how="left").with_columns(pl.col("n", "revenue_cents").fill_null(0))
    assert (d["conversions"] == d["n"]).all() and (d["conversion_revenue_cents"] == d["revenue_cents"]).all()
    assert (daily["clicks"] <= daily["impressions"]).all()
    active = daily.join(campaigns.drop("dt"), on="campaign_id")
    assert ((active["day"] >= active["start_date"]) & (active["day"] <= active["end_date"])).all()


def test_few_geographies_still_place_every_distribution_center(tmp_path: Path) -> None:
    """With fewer geographies than states, a DC whose home state has none sits in the next state that has one."""
    data = tmp_path / "data"
    run_pack("retail", {**SMALL, "geographies": 10, "dcs": 2, "out": str(data), "start_date": START, "days": 1}, tmp_path / "runs")
    dcs, geos = dim(data, "distribution_centers"), dim(data, "geographies")
    assert dcs.height == 2 and set(dcs["geography_id"]) <= set(geos["geography_id"])
