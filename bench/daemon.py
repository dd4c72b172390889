"""The daemon's request throughput and request -> "started" latency, against running the same pipelines
directly through the runner in one process (no Kafka, no ledger) in the same run.

* burst: N requests for a one-task pipeline (``demo.sleep`` 0 s) sent at once to a fresh 4-partition topic,
  one daemon process (``--max-runs`` at once); requests/s from the first send to the last "succeeded"
  event, and request -> "started" latency (queueing included: in a burst most requests wait for a slot);
* paced: ``--paced`` requests at ``--rate``/s, below capacity: the latency a lone request sees;
* baseline: the same N pipelines through ``prepare_spec`` + ``execute`` in this process, ``--max-runs`` at
  once: what the engine itself costs per run. The ratio is what Kafka + the ledger + status events add.

Latencies use the status events' ``at`` (the daemon's clock) minus the send time here (same machine).
Uses TEST_KAFKA_BOOTSTRAP and TEST_POSTGRES_DSN when set, else starts (and stops) deploy/local/services.sh
with kafka and postgres.

    python bench/daemon.py [--requests 500] [--max-runs 4] [--paced 100] [--rate 20]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from local_services import services, stop  # noqa: E402

from config import configure_logging  # noqa: E402
from config.settings import LoggingSettings, Settings  # noqa: E402
from pipeline.runner import RunOptions, execute, prepare_spec  # noqa: E402
from pipeline.spec import load_spec  # noqa: E402

TINY = "name: tiny\nparams: {n: 0}\ntasks:\n  nap: {uses: demo.sleep, with: {seconds: 0}}\n"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


Times = dict[str, float]


async def _send_and_follow(
    bootstrap: str, topics: dict[str, str], ids: list[str], rate: float | None, timeout: float = 600
) -> tuple[Times, Times, Times]:
    """Send one request per id (paced if ``rate``); returns send time, started time, succeeded time per id."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    tps = [TopicPartition(topics["status"], p) for p in range(4)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False, linger_ms=1)
    await producer.start()
    sent: dict[str, float] = {}
    started: dict[str, float] = {}
    done: dict[str, float] = {}
    wanted = set(ids)

    async def read() -> None:
        while not wanted <= set(done):
            for msgs in (await consumer.getmany(timeout_ms=200)).values():
                for m in msgs:
                    e = json.loads(m.value)
                    if e["request_id"] in wanted:
                        if e["event"] == "started":
                            started.setdefault(e["request_id"], e["at"])
                        elif e["event"] in ("succeeded", "failed", "rejected"):
                            done[e["request_id"]] = e["at"]

    try:
        with anyio.fail_after(timeout):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                t0 = time.time()
                for n, rid in enumerate(ids):
                    if rate:
                        await anyio.sleep(max(0.0, t0 + n / rate - time.time()))
                    body = {"request_id": rid, "pipeline": "tiny"}
                    sent[rid] = time.time()
                    await producer.send(topics["requests"], json.dumps(body).encode(), key=rid.encode())
                await producer.flush()
    finally:
        await producer.stop()
        await consumer.stop()
    return sent, started, done


