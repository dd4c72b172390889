"""``/healthz`` and Prometheus ``/metrics`` (with the request topic's lag) for the daemon, on its own event loop.

prometheus_client's ``start_http_server`` would run a second server thread; the two endpoints are
small enough to answer from an anyio listener, so health reflects the loop really being alive (a
blocked loop stops answering, which is what a liveness probe should see).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from anyio.abc import SocketStream
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["DaemonMetrics", "serve_http", "watch_lag"]

log = structlog.get_logger("pipeline.daemon")


@dataclass
class DaemonMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.runs_active = Gauge("pipeline_daemon_runs_active", "pipeline runs in progress", registry=r)
        self.runs = Counter("pipeline_daemon_runs", "finished runs by outcome", ["outcome"], registry=r)
        self.task_seconds = Histogram(
            "pipeline_daemon_task_duration_seconds",
            "task durations",
            ["pipeline", "task", "state"],
            registry=r,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, float("inf")),
        )
        self.dead_lettered = Counter("pipeline_daemon_requests_dead_lettered", "requests dead-lettered by reason", ["reason"], registry=r)
        self.duplicates = Counter("pipeline_daemon_requests_duplicate", "deliveries of finished requests", registry=r)
        self.lag = Gauge("pipeline_daemon_consumer_lag", "log end offset - committed offset", ["partition"], registry=r)
        self.request_to_start = Histogram(
            "pipeline_daemon_request_to_start_seconds",
            "from the request's timestamp to its run starting",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf")),
        )


async def serve_http(
    host: str, port: int, metrics: DaemonMetrics, health: Callable[[], dict[str, Any]], on_bound: Callable[[int], None]
) -> None:
    """Serve until cancelled; ``on_bound`` gets the port (useful when 0 asked for any free one)."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    on_bound(listener.extra(anyio.abc.SocketAttribute.local_port))

    async def handle(client: SocketStream) -> None:
        async with client:
            try:
                with anyio.fail_after(5):
                    head = b""
                    while b"\r\n\r\n" not in head and len(head) < 8192:
                        head += await client.receive(4096)
            except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return
            parts = head.split(b"\r\n", 1)[0].split()
            path = parts[1].decode(errors="replace").split("?")[0] if len(parts) >= 2 else ""
            if path == "/metrics":
                status, ctype, body = 200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry)
            elif path == "/healthz":
                state = health()
                status = 200 if state.get("status") == "ok" else 503
                ctype, body = "application/json", json.dumps(state).encode()
            else:
                status, ctype, body = 404, "text/plain", b"not found: try /healthz or /metrics\n"
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
            header = (
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            try:
                await client.send(header + body)
            except (anyio.BrokenResourceError, OSError):
                return

    async with listener:
        await listener.serve(handle)


async def watch_lag(consumer: Any, committed: dict[tuple[str, int], int], metrics: DaemonMetrics) -> None:
    """The request topic's lag per partition for /metrics: log end minus the daemon's committed offset."""
    while True:
        await anyio.sleep(2)
        tps = list(consumer.assignment())
        if not tps:
            continue
        try:
            # the fetch high watermark first: Tansu's ListOffsets(latest) can lag behind the log
            missing = [tp for tp in tps if consumer.highwater(tp) is None]
            ends = await consumer.end_offsets(missing) if missing else {}
            for tp in tps:
                key = (tp.topic, tp.partition)
                if key not in committed:
                    committed[key] = (await consumer.committed(tp)) or 0
                end = consumer.highwater(tp)
                end = ends.get(tp, 0) if end is None else end
                metrics.lag.labels(str(tp.partition)).set(max(0, end - committed[key]))
        except Exception as exc:  # noqa: BLE001 - a figure for /metrics; try again next time
            log.debug("lag not measured", error=f"{type(exc).__name__}: {exc}")
