"""The retail pack's graph: each table a task, each foreign key an edge.

    geographies -> distribution_centers -> stores -> customers -> receipts (+ receipt_lines)
    distribution_centers -> trucks;  products -> receipts, online_orders;  customers -> online_orders
    receipts -> foot_traffic, ble_pings, marketing (+ campaigns, campaign_conversions)
    receipts + trucks -> store_inventory (store_inventory_txn, truck_moves, weekly snapshots)
    store_inventory + online_orders -> dc_inventory (dc_inventory_txn, weekly snapshots)

So products, geographies and the DC chain start at once, receipts generate beside online orders, and
foot traffic, BLE pings, marketing and store inventory are all ready once the receipts are written.
Fact tables draw on two shared builder threads and write on two shared writer threads (fast_io.py):
on two cores, four tables drawing at once gain no time and each extra thread keeps memory resident.
"""

from __future__ import annotations

from collections.abc import Callable

from task_components.datasets.pack import Pack, PackRun, TableDef
from task_components.datasets.retail import dims, engagement, inventory, sales
from task_components.datasets.retail.config import RetailConfig
from task_components.datasets.retail.fast_io import gated

__all__ = ["FACT_TABLES", "RETAIL", "WEEKLY_TABLES"]


def _t(
    name: str,
    refs: tuple[str, ...],
    build: Callable[[PackRun], dict[str, int]],
    writes: tuple[str, ...] = (),
    fact: bool = False,
) -> TableDef:
    return TableDef(name, refs, writes or (name,), fact, gated(build) if fact else build)


_TABLES = [
    _t("geographies", (), dims.geographies),
    _t("distribution_centers", ("geographies",), dims.distribution_centers),
    _t("stores", ("geographies", "distribution_centers"), dims.stores),
    _t("trucks", ("distribution_centers",), dims.trucks),
    _t("customers", ("stores",), dims.customers),
    _t("products", (), dims.products),
    _t("receipts", ("stores", "customers", "products"), sales.receipts, ("receipts", "receipt_lines"), True),
    _t("foot_traffic", ("receipts",), sales.foot_traffic, fact=True),
    _t("online_orders", ("customers", "products"), sales.online_orders, fact=True),
    _t("ble_pings", ("receipts",), engagement.ble_pings, fact=True),
    _t("marketing", ("receipts",), engagement.marketing, ("campaigns", "marketing", "campaign_conversions"), True),
    _t(
        "store_inventory",
        ("receipts", "trucks"),
        inventory.store_inventory,
        ("store_inventory_txn", "truck_moves", "store_inventory_snapshot"),
        True,
    ),
    _t(
        "dc_inventory",
        ("store_inventory", "online_orders"),
        inventory.dc_inventory,
        ("dc_inventory_txn", "dc_inventory_snapshot"),
        True,
    ),
]

RETAIL = Pack(
    name="retail",
    summary="retail star schema: 6 dimensions, 13 fact tables partitioned by day, inventory carried across runs",
    config_model=RetailConfig,
    tables={t.name: t for t in _TABLES},
)
WEEKLY_TABLES = ["store_inventory_snapshot", "dc_inventory_snapshot"]  # written on Sundays only
FACT_TABLES = [w for t in _TABLES if t.fact for w in t.writes if w not in WEEKLY_TABLES]
