"""A streaming run's /metrics and /healthz (``run --metrics-port``), scraped on the real broker and document store.

The figures are compared with the test data's answer key (what was produced), never with the run's
own output: records in, out (valid and first of their key), invalid, duplicates, dead-lettered, what
each sink wrote, the lag of each partition (nothing left once all is committed), the batch latency
histogram's count and the circuit breaker (closed). Then a SIGTERM: the run's own log agrees.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from pipeline.cli import app
from task_components.sources.testdata import records
from tests.integration.conftest import service_uri
from tests.integration.streaming_helpers import PARTITIONS, ROOT, StreamEnv, create_topics, produce

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> Samples:
    """Every sample of /metrics: name -> labels (sorted pairs) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    samples: Samples = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name][tuple(sorted(s.labels.items()))] = s.value
    return samples


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted({"source": "consume", **labels}.items())), -1.0)


@pytest.mark.integration
def test_metrics_and_healthz_of_a_running_stream_match_what_was_produced(tmp_path: Path) -> None:
    env = StreamEnv(service_uri("TEST_KAFKA_BOOTSTRAP"), service_uri("TEST_MONGO_URI"), tmp_path)
    create_topics(env)
    generated = list(records(400, invalid_ratio=0.2, duplicate_ratio=0.05, seed=41))
    valid = sum(r.kind == "valid" for r in generated)
    duplicates = sum(r.kind == "duplicate" for r in generated)
    invalid = len(generated) - valid - duplicates
    assert valid and duplicates and invalid, "the answer key must exercise every figure"
    produce(env, generated)
    port = free_port()
    command = [*env.command("batch_size=50"), "--metrics-port", str(port)]
    proc = subprocess.Popen(command, cwd=ROOT, env=env.environ(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline, samples = time.monotonic() + 90, Samples()
        while time.monotonic() < deadline:  # until everything is acknowledged and the lag measured after it
            assert proc.poll() is None, f"the run ended early: {proc.communicate()[1][-2000:]}"
            try:
                samples = scrape(port)
            except (urllib.error.URLError, ConnectionError):  # not listening yet
                samples = Samples()
            lags = list(samples.get("pipeline_stream_consumer_lag", {}).values())
            done = one(samples, "pipeline_stream_records_dead_lettered_total") == invalid
            if done and len(lags) == PARTITIONS and not any(lags):
                break
            time.sleep(0.2)
        assert one(samples, "pipeline_stream_records_in_total") == len(generated)
        assert one(samples, "pipeline_stream_records_out_total") == valid
        assert one(samples, "pipeline_stream_records_invalid_total") == invalid
        assert one(samples, "pipeline_stream_records_duplicate_total") == duplicates
        assert one(samples, "pipeline_stream_records_dead_lettered_total") == invalid
        assert one(samples, "pipeline_stream_sink_records_written_total", sink="mongodb") == valid
        assert one(samples, "pipeline_stream_sink_records_written_total", sink="kafka") == valid
        assert one(samples, "pipeline_stream_sink_records_written_total", sink="dead_letter") == invalid
        assert one(samples, "pipeline_stream_batch_seconds_count") >= len(generated) / 50
        assert one(samples, "pipeline_stream_circuit_open") == 0
        by_partition = {dict(k)["partition"]: v for k, v in samples["pipeline_stream_consumer_lag"].items()}
        assert by_partition == {str(p): 0 for p in range(PARTITIONS)}, "nothing left to commit in any partition"

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            assert resp.status == 200
            health = json.loads(resp.read())
        assert health["status"] == "ok" and health["sources"]["consume"]["circuit"] == "closed"
        assert len(health["sources"]["consume"]["partitions"]) == PARTITIONS
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    stopped = [e for e in map(json.loads, (ln for ln in err.splitlines() if ln.startswith("{"))) if e.get("event") == "stream_stopped"]
    assert stopped and stopped[-1]["records_in"] == len(generated), err[-2000:]
    assert sum(stopped[-1]["committed"].values()) == len(generated), "the lag said nothing was left to commit"


def test_a_metrics_port_in_use_is_one_line_and_exit_2_before_anything_runs(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["run", str(ROOT / "pipelines" / "demo.yaml"), "--metrics-port", str(port), "--run-dir", str(tmp_path), "--no-progress"]
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"cannot serve /metrics on 127.0.0.1:{port}" in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not list(tmp_path.glob("*/report.json")), "no task may have run"


def test_the_breaker_and_a_failed_downstream_show_in_metrics_and_healthz() -> None:
    """What the scrape above cannot provoke cheaply: a sink outage opens the circuit (still healthy: the run
    waits for the sink), and a failure downstream of the source makes /healthz answer 503 with the error."""
    from task_components.streaming.flow import AckLedger
    from task_components.streaming.metrics import StreamMetrics
    from task_components.streaming.resilience import CircuitBreaker, RetrySettings

    metrics = StreamMetrics()
    source = metrics.source("consume")
    breaker = CircuitBreaker(threshold=2, on_change=source.circuit)
    ledger = AckLedger(RetrySettings(), breaker, on_done=lambda _: None, metrics=source)
    breaker.failure("mongodb", ConnectionError("down"))
    assert metrics.registry.get_sample_value("pipeline_stream_circuit_open", {"source": "consume"}) == 0, (
        "one failure is below the threshold"
    )
    breaker.failure("mongodb", ConnectionError("down"))
    assert metrics.registry.get_sample_value("pipeline_stream_circuit_open", {"source": "consume"}) == 1
    assert metrics.health() == {"status": "ok", "sources": {"consume": {"circuit": "open", "partitions": []}}}
    breaker.success("mongodb")
    assert metrics.registry.get_sample_value("pipeline_stream_circuit_open", {"source": "consume"}) == 0
    ledger.fail("mongodb", RuntimeError("gone"))
    health = metrics.health()
    assert health["status"] == "failing" and "RuntimeError: gone" in health["sources"]["consume"]["error"]
