"""The console in a real headless Chromium (Debian's chromium and chromium-driver, driven by Selenium):
the runs list, a live run page following its run without a reload, the submit form, a failed run's
error, and no request outside the server nor any console error on any page.

Skipped without chromium/chromedriver, except under REQUIRE_SERVICES=1 (the README's test command and
CI), where ``deploy/local/install.sh --test`` installs them and a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.serve_helpers import Console, console, console_dirs, run_cli, wait_for

TOKEN = "browser-" + "c0ffee42"
NOTES = """name: notes
params: {note: "hello"}
tasks:
  nap: {uses: demo.sleep, with: {seconds: 0.1}}
"""
COUNTING = """name: counting
description: a task reporting its progress for a few seconds
params: {total: 300}
tasks:
  count: {uses: demo.count, with: {total: "${params.total}", chunk: 10, delay: 0.1}}
  sum:   {uses: demo.sum, needs: [count]}
"""
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
SHOTS = Path(os.environ["CONSOLE_SCREENSHOTS"]) if os.environ.get("CONSOLE_SCREENSHOTS") else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if CHROMIUM is None or DRIVER is None:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail("chromium and chromedriver are needed (deploy/local/install.sh --test installs them)")
        pytest.skip("apt-get install chromium chromium-driver to run the console's browser tests")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000", "--disable-background-networking"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    base = tmp_path_factory.mktemp("console")
    runs, pipes = console_dirs(base, ("demo.yaml", "quickstart.yaml"), counting=COUNTING, notes=NOTES)
    quick = run_cli("run", "pipelines/quickstart.yaml", "--set", "rows=2000", "--run-dir", str(runs), "--no-progress")
    assert quick.returncode == 0, quick.stderr[-2000:]
    failed = run_cli("run", "tests/fixtures/pipelines/report_retry_fail.yaml", "--run-dir", str(runs), "--no-progress")
    assert failed.returncode == 1, failed.stderr[-2000:]
    with console(runs, pipes, token=TOKEN) as c:
        yield c


def _css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def _clean(driver: Any, served: Console, name: str) -> None:
    """Every request the page made went to the server, and the console logged no error."""
    urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    outside = [u for u in [*urls, driver.current_url] if not u.startswith(served.url + "/")]
    assert not outside, outside
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert not errors, errors
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOTS / f"console-{name}.png"))


def _state(driver: Any, task: str) -> str:
    cells = _css(driver, f'tr[data-task="{task}"] td.state')
    return cells[0].text if cells else ""


def test_the_runs_list_shows_the_finished_quickstart(browser: Any, served: Console) -> None:
    browser.get(served.url + "/")
    rows = wait_for(lambda: [r.text for r in _css(browser, "#runs tbody tr")], 10)
    assert any("quickstart" in r and "succeeded" in r for r in rows), rows
    assert any("retry-and-fail" in r and "failed" in r for r in rows), rows
    _clean(browser, served, "runs")


def test_a_live_run_page_moves_a_task_from_running_to_succeeded_without_a_reload(browser: Any, served: Console) -> None:
    status, body = served.call("POST", "/api/runs", {"pipeline": "demo", "params": {"rows": "20000", "pause": "3"}}, token=TOKEN)
    assert status == 201, body
    browser.get(f"{served.url}/runs/{body['run_id']}")
    browser.execute_script("window.__same_page = 'yes'")
    wait_for(lambda: _state(browser, "wait") == "running", 60)
    node = _css(browser, '#live-dag g[data-task="wait"]')  # the DAG, drawn from the run's events, coloured live
    assert node and "running" in (node[0].get_attribute("class") or "")
    assert len(_css(browser, "#live-dag g")) == 5 and len(_css(browser, "#live-dag line")) == 5
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SHOTS / "console-live.png"))
    wait_for(lambda: _state(browser, "wait") == "succeeded", 60)
    assert browser.execute_script("return window.__same_page") == "yes"  # updated in place, never reloaded
    wait_for(lambda: _css(browser, "#report:not([hidden])"), 30)  # and the report shown once it ended
    assert _css(browser, "#run-state")[0].text == "succeeded"
    _clean(browser, served, "run")


def test_the_form_starts_the_demo_and_the_run_appears_in_the_list(browser: Any, served: Console) -> None:
    browser.get(served.url + "/submit?pipeline=demo")
    rows = _css(browser, 'input[name="rows"]')[0]
    rows.clear()
    rows.send_keys("3000")
    _css(browser, "#token")[0].send_keys(TOKEN)
    _css(browser, "#submit button")[0].click()
    wait_for(lambda: "/runs/" in browser.current_url, 30)
    run_id = browser.current_url.rsplit("/", 1)[1]
    wait_for(lambda: _state(browser, "done") == "succeeded", 60)
    _clean(browser, served, "submitted")
    browser.get(served.url + "/?pipeline=demo")
    wait_for(lambda: any(r.get_attribute("data-run") == run_id for r in _css(browser, "#runs tbody tr")), 10)


def test_a_bad_value_in_the_form_is_named_and_starts_nothing(browser: Any, served: Console) -> None:
    before = len(served.call("GET", "/api/runs")[1])
    browser.get(served.url + "/submit?pipeline=demo")
    rows = _css(browser, 'input[name="rows"]')[0]
    rows.clear()
    rows.send_keys("<b>lots</b>")
    _css(browser, "#token")[0].send_keys(TOKEN)
    _css(browser, "#submit button")[0].click()
    message = wait_for(lambda: _css(browser, "#submit-result")[0].text, 10)
    assert "params.rows" in message and "<b>lots</b>" in message  # shown as text, not markup
    assert not _css(browser, "#submit-result b")
    assert len(served.call("GET", "/api/runs")[1]) == before
    # the one error the browser logs is the refusal itself (Chromium logs every 4xx answer)
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert len(errors) == 1 and "/api/runs" in errors[0] and "422" in errors[0], errors


def test_a_failed_runs_page_shows_its_error(browser: Any, served: Console) -> None:
    failed = next(r for r in served.call("GET", "/api/runs")[1] if r["pipeline"] == "retry-and-fail")
    browser.get(f"{served.url}/runs/{failed['id']}")
    wait_for(lambda: _state(browser, "broken") == "failed", 10)
    error = _css(browser, 'tr[data-task="broken"] td.error')[0].text
    assert "it broke <b>badly</b>" in error  # the markup in the message is text on the page
    assert not _css(browser, 'tr[data-task="broken"] td.error b')
    assert _css(browser, "#run-state")[0].text == "failed"
    _clean(browser, served, "failed")


def test_a_running_task_shows_its_progress_rate_and_eta(browser: Any, served: Console) -> None:
    status, body = served.call("POST", "/api/runs", {"pipeline": "counting"}, token=TOKEN)
    assert status == 201, body
    browser.get(f"{served.url}/runs/{body['run_id']}")

    def progress() -> tuple[str, str, str] | None:
        cells = {c: _css(browser, f'tr[data-task="count"] td:nth-child({i})') for c, i in (("p", 4), ("r", 5), ("e", 6))}
        if not all(cells.values()):
            return None
        seen = (cells["p"][0].text, cells["r"][0].text, cells["e"][0].text)
        return seen if "/ 300" in seen[0] and seen[1] and seen[2].endswith(" s") else None

    done, rate, eta = wait_for(progress, 30, every=0.1)
    assert 0 < int(done.split("/")[0].strip().replace(",", "")) <= 300 and rate.endswith("/s")
    assert float(eta.removesuffix(" s")) >= 0
    wait_for(lambda: _state(browser, "sum") == "succeeded", 60)
    _clean(browser, served, "progress")


def test_a_script_parameter_is_shown_as_text_and_never_runs(browser: Any, served: Console) -> None:
    hostile = "<script>window.__owned = 1</script><img src=x onerror='window.__owned = 2'>"
    status, body = served.call("POST", "/api/runs", {"pipeline": "notes", "params": {"note": hostile}}, token=TOKEN)
    assert status == 201, body
    for page in (f"/runs/{body['run_id']}", "/"):
        browser.get(served.url + page)
        if page != "/":
            wait_for(lambda: _state(browser, "nap") == "succeeded", 30)
            assert hostile in _css(browser, "#params")[0].text
        assert browser.execute_script("return window.__owned === undefined")
        assert not _css(browser, "main img")
        _clean(browser, served, "hostile" if page != "/" else "runs-after")
