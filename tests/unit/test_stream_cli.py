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
        (["--total", "-1"], "--total must be 0 (unlimited) or more"),
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

    args = [
        "produce-test-data",
        "--output",
        "console",
        "--total",
        "50",
        "--rate",
        "0",
        "--seed",
        "5",
        "--pattern",
        "valid",
        "--run-dir",
        str(tmp_path),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines == [json.loads(r.raw) for r in records(50, pattern="valid", seed=5)]


ROOT = Path(__file__).resolve().parents[2]


def test_streaming_file_without_configuration_exits_2_naming_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from config.settings import get_settings

    for var in ("KAFKA__BOOTSTRAP_SERVERS", "MONGODB__CONNECTION_STRING", "MONGODB__URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env from the checkout
    get_settings.cache_clear()
    try:
        args = ["run", str(ROOT / "pipelines" / "streaming.yaml"), "--run-dir", str(tmp_path)]
        result = CliRunner().invoke(app, args)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2, result.output
    assert "is not set" in result.output and "Traceback" not in result.output


def test_a_streaming_source_without_a_dead_letter_sink_is_rejected_by_validate(tmp_path: Path) -> None:
    text = (ROOT / "pipelines" / "streaming.yaml").read_text()
    broken = tmp_path / "no_dlq.yaml"
    broken.write_text(
        text.replace("needs: [consume, standardize, quality, mongodb, kafka_out]", "needs: [standardize, quality, mongodb, kafka_out]")
    )
    result = CliRunner().invoke(app, ["validate", str(broken)])
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())
    assert "consume" in output and "no dead-letter sink (sink.dead_letter) needs this task" in output


def test_the_streaming_pipeline_is_drawn_in_data_order() -> None:
    """Stream edges run source -> stages -> sinks, every step's rejects -> the dead-letter sink."""
    from pipeline.registry import build_dag
    from pipeline.spec import load_spec

    path = ROOT / "pipelines" / "streaming.yaml"
    tasks = {t.name: t for t in build_dag(load_spec(path, {}), path)}
    streams = {name: sorted(t.streams_from) for name, t in tasks.items()}
    assert streams == {
        "consume": [],
        "standardize": ["consume"],
        "quality": ["standardize"],
        "mongodb": ["quality"],
        "kafka_out": ["quality"],
        "dead_letter": sorted(["consume", "standardize", "quality", "mongodb", "kafka_out"]),
    }
    assert not tasks["consume"].needs, "the source needs nothing: the sinks come after it"


def test_managed_kafka_credentials_mean_sasl_ssl_and_never_print() -> None:
    from config.settings import Settings
    from task_components.clients import kafka_options

    settings = Settings.model_validate({"kafka": {"bootstrap_servers": "broker:9092", "api_key": "KEY", "api_secret": "SECRET"}})
    opts = kafka_options(settings)
    assert opts["security_protocol"] == "SASL_SSL" and opts["sasl_mechanism"] == "PLAIN"
    assert (opts["sasl_plain_username"], opts["sasl_plain_password"]) == ("KEY", "SECRET")
    assert "ssl_context" in opts
    assert "SECRET" not in repr(settings) and "KEY" not in repr(settings.kafka)
    plain = kafka_options(Settings.model_validate({"kafka": {"bootstrap_servers": "b:1"}}))
    assert plain == {"bootstrap_servers": "b:1", "security_protocol": "PLAINTEXT"}


def test_mongodb_uri_stays_an_alias_of_connection_string(monkeypatch: pytest.MonkeyPatch) -> None:
    from config.settings import Settings

    monkeypatch.setenv("MONGODB__URI", "mongodb://old-name")
    assert Settings().mongodb.connection_string.get_secret_value() == "mongodb://old-name"  # type: ignore[union-attr]
    monkeypatch.delenv("MONGODB__URI")
    monkeypatch.setenv("MONGODB__CONNECTION_STRING", "mongodb://new-name")
    assert Settings().mongodb.uri.get_secret_value() == "mongodb://new-name"  # type: ignore[union-attr]


def test_unset_flags_take_the_test_data_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.stream_cli  # noqa: F401
    from config.settings import get_settings

    monkeypatch.setenv("TEST_DATA__TOTAL_RECORDS", "7")
    monkeypatch.setenv("TEST_DATA__RATE", "0")
    monkeypatch.setenv("TEST_DATA__PATTERN", "invalid")
    get_settings.cache_clear()
    try:
        args = ["produce-test-data", "--output", "console", "--seed", "2", "--run-dir", str(tmp_path)]
        result = CliRunner().invoke(app, args)
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [r.raw.decode() for r in records(7, pattern="invalid", seed=2)]


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [(r"(\w+)\s\1", "invalid escape sequence: \\1"), ("(?<=@)x", "invalid perl operator: (?<")],
)
def test_validate_refuses_a_pattern_re2_cannot_run_with_exit_2(tmp_path: Path, pattern: str, reason: str) -> None:
    import yaml

    spec = yaml.safe_load((Path(__file__).resolve().parents[2] / "pipelines" / "streaming.yaml").read_text())
    spec["tasks"]["quality"]["with"]["rules"].append({"name": "twice", "type": "pattern", "field": "x", "pattern": pattern})
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["validate", str(path)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "cannot run in RE2" in text and reason in text and "Traceback" not in result.output
