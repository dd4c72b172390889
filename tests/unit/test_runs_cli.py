"""runs list / runs show / report: fast, honest about broken reports, exit 2 with one line on bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pipeline.runs_cli  # noqa: F401 - registers the commands on the shared app
from pipeline.cli import app
from pipeline.runs_cli import list_runs
from tests.unit.test_report_html import T0, small_report


def make_runs(base: Path, n: int) -> None:
    for i in range(n):
        report = small_report()
        report["run_id"] = f"run{i:03d}"
        report["started_at"], report["ended_at"] = T0 + i * 60, T0 + i * 60 + 5
        (base / f"run{i:03d}").mkdir(parents=True)
        (base / f"run{i:03d}" / "report.json").write_text(json.dumps(report))


def test_fifty_runs_list_in_under_a_second_newest_first_with_a_corrupt_one(tmp_path: Path) -> None:
    make_runs(tmp_path, 50)
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "report.json").write_text('{"run_id": "torn", "tasks": {"a": {"sta')
    (tmp_path / "running").mkdir()
    (tmp_path / "running" / "request.json").write_text(json.dumps({"file": "pipelines/quickstart.yaml"}))
    (tmp_path / "not-a-run").mkdir()
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["runs", "list", "--run-dir", str(tmp_path), "--json"])
    took = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    assert took < 1.0, took
    rows = json.loads(result.output)
    assert len(rows) == 52
    by_id = {r["id"]: r for r in rows}
    assert by_id["torn"]["state"] == "corrupt report" and "half-written" in by_id["torn"]["summary"]
    assert by_id["running"]["state"] == "no report" and by_id["running"]["pipeline"] == "quickstart"
    ok = [r for r in rows if r["id"].startswith("run0")]
    assert [r["id"] for r in ok] == [f"run{i:03d}" for i in reversed(range(50))]
    assert ok[0]["duration"] == 5 and ok[0]["pipeline"] == "demo"
    assert ok[0]["summary"].startswith("4 tasks: 1 failed, 1 skipped, 2 succeeded; bad: RuntimeError")
    table = CliRunner().invoke(app, ["runs", "list", "--run-dir", str(tmp_path)])
    assert table.exit_code == 0 and "corrupt report" in table.output and "Traceback" not in table.output


def test_runs_show_rebuilds_the_end_of_run_table(tmp_path: Path) -> None:
    make_runs(tmp_path, 1)
    result = CliRunner().invoke(app, ["runs", "show", "run000", "--run-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for text in ("run run000 of 'demo': failed", "rows=1,234,567", "RuntimeError: <script>x</script>", "skipped"):
        assert text in result.output, text


def test_report_rebuilds_the_page_and_bad_input_exits_2(tmp_path: Path) -> None:
    make_runs(tmp_path, 1)
    ok = CliRunner().invoke(app, ["report", "run000", "--run-dir", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "run000" / "report.html").read_text().count('class="bar') == 4
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "report.json").write_text("{")
    (tmp_path / "empty").mkdir()
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "report.json").write_text(json.dumps({"started_at": 1.0, "tasks": {"a": 5}}))
    for args, text in (
        (["report", "nope"], "no run 'nope'"),
        (["report", "torn"], "corrupt or half-written"),
        (["report", "empty"], "missing"),
        (["report", ".."], "no run '..'"),
        (["runs", "show", "nope"], "no run 'nope'"),
        (["runs", "show", "torn"], "corrupt or half-written"),
        (["report", "odd"], "unexpected content"),
        (["runs", "show", "odd"], "unexpected content"),
    ):
        result = CliRunner().invoke(app, [*args, "--run-dir", str(tmp_path)])
        assert result.exit_code == 2, (args, result.output)
        assert text in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output


def test_list_of_a_missing_run_dir_is_empty(tmp_path: Path) -> None:
    assert list_runs(tmp_path / "nowhere") == []


def test_an_undrawable_page_never_changes_the_outcome(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.report_html

    def broken(*_: object, **__: object) -> Path:
        raise RuntimeError("template exploded")

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "pipelines" / "report_retry_fail.yaml"
    monkeypatch.setattr(pipeline.report_html, "write_html", broken)
    result = CliRunner().invoke(app, ["run", str(fixture), "--run-dir", str(tmp_path), "--no-progress"])
    assert result.exit_code == 1, result.output  # `broken` fails as the file says; nothing more
    (run_dir,) = list(tmp_path.iterdir())
    report = json.loads((run_dir / "report.json").read_text())
    assert report["tasks"]["flaky"]["state"] == "succeeded" and report["tasks"]["flaky"]["attempts"] == 2
    assert {"from": "count", "to": "total", "stream": True} in report["edges"]
    assert not (run_dir / "report.html").exists()
    monkeypatch.undo()
    assert CliRunner().invoke(app, ["report", run_dir.name, "--run-dir", str(tmp_path)]).exit_code == 0
    assert (run_dir / "report.html").exists()
