"""report.html from report.json: one bar per attempt, one node per task, secrets masked, fast at 1,000 tasks."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from dag_orchestrator import Executor, RetryPolicy
from pipeline.report_html import ReportError, build_html, load_report, redact, write_html
from tests.unit.dagtools import Recorder, build

T0 = 1_700_000_000.0


def task(state: str = "succeeded", spans: list[tuple[float, float]] | None = None, **kw: Any) -> dict[str, Any]:
    spans = spans if spans is not None else [(T0, T0 + 1)]
    return {
        "state": state,
        "attempts": len(spans),
        "attempt_times": [list(s) for s in spans],
        "started_at": spans[0][0] if spans else None,
        "ended_at": spans[-1][1] if spans else None,
        "ready_at": spans[0][0] - 0.5 if spans else None,
        "error": None,
        "resumed": False,
        **kw,
    }


def small_report() -> dict[str, Any]:
    return {
        "run_id": "r1",
        "dag": "demo",
        "pipeline": "demo",
        "state": "failed",
        "reason": None,
        "started_at": T0,
        "ended_at": T0 + 5,
        "params": {
            "rows": 10,
            "api_token": "hunter2",
            "db": {"postgres_dsn": "postgresql://u:pw@x/db"},
            "S3_SECRET_KEY": "abc123",
            "mongo_uri": "mongodb://u:pw@h",
            "connection_string": "cs-value",
        },
        "tasks": {
            "gen": task(spans=[(T0, T0 + 1)]),
            "flaky": task(spans=[(T0 + 1, T0 + 1.5), (T0 + 2, T0 + 3)], retry_errors=["OSError: net down"]),
            "bad": task("failed", spans=[(T0 + 1, T0 + 1.2)], error="RuntimeError: <script>x</script>\nline 2"),
            "later": task("skipped", spans=[], error="skipped: upstream task 'bad' did not succeed"),
        },
        "summary": {"gen": {"rows": 1234567, "files": 3}},
        "edges": [
            {"from": "gen", "to": "flaky", "stream": True},
            {"from": "gen", "to": "bad", "stream": False},
            {"from": "bad", "to": "later", "stream": False},
        ],
    }


def test_one_bar_per_attempt_one_node_per_task_and_a_stream_edge() -> None:
    html = build_html(small_report())
    assert html.count('class="bar') == 4  # gen 1 + flaky 2 + bad 1; skipped has none
    assert len(re.findall(r'data-task="flaky" data-attempt="\d"', html)) == 2
    assert html.count('<g class="node') == 4
    assert html.count('class="edge stream"') == 1 + 1  # the edge and the legend sample
    assert "rows=1,234,567, files=3" in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "<script>" not in html  # errors in full, escaped
    assert "line 2" in html
    assert "attempt 1 (retried): OSError: net down" in html and "attempt 1/2: 0.500s (failed): OSError" in html
    assert "http://" not in html and "https://" not in html  # nothing fetched from anywhere


def test_totals_and_critical_path() -> None:
    html = build_html(small_report())
    assert "5.00 s" in html  # wall
    assert "2.70 s" in html  # 1 + 0.5 + 1 + 0.2
    assert "0.54\u00d7" in html
    assert "gen → flaky" in html  # flaky ended last; it needed gen


def test_secrets_are_redacted_at_any_depth() -> None:
    html = build_html(small_report())
    for secret in ("hunter2", "postgresql://u:pw", "abc123", "mongodb://", "cs-value"):
        assert secret not in html, secret
    assert html.count("********") == 5
    assert redact({"a": [{"password": 1}], "keep": "x"}) == {"a": [{"password": "********"}], "keep": "x"}


def test_a_thousand_task_dag_renders_in_under_3_s() -> None:
    n = 1000
    tasks = {f"t{i}": task(spans=[(T0 + i * 0.01, T0 + i * 0.01 + 0.5)]) for i in range(n)}
    edges = [{"from": f"t{i // 3}", "to": f"t{i}", "stream": i % 7 == 0} for i in range(1, n)]
    report = {**small_report(), "tasks": tasks, "edges": edges, "summary": {}, "ended_at": T0 + 11}
    started = time.perf_counter()
    html = build_html(report)
    took = time.perf_counter() - started
    assert took < 3.0, took
    assert html.count('<g class="node') == n and html.count('class="bar') == n


def test_old_reports_without_spans_or_edges_still_render() -> None:
    report = small_report()
    del report["edges"]
    for t in report["tasks"].values():
        t.pop("attempt_times")
        t.pop("ready_at")
    html = build_html(report)
    assert html.count('<g class="node') == 4 and "predates stored edges" in html


def test_load_report_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="missing"):
        load_report(tmp_path / "report.json")
    (tmp_path / "report.json").write_text('{"run_id": "x", "tas')
    with pytest.raises(ReportError, match="corrupt or half-written"):
        load_report(tmp_path / "report.json")
    (tmp_path / "report.json").write_text("[1, 2]")
    with pytest.raises(ReportError, match="not a run report"):
        load_report(tmp_path / "report.json")


@pytest.mark.anyio
async def test_executor_records_each_attempt_and_when_a_task_became_ready(tmp_path: Path) -> None:
    rec = Recorder()
    dag = build({"a": [], "b": ["a"]}, rec, b={"fails": 1, "retry": RetryPolicy(attempts=3, backoff=0.05)})
    result = await Executor().run(dag)
    a, b = result.tasks["a"], result.tasks["b"]
    assert len(a.attempt_times) == 1 and len(b.attempt_times) == 2 == b.attempts
    assert a.ready_at is not None and b.ready_at is not None
    assert b.ready_at >= a.attempt_times[0][1]  # ready when its need ended
    (s1, e1), (s2, e2) = b.attempt_times
    assert s1 <= e1 <= s2 <= e2 and s2 - e1 >= 0.04  # the backoff is the gap between the bars
    assert b.to_dict()["attempt_times"] == [(s1, e1), (s2, e2)]
    assert b.retry_errors == ("RuntimeError: b failed on purpose",) and a.retry_errors == ()
    result.write_report(tmp_path / "report.json")
    assert write_html(tmp_path).read_text().count('class="bar') == 3
