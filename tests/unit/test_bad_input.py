"""Bad input gets one line and exit 2, never a traceback: run directories, files, schemas, settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SLOW = ROOT / "tests" / "fixtures" / "slow.yaml"
DEMO = ROOT / "pipelines" / "demo.yaml"


def cli(*args: str, env: dict[str, str] | None = None, user: str | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MILVUS__", "S3__", "POSTGRES__"))}
    cmd = [sys.executable, str(ROOT / "run_pipeline.py"), *args]
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, env={**base, **(env or {})}, capture_output=True, text=True, timeout=120, cwd=ROOT)


def one_line_error(proc: subprocess.CompletedProcess[str], *parts: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error:")
    text = " ".join(proc.stderr.split())
    for part in parts:
        assert part in text, (part, text)


def test_run_dir_that_is_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "runs"
    blocker.write_text("not a directory")
    one_line_error(cli("run", str(DEMO), "--run-dir", str(blocker)), "cannot use", "a file is in the way")
    one_line_error(cli("run", str(DEMO), "--run-dir", str(blocker / "below")), "cannot use", "a file is in the way")
    assert blocker.read_text() == "not a directory"


def test_run_dir_that_is_not_writable(tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root writes through permission bits; sysfs refuses even root
        locked = Path("/sys/dag-pipeline-runs")
        why = "Operation not permitted"
    else:
        locked = tmp_path / "readonly"
        locked.mkdir()
        locked.chmod(0o555)
        locked = locked / "runs"
        why = "Permission denied"
    proc = cli("run", str(DEMO), "--run-dir", str(locked), "--no-progress")
    one_line_error(proc, "cannot use", str(locked), why)


def test_binary_and_non_utf8_pipeline_files(tmp_path: Path) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(128, 256)) * 4)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: x\ntasks:\n  a: {uses: demo.sleep}\n# caf\xe9\n")
    for command in ("run", "validate"):
        one_line_error(cli(command, str(binary)), str(binary), "not a text (UTF-8) file", "offset 0")
        one_line_error(cli(command, str(latin)), str(latin), "byte 0xe9 at offset")


def test_generate_with_a_binary_schema_file_names_it(tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    schema.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    one_line_error(cli("generate", "--schema", str(schema), "--out", str(tmp_path / "o")), str(schema), "not a text (UTF-8) schema file")
    assert not (tmp_path / "o").exists()


def test_schema_without_a_vector_field_is_rejected_before_running(tmp_path: Path) -> None:
    schema = tmp_path / "novec.json"
    schema.write_text('{"collection_name": "novec", "fields": [{"name": "id", "type": "Int64", "is_primary": true}]}')
    for command in ("validate", "run"):
        args = [command, str(ROOT / "pipelines" / "quickstart.yaml"), "--set", f"schema={schema}"]
        if command == "run":
            args += ["--run-dir", str(tmp_path / "runs")]
        one_line_error(cli(*args), "task 'collection'", "has no vector field")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_invalid_postgres_dsn_is_a_configuration_error_that_hides_the_secret() -> None:
    for dsn, why in (("not-a-dsn", "must be a URL like"), ("postgresql://u:hunter2@db:notaport/x", "port")):
        proc = cli("validate", str(DEMO), env={"POSTGRES__DSN": dsn})
        one_line_error(proc, "configuration POSTGRES__DSN", why)
        assert "hunter2" not in proc.stderr and dsn not in proc.stderr


def test_retries_that_cannot_apply_are_warned_about(tmp_path: Path) -> None:
    spec = tmp_path / "warn.yaml"
    spec.write_text(
        "name: warn\ntasks:\n  count: {uses: demo.count, with: {total: 10}}\n  sum: {uses: demo.sum, needs: [count], retries: 2}\n"
    )
    proc = cli("validate", str(spec))
    assert proc.returncode == 0
    text = " ".join(proc.stderr.split())
    assert "warning:" in text and "task 'sum'" in text and "retries nothing inside" in text
    quiet = cli("validate", str(ROOT / "pipelines" / "quickstart.yaml"))  # upload retries per file: no warning
    assert quiet.returncode == 0 and "warning" not in quiet.stderr


def test_bad_backend_choices_are_one_line_errors(tmp_path: Path) -> None:
    runs = str(tmp_path / "runs")
    one_line_error(cli("run", str(DEMO), "--run-dir", runs, "--backend", "spark"), "--backend", "spark")
    one_line_error(
        cli("run", str(DEMO), "--run-dir", runs, "--backend", "dask", "--scheduler", "10.0.0.1"), "--scheduler", "not a Dask address"
    )
    one_line_error(cli("run", str(DEMO), "--run-dir", runs, "--scheduler", "tcp://127.0.0.1:8786"), "needs --backend dask")
    one_line_error(cli("run", str(DEMO), "--run-dir", runs, env={"PIPELINE__BACKEND": "ray"}), "PIPELINE__BACKEND")
    assert not (tmp_path / "runs").exists(), "nothing may be written for invalid input"


def test_daemon_and_submit_without_a_broker_are_configuration_errors() -> None:
    env = {"KAFKA__BOOTSTRAP_SERVERS": ""}
    one_line_error(cli("daemon", env=env), "KAFKA__BOOTSTRAP_SERVERS")
    one_line_error(cli("submit", "demo", env=env), "KAFKA__BOOTSTRAP_SERVERS")
    one_line_error(cli("daemon", "--pipelines-dir", "/nonexistent", env={"KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}), "no such directory")
    one_line_error(
        cli("submit", "demo", "--deadline", "tomorrow", env={"KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}), "--deadline", "ISO 8601"
    )


def test_an_unreachable_broker_is_one_error_line_and_exit_2() -> None:
    for args in (["daemon", "--http-port", "0"], ["submit", "demo"], ["submit", "demo", "--wait"]):
        proc = cli(*args, env={"KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"})
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (args, proc.stderr[-1500:])
        assert "error: cannot reach the Kafka broker at 127.0.0.1:1 (KAFKA__BOOTSTRAP_SERVERS)" in proc.stderr
        assert "Unclosed" not in proc.stderr, proc.stderr


def test_submit_of_a_broken_local_file_names_it_in_one_line(tmp_path: Path) -> None:
    binary, broken = tmp_path / "binary.yaml", tmp_path / "broken.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    broken.write_text("name: x\ntasks: [1, 2\n")
    env = {"KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}  # refused before any connection
    one_line_error(cli("submit", str(binary), env=env), "binary.yaml", "not a text (UTF-8) file")
    proc = cli("submit", str(broken), env=env)
    one_line_error(proc, "broken.yaml", "YAML syntax error at line")
    assert len(proc.stderr.strip().splitlines()) == 1
