"""``daemon`` (serve run requests from Kafka) and ``submit`` (send one, optionally follow it to the end).

``submit --wait`` exits like ``run``: 0 succeeded, 1 failed, 2 rejected (the request was invalid: the
reason is printed), and 1 with a message if no outcome came within ``--timeout``.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from rich.markup import escape

from config.settings import Settings
from pipeline.cli_common import EXIT_FAILED, EXIT_INVALID, EXIT_OK, app, err, fail_invalid, load_settings, out
from pipeline.spec import SpecError, parse_overrides, read_yaml
from task_components.clients import kafka_consumer, kafka_options, kafka_producer, mongo_uri
from task_components.connect import ensure_topics

__all__ = ["daemon", "submit"]

PIPELINE_HELP = "a pipeline name (pipelines/NAME.yaml on the daemon) or a local YAML file, sent inline"


@app.command()
def daemon(
    max_runs: Annotated[int | None, typer.Option(min=1, help="runs at once [default: DAEMON__MAX_RUNS, 2]")] = None,
    http_port: Annotated[int | None, typer.Option(min=0, max=65535, help="/healthz and /metrics port, 0: any [default: 9108]")] = None,
    pipelines_dir: Annotated[Path | None, typer.Option(help="[default: DAEMON__PIPELINES_DIR, ./pipelines]")] = None,
    grace: Annotated[float | None, typer.Option(min=0, help="seconds to finish after SIGTERM [default: 30]")] = None,
    partitions: Annotated[int, typer.Option(min=1, help="partitions of the request topic if it is created")] = 4,
) -> None:
    """Serve pipeline-run requests from KAFKA__REQUEST_TOPIC until SIGTERM (status on KAFKA__STATUS_TOPIC)."""
    settings = load_settings()
    updates: dict[str, Any] = {"max_runs": max_runs, "http_port": http_port, "pipelines_dir": pipelines_dir, "grace_seconds": grace}
    settings.daemon = settings.daemon.model_copy(update={k: v for k, v in updates.items() if v is not None})
    try:
        kafka_options(settings)
        if settings.daemon.ledger == "mongodb":
            mongo_uri(settings)
    except ValueError as exc:
        raise fail_invalid(f"configuration: {exc}") from None
    if not settings.daemon.pipelines_dir.is_dir():
        raise fail_invalid(f"DAEMON__PIPELINES_DIR {settings.daemon.pipelines_dir}: no such directory")
    from pipeline.registry import components

    unknown = sorted(set(settings.daemon.inline_components) - set(components()))
    if unknown:  # a typo would silently allow nothing (or a later plugin of that name)
        raise fail_invalid(
            f"DAEMON__INLINE_COMPONENTS: unknown component {', '.join(map(repr, unknown))} (see `run_pipeline.py components`)"
        )
    from pipeline.daemon.policy import bound_key_problems

    typos = bound_key_problems(settings.daemon)
    if typos:  # a typo would silently bound nothing
        raise fail_invalid(
            f"DAEMON__PARAM_BOUNDS: {', '.join(map(repr, typos))} names no field of a registered "
            "component (COMPONENT.FIELD, e.g. generate.total_rows)"
        )
    from pipeline.daemon.server import DaemonStartError

    try:
        anyio.run(_serve, settings, partitions)
    except DaemonStartError as exc:
        raise fail_invalid(str(exc)) from None


async def _serve(settings: Settings, partitions: int) -> None:
    from pipeline.daemon.ledger import Ledger, PostgresLedger
    from pipeline.daemon.server import Daemon, DaemonStartError

    k, d = settings.kafka, settings.daemon
    try:
        await ensure_topics(settings, [k.request_topic, k.status_topic, d.dead_letter_topic], partitions)
    except Exception as exc:
        where = f"{k.bootstrap_servers} (KAFKA__BOOTSTRAP_SERVERS)"
        raise DaemonStartError(f"cannot reach the Kafka broker at {where}: {type(exc).__name__}: {exc}") from exc
    ledger: Ledger
    if d.ledger == "mongodb":
        from pipeline.daemon.ledger_mongo import MongoLedger

        ledger = MongoLedger(mongo_uri(settings), settings.mongodb.database, d.ledger_table)
        await Daemon(settings, ledger).run()
        return
    secret = d.ledger_dsn or settings.postgres.dsn
    if secret is not None:
        dsn = secret.get_secret_value()
    else:
        from task_components.connect import embedded_dsn

        dsn = await anyio.to_thread.run_sync(embedded_dsn, settings.pipeline.run_dir / ".daemon-ledger")
    ledger = PostgresLedger(dsn, d.ledger_table, connections=d.max_runs + 2)  # a slot never waits for a connection
    await Daemon(settings, ledger).run()


@app.command()
def submit(
    pipeline: Annotated[str, typer.Argument(help=PIPELINE_HELP, show_default=False)],
    set_: Annotated[list[str], typer.Option("--set", "-s", help="a parameter: --set rows=5000")] = [],  # noqa: B006
    request_id: Annotated[str | None, typer.Option(help="idempotency key [default: a new UUID]")] = None,
    priority: Annotated[int, typer.Option(help="higher runs first among waiting requests")] = 0,
    deadline: Annotated[str | None, typer.Option(help="ISO 8601 time the run must end by")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow the status events until the run ends")] = False,
    timeout: Annotated[float, typer.Option(min=0, help="with --wait: give up after this many seconds")] = 3600,
) -> None:
    """Send a run request to the daemon (KAFKA__REQUEST_TOPIC); --wait prints its story, exits with its outcome."""
    settings = load_settings()
    try:
        kafka_options(settings)
        params = parse_overrides(set_)
    except (ValueError, SpecError) as exc:
        raise fail_invalid(str(exc)) from None
    body: Any = pipeline
    file = Path(pipeline)
    if pipeline.endswith((".yaml", ".yml")) and file.is_file():
        try:
            body = read_yaml(file)
        except SpecError as exc:
            raise fail_invalid(str(exc)) from None
    if deadline is not None:
        try:
            datetime.fromisoformat(deadline)
        except ValueError:
            raise fail_invalid(f"--deadline {deadline!r} is not an ISO 8601 time (e.g. 2026-11-23T18:00:00Z)") from None
    rid = request_id or uuid.uuid4().hex
    request = {"request_id": rid, "pipeline": body, "params": params, "priority": priority, "deadline": deadline}
    try:
        code = anyio.run(_submit, settings, request, wait, timeout)
    except Exception as exc:  # noqa: BLE001 - an unreachable broker is one line, not a traceback
        raise fail_invalid(
            f"cannot reach the Kafka broker at {settings.kafka.bootstrap_servers} (KAFKA__BOOTSTRAP_SERVERS): {type(exc).__name__}: {exc}"
        ) from None
    raise typer.Exit(code)


async def send_request(settings: Settings, request: dict[str, Any]) -> None:
    """One run request on the request topic, keyed by its id, signed when the daemon has a signing secret."""
    from pipeline.daemon.policy import sign

    producer = kafka_producer(settings, enable_idempotence=False, acks="all")
    try:
        await producer.start()
        value = json.dumps(request).encode()
        secret = settings.daemon.signing_secret  # the daemon refuses unsigned requests when it has one
        headers = sign(secret.get_secret_value(), value) if secret is not None else None
        await producer.send_and_wait(settings.kafka.request_topic, value, key=str(request["request_id"]).encode(), headers=headers)
    finally:
        await producer.stop()


async def _submit(settings: Settings, request: dict[str, Any], wait: bool, timeout: float) -> int:
    from aiokafka import TopicPartition

    k, rid = settings.kafka, request["request_id"]
    consumer = None
    if wait:  # position at the status topic's end before sending, so no event of ours is missed
        await ensure_topics(settings, k.status_topic, 4)
        consumer = kafka_consumer(settings, enable_auto_commit=False)
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        parts = consumer.partitions_for_topic(k.status_topic) or set()
        if not parts:
            await consumer.stop()
            raise RuntimeError(f"status topic {k.status_topic!r} has no partitions")
        tps = [TopicPartition(k.status_topic, p) for p in parts]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
    try:
        await send_request(settings, request)
    except BaseException:
        if consumer is not None:
            await consumer.stop()
        raise
    out.print(escape(f"request {rid} sent to {k.request_topic}"), highlight=False)
    if consumer is None:
        return EXIT_OK
    try:
        return await _follow(consumer, rid, timeout)
    finally:
        await consumer.stop()


async def _follow(consumer: Any, rid: str, timeout: float) -> int:
    """The request's events as they arrive (each message wakes it; nothing polls) until its final one."""
    ends = {"succeeded": EXIT_OK, "failed": EXIT_FAILED, "rejected": EXIT_INVALID}
    with anyio.move_on_after(timeout):
        async for msg in consumer:
            if msg.key is None or msg.key.decode(errors="replace") != rid:
                continue
            event = json.loads(msg.value)
            out.print(_line(event), highlight=False)
            if event.get("event") in ends:
                return ends[event["event"]]
    err.print(f"[bold red]error:[/] {escape(f'no outcome for request {rid} within {timeout:g} s')} (is a daemon running?)")
    return EXIT_FAILED


def _line(e: dict[str, Any]) -> str:
    what = e.get("event", "?")
    if what == "task":
        what = f"task {e.get('task')} {e.get('state')}" + (f": {e['error']}" if e.get("error") else "")
    elif e.get("reason"):
        what += f": {e['reason']}"
    extra = " (replayed)" if e.get("replay") else ""
    return escape(f"[attempt {e.get('attempt', 0)} #{e.get('seq', 0)}] {what}{extra}")
