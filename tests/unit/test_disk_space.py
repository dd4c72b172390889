"""A full disk is named as one: the path, the free space; and a run that will not fit is warned about.

Disk-full is injected as a real ``OSError(errno.ENOSPC)`` where the write happens, and once for real
on a 15 MB tmpfs (as root; skipped cleanly where mounting is not permitted).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
import typer

from config.logging import configure_logging
from config.settings import Settings
from dag_orchestrator import DAG, Executor, StateStore, TaskRun, TaskState, task
from dag_orchestrator.diskspace import DiskFullError, explain, naming_enospc
from pipeline.run_space import estimated_bytes, warn_if_short_of_space
from pipeline.runner import NoSpaceForRun, RunOptions, prepare_run
from pipeline.spec import SpecError

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "pipelines" / "quickstart.yaml"


def _enospc(path: str | None = None) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path) if path else OSError(errno.ENOSPC, "No space")


def test_naming_enospc_names_the_path_and_the_free_space(tmp_path: Path) -> None:
    target = tmp_path / "state.jsonl"
    with pytest.raises(DiskFullError) as caught, naming_enospc(target):
        raise _enospc()
    text = str(caught.value)
    assert text.startswith(f"no space left on device writing {target}: ")
    assert "free of" in text and "on its filesystem" in text
    assert caught.value.errno == errno.ENOSPC  # still an OSError a caller can test by errno


def test_other_os_errors_pass_unchanged(tmp_path: Path) -> None:
    with pytest.raises(PermissionError), naming_enospc(tmp_path):
        raise PermissionError(errno.EACCES, "Permission denied")


def test_explain_recognises_a_library_that_kept_only_the_text() -> None:
    """pyarrow raises OSError("... [errno 28] No space left on device") without errno set."""
    wrapped = OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")
    assert explain(wrapped, "/runs/x") is not None and "/runs/x" in (explain(wrapped, "/runs/x") or "")
    assert explain(ValueError("No space left on device"), "/x") is None


class _FullFile:
    """A journal handle whose disk is full (what a write on a full filesystem raises)."""

    def write(self, _: str) -> int:
        raise _enospc()

    def flush(self) -> None:
        raise _enospc()


def test_journal_write_on_a_full_disk_names_the_journal(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store._fh = _FullFile()  # the journal's open handle: where the write fails
    with pytest.raises(DiskFullError, match=f"writing {tmp_path / 'state.jsonl'}: .* free of"):
        store.record(TaskRun("t", TaskState.FAILED, attempts=1, error="x"))


def test_result_write_on_a_full_disk_names_the_result_and_leaves_no_torn_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self: Path, data: bytes) -> int:
        with self.open("wb") as fh:
            fh.write(data[:3])  # part of it landed, then the disk filled
        raise _enospc(str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(DiskFullError, match=r"no space left on device writing .*results/t\.(tmp|pkl): .* free of"):
        StateStore(tmp_path).save_result("t", {"rows": 1})
    assert not list((tmp_path / "results").iterdir())


def test_report_write_on_a_full_disk_names_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dag_orchestrator.state import RunResult

    def full(self: Path, data: str, **_: Any) -> int:
        raise _enospc(str(self))

    monkeypatch.setattr(Path, "write_text", full)
    result = RunResult("r1", "d", TaskState.SUCCEEDED, {}, 0.0, 1.0)
    with pytest.raises(DiskFullError, match="report"):
        result.write_report(tmp_path / "report.json")


def test_a_task_failing_on_a_full_disk_says_so_with_the_run_directory(tmp_path: Path) -> None:
    """A component's own write (a partition file) is named when the executor records the failure."""

    @task
    async def write_partition(ctx: object) -> None:
        raise OSError("Error writing bytes to file. Detail: [errno 28] No space left on device")

    from dag_orchestrator.context import PipelineContext

    dag = DAG("disk", [write_partition])
    result = anyio.run(lambda: Executor().run(dag, PipelineContext(run_dir=tmp_path)))
    error = result.tasks["write_partition"].error or ""
    assert result.state is TaskState.FAILED
    assert error.startswith(f"no space left on device writing {tmp_path}: ") and "free of" in error
    assert "[errno 28]" in error  # the library's own words are kept after it


