"""Inventory flows DC -> truck -> store -> customer, with balances that never go negative.

Balances are one int64 matrix per level (stores x products, DCs x products), carried from day to day
and, between runs, through ``state/`` (written as pending, kept by the commit task). Each day, in order:

1. trucks arrive before the store opens (departing the DC 00:30-01:30, 1-4 h on the road), carrying
   what brings each (store, product) whose balance would fall under its reorder point back to its
   target after the day's sales; a shipment larger than a truck is split over the DC's trucks;
2. the day's sales (the receipt lines) leave the store, booked as one SALE row per (store, product)
   at closing time, so the balance after every row is still >= 0;
3. the DC receives from suppliers at 00:00 whatever keeps it above its own reorder point after the
   day's truck loads (SHIP_STORE) and online picks (SHIP_ONLINE, booked at 23:00).

Every Sunday, after the day, each level also writes a snapshot of stock on hand (``*_inventory_snapshot``).

Replenishment knows the day's sales before they happen (the generator's foresight): it is what lets a
vectorized day keep every balance non-negative without simulating sale by sale.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from task_components.datasets.pack import PackRun, rng_for, write_parquet
from task_components.datasets.retail.dims import SEGMENTS, day_no, day_start, load_dim
from task_components.datasets.retail.sales import TS, ts_array

__all__ = ["dc_inventory", "store_inventory"]

TXN_STRIDE = 10_000_000_000
TXN_SCHEMA = pa.schema(
    [
        ("txn_id", pa.int64()),
        ("location_id", pa.int32()),
        ("product_id", pa.int32()),
        ("ts", TS),
        ("txn_type", pa.string()),
        ("qty", pa.int64()),
        ("balance_after", pa.int64()),
        ("shipment_id", pa.int64()),
    ]
)
MOVES_SCHEMA = pa.schema(
    [
        ("move_id", pa.int64()),
        ("shipment_id", pa.int64()),
        ("truck_id", pa.int32()),
        ("dc_id", pa.int32()),
        ("store_id", pa.int32()),
        ("units", pa.int64()),
        ("depart_ts", TS),
        ("arrive_ts", TS),
    ]
)


Part = tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _txns(day: date, parts: list[Part]) -> pa.Table:
    """Rows of (type, location idx, product idx, ts, qty, balance after, shipment) in booking order."""
    types = np.concatenate([np.full(p[1].size, p[0], dtype=object) for p in parts])
    loc, prod, ts, qty, bal, ship = (np.concatenate([p[i] for p in parts]) for i in range(1, 7))
    n = loc.size
    return pa.table(
        {
            "txn_id": day_no(day) * TXN_STRIDE + np.arange(1, n + 1, dtype=np.int64),
            "location_id": (loc + 1).astype(np.int32),
            "product_id": (prod + 1).astype(np.int32),
            "ts": ts_array(ts.astype(np.int64)),
            "txn_type": types.astype(str),
            "qty": qty.astype(np.int64),
            "balance_after": bal.astype(np.int64),
            "shipment_id": pa.array(ship, pa.int64(), mask=ship < 0),
        },
        schema=TXN_SCHEMA,
    )


SNAPSHOT_SCHEMA = pa.schema([("location_id", pa.int32()), ("product_id", pa.int32()), ("ts", TS), ("on_hand", pa.int64())])


def _snapshot(run: PackRun, table: str, day: date, balance: np.ndarray) -> int:
    """Weekly (Sunday end of day) stock on hand of every (location, product), zeros included."""
    if day.weekday() != 6:
        return 0
    loc, prod = np.nonzero(np.ones_like(balance, dtype=bool))
    snap = pa.table(
        {
            "location_id": (loc + 1).astype(np.int32),
            "product_id": (prod + 1).astype(np.int32),
            "ts": ts_array(np.full(loc.size, day_start(day) + 86_399)),
            "on_hand": balance[loc, prod],
        },
        schema=SNAPSHOT_SCHEMA,
    )
    return write_parquet(snap, run.fact_path(table, day))


def _load_balance(run: PackRun, name: str, initial: np.ndarray) -> tuple[np.ndarray, bool]:
    path = run.carried(name)
    if run.first_run:
        return initial.copy(), True
    if not path.exists():
        raise FileNotFoundError(f"{path}: the carried inventory of the previous run is missing")
    return np.load(path), False


def _save_balance(run: PackRun, name: str, balance: np.ndarray) -> None:
    path = run.pending(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        np.save(f, balance)


def store_targets(run: PackRun) -> np.ndarray:
    """Stock target per (store, product): ``stock_days`` of expected sales, at least a few units."""
    c = run.config
    size = load_dim(run, "stores")["size_factor"].to_numpy()
    pop = load_dim(run, "products")["popularity"].to_numpy()
    shares = np.array([s for s, _ in SEGMENTS.values()])
    items = float((shares * np.array([m for _, m in SEGMENTS.values()])).sum()) * 1.25  # lines x mean qty
    expected = c.receipts_per_store_day * size[:, None] * items * pop[None, :]
    return np.ceil(c.stock_days * expected).astype(np.int64) + 4


def store_inventory(run: PackRun) -> dict[str, int]:
    c = run.config
    st = load_dim(run, "stores")
    tr = load_dim(run, "trucks")
    store_dc = st["dc_id"].to_numpy()
    truck_dc, truck_cap = tr["dc_id"].to_numpy(), tr["capacity_units"].to_numpy().astype(np.int64)
    dc_trucks = {d: np.nonzero(truck_dc == d)[0] for d in np.unique(store_dc)}
    target = store_targets(run)
    reorder = target // 2
    balance, initial = _load_balance(run, "store_inventory.npy", target)
    n_stores, n_prod = target.shape
    rows = {"store_inventory_txn": 0, "truck_moves": 0, "store_inventory_snapshot": 0}
    for day in run.dates():
        rng = rng_for(c.seed, "store_inventory", day)
        base = day_start(day)
        rc = pq.read_table(run.fact_path("receipts", day), columns=["receipt_id", "store_id"])
        ln = pq.read_table(run.fact_path("receipt_lines", day), columns=["receipt_id", "product_id", "qty"])
        rid = rc["receipt_id"].to_numpy()
        line_store = rc["store_id"].to_numpy()[np.searchsorted(rid, ln["receipt_id"].to_numpy())] - 1
        flat = line_store.astype(np.int64) * n_prod + ln["product_id"].to_numpy() - 1
        sales = np.bincount(flat, weights=ln["qty"].to_numpy(), minlength=n_stores * n_prod)
        sales = sales.astype(np.int64).reshape(n_stores, n_prod)
        after_sales = balance - sales
        deliver = np.where(after_sales < reorder, target - after_sales, 0)
        units = deliver.sum(axis=1)
        move_parts: list[tuple[int, int, int, int, int, int, int]] = []
        arrive = np.full(n_stores, base, dtype=np.int64)
        shipment = day_no(day) * 1_000_000 + np.arange(1, n_stores + 1, dtype=np.int64)
        depart0 = base + 1800 + rng.integers(0, 3600, n_stores)
        travel = rng.integers(3600, 4 * 3600, n_stores)
        for s in np.nonzero(units)[0]:
            fleet = dc_trucks[store_dc[s]]
            left, k = int(units[s]), 0
            while left > 0:  # split over the DC's trucks in turn, each loaded up to its capacity
                t = fleet[(s + day_no(day) + k) % fleet.size]
                load = min(left, int(truck_cap[t]))
                move_parts.append(
                    (int(shipment[s]), int(t) + 1, int(store_dc[s]), int(s) + 1, load, int(depart0[s]), int(depart0[s] + travel[s]))
                )
                left -= load
                k += 1
            arrive[s] = depart0[s] + travel[s]
        parts: list[Part] = []
        if initial and day == run.start:
            si, pi = np.nonzero(np.ones_like(balance, dtype=bool))
            parts.append(("INITIAL", si, pi, np.full(si.size, base), balance[si, pi], balance[si, pi], np.full(si.size, -1)))
        si, pi = np.nonzero(deliver > 0)
        parts.append(("DELIVERY", si, pi, arrive[si], deliver[si, pi], balance[si, pi] + deliver[si, pi], shipment[si]))
        balance = balance + deliver
        si, pi = np.nonzero(sales > 0)
        close = base + st["close_hour"].to_numpy().astype(np.int64)[si] * 3600 - 1
        parts.append(("SALE", si, pi, close, -sales[si, pi], balance[si, pi] - sales[si, pi], np.full(si.size, -1)))
        balance = balance - sales
        assert (balance >= 0).all(), "store inventory went negative"  # guaranteed by construction
        rows["store_inventory_txn"] += write_parquet(_txns(day, parts), run.fact_path("store_inventory_txn", day))
        m = np.array(move_parts, dtype=np.int64).reshape(-1, 7)
        moves = pa.table(
            {
                "move_id": day_no(day) * 1_000_000 + np.arange(1, len(m) + 1, dtype=np.int64),
                "shipment_id": m[:, 0],
                "truck_id": m[:, 1].astype(np.int32),
                "dc_id": m[:, 2].astype(np.int32),
                "store_id": m[:, 3].astype(np.int32),
                "units": m[:, 4],
                "depart_ts": ts_array(m[:, 5]),
                "arrive_ts": ts_array(m[:, 6]),
            },
            schema=MOVES_SCHEMA,
        )
        rows["truck_moves"] += write_parquet(moves, run.fact_path("truck_moves", day))
        rows["store_inventory_snapshot"] += _snapshot(run, "store_inventory_snapshot", day, balance)
    _save_balance(run, "store_inventory.npy", balance)
    return rows


def dc_inventory(run: PackRun) -> dict[str, int]:
    c = run.config
    st = load_dim(run, "stores")
    store_dc = st["dc_id"].to_numpy() - 1
    n_prod = c.products
    store_target = store_targets(run)
    target = np.zeros((c.dcs, n_prod), dtype=np.int64)
    np.add.at(target, store_dc, store_target)
    pop = load_dim(run, "products")["popularity"].to_numpy()
    target = 2 * target + np.ceil(7 * c.online_orders_per_day * pop / c.dcs).astype(np.int64)[None, :] + 10
    reorder = target // 2
    balance, initial = _load_balance(run, "dc_inventory.npy", target)
    rows = {"dc_inventory_txn": 0, "dc_inventory_snapshot": 0}
    for day in run.dates():
        base = day_start(day)
        tx = pq.read_table(run.fact_path("store_inventory_txn", day), columns=["location_id", "product_id", "txn_type", "qty"])
        tx = tx.filter(pa.compute.equal(tx["txn_type"], "DELIVERY"))
        flat = store_dc[tx["location_id"].to_numpy() - 1].astype(np.int64) * n_prod + tx["product_id"].to_numpy() - 1
        to_stores = np.bincount(flat, weights=tx["qty"].to_numpy(), minlength=c.dcs * n_prod)
        to_stores = to_stores.astype(np.int64).reshape(c.dcs, n_prod)
        oo = pq.read_table(run.fact_path("online_orders", day), columns=["dc_id", "product_id", "qty"])
        flat = (oo["dc_id"].to_numpy().astype(np.int64) - 1) * n_prod + oo["product_id"].to_numpy() - 1
        online = np.bincount(flat, weights=oo["qty"].to_numpy(), minlength=c.dcs * n_prod)
        online = online.astype(np.int64).reshape(c.dcs, n_prod)
        after = balance - to_stores - online
        receive = np.where(after < reorder, target - after, 0)
        parts: list[Part] = []
        if initial and day == run.start:
            di, pi = np.nonzero(np.ones_like(balance, dtype=bool))
            parts.append(("INITIAL", di, pi, np.full(di.size, base), balance[di, pi], balance[di, pi], np.full(di.size, -1)))
        for kind, qty, at in (
            ("RECEIVE", receive, base),
            ("SHIP_STORE", -to_stores, base + 1800),
            ("SHIP_ONLINE", -online, base + 23 * 3600),
        ):
            di, pi = np.nonzero(qty)
            balance = balance + qty
            parts.append((kind, di, pi, np.full(di.size, at), qty[di, pi], balance[di, pi], np.full(di.size, -1)))
        assert (balance >= 0).all(), "DC inventory went negative"  # guaranteed by construction
        rows["dc_inventory_txn"] += write_parquet(_txns(day, parts), run.fact_path("dc_inventory_txn", day))
        rows["dc_inventory_snapshot"] += _snapshot(run, "dc_inventory_snapshot", day, balance)
    _save_balance(run, "dc_inventory.npy", balance)
    return rows
