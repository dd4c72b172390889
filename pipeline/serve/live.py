"""A run's events as server-sent events: what the run page applies to its table as they happen.

The stream tails ``events.jsonl`` (the server polls the file, the browser never polls anything): first
``snapshot`` (the run folded so far), then each new event as it is appended, each with its byte offset
as the SSE id, so a reconnecting browser (EventSource does it by itself) resumes where it left off
with ``Last-Event-ID``, no event twice. The stream says ``end`` once the run finished, or once nothing
holds the run any more (killed) and the file has stopped growing; it is bounded in time either way.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio

from pipeline.report_html import redact
from pipeline.run_events import RunView, alive_holder, clean_event, live_since, read_events, read_lines

__all__ = ["event_stream", "folded"]

POLL = 0.25
HEARTBEAT = 15.0
MAX_STREAM = 6 * 3600.0  # a browser left open reconnects after this (with its Last-Event-ID)


def folded(run_path: Path) -> tuple[RunView, int]:
    """The run as its events so far describe it, and the offset they end at.

    A finish older than the live holder's lock is the last attempt's: a resumed process holds the run before
    it writes its first event, and from that moment the run is running again, not finished."""
    view, offset = RunView(), 0
    while True:
        events, after = read_events(run_path, offset)
        for event in events:
            view.apply(event)
        if after == offset:
            break
        offset = after
    since = live_since(run_path)
    if view.finished is not None and since is not None and view.finished < since:
        view.finished, view.state = None, "running"
    return view, offset


def _message(event: str, data: Any, offset: int | None = None) -> str:
    lines = [f"event: {event}"]
    if offset is not None:
        lines.append(f"id: {offset}")
    lines.append("data: " + json.dumps(data, default=str))
    return "\n".join(lines) + "\n\n"


def _shown(event: dict[str, Any]) -> dict[str, Any]:
    """What a page may see of an event: parameters with their secrets masked, as report.html shows them."""
    return {**event, "params": redact(event["params"])} if isinstance(event.get("params"), dict) else event


async def event_stream(run_path: Path, resume_from: int | None = None) -> AsyncIterator[str]:
    if resume_from is None:
        view, offset = await anyio.to_thread.run_sync(folded, run_path)  # a long file: off the event loop
        yield _message("snapshot", _shown(view.to_dict()), offset)
        if view.finished is not None:
            yield _message("end", {"reason": "finished"})
            return
    else:
        offset = resume_from
    started = last_sent = time.monotonic()
    quiet = 0
    while time.monotonic() - started < MAX_STREAM:
        lines = await anyio.to_thread.run_sync(read_lines, run_path, offset)
        for event, after in lines:
            offset = after
            yield _message("event", _shown(clean_event(event)), offset)
            last_sent = time.monotonic()
            if event.get("kind") == "run_finished":
                yield _message("end", {"reason": "finished"})
                return
        if lines:
            quiet = 0
        elif alive_holder(run_path) is None:
            quiet += 1
            # two seconds with no holder and no new line: the run is not coming back (a run not begun yet,
            # a console submission whose process is still starting, is given a minute)
            if quiet >= (8 if offset else 240):
                yield _message("end", {"reason": "stopped"})
                return
        if time.monotonic() - last_sent > HEARTBEAT:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await anyio.sleep(POLL)