def test_request_write_on_a_full_disk_is_refused_naming_it_but_not_as_invalid_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Still refused before the run (a SpecError, which the daemon dead-letters), but NoSpaceForRun: exit 1."""
    real = Path.write_text

    def full(self: Path, data: str, **kw: Any) -> int:
        if self.name == "request.json":
            raise _enospc(str(self))
        return real(self, data, **kw)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(NoSpaceForRun, match=r"no space left on device writing .*request\.json: .* free of"):
        prepare_run(QUICKSTART, {}, RunOptions(run_dir=tmp_path))
    assert issubclass(NoSpaceForRun, SpecError)


def test_a_quota_is_named_as_a_quota_not_as_a_full_disk(tmp_path: Path) -> None:
    with pytest.raises(DiskFullError) as caught, naming_enospc(tmp_path / "state.jsonl"):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    assert str(caught.value).startswith(f"disk quota exceeded writing {tmp_path / 'state.jsonl'}: ")
    assert caught.value.errno == errno.EDQUOT
    said = explain(OSError(errno.EDQUOT, "Disk quota exceeded", "/runs/x/part-0.parquet"), None) or ""
    assert said.startswith("disk quota exceeded writing /runs/x/part-0.parquet") and "no space" not in said


def test_closing_a_journal_on_a_full_disk_names_it(tmp_path: Path) -> None:
    """/dev/full: the flush in close() fails, and close's own repeat of it must not replace the named error."""
    (tmp_path / "state.jsonl").symlink_to("/dev/full")
    store = StateStore(tmp_path)
    store.open()
    store._fh.write("{}\n")  # buffered: only the close's flush reaches the disk
    with pytest.raises(DiskFullError, match=f"writing {tmp_path / 'state.jsonl'}: "):
        store.close()
    assert store._fh is None


def test_a_journal_on_a_full_disk_ends_the_run_named_with_a_report_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The run's own journal lives on /dev/full: the run stops, the disk is named on one line, no traceback."""
    from pipeline.cli_common import EXIT_FAILED, run_to_end

    options = RunOptions(run_dir=tmp_path)
    prepared = prepare_run(ROOT / "tests" / "fixtures" / "slow.yaml", {"pause": 0}, options)
    (prepared.path / "state.jsonl").symlink_to("/dev/full")
    with pytest.raises(typer.Exit) as caught:
        run_to_end(prepared, Settings(), options, False)
    assert caught.value.exit_code == EXIT_FAILED
    said = capsys.readouterr().err
    assert f"error: run {prepared.run_id}: no space left on device writing {prepared.path / 'state.jsonl'}" in said
    report = json.loads((prepared.path / "report.json").read_text())  # the report is elsewhere: it is written
    assert report["state"] == "failed" and "no space left on device" in report["reason"], report["reason"]
    assert prepared.lock is not None and prepared.lock._fd is None  # the run directory is free again


def test_embedded_postgres_failing_on_a_full_disk_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from task_components import connect

    class _Pgserver:
        @staticmethod
        def get_server(data: str, cleanup_mode: str) -> None:
            (Path(data) / "log").write_text("FATAL:  could not write to file: No space left on device\n")
            raise subprocess.CalledProcessError(1, ["/opt/pg/bin/initdb", "-D", data])

    monkeypatch.setattr(connect, "_pgserver", lambda: _Pgserver)
    monkeypatch.setattr(connect, "forget_dead_handles", lambda data: [])
    monkeypatch.setattr(connect, "_server_lock", contextlib.nullcontext)  # pgserver's lock: not this test's
    monkeypatch.setattr(connect, "_start_watchdog", lambda base, data: None)
    (tmp_path / "postgres" / "data").mkdir(parents=True)
    with pytest.raises(connect.EmbeddedServerError) as caught:
        connect.embedded_dsn(tmp_path)
    text = str(caught.value)
    assert "initdb failed in" in text and "no space left on device" in text and "free of" in text


