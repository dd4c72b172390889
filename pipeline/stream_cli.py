"""``produce-test-data``: realistic streaming test records to Kafka or stdout (the seed tool's flags).

It runs the ``testdata.produce`` component through ``run_tasks`` like every other command. Unset flags
take the seed tool's TEST_DATA__* settings. Bad flags are one line and exit 2. With ``--output console``
the records are the only thing on stdout (no summary).

No ``--total`` and no TEST_DATA__TOTAL_RECORDS (or either 0) means unlimited, as in the seed tool: it
sends until SIGINT/SIGTERM, which end it normally (flushed, counted in the summary, exit 0). The
connection flags (``--bootstrap-servers``...) set the KAFKA__* settings for this process only, the way
the ingest commands' S3 flags do: they never reach the run directory's ``request.json``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli_common import RunDirOpt, app, exit_code, fail_invalid, load_settings, run_tasks
from pipeline.ingest_options import override_settings

PATTERNS = ("valid", "invalid", "mixed")
OUTPUTS = ("kafka", "console")
PATTERN_HELP = "valid, invalid or mixed [default: TEST_DATA__PATTERN, mixed]"
RATE_HELP = "records per second, 0: as fast as possible [default: TEST_DATA__RATE, 10]"
TOTAL_HELP = "records to send, 0: until SIGTERM [default: TEST_DATA__TOTAL_RECORDS; unset: until SIGTERM]"
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
RATIO_HELP = "share of invalid records with --pattern mixed [default: TEST_DATA__INVALID_RATIO, 0.1]"


@app.command("produce-test-data")
def produce_test_data(
    rate: Annotated[float | None, typer.Option(help=RATE_HELP)] = None,
    total: Annotated[int | None, typer.Option(help=TOTAL_HELP)] = None,
    pattern: Annotated[str | None, typer.Option(help=PATTERN_HELP)] = None,
    invalid_ratio: Annotated[float | None, typer.Option(help=RATIO_HELP)] = None,
    duplicate_ratio: Annotated[float, typer.Option(help="share of re-sent earlier records (mixed)")] = 0.0,
    output: Annotated[str, typer.Option(help="kafka or console")] = "kafka",
    topic: Annotated[str | None, typer.Option(help="[default: KAFKA__TOPIC_SOURCE]")] = None,
    partitions: Annotated[int | None, typer.Option(help="create the topic with N partitions if missing")] = None,
    seed: Annotated[int, typer.Option(help="same seed, same records")] = 7,
    run_dir: RunDirOpt = None,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="[default: on a TTY]")] = None,
    bootstrap_servers: Annotated[str | None, typer.Option(help="host:port[,host:port] [default: KAFKA__BOOTSTRAP_SERVERS]")] = None,
    security_protocol: Annotated[
        str | None, typer.Option(help="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL [default: KAFKA__SECURITY_PROTOCOL]")
    ] = None,
    sasl_mechanism: Annotated[
        str | None, typer.Option(help="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 [default: KAFKA__SASL_MECHANISM]")
    ] = None,
    api_key: Annotated[str | None, typer.Option(help="SASL username (Confluent Cloud API key) [default: KAFKA__API_KEY]")] = None,
    api_secret: Annotated[
        str | None, typer.Option(help="SASL password [default: KAFKA__API_SECRET; prefer it: a flag shows in the process list]")
    ] = None,
) -> None:
    """Send test records (names, e-mails, phones, mixed-format dates, amounts, countries) and invalid kinds."""
    if security_protocol is not None and security_protocol not in PROTOCOLS:
        raise fail_invalid(f"--security-protocol must be one of {', '.join(PROTOCOLS)}, got {security_protocol!r}")
    if sasl_mechanism is not None and sasl_mechanism not in MECHANISMS:
        raise fail_invalid(f"--sasl-mechanism must be one of {', '.join(MECHANISMS)}, got {sasl_mechanism!r}")
    if bootstrap_servers is not None and not bootstrap_servers.strip():
        raise fail_invalid("--bootstrap-servers is empty")
    override_settings(
        kafka__bootstrap_servers=bootstrap_servers,
        kafka__security_protocol=security_protocol,
        kafka__sasl_mechanism=sasl_mechanism,
        kafka__api_key=api_key,
        kafka__api_secret=api_secret,
    )
    defaults = load_settings().test_data
    rate = defaults.rate if rate is None else rate
    total = (defaults.total_records or 0) if total is None else total  # unset: unlimited, as the seed tool
    pattern = defaults.pattern if pattern is None else pattern
    invalid_ratio = defaults.invalid_ratio if invalid_ratio is None else invalid_ratio
    if pattern not in PATTERNS:
        raise fail_invalid(f"--pattern must be one of {', '.join(PATTERNS)}, got {pattern!r}")
    if output not in OUTPUTS:
        raise fail_invalid(f"--output must be kafka or console, got {output!r}")
    if total < 0:
        raise fail_invalid(f"--total must be 0 (unlimited) or more, got {total}")
    if rate < 0:
        raise fail_invalid(f"--rate must be 0 or more, got {rate:g}")
    for flag, ratio in (("--invalid-ratio", invalid_ratio), ("--duplicate-ratio", duplicate_ratio)):
        if not 0 <= ratio <= 1:
            raise fail_invalid(f"{flag} must be between 0 and 1, got {ratio:g}")
    if partitions is not None and partitions < 1:
        raise fail_invalid(f"--partitions must be at least 1, got {partitions}")
    with_ = {
        "total": total,
        "rate": rate,
        "pattern": pattern,
        "invalid_ratio": invalid_ratio,
        "duplicate_ratio": duplicate_ratio,
        "seed": seed,
        "output": output,
        "topic": topic,
        "partitions": partitions,
        "stop_on_signal": total == 0,  # unlimited: a signal is its normal end (exit 0, the count in the summary)
    }
    console = output == "console"
    _, result = run_tasks(
        "produce-test-data",
        {"produce": {"uses": "testdata.produce", "with": with_}},
        run_dir,
        live=False if console else progress,
        summary=not console,
    )
    raise typer.Exit(exit_code(result))