async def direct(n: int, max_runs: int, pipelines: Path, run_dir: Path) -> float:
    """The same n tiny pipelines straight through the runner, max_runs at once: seconds."""
    settings = Settings()
    spec_file = pipelines / "tiny.yaml"
    limit = anyio.Semaphore(max_runs)
    t0 = time.perf_counter()

    async def one() -> None:
        async with limit:
            options = RunOptions(run_dir=run_dir)
            prepared = prepare_spec(load_spec(spec_file), spec_file, {}, options)
            result = await execute(prepared, settings, options, handle_signals=False)
            assert result.ok, result.reason

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--max-runs", type=int, default=4)
    ap.add_argument("--paced", type=int, default=100)
    ap.add_argument("--rate", type=float, default=20.0)
    args = ap.parse_args()
    configure_logging(LoggingSettings(level="WARNING"))
    env_vars, own_services = services("kafka postgres", ["TEST_KAFKA_BOOTSTRAP", "TEST_POSTGRES_DSN"])
    bootstrap, dsn = env_vars["TEST_KAFKA_BOOTSTRAP"], env_vars["TEST_POSTGRES_DSN"]
    tag = uuid.uuid4().hex[:8]
    topics = {"requests": f"bench-req-{tag}", "status": f"bench-st-{tag}", "dlq": f"bench-dlq-{tag}"}
    try:
        with TemporaryDirectory() as tmp:
            pipelines = Path(tmp) / "pipelines"
            pipelines.mkdir()
            (pipelines / "tiny.yaml").write_text(TINY)
            anyio.run(direct, 4, args.max_runs, pipelines, Path(tmp) / "warm")  # imports, first-run costs
            base_s = anyio.run(direct, args.requests, args.max_runs, pipelines, Path(tmp) / "direct")
            env = {
                **os.environ,
                "KAFKA__BOOTSTRAP_SERVERS": bootstrap,
                "KAFKA__REQUEST_TOPIC": topics["requests"],
                "KAFKA__STATUS_TOPIC": topics["status"],
                "DAEMON__DEAD_LETTER_TOPIC": topics["dlq"],
                "DAEMON__CONSUMER_GROUP": f"bench-{tag}",
                "DAEMON__LEDGER_TABLE": f"bench_{tag}",
                "DAEMON__PIPELINES_DIR": str(pipelines),
                "DAEMON__HTTP_PORT": "0",
                "DAEMON__MAX_RUNS": str(args.max_runs),
                "DAEMON__PREFETCH": str(max(16, args.max_runs * 8)),
                "DAEMON__SESSION_TIMEOUT_MS": "6000",
                "DAEMON__HEARTBEAT_INTERVAL_MS": "500",
                "POSTGRES__DSN": dsn,
                "PIPELINE__RUN_DIR": str(Path(tmp) / "runs"),
                "LOGGING__LEVEL": "WARNING",
                "LOGGING__FORMAT": "json",
            }
            log = (Path(tmp) / "daemon.log").open("wb")
            proc = subprocess.Popen(
                [sys.executable, "run_pipeline.py", "daemon", "--partitions", "4"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
            try:
                warm = anyio.run(_send_and_follow, bootstrap, topics, ["warm-1"], None, 120)  # joined, imports done
                ids = [f"b-{i}" for i in range(args.requests)]
                sent, started, done = anyio.run(_send_and_follow, bootstrap, topics, ids, None)
                burst_s = max(done.values()) - min(sent.values())
                burst_lat = [started[r] - sent[r] for r in ids]
                paced_ids = [f"p-{i}" for i in range(args.paced)]
                psent, pstarted, _ = anyio.run(_send_and_follow, bootstrap, topics, paced_ids, args.rate)
                paced_lat = [pstarted[r] - psent[r] for r in paced_ids]
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
                log.close()
            assert warm[2], "the warm-up request did not finish"
    finally:
        if own_services:
            stop("kafka postgres")
    daemon_rps, direct_rps = args.requests / burst_s, args.requests / base_s
    print(f"burst of {args.requests} one-task requests, {args.max_runs} runs at once, one daemon:")
    print(f"  daemon  {daemon_rps:8.1f} requests/s  (first send -> last succeeded {burst_s:.2f} s)")
    print(f"  direct  {direct_rps:8.1f} runs/s      (runner in-process, no Kafka/ledger, {base_s:.2f} s)")
    print(f"  ratio   {daemon_rps / direct_rps:8.2f}x of the direct runner")
    print(
        f"  request -> started (queueing included): p50 {statistics.median(burst_lat) * 1000:.0f} ms, "
        f"p99 {pct(burst_lat, 0.99) * 1000:.0f} ms"
    )
    print(
        f"paced {args.paced} at {args.rate:g}/s: request -> started "
        f"p50 {statistics.median(paced_lat) * 1000:.0f} ms, p99 {pct(paced_lat, 0.99) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