def _quickstart(tmp_path: Path, rows: int) -> Any:
    return prepare_run(QUICKSTART, {"rows": rows}, RunOptions(run_dir=tmp_path))


def test_estimate_grows_with_rows_and_counts_the_embedded_stores(tmp_path: Path) -> None:
    settings = Settings()
    small, large = _quickstart(tmp_path, 1000), _quickstart(tmp_path, 100_000)
    try:
        est_small, est_large = estimated_bytes(small.dag, settings), estimated_bytes(large.dag, settings)
    finally:
        small.lock.release()
        large.lock.release()
    assert 40 << 20 < est_small < est_large  # the embedded PostgreSQL alone takes ~40 MB
    # 100,000 rows of ~726 bytes, in Parquet + Milvus Lite + PostgreSQL: about 4.5 copies (measured ~4.1)
    assert 250 << 20 < est_large < 450 << 20


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str]) -> Iterator[pytest.CaptureFixture[str]]:
    configure_logging(force_format="json")
    yield capsys
    structlog.reset_defaults()


def test_a_run_too_large_for_the_free_space_is_warned_before_it_starts(
    tmp_path: Path, logs: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.run_space

    prepared = _quickstart(tmp_path, 100_000)
    try:
        monkeypatch.setattr(pipeline.run_space, "free_bytes", lambda p: (50 << 20, 1 << 30))
        assert warn_if_short_of_space(prepared.path, prepared.run_id, prepared.dag, Settings()) is not None
        monkeypatch.setattr(pipeline.run_space, "free_bytes", lambda p: (10 << 30, 20 << 30))
        assert warn_if_short_of_space(prepared.path, prepared.run_id, prepared.dag, Settings()) is None
    finally:
        prepared.lock.release()
    lines = [json.loads(x) for x in logs.readouterr().err.splitlines() if x.startswith("{")]
    (warning,) = [x for x in lines if "too small" in x["event"]]
    assert warning["free"] == "50.0 MB" and warning["run_dir"] == str(prepared.path) and "MB" in warning["estimated"]


@pytest.fixture
def tiny_fs() -> Iterator[Path]:
    """A real 15 MB filesystem (tmpfs); skipped where this process may not mount one.

    Outside pytest's base directory: see tests/e2e/test_stranded.py's run_root (the embedded PostgreSQL).
    """
    mount = Path(tempfile.mkdtemp(prefix="dag-pipeline-tiny-"))
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=15m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        shutil.rmtree(mount, ignore_errors=True)


def test_the_quickstart_on_a_full_disk_names_it(tiny_fs: Path) -> None:
    """The issue's case: a 15 MB run directory. Whatever write fails first, the output says disk full."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MILVUS__", "S3__", "POSTGRES__"))}
    done = subprocess.run(
        [sys.executable, str(ROOT / "run_pipeline.py"), "run", str(QUICKSTART), "--run-dir", str(tiny_fs), "--no-progress"],
        cwd=ROOT,
        env={**env, "LOGGING__FORMAT": "json"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    text = done.stdout + done.stderr
    assert done.returncode == 1, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert "disk may be too small" in done.stderr  # the warning before the start
    named = [line for line in text.splitlines() if "no space left on device" in line and str(tiny_fs) in line]
    assert named, text[-3000:]  # the failing write (whichever it was) is named with its path...
    assert any("free of 15.0 MB on its filesystem" in line for line in named), named  # ...and the space left


def test_a_disk_full_before_the_run_starts_exits_1_naming_it_like_one_during_the_run(tiny_fs: Path) -> None:
    """One exit code for a full disk: the run directory cannot even be set up (request.json) -> 1, not 2."""
    with (tiny_fs / "filler").open("wb") as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * (1 << 20))
            fh.flush()
    done = subprocess.run(
        [sys.executable, str(ROOT / "run_pipeline.py"), "run", str(QUICKSTART), "--run-dir", str(tiny_fs / "runs"), "--no-progress"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "no space left on device" in done.stderr and str(tiny_fs / "runs") in done.stderr, done.stderr[-3000:]
