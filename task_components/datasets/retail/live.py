"""The realtime streamer's simulation: "now" retail events drawn from the pack's dimensions.

Each burst draws shoppers and online orders until it holds ``burst`` events. A receipt is
``receipt_created``, one ``receipt_line_added`` per line, ``payment_processed`` and one
``inventory_updated`` per line (the store's stock going down), all at the burst's time and keyed by the
store. An online order is ``online_order_created`` now; its ``online_order_picked`` (with the DC's
``inventory_updated``) and ``online_order_shipped`` are scheduled ``fulfilment_seconds`` later on
average (counted in bursts of ``emit_interval_ms``, so a burst depends on the state alone, never on the
wall clock) and wait in ``pending`` until their burst comes. What a burst drew beyond its size waits in
``outbox``. Every burst sends the due and waiting events first, in event-time order, so each key's
events leave in time order even across a restart.

Determinism: burst ``k`` draws from a generator keyed by (seed, k), ids continue from the state and
only timestamps come from the clock, so a burst that was drawn but not confirmed sent before a stop is
drawn again, with the same ids and trace ids, by the next run (delivery is at least once; consumers
drop repeats by trace id). The state is the
``realtime`` entry of ``generation_state.json``; ids start at 9 x 10^15, far above the historical keys.
"""

from __future__ import annotations

import math
import uuid
import zlib
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from task_components.datasets.pack import PackRun
from task_components.datasets.retail.dims import SEGMENTS
from task_components.datasets.retail.fast_io import read_dim

__all__ = ["LiveRetail", "LiveState"]

ID_BASE = 9 * 10**15
NAMESPACE = uuid.UUID("0b5f8d4e-7a51-4c1e-9a0e-6a3c0d2f9b11")
PAYMENTS = ["card", "cash", "mobile", "gift_card"]
PAYMENT_SHARES = [0.55, 0.2, 0.2, 0.05]
ONLINE_SHARE = 0.2  # of drawn activities, the rest are store visits


@dataclass(slots=True)
class LiveState:
    bursts: int = 0  # bursts confirmed sent: the next one draws from generator (seed, bursts)
    receipts: int = 0
    orders: int = 0
    outbox: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)  # each with "due": the burst that sends it

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LiveState:
        return cls(**{k: raw[k] for k in ("bursts", "receipts", "orders", "outbox", "pending") if k in raw})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def _stamped(e: dict[str, Any], at: str) -> dict[str, Any]:
    """A scheduled event happens when its burst sends it (the burst is due at or after the scheduled
    time; one running late stamps its own), so it never lands behind newer events of its key."""
    stamp = "picked_ts" if e["event_type"] == "online_order_picked" else "shipped_ts"
    payload = e["payload"] | ({stamp: at} if stamp in e["payload"] else {})
    return e | {"ts": at, "payload": payload}


