"""``dataset.events``: a dataset pack's facts as an event stream to Kafka, in event-time order.

The retail seed tool feeds near-real-time pipelines with the same facts it writes to files: each row
becomes its lifecycle events (retail/lifecycle.py: an online order is created, picked and shipped; an
inventory transaction is an inventory update), each an envelope (``event_type``, ``payload``,
``trace_id``, ``event_timestamp``, ``ingest_timestamp``, ``schema_version``, ``source``);
``event_types: table`` gives one ``retail.<table>`` event per row instead. This task reads the day
partitions its table tasks just wrote (Parquet or CSV: ``state/layout.json``; so an incremental run
publishes only the new days), merges the chosen tables per day in event-time order and sends them:

* ``mode: historical`` sends as fast as ``rate`` allows (0: no limit), with ``burst_factor`` times that
  rate for ``burst_seconds`` out of every ``burst_every`` (the bursty traffic real feeds have);
* ``mode: realtime`` keeps the events' own spacing, divided by ``speedup`` (1: a day takes a day).
  Backfill with a historical run, then keep a realtime run going day by day: the pack's saved state
  continues dates and keys, so the stream never repeats one.

Keys name the store (or DC/customer), so one store's events stay in order on one partition. The producer
retries a failing send in order (backoff ``retry_delay``) until ``request_timeout``; an event it refuses
or that is larger than ``max_event_bytes`` goes to ``dead_letter_topic`` with the reason and its trace
id; an event lost to an outage (broker unreachable) opens the circuit breaker (publish.py), no new
events are read until it is delivered, and an outage past ``max_outage_seconds`` fails the task. If the
dead-letter topic refuses too, the task fails (nothing is dropped silently) and the pack's state does
not advance when ``commit`` needs this task, so the run is simply run again: delivery is at least once,
and trace ids, UUIDv5 of (table, day, row, event type), are the same on a re-run, so consumers can drop repeats.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import anyio
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from dag_orchestrator.context import PipelineContext
from task_components.base import Component
from task_components.clients import kafka_options
from task_components.connect import missing
from task_components.contracts import DatasetTableResult
from task_components.datasets.output import Layout
from task_components.datasets.publish import Outgoing, Publisher, PublishParams
from task_components.datasets.retail.lifecycle import rank, specs_for, with_receipt

__all__ = ["DatasetEvents", "EventsResult", "pace"]

NAMESPACE = uuid.UUID("5b0c2f1e-8c8e-4f55-9a43-3d2d6f4f7a10")
KEY_COLUMNS = ("store_id", "dc_id", "location_id", "customer_id")
DEFAULT_TABLES = ["receipts", "receipt_lines", "online_orders", "truck_moves", "store_inventory_txn", "dc_inventory_txn"]


class EventsParams(PublishParams):
    tables: list[str] = Field(default_factory=lambda: list(DEFAULT_TABLES), min_length=1, description="fact tables to publish")
    event_types: Literal["lifecycle", "table"] = Field("lifecycle", description="the seed's lifecycle events, or retail.<table>")
    mode: Literal["historical", "realtime"] = "historical"
    rate: float = Field(0, ge=0, description="historical: events/s (0: as fast as the broker takes them)")
    burst_factor: float = Field(1.0, ge=1, description="historical: rate multiplier during a burst")
    burst_every: float = Field(60.0, gt=0, description="seconds between burst starts")
    burst_seconds: float = Field(0.0, ge=0, description="how long a burst lasts (0: no bursts)")
    speedup: float = Field(60.0, gt=0, description="realtime: event-time seconds per wall second")


SLICE = 5_000  # events sent before their acknowledgements are collected


class _Clock:
    """Send times across the whole run: the burst phase and the realtime spacing carry over day ends."""

    def __init__(self, t0: float) -> None:
        self.t0, self.next_at = t0, 0.0
        self.first_ts: float | None = None

    def offsets(self, events: pa.Table, p: EventsParams) -> list[float]:
        if p.mode == "realtime":
            ts = events["event_ts"].cast(pa.int64()).to_numpy() / 1000.0
            if self.first_ts is None and len(ts):
                self.first_ts = float(ts[0])
            return [] if not len(ts) else list((ts - (self.first_ts or 0.0)) / p.speedup)
        out = list(pace(events.num_rows + 1, p.rate, p.burst_factor, p.burst_every, p.burst_seconds, self.next_at))
        self.next_at = out.pop()
        return out


@dataclass(frozen=True, slots=True)
class EventsResult:
    topic: str
    sent: int
    dead_lettered: int
    days: list[str]
    seconds: float
    outages: int = 0  # times the circuit breaker opened


def pace(
    n: int,
    rate: float,
    burst_factor: float = 1.0,
    burst_every: float = 60.0,
    burst_seconds: float = 0.0,
    start: float = 0.0,
) -> Iterator[float]:
    """Send offsets (seconds from the run's start) for n events from ``start``: ``rate`` per second,
    ``burst_factor`` x rate during the first ``burst_seconds`` of every ``burst_every``. Pure: unit-tested."""
    t = start
    for _ in range(n):
        yield t
        if rate <= 0:
            continue
        bursting = burst_seconds > 0 and (t % burst_every) < burst_seconds
        t += 1.0 / (rate * (burst_factor if bursting else 1.0))


def _time_column(table: pa.Table) -> str:
    for name in table.column_names:
        if pa.types.is_timestamp(table.schema.field(name).type):
            return name
    raise ValueError(f"no timestamp column among {table.column_names}")


def _envelope_rows(data: pa.Table, table: str, event_type: str, ts: str, key: pa.Array, order: int) -> pa.Table:
    payload = [json.dumps(r, default=str, separators=(",", ":")) for r in data.drop_columns(["_row"]).to_pylist()]
    n = data.num_rows
    return pa.table(
        {
            "event_type": pa.array([event_type] * n, pa.string()),
            "table": pa.array([table] * n, pa.string()),
            "row": data["_row"],
            "rank": pa.array([order] * n, pa.int16()),
            "event_ts": pc.cast(data[ts], pa.timestamp("ms")),
            "key": key,
            "payload": pa.array(payload, pa.string()),
        }
    )


def day_events(out: Path, tables: list[str], day: str, event_types: str = "lifecycle") -> pa.Table:
    """One day's rows of ``tables`` as envelope columns, sorted by event time (vectorized, no row loop).

    Lifecycle events of one timestamp follow lifecycle.ORDER (a receipt before its lines)."""
    layout = Layout.of(out)
    parts = []
    for table in tables:
        data = layout.read(table, day)
        if data is None or data.num_rows == 0:  # e.g. no truck left that day
            continue
        data = data.append_column("_row", pa.array(range(data.num_rows), pa.int64()))
        specs = specs_for(table) if event_types == "lifecycle" else []
        if table == "receipt_lines" and specs:
            data = with_receipt(data, layout.read("receipts", day))
        if not specs:
            ts = _time_column(data)
            key = next((c for c in KEY_COLUMNS if c in data.column_names), data.column_names[0])
            parts.append(_envelope_rows(data, table, f"retail.{table}", ts, pc.cast(data[key], pa.string()), 0))
            continue
        for spec in specs:
            rows = data
            if spec.only_zero is not None:
                rows = data.filter(pc.equal(data[spec.only_zero], 0))
                if rows.num_rows == 0:
                    continue
            key = pc.binary_join_element_wise(spec.key_prefix, pc.cast(rows[spec.key], pa.string()), "-")
            parts.append(_envelope_rows(rows, table, spec.event_type, spec.time, key, rank(spec.event_type)))
    if not parts:
        return pa.table({"event_ts": pa.array([], pa.timestamp("ms"))})
    merged = pa.concat_tables(parts)
    return merged.sort_by([("event_ts", "ascending"), ("rank", "ascending"), ("table", "ascending"), ("row", "ascending")])


def trace_id(rec: dict[str, Any], day: str) -> str:
    """The same id for the same event on every run: (table, day, row number in the day's partition, and
    for a lifecycle event its type, as one row is several events)."""
    kind = "" if rec["event_type"].startswith("retail.") else f"/{rec['event_type']}"
    return str(uuid.uuid5(NAMESPACE, f"{rec['table']}/{day}/{rec['row']}{kind}"))


def envelope(rec: dict[str, Any], day: str, p: EventsParams) -> bytes:
    trace = trace_id(rec, day)
    body = (
        f'{{"event_type":{json.dumps(rec["event_type"])},"trace_id":"{trace}",'
        f'"event_timestamp":"{rec["event_ts"].replace(tzinfo=UTC).isoformat()}",'
        f'"ingest_timestamp":"{datetime.now(UTC).isoformat()}","schema_version":{json.dumps(p.schema_version)},'
        f'"source":{json.dumps(p.source)},"payload":{rec["payload"]}}}'
    )
    return body.encode()


class DatasetEvents(Component[EventsParams]):
    __slots__ = ()
    component = "dataset.events"
    summary = "publish a dataset pack's new fact days to Kafka as enveloped events (historical or realtime)"
    Params = EventsParams
    Result = EventsResult
    needs_types = (DatasetTableResult,)
    default_kind = "io"

    def settings_problem(self, settings: Any) -> str | None:
        return missing(kafka_options, settings)

    async def run(self, ctx: PipelineContext) -> EventsResult:
        p = self.params
        written = [r for n in self.needs if isinstance(r := ctx.result(n), DatasetTableResult)]
        if not written:
            raise ValueError(f"task {self.name!r}: none of its needs wrote dataset tables")
        out, days = Path(written[0].out), max(r.days for r in written)
        # the pack writes every day of a run for every fact table (an empty day is an empty partition)
        layout = Layout.of(out)
        all_days = sorted({d for t in p.tables for d in layout.days(t)})
        new_days = all_days[-days:] if days else []
        producer = p.producer(ctx.services.settings)
        clock = _Clock(time.monotonic())
        await producer.start()
        try:
            pub = self.publisher(producer)
            for day in new_days:
                events = await anyio.to_thread.run_sync(day_events, out, p.tables, day, p.event_types)
                for start in range(0, events.num_rows, SLICE):
                    await self._send(pub, events.slice(start, SLICE), day, p, clock)
                    ctx.progress(done=pub.sent + pub.dead_lettered, unit="events", day=day)
        finally:
            await producer.stop()
        return EventsResult(p.topic, pub.sent, pub.dead_lettered, new_days, time.monotonic() - clock.t0, pub.breaker.outages)

    def publisher(self, producer: Any) -> Publisher:
        return self.params.publisher(producer)

    async def _send(self, pub: Publisher, events: pa.Table, day: str, p: EventsParams, clock: _Clock) -> None:
        """One slice: paced sends, then every acknowledgement (memory: one slice of futures at a time).

        No resend of a refused event: the producer retries in order inside (one batch in flight per
        partition), and an event it refuses is dead-lettered; resending it here would put it behind later
        events of its key. Only an outage's events are sent again (publish.py)."""
        for rec, at in zip(events.to_pylist(), clock.offsets(events, p), strict=True):
            wait = clock.t0 + at - time.monotonic()
            if wait > 0:
                await anyio.sleep(wait)
            await pub.submit(Outgoing(rec["key"].encode(), envelope(rec, day, p), rec["event_type"], trace_id(rec, day), day))
        await pub.settle()

    def summarize(self, result: EventsResult) -> dict[str, Any]:
        return {
            "events": result.sent,
            "dead_lettered": result.dead_lettered,
            "days": len(result.days),
            "breaker_outages": result.outages,
            "events/s": f"{result.sent / result.seconds:,.0f}" if result.seconds else "-",
        }
