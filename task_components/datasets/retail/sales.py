"""Retail sales facts, one day at a time: receipts with their lines, foot traffic, online orders.

Everything of a day is drawn from that day's own generator (seed, table, day), vectorized over the
whole chain: receipts per store are Poisson around (store size x day multiplier), their hours follow the
hour profile cut to the store's opening hours, and baskets follow the customer's segment. Money is whole
cents (int64), so "total = sum of lines + tax" holds exactly, not to a float tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from task_components.datasets.pack import PackRun, rng_for
from task_components.datasets.retail.config import HOUR_PROFILE, ONLINE_HOUR_PROFILE, day_multiplier, is_closed
from task_components.datasets.retail.dims import SEGMENTS, day_no, day_start
from task_components.datasets.retail.fast_io import POOL, Choice, Writer, read_columns, read_dim, strings

__all__ = ["foot_traffic", "online_orders", "open_hour_cdf", "receipt_ids", "receipts", "seconds_of", "ts_array"]

KEY_STRIDE = 100_000_000  # keys are day_no * stride + sequence: unique across days and runs
PAYMENTS = np.array(["card", "cash", "mobile", "gift_card"])
PAYMENT_NAMES = pa.array(PAYMENTS.tolist(), pa.string())
PAYMENT_SHARES = [0.55, 0.2, 0.2, 0.05]
TS = pa.timestamp("ms")  # Parquet has no second unit: ms round-trips unchanged


def receipt_ids(day: date, n: int) -> np.ndarray:
    """The ids of a day's ``n`` receipts, in row order: a table reading the receipts back derives them
    from the row instead of decoding the column."""
    return day_no(day) * KEY_STRIDE + np.arange(1, n + 1, dtype=np.int64)


def ts_array(seconds: object) -> pa.Array:
    return pa.array(np.asarray(seconds, dtype=np.int64) * 1000, TS, memory_pool=POOL)


def seconds_of(column: pa.ChunkedArray) -> np.ndarray:
    return column.cast(pa.int64()).to_numpy() // 1000


RECEIPTS_SCHEMA = pa.schema(
    [
        ("receipt_id", pa.int64()),
        ("store_id", pa.int32()),
        ("customer_id", pa.int64()),
        ("ts", TS),
        ("item_count", pa.int32()),
        ("subtotal_cents", pa.int64()),
        ("tax_cents", pa.int64()),
        ("total_cents", pa.int64()),
        ("payment_method", pa.string()),
    ]
)
LINES_SCHEMA = pa.schema(
    [
        ("receipt_id", pa.int64()),
        ("line_no", pa.int16()),
        ("product_id", pa.int32()),
        ("qty", pa.int32()),
        ("unit_price_cents", pa.int64()),
        ("ext_price_cents", pa.int64()),
    ]
)


def open_hour_cdf(open_hour: np.ndarray, close_hour: np.ndarray, profile: np.ndarray) -> np.ndarray:
    """Per store, the cumulative share of its day's demand by hour, zero outside its opening hours."""
    hours = np.arange(24)
    mask = (hours[None, :] >= open_hour[:, None]) & (hours[None, :] < close_hour[:, None])
    w = profile[None, :] * mask
    return np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)


