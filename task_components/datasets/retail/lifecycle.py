"""Retail fact rows as the seed tool's lifecycle events (``receipt_created``, ``online_order_picked`` ...).

One row can be several events at different times: an online order is ``online_order_created`` at its
``created_ts``, ``_picked`` at ``picked_ts`` and ``_shipped`` at ``shipped_ts``; a truck move departs and
arrives; an inventory transaction is ``inventory_updated``, and also ``stockout_detected`` when it
leaves nothing on hand. Each event's payload is its whole row (a receipt line also carries its
receipt's store), so a consumer needs no lookup. Keys name the entity whose events must stay in order
(``store-<id>``, ``dc-<id>``, ``customer-<id>``): a store's receipts, deliveries and stock updates
share a partition. Within one timestamp, events follow ``ORDER``: a receipt is created before its
lines and paid after them, a truck arrives before the delivery it brings is booked.

Tables without a lifecycle here (campaigns, marketing, snapshots) keep one ``retail.<table>`` event per
row at their first timestamp column.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["LIFECYCLE", "ORDER", "EventSpec", "specs_for"]


@dataclass(frozen=True, slots=True)
class EventSpec:
    event_type: str
    time: str  # the row's column holding the event's time
    key: str  # the row's column naming the entity (its prefix below)
    key_prefix: str
    only_zero: str | None = None  # emitted only for rows where this column is 0 (a stockout)


ORDER = [
    "truck_departed",
    "truck_arrived",
    "customer_entered",
    "ble_ping_detected",
    "receipt_created",
    "receipt_line_added",
    "payment_processed",
    "promotion_applied",
    "online_order_created",
    "online_order_picked",
    "online_order_shipped",
    "inventory_updated",
    "stockout_detected",
]


def _inventory(prefix: str) -> list[EventSpec]:
    return [
        EventSpec("inventory_updated", "ts", "location_id", prefix),
        EventSpec("stockout_detected", "ts", "location_id", prefix, only_zero="balance_after"),
    ]


LIFECYCLE: dict[str, list[EventSpec]] = {
    "receipts": [
        EventSpec("receipt_created", "ts", "store_id", "store"),
        EventSpec("payment_processed", "ts", "store_id", "store"),
    ],
    "receipt_lines": [EventSpec("receipt_line_added", "ts", "store_id", "store")],  # ts, store_id: its receipt's
    "online_orders": [
        EventSpec("online_order_created", "created_ts", "dc_id", "dc"),
        EventSpec("online_order_picked", "picked_ts", "dc_id", "dc"),
        EventSpec("online_order_shipped", "shipped_ts", "dc_id", "dc"),
    ],
    "truck_moves": [
        EventSpec("truck_departed", "depart_ts", "store_id", "store"),
        EventSpec("truck_arrived", "arrive_ts", "store_id", "store"),
    ],
    "store_inventory_txn": _inventory("store"),
    "dc_inventory_txn": _inventory("dc"),
    "foot_traffic": [EventSpec("customer_entered", "ts", "store_id", "store")],
    "ble_pings": [EventSpec("ble_ping_detected", "ts", "store_id", "store")],
    "campaign_conversions": [EventSpec("promotion_applied", "ts", "customer_id", "customer")],
}


def specs_for(table: str) -> list[EventSpec]:
    return LIFECYCLE.get(table, [])


def with_receipt(lines: pa.Table, receipts: pa.Table | None) -> pa.Table:
    """Receipt lines with their receipt's time and store (a line happens when its receipt does)."""
    if receipts is None:
        raise ValueError("receipt_lines events need the same day's receipts (their time and store)")
    at = pc.index_in(lines["receipt_id"], value_set=receipts["receipt_id"])
    return lines.append_column("store_id", pc.take(receipts["store_id"], at)).append_column("ts", pc.take(receipts["ts"], at))


def mask_for(spec: EventSpec, data: pa.Table) -> pa.Array | None:
    if spec.only_zero is None:
        return None
    return pc.equal(data[spec.only_zero], 0).combine_chunks()


def rank(event_type: str) -> int:
    return ORDER.index(event_type) if event_type in ORDER else len(ORDER)
