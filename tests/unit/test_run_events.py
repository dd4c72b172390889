"""events.jsonl: state changes kept at once, progress thinned but its last report kept, torn lines
skipped, and the fold a live page starts from."""

from __future__ import annotations

import json
from pathlib import Path

from dag_orchestrator.events import Event, EventKind
from pipeline.run_events import EventLog, RunView, read_events, read_lines


def _log(tmp_path: Path) -> EventLog:
    return EventLog(tmp_path, "p", {"rows": 5}, ["a", "b"], [{"from": "a", "to": "b", "stream": False}])


def test_progress_is_thinned_to_one_a_second_but_the_last_report_is_kept(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log(Event(EventKind.TASK_STARTED, "r", "a", 1, at=100.0))
    for i in range(1, 11):  # ten reports within half a second
        log(Event(EventKind.TASK_PROGRESS, "r", "a", 1, at=100.0 + i * 0.05, data={"done": i * 10, "total": 100}))
    log(Event(EventKind.TASK_SUCCEEDED, "r", "a", 1, at=101.0))
    events, _ = read_events(tmp_path)
    progress = [e["data"]["done"] for e in events if e["kind"] == "task_progress"]
    assert progress == [10, 100]  # the first, then the one saying it is done
    assert [e["kind"] for e in events] == ["dag", "task_started", "task_progress", "task_progress", "task_succeeded"]


def test_the_fold_gives_states_progress_rate_and_eta(tmp_path: Path) -> None:
    log = _log(tmp_path)
    log(Event(EventKind.RUN_STARTED, "r", None, 0, at=99.0))
    log(Event(EventKind.TASK_STARTED, "r", "a", 1, at=100.0))
    log(Event(EventKind.TASK_PROGRESS, "r", "a", 1, at=102.0, data={"done": 50, "total": 150, "unit": "rows"}))
    log(Event(EventKind.TASK_FAILED, "r", "b", 1, at=103.0, error="boom <b>"))
    view = RunView()
    for event in read_events(tmp_path)[0]:
        view.apply(event)
    state = view.to_dict()
    assert state["pipeline"] == "p" and state["params"] == {"rows": 5} and state["state"] == "running"
    assert state["tasks"]["a"]["state"] == "running"
    assert state["tasks"]["a"]["progress"] == {"done": 50, "total": 150, "unit": "rows", "rate": 25.0, "eta_seconds": 4.0}
    assert state["tasks"]["b"] == {"state": "failed", "attempt": 1, "error": "boom <b>"}
    log(Event(EventKind.RUN_FINISHED, "r", None, 0, at=104.0, data={"state": "failed"}))
    for event in read_events(tmp_path)[0][-1:]:
        view.apply(event)
    assert view.state == "failed" and view.finished == 104.0


def test_a_torn_or_unfinished_line_is_skipped_and_offsets_point_after_each_line(tmp_path: Path) -> None:
    good = [{"kind": "task_started", "task": "a"}, {"kind": "task_succeeded", "task": "a"}]
    text = json.dumps(good[0]) + "\n" + '{"kind": "tor' + "\n" + json.dumps(good[1]) + "\n" + '{"kind": "half'
    (tmp_path / "events.jsonl").write_text(text)
    lines = read_lines(tmp_path)
    assert [e for e, _ in lines] == good
    assert lines[0][1] == len(json.dumps(good[0])) + 1
    assert lines[1][1] == len(text) - len('{"kind": "half')  # the unfinished last line waits for its newline
    assert read_lines(tmp_path, lines[0][1]) == lines[1:]
