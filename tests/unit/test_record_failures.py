"""Record-level failures stay the record's: decoding limits, bounded dead letters, sink refusals, the lag
figure and SIGTERM-friendly stages (pure code, no services; the real broker runs test_poison_pills.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from collections.abc import Sequence
from typing import NamedTuple

import anyio
import pytest
from structlog.testing import capture_logs

from task_components.contracts import Rejection, StreamRecord
from task_components.sinks.kafka import DeadLetterParams, dead_letter
from task_components.sinks.mongo import key_problem
from task_components.sinks.resilience import (
    CircuitBreaker,
    RecordsRefused,
    Refusal,
    RetrySettings,
    write_with_retry,
)
from task_components.sources.decode import decode, deeper_than
from task_components.sources.detached import checkpoint, run_detached
from task_components.sources.offsets import lag


class Message(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def rejected(value: bytes | None, **limits: int) -> Rejection:
    record = decode(Message("in", 0, 7, b"k", value), **limits)
    assert record.rejection is not None and record.value is None
    return record.rejection


def test_ten_thousand_deep_json_is_a_rejection_not_a_recursion_error() -> None:
    why = rejected(b"[" * 10_000 + b"]" * 10_000)
    assert (why.step, why.rule) == ("decode", "depth")


def test_json_deeper_than_the_limit_is_rejected_and_shallower_passes() -> None:
    nested = b'{"a":' * 70 + b"1" + b"}" * 70
    assert rejected(nested).rule == "depth"
    assert decode(Message("in", 0, 1, None, nested), max_depth=80).value is not None
    assert decode(Message("in", 0, 1, None, b'{"a": [[[1]]], "b": "[[[[[[[[[[[["}'), max_depth=4).value is not None
    assert deeper_than({"a": [[[1]]]}, 3) and not deeper_than({"a": [[[1]]]}, 4)


def test_tombstone_size_and_encoding_each_have_their_own_reason() -> None:
    assert rejected(None).rule == "tombstone" and "tombstone" in rejected(None).reason
    assert rejected(b'{"a": 1}' + b" " * 100, max_bytes=50).rule == "size"
    assert "not UTF-8" in rejected(b'{"a": "\xff"}').reason
    assert rejected(b'{"q": ' + b"9" * 5000 + b"}").rule == "json"  # more digits than Python converts


def test_a_huge_correlation_header_is_cut() -> None:
    record = decode(Message("in", 0, 1, None, b"{}", (("correlation_id", b"c" * 100_000),)))
    assert len(record.correlation_id) == 200 and record.value == {}


def test_an_oversize_original_is_dead_lettered_truncated_with_its_size_and_sha256() -> None:
    raw = ('{"name": "' + "é" * 100_000 + '"}').encode()
    rec = StreamRecord("in", 1, 5, raw, None, "cid", key=b"K" * 10_000, rejection=Rejection("decode", "size", "big"))
    key, body, _headers = dead_letter(rec, max_original_bytes=1001)  # cuts an "é" in half
    letter = json.loads(body)
    original = letter["original"]
    assert original["truncated"] and original["size"] == len(raw)
    assert original["sha256"] == hashlib.sha256(raw).hexdigest()
    assert raw.decode().startswith(original["text"]) and len(original["text"].encode()) <= 1001
    assert key is None and letter["key"]["size"] == 10_000
    assert len(body) < 4000


def test_a_binary_original_is_truncated_as_base64_and_the_reason_is_bounded() -> None:
    raw = b"\xff" * 200_000
    rec = StreamRecord("in", 0, 1, raw, None, "c", rejection=Rejection("decode", "json", "x" * 10_000))
    letter = json.loads(dead_letter(rec)[1])
    assert base64.b64decode(letter["original"]["base64"]) == raw[:65_536] and letter["original"]["size"] == 200_000
    assert len(letter["reason"]) == 2000


def test_a_dead_letter_limit_that_cannot_fit_is_refused_at_validation() -> None:
    with pytest.raises(ValueError, match="cannot fit a dead letter"):
        DeadLetterParams(max_original_bytes=600_000)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (None, "missing"),
        ({"$gt": ""}, "a dict, not a string or number"),
        ([1, 2], "a list"),
        (2**64, "64-bit"),
        (float("nan"), "finite"),
        ("x" * 1025, "1025 bytes, above max_key_bytes 1024"),
    ],
)
def test_keys_a_sink_cannot_index_are_named(value: object, problem: str) -> None:
    assert problem in (key_problem("customer_id", value, 1024) or "")
    assert key_problem("customer_id", "C1", 1024) is None and key_problem("id", -(2**63), 8) is None


class HalfRefusing:
    async def write(self, records: Sequence[StreamRecord]) -> int:
        bad = [r for r in records if r.offset % 2]
        if bad:
            raise RecordsRefused(len(records) - len(bad), [Refusal(r, "too_large", "too big") for r in bad])
        return len(records)


@pytest.mark.anyio
async def test_records_a_sink_refuses_are_returned_and_are_no_outage() -> None:
    breaker = CircuitBreaker(threshold=1)
    records = [StreamRecord("in", 0, i, b"", {}, f"c{i}") for i in range(4)]
    with capture_logs() as logs:
        written = await write_with_retry("s", HalfRefusing(), records, RetrySettings(3, 0.01), breaker)
    assert written.count == 2 and [f.record.offset for f in written.refused] == [1, 3]
    assert not breaker.is_open and breaker.outages == 0 and logs == []


def test_lag_uses_the_fetch_high_watermark_per_partition() -> None:
    highs = {("t", 0): 100, ("t", 1): None, ("t", 2): 10}
    assert lag({("t", 0): 49, ("t", 1): 5, ("t", 2): 9}, highs.get) == 50  # 100-49-1, unknown, caught up


@pytest.mark.anyio
async def test_stages_in_a_thread_leave_the_loop_free_and_stop_between_records_on_cancel() -> None:
    ticks, seen = 0, []

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    def stages() -> None:  # a long batch: CPU work per record, a checkpoint between records
        for i in range(10_000):
            checkpoint()
            seen.append(i)
            time.sleep(0.001)

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        started = time.monotonic()
        with anyio.move_on_after(0.3):
            await run_detached(stages)
        tg.cancel_scope.cancel()
    assert time.monotonic() - started < 1 and ticks >= 5  # cancelled in time, the loop kept running
    assert 10 < len(seen) < 10_000
    stopped_at = len(seen)
    for thread in [t for t in threading.enumerate() if t.name == "stream-stages"]:
        thread.join(1)  # it has signalled the loop; only returning is left
        assert not thread.is_alive(), "the thread did not stop"
    assert len(seen) == stopped_at
    checkpoint()  # outside a detached thread: nothing to stop
    assert await run_detached(sum, [1, 2]) == 3
    with pytest.raises(ZeroDivisionError):
        await run_detached(divmod, 1, 0)


@pytest.mark.anyio
async def test_a_thread_that_never_reaches_a_checkpoint_is_abandoned_after_the_grace() -> None:
    release = threading.Event()
    started = time.monotonic()
    with anyio.move_on_after(0.1):
        await run_detached(release.wait, 10, grace=0.2)
    assert time.monotonic() - started < 1
    (thread,) = [t for t in threading.enumerate() if t.name == "stream-stages"]
    assert thread.daemon  # abandoned: never keeps the process alive
    release.set()
