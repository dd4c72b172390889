"""The daemon's Prometheus figures (with the request topic's lag) for ``/metrics``.

The HTTP side (``/healthz``, ``/metrics`` on the daemon's own event loop) is pipeline/metrics_http.py,
shared with a streaming run's ``--metrics-port``; ``serve_http`` is re-exported here for the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipeline.metrics_http import serve_http

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
