"""The retail seed tool's documented config.json, as is, through its three modes on the real broker:
master data (dimension CSVs only), historical (partitioned CSV facts, their lifecycle events published in
event-time order per key) and realtime (a streamer stopped by SIGTERM, then continued by a second run:
ids carry on, no receipt is two different events, every key's events stay in time order)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import anyio
import pytest

from config.settings import Settings
from pipeline.runner import RunOptions, execute, prepare_spec
from pipeline.spec import PipelineSpec
from task_components.datasets import get_pack, pack_tasks
from task_components.datasets.retail.live import ID_BASE
from tests.integration.conftest import service_uri
from tests.integration.daemon_helpers import DaemonEnv, read_topic
from tests.unit.test_retail_formats import SEED_CONFIG

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]
HISTORY_TABLES = ["online_orders", "dc_inventory_txn", "truck_moves"]  # lifecycle + inventory, a few thousand events


def _cli(args: list[str], cwd: Path, bootstrap: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KAFKA__BOOTSTRAP_SERVERS": bootstrap}
    cmd = [sys.executable, str(ROOT / "run_pipeline.py"), "run", *args, "--run-dir", str(cwd / "runs")]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _run(name: str, tasks: dict[str, Any], cwd: Path, bootstrap: str) -> Any:
    options = RunOptions(run_dir=cwd / "runs")
    prepared = prepare_spec(PipelineSpec.model_validate({"name": name, "tasks": tasks}), f"<{name}>", {}, options)
    settings = Settings.model_validate({"kafka": {"bootstrap_servers": bootstrap}})
    result = anyio.run(lambda: execute(prepared, settings, options, handle_signals=False))
    assert result.ok, {n: t.get("error") for n, t in result.to_dict()["tasks"].items()}
    return result


def _finish(proc: subprocess.Popen[bytes], want: int) -> str:
    out, _ = proc.communicate(timeout=180)
    text = out.decode(errors="replace")
    assert proc.returncode == want, text[-3000:]
    return text


def _events(env: DaemonEnv, topic: str) -> list[dict[str, Any]]:
    """The topic's events, checking on the way that each key's are in event-time order."""
    by_key: dict[bytes, list[str]] = defaultdict(list)
    out = []
    for m in sorted(read_topic(env, topic), key=lambda m: (m.partition, m.offset)):
        e = json.loads(m.value)
        by_key[m.key].append(e["event_timestamp"])
        out.append(e)
    for key, stamps in by_key.items():
        assert stamps == sorted(stamps), f"events of key {key!r} out of event-time order"
    return out


def test_the_seed_config_runs_master_historical_and_realtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bootstrap = service_uri("TEST_KAFKA_BOOTSTRAP")
    tag = uuid.uuid4().hex[:8]
    env = DaemonEnv(bootstrap, "", tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(SEED_CONFIG))
    words = tmp_path / "data" / "dictionaries"  # the seed tool's curated dictionaries, in its format
    words.mkdir(parents=True)
    (words / "first_names.csv").write_text("FirstName\nAda\nGrace\nLinus\n")
    (words / "last_names.csv").write_text("LastName\nQuill\nMarsh\n")

    # master data: dimension CSVs where paths.master says, no facts, no state
    monkeypatch.chdir(tmp_path)  # the config's paths are relative, as the seed tool's users write them
    _run("master", pack_tasks(get_pack("retail"), "config.json", mode="master"), tmp_path, bootstrap)
    master = tmp_path / "data" / "master"
    tables = ["geographies", "distribution_centers", "stores", "trucks", "customers", "products"]
    assert sorted(p.name for p in master.iterdir()) == sorted(f"{t}.csv" for t in tables)
    header, first = (master / "customers.csv").read_text().splitlines()[:2]
    assert first.split(",")[header.split(",").index('"first_name"')].strip('"') in {"Ada", "Grace", "Linus"}
    assert not (tmp_path / "data" / "facts").exists()

    # historical: one day of CSV facts under paths.facts, and its lifecycle events on the broker
    tasks = pack_tasks(get_pack("retail"), "config.json", {"days": 1})
    events = {"tables": HISTORY_TABLES, "topic": f"hist-{tag}", "dead_letter_topic": f"hist-dlq-{tag}"}
    tasks["events"] = {"uses": "dataset.events", "needs": ["online_orders", "dc_inventory", "store_inventory"], "with": events}
    tasks["commit"]["needs"].append("events")
    result = _run("hist", tasks, tmp_path, bootstrap)
    facts = tmp_path / "data" / "facts"
    assert (facts / "receipts" / "dt=2024-01-01" / "part-0.csv").stat().st_size > 0
    assert not list(facts.rglob("*.parquet"))
    published = _events(env, f"hist-{tag}")
    assert len(published) == result.results["events"].sent > 0 and result.results["events"].dead_lettered == 0
    kinds = Counter(e["event_type"] for e in published)
    orders = len((facts / "online_orders" / "dt=2024-01-01" / "part-0.csv").read_text().splitlines()) - 1
    assert kinds["online_order_created"] == kinds["online_order_picked"] == kinds["online_order_shipped"] == orders > 0
    assert kinds["inventory_updated"] > 0 and kinds["truck_departed"] == kinds["truck_arrived"]
    state_file = tmp_path / "data" / "state" / "generation_state.json"
    state = json.loads(state_file.read_text())
    assert state["has_historical_data"] and state["last_realtime_run"] is None and state["next_date"] == "2024-01-02"

    # realtime: run until SIGTERM, then a second run continues the saved state
    topic = f"rt-{tag}"
    args = [str(ROOT / "pipelines" / "retail_realtime.yaml"), "--set", "config=config.json", "--set", f"topic={topic}"]
    first = _cli([*args, "--set", "checkpoint_seconds=0.5"], tmp_path, bootstrap)
    deadline = time.monotonic() + 120
    while json.loads(state_file.read_text())["realtime"].get("bursts", 0) < 3:  # a few bursts checkpointed
        assert first.poll() is None and time.monotonic() < deadline, "the streamer stopped or saved nothing"
        time.sleep(0.2)
    first.send_signal(signal.SIGTERM)
    _finish(first, want=130)  # a stop by signal: non-zero, as every cancelled run
    state = json.loads(state_file.read_text())
    assert state["last_realtime_run"] and state["realtime"]["bursts"] >= 3 and state["has_historical_data"]
    stopped_at = state["realtime"]["receipts"]
    stream = {"pack": "retail", "config_file": "config.json", "topic": topic, "dead_letter_topic": f"{topic}-dlq", "max_events": 300}
    _run("rt", {"stream": {"uses": "dataset.realtime", "with": stream}}, tmp_path, bootstrap)
    state = json.loads(state_file.read_text())
    assert state["realtime"]["receipts"] > stopped_at and state["next_date"] == "2024-01-02"  # history untouched

    streamed = _events(env, topic)
    assert {"receipt_created", "receipt_line_added", "payment_processed", "inventory_updated", "online_order_created"} <= {
        e["event_type"] for e in streamed
    }
    traces: dict[int, set[str]] = defaultdict(set)
    for e in streamed:
        if e["event_type"] == "receipt_created":
            traces[e["payload"]["receipt_id"]].add(e["trace_id"])
    assert all(len(t) == 1 for t in traces.values()), "one receipt id became two different receipts"
    ids = sorted(traces)
    assert ids == list(range(ID_BASE + 1, ids[-1] + 1)), "receipt ids skipped or restarted across the two runs"
    assert ids[-1] - ID_BASE > stopped_at - 5  # the second run went on past where the first stopped
