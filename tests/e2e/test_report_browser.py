"""report.html of real runs, opened in a real headless Chromium (Debian's package): no console errors,
one timeline bar per attempt, one node per task, and a screenshot under the test's tmp dir to look at.

Skipped when chromium is not installed, except under REQUIRE_SERVICES=1 (deploy/local/test.sh, CI),
where ``deploy/local/install.sh --test`` installs it and a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail("chromium is not installed (deploy/local/install.sh --test installs it)")
        pytest.skip("chromium is not installed: apt-get install chromium to run the browser test")
    return CHROMIUM


def run_pipeline(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MILVUS__", "S3__", "POSTGRES__"))}
    return subprocess.run(
        [sys.executable, str(ROOT / "run_pipeline.py"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def browse(chromium: str, page: Path, tmp: Path, *, screenshot: bool) -> subprocess.CompletedProcess[str]:
    args = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1400,1000",
    ]
    args += [f"--screenshot={tmp / 'report.png'}"] if screenshot else ["--dump-dom"]
    return subprocess.run([*args, page.resolve().as_uri()], capture_output=True, text=True, timeout=120)


def check_in_browser(chromium: str, run_dir: Path, tmp: Path) -> str:
    report = json.loads((run_dir / "report.json").read_text())
    page = run_dir / "report.html"
    assert page.is_file(), "the run did not write report.html"
    shot = browse(chromium, page, tmp, screenshot=True)
    png = tmp / "report.png"
    assert png.is_file() and png.stat().st_size > 20_000, shot.stderr[-2000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = browse(chromium, page, tmp, screenshot=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in (shot.stderr + dom.stderr).splitlines() if "CONSOLE" in line]
    assert not console, console
    html = dom.stdout
    attempts = sum(len(t["attempt_times"]) for t in report["tasks"].values())
    assert len(re.findall(r'<rect class="bar[ "]', html)) == attempts
    assert len(re.findall(r'<g class="node[ "]', html)) == len(report["tasks"])
    for name in report["tasks"]:
        assert f'data-task="{name}"' in html
    return html


def test_quickstart_report_in_a_real_browser(chromium: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = run_pipeline("run", "pipelines/quickstart.yaml", "--set", "rows=3000", "--run-dir", str(runs))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = list(runs.iterdir())
    html = check_in_browser(chromium, run_dir, tmp_path)
    assert "rows=3,000" in html and 'class="edge stream"' in html  # generate streams into partition/shadow
    listed = run_pipeline("runs", "list", "--run-dir", str(runs), "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["state"] == "succeeded"


def test_failed_and_retried_tasks_in_a_real_browser(chromium: str, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    proc = run_pipeline("run", "tests/fixtures/pipelines/report_retry_fail.yaml", "--run-dir", str(runs))
    assert proc.returncode == 1, proc.stderr[-3000:]
    (run_dir,) = list(runs.iterdir())
    (run_dir / "report.html").unlink()
    rebuilt = run_pipeline("report", run_dir.name, "--run-dir", str(runs))  # the page again, from report.json
    assert rebuilt.returncode == 0, rebuilt.stderr
    html = check_in_browser(chromium, run_dir, tmp_path)
    report = json.loads((run_dir / "report.json").read_text())
    assert report["tasks"]["flaky"]["attempts"] == 2 and report["tasks"]["broken"]["state"] == "failed"
    assert len(re.findall(r'data-task="flaky" data-attempt="\d"', html)) == 2
    assert "it broke &lt;b&gt;badly&lt;/b&gt;" in html
    assert "hunter2" not in html and "u:pw" not in html and html.count("********") == 2
    assert "attempt 1 (retried): RuntimeError: flaky once" in html
