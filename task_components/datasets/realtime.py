"""``dataset.realtime``: the retail seed tool's long-running realtime streamer, on Kafka.

Once a pack directory holds history (a committed historical run: ``has_historical_data`` in its
``generation_state.json``, else the pipeline is refused with exit 2), this task sends "now" events
(retail/live.py) every ``realtime.emit_interval_ms``, ``realtime.burst`` at a time, until it is stopped
(SIGTERM or SIGINT: the engine cancels it) or has sent ``max_events`` (0: no limit). The streamer's
state (burst count, ids, the online orders still to be picked or shipped, what a burst drew beyond its
size) is saved into ``generation_state.json`` every ``checkpoint_seconds`` and when it stops, with
``last_realtime_run``, so the next run continues the same sequence: no id repeats, no order stays
unshipped. A burst's state is adopted only once all its events are acknowledged, so a stop in the
middle of a burst sends it again next time with the same trace ids (at least once).

Publishing goes through the circuit breaker (publish.py): while the broker is unreachable no burst is
drawn, the lost events are re-sent with backoff, and an outage past ``max_outage_seconds`` ends the run
(state saved). A burst that falls behind is not caught up in a flood: the schedule restarts from now.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from pydantic import Field, PrivateAttr, model_validator

from dag_orchestrator.context import PipelineContext
from task_components.base import Component
from task_components.clients import kafka_options
from task_components.connect import missing
from task_components.datasets.pack import GenerationState, Pack, PackConfigError, PackRun, check_state, load_pack_config, now_iso
from task_components.datasets.publish import Outgoing, PublishParams
from task_components.datasets.task import get_pack

__all__ = ["DatasetRealtime", "RealtimeResult"]


class RealtimeParams(PublishParams):
    """The pack's settings come from ``config_file`` (our YAML or the seed tool's config.json, whose
    ``realtime`` section sets the pace); ``out`` and the pace fields override it. Flat fields, not an
    ``overrides`` mapping: each is a plain value the daemon's policy classifies by its name."""

    pack: str = Field("retail", description="dataset pack name (realtime exists for retail)")
    config_file: str | None = Field(None, description="pack config file: YAML, or the seed tool's config.json")
    out: str | None = Field(None, description="the pack directory (overrides the file's out; empty: the file's)")
    emit_interval_ms: int | None = Field(None, ge=1, description="overrides realtime.emit_interval_ms")
    burst: int | None = Field(None, ge=1, description="overrides realtime.burst")
    fulfilment_seconds: float | None = Field(None, gt=0, description="overrides realtime.fulfilment_seconds")
    max_events: int = Field(0, ge=0, description="stop after this many events (0: run until stopped)")
    checkpoint_seconds: float = Field(5.0, gt=0, description="how often the streamer's state is saved")
    _config: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _load(self) -> RealtimeParams:
        pack = get_pack(self.pack)
        cfg: Any = load_pack_config(pack, self.config_file or None, {"out": self.out} if self.out else {})
        pace = {k: v for k in ("emit_interval_ms", "burst", "fulfilment_seconds") if (v := getattr(self, k)) is not None}
        if pace:
            cfg = cfg.model_copy(update={"realtime": type(cfg.realtime).model_validate({**cfg.realtime.model_dump(), **pace})})
        check_state(pack, cfg)
        state = GenerationState.load(Path(cfg.out))
        if state is None or not state.has_historical_data:
            raise PackConfigError(
                f"{cfg.out}: no historical data yet (generation_state.json has_historical_data is false); "
                "run the historical pipeline into this out first (pipelines/retail.yaml)"
            )
        self._config = cfg
        return self

    @property
    def pack_def(self) -> Pack:
        return get_pack(self.pack)

    @property
    def pack_config(self) -> Any:
        return self._config


@dataclass(frozen=True, slots=True)
class RealtimeResult:
    topic: str
    sent: int
    dead_lettered: int
    bursts: int
    seconds: float
    outages: int


