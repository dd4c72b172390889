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

from task_components.datasets.pack import PackRun, rng_for
from task_components.datasets.retail.dims import SEGMENTS, day_no, day_start
from task_components.datasets.retail.fast_io import Writer, read_columns, read_dim, strings
from task_components.datasets.retail.sales import TS, receipt_ids, ts_array

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
TXN_TYPES = ["INITIAL", "DELIVERY", "SALE", "RECEIVE", "SHIP_STORE", "SHIP_ONLINE"]
TXN_NAMES = pa.array(TXN_TYPES, pa.string())


def _txns(day: date, parts: list[Part]) -> pa.Table:
    """Rows of (type, location idx, product idx, ts, qty, balance after, shipment) in booking order."""
    types = np.concatenate([np.full(p[1].size, TXN_TYPES.index(p[0]), dtype=np.int32) for p in parts])
    loc, prod, ts, qty, bal, ship = (np.concatenate([p[i] for p in parts]) for i in range(1, 7))
    n = loc.size
    return pa.table(
        {
            "txn_id": day_no(day) * TXN_STRIDE + np.arange(1, n + 1, dtype=np.int64),
            "location_id": (loc + 1).astype(np.int32),
            "product_id": (prod + 1).astype(np.int32),
            "ts": ts_array(ts.astype(np.int64)),
            "txn_type": strings(TXN_NAMES, types),
            "qty": qty.astype(np.int64),
            "balance_after": bal.astype(np.int64),
            "shipment_id": pa.array(ship, pa.int64(), mask=ship < 0),
        },
        schema=TXN_SCHEMA,
    )


SNAPSHOT_SCHEMA = pa.schema([("location_id", pa.int32()), ("product_id", pa.int32()), ("ts", TS), ("on_hand", pa.int64())])


def _snapshot(run: PackRun, table: str, day: date, balance: np.ndarray, out: Writer) -> int:
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
    return out.put(snap, run.fact_path(table, day))


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
    size = read_dim(run, "stores")["size_factor"].to_numpy()
    pop = read_dim(run, "products")["popularity"].to_numpy()
    shares = np.array([s for s, _ in SEGMENTS.values()])
    items = float((shares * np.array([m for _, m in SEGMENTS.values()])).sum()) * 1.25  # lines x mean qty
    expected = c.receipts_per_store_day * size[:, None] * items * pop[None, :]
    return np.ceil(c.stock_days * expected).astype(np.int64) + 4