def sample_hours(rng: np.random.Generator, cdf: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Hour per draw: how many of its row's cdf steps the uniform passes (at most 23).

    ``rows`` must be sorted (the draws of one cdf row are contiguous): each run of a row is one
    ``searchsorted`` of its uniforms, which counts exactly the steps ``u >= cdf`` a row-by-hour
    comparison would, without the draws x 24 matrix."""
    u = rng.random(rows.size)
    out = np.empty(rows.size, np.int64)
    bounds = np.flatnonzero(np.diff(rows)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, rows.size], strict=True):
        if hi > lo:
            out[lo:hi] = cdf[rows[lo]].searchsorted(u[lo:hi], side="right")
    return np.minimum(out, 23)


class _Customers:
    """Customers grouped by home store, so a store's shoppers are drawn from its own customers."""

    def __init__(self, run: PackRun) -> None:
        cu = read_dim(run, "customers")
        home = cu["home_store_id"].to_numpy() - 1
        self.order = np.argsort(home, kind="stable")
        self.start = np.searchsorted(home[self.order], np.arange(run.config.stores))
        self.count = np.bincount(home, minlength=run.config.stores)
        seg_names = list(SEGMENTS)
        seg = pc.index_in(cu["segment"], value_set=pa.array(seg_names)).to_numpy()
        self.basket = np.array([m for _, m in SEGMENTS.values()])[seg]
        self.home = home

    def draw(self, rng: np.random.Generator, store_idx: np.ndarray) -> np.ndarray:
        """Customer row per receipt: mostly the store's own customers, 10% anyone (travellers)."""
        n = store_idx.size
        own = self.start[store_idx] + (rng.random(n) * self.count[store_idx]).astype(np.int64)
        own = self.order[np.minimum(own, self.order.size - 1)]
        anyone = rng.integers(0, self.home.size, n)
        return np.where((rng.random(n) < 0.1) | (self.count[store_idx] == 0), anyone, own)


@dataclass(frozen=True, slots=True)
class _Chain:
    """What every day of receipts draws from: the run's stores, products and customers."""

    size: np.ndarray  # store size factor
    cdf: np.ndarray  # per store, the hour cdf
    tax_bp: np.ndarray  # per store
    price: np.ndarray  # per product
    products: Choice  # by popularity
    shoppers: _Customers


def receipts(run: PackRun) -> dict[str, int]:
    """Receipts and their lines; a day is written on a background thread while the next is drawn."""
    st = read_dim(run, "stores")
    pr = read_dim(run, "products")
    geo = read_dim(run, "geographies")
    chain = _Chain(
        size=st["size_factor"].to_numpy(),
        cdf=open_hour_cdf(st["open_hour"].to_numpy(), st["close_hour"].to_numpy(), HOUR_PROFILE),
        tax_bp=geo["tax_rate_bp"].to_numpy().astype(np.int64)[st["geography_id"].to_numpy() - 1],
        price=pr["sale_price_cents"].to_numpy(),
        products=Choice(pr["popularity"].to_numpy()),
        shoppers=_Customers(run),
    )
    rows = {"receipts": 0, "receipt_lines": 0}
    with Writer() as out:
        for day in run.dates():
            head, lines = _receipts_day(run, chain, day)
            rows["receipts"] += out.put(head, run.fact_path("receipts", day))
            rows["receipt_lines"] += out.put(lines, run.fact_path("receipt_lines", day))
    return rows


def _receipts_day(run: PackRun, chain: _Chain, day: date) -> tuple[pa.Table, pa.Table]:
    """One day of receipts and lines, drawn from the day's own generator in a fixed order."""
    c = run.config
    rng = rng_for(c.seed, "receipts", day)
    counts = rng.poisson(c.receipts_per_store_day * chain.size * day_multiplier(day))
    store_idx = np.repeat(np.arange(c.stores), counts)
    secs = sample_hours(rng, chain.cdf, store_idx) * 3600 + rng.integers(0, 3600, store_idx.size)
    cust = chain.shoppers.draw(rng, store_idx)
    order = np.argsort(secs * c.stores + store_idx, kind="stable")  # ids follow time, then store
    store_idx, secs, cust = store_idx[order], secs[order], cust[order]
    n = store_idx.size
    ids = receipt_ids(day, n)
    n_lines = 1 + rng.poisson(np.maximum(chain.shoppers.basket[cust] - 1, 0))
    line_rec = np.repeat(np.arange(n), n_lines)
    starts = np.cumsum(n_lines) - n_lines
    line_no = np.arange(line_rec.size) - starts[line_rec] + 1
    prod = chain.products.draw(rng, line_rec.size)  # = rng.choice(n_products, line_rec.size, p=popularity)
    qty = 1 + rng.poisson(0.25, line_rec.size)
    ext = qty * chain.price[prod]
    subtotal = np.add.reduceat(ext, starts) if n else np.zeros(0, np.int64)
    tax = (subtotal * chain.tax_bp[store_idx] + 5_000) // 10_000  # round half up, in cents
    items = np.add.reduceat(qty, starts) if n else np.zeros(0, np.int64)
    head = pa.table(
        {
            "receipt_id": ids,
            "store_id": (store_idx + 1).astype(np.int32),
            "customer_id": (cust + 1).astype(np.int64),
            "ts": ts_array(day_start(day) + secs),
            "item_count": items.astype(np.int32),
            "subtotal_cents": subtotal,
            "tax_cents": tax,
            "total_cents": subtotal + tax,
            "payment_method": strings(PAYMENT_NAMES, rng.choice(PAYMENTS.size, n, p=PAYMENT_SHARES)),
        },
        schema=RECEIPTS_SCHEMA,
    )
    lines = pa.table(
        {
            "receipt_id": ids[line_rec],
            "line_no": line_no.astype(np.int16),
            "product_id": (prod + 1).astype(np.int32),
            "qty": qty.astype(np.int32),
            "unit_price_cents": chain.price[prod],
            "ext_price_cents": ext,
        },
        schema=LINES_SCHEMA,
    )
    return head, lines


FOOT_SCHEMA = pa.schema([("store_id", pa.int32()), ("ts", TS), ("hour", pa.int8()), ("visitors", pa.int32()), ("transactions", pa.int32())])


def foot_traffic(run: PackRun) -> dict[str, int]:
    """Visitors per store and open hour: the hour's receipts plus those who bought nothing (conversion
    20-40%), so traffic is never below transactions; closed days have no rows."""
    c = run.config
    st = read_dim(run, "stores")
    open_h, close_h = st["open_hour"].to_numpy(), st["close_hour"].to_numpy()
    rows = 0
    with Writer() as out:
        for day in run.dates():
            rng = rng_for(c.seed, "foot_traffic", day)
            rc = read_columns(run.fact_path("receipts", day), ["store_id", "ts"])
            if is_closed(day):
                rows += out.put(FOOT_SCHEMA.empty_table(), run.fact_path("foot_traffic", day))
                continue
            s = rc["store_id"].to_numpy() - 1
            hour = (seconds_of(rc["ts"]) - day_start(day)) // 3600
            tx = np.bincount(s * 24 + hour, minlength=c.stores * 24).reshape(c.stores, 24)
            hours = np.arange(24)
            open_mask = (hours[None, :] >= open_h[:, None]) & (hours[None, :] < close_h[:, None])
            si, hi = np.nonzero(open_mask)
            t = tx[si, hi]
            conversion = rng.uniform(0.2, 0.4, si.size)
            visitors = t + rng.poisson(t * (1 / conversion - 1) + 2)
            table = pa.table(
                {
                    "store_id": (si + 1).astype(np.int32),
                    "ts": ts_array(day_start(day) + hi * 3600),
                    "hour": hi.astype(np.int8),
                    "visitors": visitors.astype(np.int32),
                    "transactions": t.astype(np.int32),
                },
                schema=FOOT_SCHEMA,
            )
            rows += out.put(table, run.fact_path("foot_traffic", day))
    return {"foot_traffic": rows}


ONLINE_SCHEMA = pa.schema(
    [
        ("order_id", pa.int64()),
        ("customer_id", pa.int64()),
        ("product_id", pa.int32()),
        ("dc_id", pa.int32()),
        ("qty", pa.int32()),
        ("unit_price_cents", pa.int64()),
        ("total_cents", pa.int64()),
        ("created_ts", TS),
        ("picked_ts", TS),
        ("shipped_ts", TS),
    ]
)


def online_orders(run: PackRun) -> dict[str, int]:
    """Orders created 00:00-15:59, picked 0.5-4 h later and shipped 0.5-3 h after that: the whole
    lifecycle stays within its day, so a day's DC stock movements are complete in that day's partition."""
    c = run.config
    cu = read_dim(run, "customers")
    st = read_dim(run, "stores")
    pr = read_dim(run, "products")
    cust_dc = st["dc_id"].to_numpy()[cu["home_store_id"].to_numpy() - 1]
    pop, price = pr["popularity"].to_numpy(), pr["sale_price_cents"].to_numpy()
    cdf = open_hour_cdf(np.array([0]), np.array([16]), ONLINE_HOUR_PROFILE)
    rows = 0
    with Writer() as out:
        for day in run.dates():
            rng = rng_for(c.seed, "online_orders", day)
            n = int(rng.poisson(c.online_orders_per_day * (day_multiplier(day) or 0.6)))
            cust = rng.integers(0, cust_dc.size, n)
            prod = rng.choice(pop.size, n, p=pop)
            qty = 1 + rng.poisson(0.2, n)
            created = day_start(day) + sample_hours(rng, cdf, np.zeros(n, np.int64)) * 3600 + rng.integers(0, 3600, n)
            created.sort()
            picked = created + rng.integers(1800, 14_400, n)
            shipped = picked + rng.integers(1800, 10_800, n)
            table = pa.table(
                {
                    "order_id": day_no(day) * KEY_STRIDE + np.arange(1, n + 1, dtype=np.int64),
                    "customer_id": (cust + 1).astype(np.int64),
                    "product_id": (prod + 1).astype(np.int32),
                    "dc_id": cust_dc[cust].astype(np.int32),
                    "qty": qty.astype(np.int32),
                    "unit_price_cents": price[prod],
                    "total_cents": qty * price[prod],
                    "created_ts": ts_array(created),
                    "picked_ts": ts_array(picked),
                    "shipped_ts": ts_array(shipped),
                },
                schema=ONLINE_SCHEMA,
            )
            rows += out.put(table, run.fact_path("online_orders", day))
    return {"online_orders": rows}
