"""produce-test-data: bad flags are one line and exit 2; console output is the records only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from task_components.sources.testdata import records


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pattern", "weird"], "--pattern must be one of valid, invalid, mixed"),
        (["--output", "s3"], "--output must be kafka or console"),
        (["--invalid-ratio", "1.5"], "--invalid-ratio must be between 0 and 1"),
        (["--total", "0"], "--total must be at least 1"),
        (["--rate", "-1"], "--rate must be 0 or more"),
    ],
)
def test_bad_flags_exit_2_with_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    import pipeline.stream_cli  # noqa: F401 - registers the command, as main() does

    result = CliRunner().invoke(app, ["produce-test-data", *args, "--run-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output


def test_console_output_is_exactly_the_generated_records(tmp_path: Path) -> None:
    import pipeline.stream_cli  # noqa: F401

    args = ["produce-test-data", "--output", "console", "--total", "50", "--rate", "0", "--seed", "5",
            "--pattern", "valid", "--run-dir", str(tmp_path)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines == [json.loads(r.raw) for r in records(50, pattern="valid", seed=5)]