class LiveRetail:
    """Draws bursts of events; ``burst`` is pure (returns the next state), so a caller adopts a state
    only once its events are delivered."""

    def __init__(self, run: PackRun, fulfilment_seconds: float, interval_seconds: float) -> None:
        c = run.config
        self.seed, self.fulfilment, self.interval = c.seed, fulfilment_seconds, interval_seconds
        st, geo = read_dim(run, "stores"), read_dim(run, "geographies")
        cu, pr = read_dim(run, "customers"), read_dim(run, "products")
        self.store_dc = st["dc_id"].to_numpy()
        self.store_tax = geo["tax_rate_bp"].to_numpy().astype(np.int64)[st["geography_id"].to_numpy() - 1]
        self.size = st["size_factor"].to_numpy() / st["size_factor"].to_numpy().sum()
        self.home = cu["home_store_id"].to_numpy()
        self.cust_dc = self.store_dc[self.home - 1]
        self.by_home = np.argsort(self.home, kind="stable")  # customers grouped by home store
        self.home_start = np.searchsorted(self.home[self.by_home], np.arange(1, self.store_dc.size + 2))
        seg_names = list(SEGMENTS)
        seg = np.array([seg_names.index(s) for s in cu["segment"].to_pylist()])
        self.basket = np.array([m for _, m in SEGMENTS.values()])[seg]
        self.price = pr["sale_price_cents"].to_numpy()
        self.pop = pr["popularity"].to_numpy()

    def burst(self, state: LiveState, size: int, now: float) -> tuple[list[dict[str, Any]], LiveState]:
        """The next ``size`` events at wall time ``now`` and the state after them."""
        rng = np.random.default_rng([self.seed, zlib.crc32(b"realtime"), state.bursts])
        nxt = LiveState(state.bursts + 1, state.receipts, state.orders, [], [])
        at = iso(now)
        due = [_stamped(e, at) for e in state.pending if e["due"] <= state.bursts]
        nxt.pending = [e for e in state.pending if e["due"] > state.bursts]
        events = sorted([*state.outbox, *due], key=lambda e: e["ts"])  # stable: a unit's events keep their order
        while len(events) < size:
            if rng.random() < ONLINE_SHARE:
                events += self._order(rng, nxt, now)
            else:
                events += self._receipt(rng, nxt, now)
        nxt.outbox = events[size:]
        return [{k: v for k, v in e.items() if k != "due"} for e in events[:size]], nxt

    def _event(self, kind: str, key: str, t: float, payload: dict[str, Any], unit: str, i: int) -> dict[str, Any]:
        trace = str(uuid.uuid5(NAMESPACE, f"{self.seed}/{unit}/{i}/{kind}"))
        return {"event_type": kind, "key": key, "ts": iso(t), "trace_id": trace, "payload": payload}

    def _receipt(self, rng: np.random.Generator, s: LiveState, now: float) -> list[dict[str, Any]]:
        s.receipts += 1
        rid = ID_BASE + s.receipts
        store = int(rng.choice(self.store_dc.size, p=self.size)) + 1
        lo, hi = self.home_start[store - 1], self.home_start[store]
        local = hi > lo and rng.random() > 0.1  # mostly the store's own customers, 10% travellers
        cust = int(self.by_home[rng.integers(lo, hi)] if local else rng.integers(self.home.size)) + 1
        n_lines = 1 + int(rng.poisson(max(self.basket[cust - 1] - 1, 0)))
        prods = rng.choice(self.pop.size, n_lines, p=self.pop)
        qty = 1 + rng.poisson(0.25, n_lines)
        ext = qty * self.price[prods]
        subtotal = int(ext.sum())
        tax = (subtotal * int(self.store_tax[store - 1]) + 5_000) // 10_000
        key, unit, at = f"store-{store}", f"r{rid}", iso(now)
        head: dict[str, Any] = {"receipt_id": rid, "store_id": store, "customer_id": cust, "ts": at, "item_count": int(qty.sum())}
        head |= {"subtotal_cents": subtotal, "tax_cents": tax, "total_cents": subtotal + tax}
        head["payment_method"] = PAYMENTS[int(rng.choice(len(PAYMENTS), p=PAYMENT_SHARES))]
        out = [self._event("receipt_created", key, now, head, unit, 0)]
        for j, (p, q, x) in enumerate(zip(prods, qty, ext, strict=True), start=1):
            line: dict[str, Any] = {"receipt_id": rid, "line_no": j, "product_id": int(p) + 1, "qty": int(q), "store_id": store, "ts": at}
            line |= {"unit_price_cents": int(self.price[p]), "ext_price_cents": int(x)}
            out.append(self._event("receipt_line_added", key, now, line, unit, j))
        pay = {"receipt_id": rid, "store_id": store, "customer_id": cust, "payment_method": head["payment_method"]}
        out.append(self._event("payment_processed", key, now, pay | {"amount_cents": subtotal + tax}, unit, 0))
        for j, (p, q) in enumerate(zip(prods, qty, strict=True), start=1):
            upd = {"store_id": store, "product_id": int(p) + 1, "quantity_delta": -int(q), "reason": "SALE", "receipt_id": rid}
            out.append(self._event("inventory_updated", key, now, upd, unit, j))
        return out

    def _order(self, rng: np.random.Generator, s: LiveState, now: float) -> list[dict[str, Any]]:
        s.orders += 1
        oid = ID_BASE + s.orders
        cust = int(rng.integers(self.home.size)) + 1
        dc = int(self.cust_dc[cust - 1])
        p = int(rng.choice(self.pop.size, p=self.pop))
        q = 1 + int(rng.poisson(0.2))
        picked = now + self.fulfilment * float(rng.uniform(0.2, 0.8))
        shipped = picked + self.fulfilment * float(rng.uniform(0.2, 0.8))
        key, unit = f"dc-{dc}", f"o{oid}"
        order: dict[str, Any] = {"order_id": oid, "customer_id": cust, "product_id": p + 1, "dc_id": dc, "qty": q}
        order |= {"unit_price_cents": int(self.price[p]), "total_cents": q * int(self.price[p]), "created_ts": iso(now)}
        picked_ev = self._event("online_order_picked", key, picked, order | {"picked_ts": iso(picked)}, unit, 0)
        stock = {"dc_id": dc, "product_id": p + 1, "quantity_delta": -q, "reason": "SHIP_ONLINE", "order_id": oid}
        stock_ev = self._event("inventory_updated", key, picked, stock, unit, 1)
        shipped_ev = self._event("online_order_shipped", key, shipped, order | {"shipped_ts": iso(shipped)}, unit, 0)
        # due in the first burst scheduled at or after its time, which stamps it with its own
        at_pick, at_ship = (s.bursts - 1 + math.ceil((t - now) / self.interval) for t in (picked, shipped))
        s.pending += [picked_ev | {"due": at_pick}, stock_ev | {"due": at_pick}, shipped_ev | {"due": at_ship}]
        return [self._event("online_order_created", key, now, order, unit, 0)]
