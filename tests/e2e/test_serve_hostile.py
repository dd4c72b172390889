"""The console against damaged or hostile run files and pipeline files, written the way a broken disk, a
killed run or another user sharing the run directory would leave them: every page and API answer stays a
clear 200/4xx (never a 500), secrets stay masked on the live stream, a report page cannot reach the
console, and runs are shown running exactly while a process runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from dag_orchestrator.locks import PathLock
from tests.e2e.serve_helpers import ROOT, Console, clean_env, console, console_dirs, run_cli, wait_for

TOKEN = "hostile-" + "9e1d44ab"
SECRET = "hunter2-" + "live"
LONG = (
    "name: long\n"
    'params: {pause: 30.0, db_password: "' + SECRET + '"}\n'
    "tasks:\n"
    '  wait: {uses: demo.sleep, with: {seconds: "${params.pause}"}}\n'
)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return console_dirs(tmp_path, long=LONG)


def _stream(c: Console, run_id: str, last_id: str | None = None, seconds: float = 10) -> str:
    request = urllib.request.Request(f"{c.url}/api/runs/{run_id}/events")
    if last_id is not None:
        request.add_header("Last-Event-ID", last_id)
    out, deadline = [], time.monotonic() + seconds
    try:
        with urllib.request.urlopen(request, timeout=seconds + 1) as response:
            for raw in response:
                out.append(raw.decode())
                if raw.startswith(b"event: end") or time.monotonic() > deadline:
                    break
    except TimeoutError:
        pass  # a live run with nothing new to say (the heartbeat is 15 s away): what came is the answer
    return "".join(out)


def test_damaged_run_files_never_make_a_500(dirs: tuple[Path, Path]) -> None:
    runs, _ = dirs
    proc = run_cli("run", "pipelines/demo.yaml", "--set", "rows=1000", "--run-dir", str(runs), "--no-progress")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (good,) = list(runs.iterdir())
    os.mkdir(bytes(runs) + b"/bad\xff")  # not text: cannot be a URL, must not break the list
    (runs / "a b").mkdir()
    junk = runs / "junk"
    junk.mkdir()
    (junk / "request.json").write_text(json.dumps({"file": "x.yaml"}))
    lines = [
        '{"kind": "dag", "tasks": 5, "params": [1], "edges": "x"}',
        '{"kind": "task_started", "task": "a", "at": "soon"}',
        '{"kind": "task_progress", "task": "a", "data": [1, 2], "at": 1e400}',
        '{"kind": "task_progress", "task": "a", "data": {"done": NaN, "total": "x"}}',
        '{"kind": "run_finished", "data": "str"}',
        "[1, 2, 3]",
        "\x00\xff garbage",
        '{"kind": 7, "task": {"x": 1}}',
    ]
    (junk / "events.jsonl").write_bytes(("\n".join(lines) + "\n").encode("utf-8", "surrogateescape"))
    no_params = runs / "noparams"
    no_params.mkdir()
    report = json.loads((good / "report.json").read_text())
    report.pop("params")
    report["tasks"]["count"] = None
    (no_params / "report.json").write_text(json.dumps(report))
    with console(*dirs, token=TOKEN) as c:
        status, rows = c.call("GET", "/api/runs")
        assert status == 200 and {r["id"] for r in rows} == {good.name, "junk", "noparams"}
        assert c.call("GET", "/")[0] == 200 and c.call("GET", "/metrics")[0] == 200
        for run_id in ("junk", "noparams", good.name):
            for path in (f"/api/runs/{run_id}", f"/runs/{run_id}"):
                assert c.call("GET", path)[0] == 200, path
        assert "Infinity" not in _stream(c, "junk") and "NaN" not in c.call("GET", "/runs/junk")[1]
        for junk_id in ("\u00b2", "9" * 5000, "99999999999999999999", "-1", "abc"):
            text = _stream(c, good.name, last_id=junk_id)
            assert "event: end" in text or "event: snapshot" in text, junk_id
        assert c.call("POST", "/api/runs/junk/cancel", token=TOKEN)[0] == 409


def test_a_report_page_is_sandboxed_and_a_linked_one_is_not_served(dirs: tuple[Path, Path], tmp_path: Path) -> None:
    runs, _ = dirs
    for name in ("shown", "linked"):
        (runs / name).mkdir()
        (runs / name / "request.json").write_text(json.dumps({"file": "x.yaml"}))
    (runs / "shown" / "report.html").write_text("<script>parent.document.title = 'owned'</script>")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the web")
    (runs / "linked" / "report.html").symlink_to(secret)
    with console(*dirs, token=TOKEN) as c:
        request = urllib.request.Request(f"{c.url}/runs/shown/report.html")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert "sandbox allow-scripts" in response.headers["Content-Security-Policy"]
        status, body = c.call("GET", "/runs/linked/report.html")
        assert status == 404 and "not for the web" not in json.dumps(body)


def test_hostile_pipeline_files_are_not_offered_and_break_nothing(dirs: tuple[Path, Path]) -> None:
    _, pipes = dirs
    (pipes / "binary.yaml").write_text('name: b\nparams: {b: !!binary "/w=="}\ntasks: {t: {uses: demo.sleep}}\n')
    (pipes / "intkeys.yaml").write_text("name: i\nparams: {1: 5, x: 2}\ntasks: {t: {uses: demo.sleep}}\n")
    (pipes / "lists.yaml").write_text("name: l\nparams: {l: [1, 2], limit: null}\ntasks: {t: {uses: demo.sleep}}\n")
    with console(*dirs, token=TOKEN) as c:
        status, entries = c.call("GET", "/api/pipelines")
        assert status == 200 and {e["name"] for e in entries} == {"demo", "long", "lists"}
        lists = next(e for e in entries if e["name"] == "lists")
        assert {f["name"]: f["default"] for f in lists["params"]} == {"l": "[1, 2]", "limit": ""}
        # the form's own defaults, sent back as typed: accepted (the list as YAML text, the null as empty)
        status, body = c.call("POST", "/api/runs", {"pipeline": "lists", "params": {"l": "[1, 2]", "limit": ""}}, token=TOKEN)
        assert status == 201, body
        assert c.call("GET", "/submit?pipeline=lists")[0] == 200
        status, body = c.call("POST", "/api/runs", {"pipeline": "intkeys"}, token=TOKEN)
        assert status == 422 and body["detail"][0]["loc"] == ["body", "pipeline"]


def test_live_runs_mask_secrets_keep_the_token_out_and_show_running_only_while_they_run(dirs: tuple[Path, Path]) -> None:
    runs, _ = dirs
    with console(*dirs, token=TOKEN) as c:
        status, body = c.call("POST", "/api/runs", {"pipeline": "long"}, token=TOKEN)
        assert status == 201
        run_id = body["run_id"]
        wait_for(lambda: c.call("GET", f"/api/runs/{run_id}")[1]["live"]["tasks"].get("wait", {}).get("state") == "running")
        pid = json.loads((runs / run_id / ".lock").read_text())["pid"]
        assert b"SERVE__TOKEN" not in Path(f"/proc/{pid}/environ").read_bytes()  # the run's tasks never see it
        live = _stream(c, run_id, seconds=2)
        assert SECRET not in live and "********" in live
        assert next(r for r in c.call("GET", "/api/runs")[1] if r["id"] == run_id)["state"] == "running"
        assert c.call("POST", f"/api/runs/{run_id}/cancel", token=TOKEN)[0] == 202
        wait_for(lambda: c.call("GET", f"/api/runs/{run_id}")[1]["report"], 60)
        # resumed by hand, outside the console: listed running again while it runs, its old report set aside
        command = [sys.executable, str(ROOT / "run_pipeline.py"), "run", str(dirs[1] / "long.yaml"), "--resume", run_id]
        command += ["--run-dir", str(runs), "--set", "pause=3", "--no-progress"]
        resumed = subprocess.Popen(command, cwd=ROOT, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            state = lambda: next(r for r in c.call("GET", "/api/runs")[1] if r["id"] == run_id)["state"]  # noqa: E731
            wait_for(lambda: state() == "running", 30, every=0.1)
            assert c.call("GET", f"/api/runs/{run_id}")[1]["report"] is None  # the old (cancelled) one is history
            assert resumed.wait(timeout=60) == 0
        finally:
            if resumed.poll() is None:
                resumed.kill()
                resumed.wait()
        assert state() == "succeeded"


def test_a_resumed_runs_old_report_is_history_from_the_moment_its_lock_is_taken(dirs: tuple[Path, Path]) -> None:
    """The window a resumed process leaves: it holds the lock before its first event, so the events still say
    "finished" (the last attempt's) and only the lock's time tells that the run is running again and its
    report.json is history: the page, the list and the live stream (which must not end) all say so."""
    runs, _ = dirs
    with console(*dirs, token=TOKEN) as c:
        status, body = c.call("POST", "/api/runs", {"pipeline": "long", "params": {"pause": 0.1}}, token=TOKEN)
        assert status == 201
        run_id = body["run_id"]
        assert wait_for(lambda: c.call("GET", f"/api/runs/{run_id}")[1]["report"], 60)["state"] == "succeeded"
        wait_for(lambda: not c.call("GET", f"/api/runs/{run_id}")[1]["ours"], 30)  # its process reaped
        time.sleep(0.05)  # the lock's time strictly after report.json's
        lock = PathLock(runs / run_id / ".lock", "run").acquire()  # this test process stands in for the resumed run
        try:
            detail = c.call("GET", f"/api/runs/{run_id}")[1]
            assert detail["live"]["state"] == "running" and detail["live"]["finished"] is None
            assert detail["report"] is None
            assert next(r for r in c.call("GET", "/api/runs")[1] if r["id"] == run_id)["state"] == "running"
            assert "event: snapshot" in (live := _stream(c, run_id, seconds=1.5)) and "event: end" not in live
        finally:
            lock.release()
        detail = c.call("GET", f"/api/runs/{run_id}")[1]
        assert detail["report"]["state"] == detail["live"]["state"] == "succeeded"  # released: finished again


def test_a_run_cancelled_as_it_starts_is_never_left_running(dirs: tuple[Path, Path]) -> None:
    with console(*dirs, token=TOKEN) as c:
        status, body = c.call("POST", "/api/runs", {"pipeline": "long"}, token=TOKEN)
        assert status == 201
        run_id = body["run_id"]
        assert c.call("POST", f"/api/runs/{run_id}/cancel", token=TOKEN)[0] == 202  # before its process is ready
        row = wait_for(lambda: next((r for r in c.call("GET", "/api/runs")[1] if r["id"] == run_id and r["state"] != "running"), None), 60)
        assert row["state"] in ("cancelled", "no report")
        assert c.call("GET", f"/api/runs/{run_id}")[1]["live"]["state"] in ("cancelled", "stopped")


def test_an_empty_token_leaves_writes_off_and_a_short_one_is_refused(dirs: tuple[Path, Path]) -> None:
    with console(*dirs, SERVE__TOKEN="") as c:
        status, body = c.call("POST", "/api/runs", {"pipeline": "demo"}, token="")
        assert status == 401 and "no SERVE__TOKEN" in body["detail"]
    short = subprocess.run(
        [sys.executable, str(ROOT / "run_pipeline.py"), "serve", "--port", "0"],
        cwd=ROOT,
        env=clean_env(SERVE__TOKEN="abc"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert short.returncode == 2 and "SERVE__TOKEN" in short.stderr and "abc" not in short.stderr
