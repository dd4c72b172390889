"""A streaming run's Prometheus figures, and its health, for ``run --metrics-port`` (``/metrics``, ``/healthz``).

The runner makes one ``StreamMetrics`` per run when asked for a metrics port and lends it to the run
(``install``); each Kafka source takes its own ``SourceMetrics`` from it (``for_source``: children of
the run's metrics labelled with the source's task name) and counts there what it already counts for
its progress line and result, at the same points, so ``/metrics`` and the run's summary agree: records
fetched (``in``), records of acknowledged batches that passed every step (``out``), rejected on the way
(``invalid``), dropped as duplicates, dead letters written (``dead_lettered``: rejects and sink
refusals, counted when the dead-letter sink wrote them), per sink what it wrote, the lag per
partition, each batch's latency from its emission to its acknowledgement by every task downstream, and
the circuit breaker's state. Without a metrics port nothing is installed and a source counts nothing
here (``for_source`` gives None): no registry is kept that nobody reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from dag_orchestrator.context import RunServices

__all__ = ["SourceMetrics", "StreamMetrics", "for_source", "install"]

_KEY = "streaming.metrics"  # the run's StreamMetrics in RunServices.scratch (only through install/for_source)

BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, float("inf"))


@dataclass(slots=True)
class SourceMetrics:
    """One source's children of the run's metrics, and the state /healthz reports for it."""

    records_in: Counter
    records_out: Counter
    invalid: Counter
    duplicates: Counter
    dead_lettered: Counter
    batch_seconds: Histogram
    _circuit: Gauge
    _written: Counter  # the run's, labelled here per sink
    _lag: Gauge  # the run's, labelled here per partition
    name: str
    partitions: list[str] = field(default_factory=list)
    paused: bool = False  # the circuit breaker is open: fetching waits for the sinks
    broken: str | None = None  # a task downstream failed: the run is ending

    def circuit(self, is_open: bool) -> None:
        self.paused = is_open
        self._circuit.set(1 if is_open else 0)

    def written(self, sink: str, records: int) -> None:
        self._written.labels(self.name, sink).inc(records)

    def lag(self, lags: dict[tuple[str, int], int]) -> None:
        """The lag of each partition still ours; a partition no longer ours stops being reported."""
        assigned = {f"{t}:{p}" for t, p in lags}
        for gone in set(self.partitions) - assigned:
            gone_topic, _, gone_partition = gone.rpartition(":")
            self._lag.remove(self.name, gone_topic, gone_partition)
        for (topic, partition), value in lags.items():
            self._lag.labels(self.name, topic, str(partition)).set(value)
        self.partitions = sorted(assigned)


@dataclass
class StreamMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    sources: dict[str, SourceMetrics] = field(default_factory=dict)

    def __post_init__(self) -> None:
        r, src = self.registry, ["source"]
        self.records_in = Counter("pipeline_stream_records_in", "records fetched from Kafka", src, registry=r)
        self.records_out = Counter(
            "pipeline_stream_records_out", "records of acknowledged batches that passed every step (every sink took them)", src, registry=r
        )
        self.invalid = Counter("pipeline_stream_records_invalid", "records rejected (decoding, conversion, rules)", src, registry=r)
        self.duplicates = Counter("pipeline_stream_records_duplicate", "records dropped as duplicates, acknowledged", src, registry=r)
        self.dead_lettered = Counter(
            "pipeline_stream_records_dead_lettered", "records the dead-letter sink wrote (rejects and sink refusals)", src, registry=r
        )
        self.written = Counter("pipeline_stream_sink_records_written", "records each sink wrote", ["source", "sink"], registry=r)
        self.lag = Gauge("pipeline_stream_consumer_lag", "records not yet committed", ["source", "topic", "partition"], registry=r)
        self.batch_seconds = Histogram(
            "pipeline_stream_batch_seconds",
            "from a batch's emission to its acknowledgement by every task downstream",
            src,
            registry=r,
            buckets=BATCH_BUCKETS,
        )
        self.circuit_open = Gauge("pipeline_stream_circuit_open", "1 while the sinks' circuit breaker is open", src, registry=r)

    def source(self, name: str) -> SourceMetrics:
        """The children for the source task ``name`` (the same ones again when it is retried)."""
        if name not in self.sources:
            self.sources[name] = SourceMetrics(
                records_in=self.records_in.labels(name),
                records_out=self.records_out.labels(name),
                invalid=self.invalid.labels(name),
                duplicates=self.duplicates.labels(name),
                dead_lettered=self.dead_lettered.labels(name),
                batch_seconds=self.batch_seconds.labels(name),
                _circuit=self.circuit_open.labels(name),
                _written=self.written,
                _lag=self.lag,
                name=name,
            )
            self.sources[name].circuit(False)
        return self.sources[name]

    def health(self) -> dict[str, Any]:
        """/healthz: ``ok`` while no source's downstream failed; a paused source (sink down) is still alive."""
        broken = {name: s.broken for name, s in self.sources.items() if s.broken}
        return {
            "status": "failing" if broken else "ok",
            "sources": {
                name: {
                    "circuit": "open" if s.paused else "closed",
                    "partitions": s.partitions,
                    **({"error": s.broken} if s.broken else {}),
                }
                for name, s in self.sources.items()
            },
        }


def install(services: RunServices, metrics: StreamMetrics) -> None:
    """Lend the run's metrics to its tasks (the runner, when asked for a metrics port)."""
    services.scratch[_KEY] = metrics


def for_source(services: RunServices, name: str) -> SourceMetrics | None:
    """The source ``name``'s metrics, or None when the run serves none."""
    metrics: StreamMetrics | None = services.scratch.get(_KEY)
    return metrics.source(name) if metrics is not None else None