class _Fleets:
    """Each store's shipment split over its DC's trucks in turn, each loaded up to its capacity.

    Store ``s`` on day ``d`` starts with truck ``(s + d) % F`` of its DC's F trucks (in truck id order)
    and takes the next one while units are left: all stores at once, as a stores x trips matrix of
    capacities whose running sum says what each trip carries."""

    def __init__(self, store_dc: np.ndarray, truck_dc: np.ndarray, truck_cap: np.ndarray) -> None:
        dcs = np.unique(store_dc)
        fleets = [np.nonzero(truck_dc == d)[0] for d in dcs]
        self.size = np.array([f.size for f in fleets], dtype=np.int64)
        if (self.size == 0).any():
            raise ValueError(f"DC {int(dcs[self.size == 0][0])} serves stores but has no trucks")
        self.table = np.zeros((dcs.size, int(self.size.max())), dtype=np.int64)
        for i, f in enumerate(fleets):
            self.table[i, : f.size] = f
        self.row = np.searchsorted(dcs, store_dc)  # per store, its DC's row
        self.smallest = np.array([truck_cap[f].min() for f in fleets], dtype=np.int64)
        self.cap = truck_cap

    def loads(self, units: np.ndarray, day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(store, truck, units) per trip, by store then trip: the order of a store-by-store loop."""
        stores = np.flatnonzero(units)
        if stores.size == 0:
            return stores, stores, units[stores]
        row, want = self.row[stores], units[stores]
        trips = int((-(-want // self.smallest[row])).max())  # enough trips for the largest shipment
        slot = (stores[:, None] + day + np.arange(trips)[None, :]) % self.size[row][:, None]
        truck = self.table[row[:, None], slot]
        cap = self.cap[truck]
        load = np.clip(want[:, None] - (np.cumsum(cap, axis=1) - cap), 0, cap)
        si, ki = np.nonzero(load)
        return stores[si], truck[si, ki], load[si, ki]


def store_inventory(run: PackRun) -> dict[str, int]:
    c = run.config
    st = read_dim(run, "stores")
    tr = read_dim(run, "trucks")
    store_dc = st["dc_id"].to_numpy()
    truck_dc, truck_cap = tr["dc_id"].to_numpy(), tr["capacity_units"].to_numpy().astype(np.int64)
    fleets = _Fleets(store_dc, truck_dc, truck_cap)
    close_s = st["close_hour"].to_numpy().astype(np.int64) * 3600 - 1
    target = store_targets(run)
    reorder = target // 2
    balance, initial = _load_balance(run, "store_inventory.npy", target)
    n_stores, n_prod = target.shape
    rows = {"store_inventory_txn": 0, "truck_moves": 0, "store_inventory_snapshot": 0}
    with Writer() as out:
        for day in run.dates():
            rng = rng_for(c.seed, "store_inventory", day)
            base = day_start(day)
            rc = read_columns(run.fact_path("receipts", day), ["store_id"])
            ln = read_columns(run.fact_path("receipt_lines", day), ["receipt_id", "product_id", "qty"])
            row = ln["receipt_id"].to_numpy() - receipt_ids(day, 1)[0]  # ids are first + row (sales.receipt_ids)
            line_store = rc["store_id"].to_numpy()[row] - 1
            flat = line_store.astype(np.int64) * n_prod + ln["product_id"].to_numpy() - 1
            sales = np.bincount(flat, weights=ln["qty"].to_numpy(), minlength=n_stores * n_prod)
            sales = sales.astype(np.int64).reshape(n_stores, n_prod)
            after_sales = balance - sales
            deliver = np.where(after_sales < reorder, target - after_sales, 0)
            units = deliver.sum(axis=1)
            shipment = day_no(day) * 1_000_000 + np.arange(1, n_stores + 1, dtype=np.int64)
            depart0 = base + 1800 + rng.integers(0, 3600, n_stores)
            travel = rng.integers(3600, 4 * 3600, n_stores)
            s_of, truck, load = fleets.loads(units, day_no(day))
            arrive = np.where(units > 0, depart0 + travel, base)
            parts: list[Part] = []
            if initial and day == run.start:
                si, pi = np.nonzero(np.ones_like(balance, dtype=bool))
                parts.append(("INITIAL", si, pi, np.full(si.size, base), balance[si, pi], balance[si, pi], np.full(si.size, -1)))
            si, pi = np.nonzero(deliver > 0)
            parts.append(("DELIVERY", si, pi, arrive[si], deliver[si, pi], balance[si, pi] + deliver[si, pi], shipment[si]))
            balance = balance + deliver
            si, pi = np.nonzero(sales > 0)
            close = base + close_s[si]
            parts.append(("SALE", si, pi, close, -sales[si, pi], balance[si, pi] - sales[si, pi], np.full(si.size, -1)))
            balance = balance - sales
            assert (balance >= 0).all(), "store inventory went negative"  # guaranteed by construction
            rows["store_inventory_txn"] += out.put(_txns(day, parts), run.fact_path("store_inventory_txn", day))
            moves = pa.table(
                {
                    "move_id": day_no(day) * 1_000_000 + np.arange(1, s_of.size + 1, dtype=np.int64),
                    "shipment_id": shipment[s_of],
                    "truck_id": (truck + 1).astype(np.int32),
                    "dc_id": store_dc[s_of].astype(np.int32),
                    "store_id": (s_of + 1).astype(np.int32),
                    "units": load,
                    "depart_ts": ts_array(depart0[s_of]),
                    "arrive_ts": ts_array(depart0[s_of] + travel[s_of]),
                },
                schema=MOVES_SCHEMA,
            )
            rows["truck_moves"] += out.put(moves, run.fact_path("truck_moves", day))
            rows["store_inventory_snapshot"] += _snapshot(run, "store_inventory_snapshot", day, balance, out)
    _save_balance(run, "store_inventory.npy", balance)
    return rows


def dc_inventory(run: PackRun) -> dict[str, int]:
    c = run.config
    st = read_dim(run, "stores")
    store_dc = st["dc_id"].to_numpy() - 1
    n_prod = c.products
    store_target = store_targets(run)
    target = np.zeros((c.dcs, n_prod), dtype=np.int64)
    np.add.at(target, store_dc, store_target)
    pop = read_dim(run, "products")["popularity"].to_numpy()
    target = 2 * target + np.ceil(7 * c.online_orders_per_day * pop / c.dcs).astype(np.int64)[None, :] + 10
    reorder = target // 2
    balance, initial = _load_balance(run, "dc_inventory.npy", target)
    rows = {"dc_inventory_txn": 0, "dc_inventory_snapshot": 0}
    with Writer() as out:
        for day in run.dates():
            base = day_start(day)
            # the DELIVERY rows: the only ones with a shipment (reading the ids is cheaper than the type names)
            tx = read_columns(run.fact_path("store_inventory_txn", day), ["location_id", "product_id", "qty", "shipment_id"])
            tx = tx.filter(tx["shipment_id"].is_valid())
            flat = store_dc[tx["location_id"].to_numpy() - 1].astype(np.int64) * n_prod + tx["product_id"].to_numpy() - 1
            to_stores = np.bincount(flat, weights=tx["qty"].to_numpy(), minlength=c.dcs * n_prod)
            to_stores = to_stores.astype(np.int64).reshape(c.dcs, n_prod)
            oo = read_columns(run.fact_path("online_orders", day), ["dc_id", "product_id", "qty"])
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
            rows["dc_inventory_txn"] += out.put(_txns(day, parts), run.fact_path("dc_inventory_txn", day))
            rows["dc_inventory_snapshot"] += _snapshot(run, "dc_inventory_snapshot", day, balance, out)
    _save_balance(run, "dc_inventory.npy", balance)
    return rows
