"""How long a resume waits for the killed attempt's inserts: no longer than they can still land."""

from __future__ import annotations

import json
import time
from pathlib import Path

from task_components.milvus.insert import InsertJournal, landing_window


def _journal(path: Path, *entries: dict) -> InsertJournal:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    return InsertJournal(path)


def test_a_call_of_a_dead_process_lands_within_its_timeout_from_now_not_its_whole_retry_window(tmp_path: Path) -> None:
    started = time.time()
    journal = _journal(tmp_path / "j.jsonl", {"started": "a@10#0", "rows": 10, "deadline": started + landing_window(240), "timeout": 240})
    # the sender died: no retry follows, and its last attempt was sent before the resume opened the journal
    assert journal.landing_deadline(240) <= time.time() + 240 + 1
    assert journal.landing_deadline(240) < started + landing_window(240) - 200


def test_a_settled_call_keeps_its_settled_deadline_and_an_old_journal_its_recorded_one(tmp_path: Path) -> None:
    now = time.time()
    settled = _journal(
        tmp_path / "s.jsonl",
        {"started": "a@10#0", "rows": 10, "deadline": now + 500, "timeout": 240},
        {"settled": "a@10#0", "at": now + 30},
    )
    assert abs(settled.landing_deadline(240) - (now + 30)) < 1  # a live process recorded when: its own word
    old = _journal(tmp_path / "o.jsonl", {"started": "a@10#0", "rows": 10, "deadline": now + 500})
    assert abs(old.landing_deadline(240) - (now + 500)) < 1  # no timeout recorded: nothing to cap it with


def test_milvus_lite_died_with_the_process_so_nothing_is_waited_for(tmp_path: Path) -> None:
    journal = _journal(tmp_path / "l.jsonl", {"started": "a@10#0", "rows": 10, "deadline": time.time() + 500, "timeout": 240})
    assert journal.landing_deadline(240) > time.time()
    journal.expire()
    assert journal.landing_deadline(240) == 0.0
