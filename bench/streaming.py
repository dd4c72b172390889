"""Streaming end to end vs raw aiokafka consume and raw MongoDB bulk upsert, same records, same run.

The same N mixed records (10% invalid) go to a fresh 4-partition topic. Measured one after the other:

* raw consume: one aiokafka consumer in a fresh group (same session settings) reads all N records,
  timed with its group join (timed from its first record it only measures the prefetch buffer);
* raw upsert: the valid records' final documents, bulk-upserted by key (``ReplaceOne``, unordered) in
  batches of the pipeline's batch size, one batch after the other, into a fresh collection;
* end to end: ``pipelines/streaming.yaml`` in-process through the runner, fresh group and collection:
  consume, standardize, quality, MongoDB + sink topic + dead-letter topic, in-order commits; timed from
  the first record fetched to the last commit (``busy_seconds``), wall time including the join beside it.

Printed as records/s and ratios; target: end to end >= 0.7x the slower raw path. Uses TEST_KAFKA_BOOTSTRAP
and TEST_MONGO_URI when set, else starts (and stops) deploy/local/services.sh with kafka and mongo.

    python bench/streaming.py [--records 20000] [--batch-size 100] [--max-in-flight N]
"""

from __future__ import annotations

import argparse
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
from pipeline.runner import RunOptions, execute, prepare_run  # noqa: E402
from task_components.sources.testdata import TestRecord, records  # noqa: E402

SESSION = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}


async def produce(bootstrap: str, topic: str, generated: list[TestRecord]) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 4, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, enable_idempotence=False)
    await producer.start()
    futures = [await producer.send(topic, r.raw, key=r.key.encode()) for r in generated]
    for f in futures:
        await f
    await producer.stop()


async def raw_consume(bootstrap: str, topic: str, n: int) -> tuple[float, float]:
    from aiokafka import AIOKafkaConsumer

    started = time.perf_counter()
    first: float | None = None
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **SESSION,
    )
    await consumer.start()
    seen = 0
    while seen < n:
        for msgs in (await consumer.getmany(timeout_ms=500, max_records=1000)).values():
            first = first or time.perf_counter()
            seen += len(msgs)
    await consumer.commit()
    await consumer.stop()
    return time.perf_counter() - started, time.perf_counter() - (first or started)


async def raw_upsert(uri: str, db: str, docs: list[dict], batch: int) -> float:
    from pymongo import AsyncMongoClient, ReplaceOne

    client: AsyncMongoClient = AsyncMongoClient(uri)
    coll = client[db]["raw"]
    await coll.create_index([("customer_id", 1)], unique=True)
    started = time.perf_counter()
    for i in range(0, len(docs), batch):
        ops = [ReplaceOne({"customer_id": d["customer_id"]}, d, upsert=True) for d in docs[i : i + batch]]
        await coll.bulk_write(ops, ordered=False)
    seconds = time.perf_counter() - started
    await client.close()
    return seconds


async def end_to_end(bootstrap: str, uri: str, tag: str, n: int, batch: int, in_flight: int | None, run_dir: Path) -> dict:
    settings = Settings.model_validate(
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "topic_source": f"bench-in-{tag}",
                "topic_sink": f"bench-out-{tag}",
                "dead_letter_topic": f"bench-dlq-{tag}",
                "consumer_group": f"bench-{tag}",
            },
            "mongodb": {"connection_string": uri, "database": f"bench_{tag}", "collection": "e2e"},
        }
    )
    options = RunOptions(run_dir=run_dir)
    overrides = {"max_records": n, "batch_size": batch, "max_in_flight": in_flight, **SESSION}
    prepared = prepare_run(ROOT / "pipelines" / "streaming.yaml", overrides, options)
    result = await execute(prepared, settings, options, handle_signals=False)
    assert result.ok, {k: v.error for k, v in result.tasks.items() if v.error}
    return result.results["consume"].model_dump()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--max-in-flight", type=int, default=None, help="default: PIPELINE__MAX_WORKERS (10)")
    args = ap.parse_args()
    configure_logging(LoggingSettings(level="WARNING"))  # the pipeline's info/debug lines are not measured
    env_vars, started = services("kafka mongo", ["TEST_KAFKA_BOOTSTRAP", "TEST_MONGO_URI"])
    bootstrap, uri = env_vars["TEST_KAFKA_BOOTSTRAP"], env_vars["TEST_MONGO_URI"]
    try:
        tag = uuid.uuid4().hex[:8]
        n = args.records
        generated = list(records(n, invalid_ratio=0.1, seed=21))
        docs = [r.expected for r in generated if r.kind == "valid" and r.expected]
        anyio.run(produce, bootstrap, f"bench-in-{tag}", generated)
        consume_s, consume_busy = anyio.run(raw_consume, bootstrap, f"bench-in-{tag}", n)
        upsert_s = anyio.run(raw_upsert, uri, f"bench_{tag}", docs, args.batch_size)
        with TemporaryDirectory() as tmp:
            stream = anyio.run(end_to_end, bootstrap, uri, tag, n, args.batch_size, args.max_in_flight, Path(tmp))
        e2e_s = stream["busy_seconds"]
        rates = {"raw aiokafka consume": n / consume_s, "raw MongoDB bulk upsert": len(docs) / upsert_s}
        print(
            f"raw aiokafka consume      {n:,} records   {consume_s:6.2f} s  {n / consume_s:9,.0f} records/s "
            f"(with the group join; {consume_busy:.2f} s from the first record)"
        )
        up = len(docs) / upsert_s
        print(f"raw MongoDB bulk upsert   {len(docs):,} documents {upsert_s:6.2f} s  {up:9,.0f} docs/s (batches of {args.batch_size})")
        print(
            f"end to end (all sinks)    {n:,} records   {e2e_s:6.2f} s  {n / e2e_s:9,.0f} records/s "
            f"(valid {stream['valid']:,}, invalid {stream['invalid']:,}; {stream['seconds']:.2f} s with the join, "
            f"{args.max_in_flight or 'PIPELINE__MAX_WORKERS'} batches in flight)"
        )
        slower = min(rates, key=lambda k: rates[k])
        for name, rate in rates.items():
            print(f"ratio end to end / {name}: {n / e2e_s / rate:.2f}x")
        print(
            f"ratio vs the slower raw path ({slower}): {n / e2e_s / rates[slower]:.2f}x (target >= 0.7x); "
            f"with the group join: {n / stream['seconds'] / rates[slower]:.2f}x"
        )
    finally:
        if started:
            stop("kafka mongo")


if __name__ == "__main__":
    main()