def envelope(ev: dict[str, Any], p: RealtimeParams) -> bytes:
    body = {
        "event_type": ev["event_type"],
        "trace_id": ev["trace_id"],
        "event_timestamp": ev["ts"],
        "ingest_timestamp": now_iso(),
        "schema_version": p.schema_version,
        "source": p.source,
        "payload": ev["payload"],
    }
    return json.dumps(body, separators=(",", ":")).encode()


class DatasetRealtime(Component[RealtimeParams]):
    __slots__ = ()
    component = "dataset.realtime"
    summary = "stream 'now' retail events to Kafka in bursts until stopped, continuing the saved state (after history)"
    Params = RealtimeParams
    Result = RealtimeResult
    default_kind = "io"

    def settings_problem(self, settings: Any) -> str | None:
        return missing(kafka_options, settings)

    async def run(self, ctx: PipelineContext) -> RealtimeResult:
        from task_components.datasets.retail.live import LiveRetail, LiveState

        p = self.params
        cfg = p.pack_config
        run = PackRun.open(p.pack_def, cfg)
        interval, size = cfg.realtime.emit_interval_ms / 1000.0, cfg.realtime.burst
        live = await anyio.to_thread.run_sync(LiveRetail, run, cfg.realtime.fulfilment_seconds, interval)
        saved = GenerationState.load(run.out)
        state = LiveState.from_dict(saved.realtime if saved else {})
        producer = p.producer(ctx.services.settings)
        pub = p.publisher(producer)
        started = time.monotonic()
        last_ts: str | None = None
        bursts = 0
        await producer.start()
        try:
            next_at, saved_at = time.monotonic(), time.monotonic()
            while not p.max_events or pub.sent + pub.dead_lettered < p.max_events:
                want = size if not p.max_events else min(size, p.max_events - pub.sent - pub.dead_lettered)
                events, after = await anyio.to_thread.run_sync(live.burst, state, want, time.time())
                for ev in events:
                    await pub.submit(Outgoing(ev["key"].encode(), envelope(ev, p), ev["event_type"], ev["trace_id"], ev["ts"][:10]))
                await pub.settle()
                state, bursts = after, bursts + 1  # delivered: adopt the burst
                last_ts = events[-1]["ts"] if events else last_ts
                breaker = "open" if pub.breaker.is_open else "closed"
                ctx.progress(done=pub.sent + pub.dead_lettered, unit="events", bursts=bursts, breaker=breaker)
                if time.monotonic() - saved_at >= p.checkpoint_seconds:
                    await anyio.to_thread.run_sync(_save, run.out, state, last_ts)
                    saved_at = time.monotonic()
                next_at = max(next_at + interval, time.monotonic())  # late: no catch-up flood
                await anyio.sleep(max(0.0, next_at - time.monotonic()))
        finally:
            with anyio.CancelScope(shield=True):  # a SIGTERM stop still saves where it got to
                _save(run.out, state, last_ts)
                await producer.stop()
        return RealtimeResult(p.topic, pub.sent, pub.dead_lettered, bursts, time.monotonic() - started, pub.breaker.outages)

    def summarize(self, result: RealtimeResult) -> dict[str, Any]:
        return {
            "events": result.sent,
            "dead_lettered": result.dead_lettered,
            "bursts": result.bursts,
            "breaker_outages": result.outages,
            "events/s": f"{result.sent / result.seconds:,.0f}" if result.seconds else "-",
        }


def _save(out: Path, live_state: Any, last_ts: str | None) -> None:
    """Merge the streamer's state into generation_state.json (a historical run's fields stay)."""
    state = GenerationState.load(out)
    if state is None:  # refused before running; only a deleted directory gets here
        return
    state.realtime = live_state.to_dict()
    state.last_realtime_run = now_iso()
    if last_ts:
        state.last_generated_timestamp = last_ts
    state.save(out)
