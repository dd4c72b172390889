"""The console's JSON API on a real server: refusals (422 naming the field, 401, 404 for run ids that
reach outside the run dir), the live event stream and its resumption, 1,000 runs listed in under a
second, and the token kept out of every log, file and answer."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipeline.run_events import clean_event
from tests.e2e.serve_helpers import Console, console, console_dirs, run_cli, wait_for

TOKEN = "tok-" + "7f3a9c1e5b"
NOTES = """name: notes
description: a text parameter the run page must show as text
params: {note: "hello", pause: 0.2}
tasks:
  wait: {uses: demo.sleep, with: {seconds: "${params.pause}"}}
  echo: {uses: demo.sleep, needs: [wait], with: {seconds: 0}}
"""


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return console_dirs(tmp_path, notes=NOTES)


def _finished(c: Console, run_id: str) -> dict:
    return wait_for(lambda: (d := c.call("GET", f"/api/runs/{run_id}")[1]).get("report") and d, 120)


def test_bad_params_are_422_naming_the_field_and_unknown_pipelines_too(dirs: tuple[Path, Path]) -> None:
    with console(*dirs, token=TOKEN) as c:
        status, body = c.call("POST", "/api/runs", {"pipeline": "demo", "params": {"rows": "many"}}, token=TOKEN)
        assert status == 422 and body["detail"][0]["loc"] == ["body", "params", "rows"]
        assert "expected int" in body["detail"][0]["msg"]
        status, body = c.call("POST", "/api/runs", {"pipeline": "demo", "params": {"rowz": 5}}, token=TOKEN)
        assert status == 422 and body["detail"][0]["loc"] == ["body", "params", "rowz"]
        status, body = c.call("POST", "/api/runs", {"pipeline": "../etc/passwd"}, token=TOKEN)
        assert status == 422 and body["detail"][0]["loc"] == ["body", "pipeline"]
        status, body = c.call("POST", "/api/runs", {"pipeline": "demo", "via": "carrier-pigeon"}, token=TOKEN)
        assert status == 422 and body["detail"][0]["loc"][-1] == "via"
        status, body = c.call("POST", "/api/runs", {"pipeline": "demo", "params": {"rows": -5}}, token=TOKEN)
        assert status == 422 and "count" in body["detail"][0]["msg"]  # the component's own check, naming its task
        assert c.call("GET", "/api/runs")[1] == []  # nothing was started by any of them


def test_writes_need_the_token_and_are_off_without_one(dirs: tuple[Path, Path]) -> None:
    with console(*dirs, token=TOKEN) as c:
        for token in (None, "wrong", TOKEN + "x"):
            status, body = c.call("POST", "/api/runs", {"pipeline": "demo"}, token=token)
            assert status == 401 and "token" in body["detail"]
            assert c.call("POST", "/api/runs/abc/cancel", token=token)[0] == 401
        assert c.call("GET", "/api/runs")[1] == []
    with console(*dirs) as c:
        status, body = c.call("POST", "/api/runs", {"pipeline": "demo"}, token="anything")
        assert status == 401 and "no SERVE__TOKEN" in body["detail"]


def test_run_ids_reaching_outside_the_run_dir_are_404(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    runs, _ = dirs
    outside = tmp_path / "secret-run"
    outside.mkdir()
    (outside / "report.json").write_text(json.dumps({"run_id": "x", "state": "succeeded", "tasks": {}}))
    (runs / "linked").symlink_to(outside)
    with console(*dirs, token=TOKEN) as c:
        for bad in ("..", "%2e%2e", "..%2fsecret-run", "linked", ".hidden", "a%00b", "x" * 300, "nope"):
            for path in (f"/api/runs/{bad}", f"/runs/{bad}", f"/runs/{bad}/report.html", f"/api/runs/{bad}/events"):
                status, _ = c.call("GET", path)
                assert status == 404, (path, status)
            assert c.call("POST", f"/api/runs/{bad}/cancel", token=TOKEN)[0] == 404


def test_a_run_submitted_streams_its_events_and_a_stream_resumes_after_its_last_id(dirs: tuple[Path, Path]) -> None:
    # started from a process that ran pipelines in-process (as this test session does): its worker-parent
    # variable must not make the console's runs take themselves for orphaned workers and exit silently
    with console(*dirs, token=TOKEN, DAG_PIPELINE_PARENT_PID="1") as c:
        status, body = c.call("POST", "/api/runs", {"pipeline": "notes", "params": {"pause": "0.5"}}, token=TOKEN)
        assert status == 201, body
        run_id = body["run_id"]
        assert any(r["id"] == run_id for r in c.call("GET", "/api/runs")[1])
        done = _finished(c, run_id)
        assert done["report"]["state"] == "succeeded" and done["report"]["params"]["pause"] == 0.5
        whole = _sse(c, run_id)
        assert whole[0][0] == "snapshot" and whole[-1] == ("end", {"reason": "finished"})
        snapshot = whole[0][1]
        assert {n: t["state"] for n, t in snapshot["tasks"].items()} == {"wait": "succeeded", "echo": "succeeded"}
        # from an id on: exactly the events after it, each once
        lines = [json.loads(x) for x in (dirs[0] / run_id / "events.jsonl").read_text().splitlines()]
        third = sum(len(json.dumps(x)) + 1 for x in lines[:3])  # the byte offset after the third line
        rest = _sse(c, run_id, last_id=third)
        assert [e for kind, e in rest if kind == "event"] == [clean_event(x) for x in lines[3:]]
        assert c.call("POST", f"/api/runs/{run_id}/cancel", token=TOKEN)[0] == 409  # finished: nothing to cancel


def _sse(c: Console, run_id: str, last_id: int | None = None) -> list[tuple[str, dict]]:
    request = urllib.request.Request(f"{c.url}/api/runs/{run_id}/events")
    if last_id is not None:
        request.add_header("Last-Event-ID", str(last_id))
    out: list[tuple[str, dict]] = []
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        kind = ""
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.append((kind, json.loads(line[6:])))
    return out


def test_cancel_stops_a_live_run_started_here_and_its_report_says_cancelled(dirs: tuple[Path, Path]) -> None:
    with console(*dirs, token=TOKEN) as c:
        status, body = c.call("POST", "/api/runs", {"pipeline": "notes", "params": {"pause": "60"}}, token=TOKEN)
        assert status == 201
        run_id = body["run_id"]
        wait_for(lambda: c.call("GET", f"/api/runs/{run_id}")[1]["live"]["tasks"].get("wait", {}).get("state") == "running")
        assert c.call("POST", f"/api/runs/{run_id}/cancel", token=TOKEN)[0] == 202
        done = _finished(c, run_id)
        assert done["report"]["state"] == "cancelled" and done["report"]["tasks"]["wait"]["state"] == "cancelled"


def test_a_thousand_runs_are_listed_in_under_a_second(dirs: tuple[Path, Path]) -> None:
    runs, _ = dirs
    proc = run_cli("run", "pipelines/demo.yaml", "--set", "rows=2000", "--run-dir", str(runs), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (real,) = list(runs.iterdir())
    report = json.loads((real / "report.json").read_text())
    for i in range(999):
        copy = runs / f"copy{i:04d}"
        copy.mkdir()
        report["run_id"], report["started_at"] = copy.name, report["started_at"] - i - 1
        (copy / "report.json").write_text(json.dumps(report))
    with console(*dirs, token=TOKEN) as c:
        for _ in range(2):  # the first listing reads every report, the second only what changed
            started = time.perf_counter()
            status, rows = c.call("GET", "/api/runs")
            elapsed = time.perf_counter() - started
            assert status == 200 and len(rows) == 1000 and elapsed < 1.0, elapsed
        assert rows[0]["id"] == real.name and rows[1]["id"] == "copy0000"  # newest first
        assert len(c.call("GET", "/api/runs?state=failed")[1]) == 0
        metrics = c.call("GET", "/metrics")[1]
        assert 'pipeline_serve_runs{state="succeeded"} 1000.0' in metrics


def test_the_token_is_never_logged_stored_or_shown(dirs: tuple[Path, Path]) -> None:
    runs, _ = dirs
    with console(*dirs, token=TOKEN) as c:
        answers = [c.call("POST", "/api/runs", {"pipeline": "notes", "params": {"pause": "0.1"}}, token=TOKEN)]
        run_id = answers[0][1]["run_id"]
        _finished(c, run_id)
        answers += [c.call("POST", "/api/runs", {"pipeline": "notes"}, token="wrong")]
        pages = ("/", f"/runs/{run_id}", "/submit", "/api/runs", f"/api/runs/{run_id}", "/healthz", "/metrics", "/openapi.json")
        answers += [c.call("GET", p) for p in pages]
        log = c.log
    assert TOKEN not in log.read_text()
    assert all(TOKEN not in json.dumps(body) for _, body in answers)
    for file in runs.rglob("*"):
        if file.is_file():
            assert TOKEN.encode() not in file.read_bytes(), file


def test_a_public_address_without_a_token_is_refused_before_binding() -> None:
    proc = run_cli("serve", "--host", "0.0.0.0", "--port", "0")
    assert proc.returncode == 2 and "SERVE__TOKEN" in proc.stderr and "Traceback" not in proc.stderr


def test_pages_show_a_script_parameter_as_text(dirs: tuple[Path, Path]) -> None:
    hostile = "<script>alert(1)</script>"
    with console(*dirs, token=TOKEN) as c:
        status, body = c.call("POST", "/api/runs", {"pipeline": "notes", "params": {"note": hostile, "pause": "0.1"}}, token=TOKEN)
        assert status == 201
        run_id = body["run_id"]
        done = _finished(c, run_id)
        assert done["report"]["params"]["note"] == hostile  # kept as given: it is the page that must not run it
        for path in ("/", f"/runs/{run_id}"):
            page = c.call("GET", path)[1]
            assert hostile not in page and "<script>alert" not in page
        assert "\\u003cscript\\u003ealert(1)\\u003c/script\\u003e" in c.call("GET", f"/runs/{run_id}")[1]


def test_an_oversized_body_is_refused_before_it_is_read_whole(dirs: tuple[Path, Path]) -> None:
    big = {"pipeline": "demo", "params": {"rows": "9" * 200_000}}
    with console(*dirs, token=TOKEN) as c:
        status, body = c.call("POST", "/api/runs", big, token=TOKEN)
        assert status == 413 and "65536" in body["detail"]
        data = json.dumps(big).encode()
        chunks = (data[i : i + 8192] for i in range(0, len(data), 8192))  # no length declared: counted as it comes
        request = urllib.request.Request(f"{c.url}/api/runs", data=chunks, method="POST")
        request.add_header("Authorization", f"Bearer {TOKEN}")
        request.add_header("Content-Type", "application/json")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        refused.value.close()  # the error holds the connection
        assert refused.value.code in (400, 413)
        assert c.call("GET", "/api/runs")[1] == [] and c.call("GET", "/healthz")[0] == 200
