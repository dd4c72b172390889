"""``produce-test-data``: realistic streaming test records to Kafka or stdout (the seed tool's flags).

It runs the ``testdata.produce`` component through ``run_tasks`` like every other command. Bad flags are
one line and exit 2. With ``--output console`` the records are the only thing on stdout (no summary).
"""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli_common import RunDirOpt, app, exit_code, fail_invalid, run_tasks

PATTERNS = ("valid", "invalid", "mixed")
OUTPUTS = ("kafka", "console")


@app.command("produce-test-data")
def produce_test_data(
    rate: Annotated[float, typer.Option(help="records per second (0: as fast as possible)")] = 10,
    total: Annotated[int, typer.Option(help="records to send")] = 100,
    pattern: Annotated[str, typer.Option(help="valid, invalid or mixed")] = "mixed",
    invalid_ratio: Annotated[float, typer.Option(help="share of invalid records with --pattern mixed")] = 0.1,
    duplicate_ratio: Annotated[float, typer.Option(help="share of re-sent earlier records (mixed)")] = 0.0,
    output: Annotated[str, typer.Option(help="kafka or console")] = "kafka",
    topic: Annotated[str | None, typer.Option(help="[default: KAFKA__TOPIC_SOURCE]")] = None,
    partitions: Annotated[int | None, typer.Option(help="create the topic with N partitions if missing")] = None,
    seed: Annotated[int, typer.Option(help="same seed, same records")] = 7,
    run_dir: RunDirOpt = None,
    progress: Annotated[bool | None, typer.Option("--progress/--no-progress", help="[default: on a TTY]")] = None,
) -> None:
    """Send test records (names, e-mails, phones, mixed-format dates, amounts, countries) and invalid kinds."""
    if pattern not in PATTERNS:
        raise fail_invalid(f"--pattern must be one of {', '.join(PATTERNS)}, got {pattern!r}")
    if output not in OUTPUTS:
        raise fail_invalid(f"--output must be kafka or console, got {output!r}")
    if total < 1:
        raise fail_invalid(f"--total must be at least 1, got {total}")
    if rate < 0:
        raise fail_invalid(f"--rate must be 0 or more, got {rate:g}")
    for flag, ratio in (("--invalid-ratio", invalid_ratio), ("--duplicate-ratio", duplicate_ratio)):
        if not 0 <= ratio <= 1:
            raise fail_invalid(f"{flag} must be between 0 and 1, got {ratio:g}")
    if partitions is not None and partitions < 1:
        raise fail_invalid(f"--partitions must be at least 1, got {partitions}")
    with_ = {
        "total": total, "rate": rate, "pattern": pattern, "invalid_ratio": invalid_ratio,
        "duplicate_ratio": duplicate_ratio, "seed": seed, "output": output, "topic": topic, "partitions": partitions,
    }  # fmt: skip
    console = output == "console"
    _, result = run_tasks(
        "produce-test-data", {"produce": {"uses": "testdata.produce", "with": with_}}, run_dir,
        live=False if console else progress, summary=not console,
    )  # fmt: skip
    raise typer.Exit(exit_code(result))
