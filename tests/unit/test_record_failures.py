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
from task_components.sinks.kafka import DeadLetterParams, dead_letter, dead_letter_bound
from task_components.sinks.mongo import key_problem
from task_components.sources.decode import decode, deeper_than
from task_components.streaming.detached import checkpoint, run_detached
from task_components.streaming.offsets import lag
from task_components.streaming.resilience import (
    CircuitBreaker,
    RecordsRefused,
    Refusal,
    RetrySettings,
    SinkDownError,
    write_with_retry,
)


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
        DeadLetterParams(max_original_bytes=800_000)
    assert dead_letter_bound(DeadLetterParams().max_original_bytes) < DeadLetterParams().max_request_bytes


@pytest.mark.parametrize("raw", [b"\x01" * 600_000, b'"' * 600_000, b"\\" * 300_000 + b"\x7f" * 300_000])
def test_a_dead_letter_fits_whatever_the_escaping_of_its_original(raw: bytes) -> None:
    """600 kB of control bytes escaped as \\u0001 made a 3,000,244-byte dead letter: refused by Kafka, every restart."""
    p = DeadLetterParams(max_original_bytes=500_000)
    reason = "\x02" * 10_000  # a reason quoting control characters
    rec = StreamRecord("in", 0, 1, raw, None, "\x03" * 200, key=b"\x04" * 4096, rejection=Rejection("decode", "json", reason))
    key, body, headers = dead_letter(rec, p.max_original_bytes)
    size = len(body) + len(key or b"") + sum(len(k) + len(v) for k, v in headers)
    assert size <= dead_letter_bound(p.max_original_bytes) <= p.max_request_bytes, size
    original = json.loads(body)["original"]
    got = base64.b64decode(original["base64"]) if "base64" in original else original["text"].encode()
    assert got == raw[:500_000] and original["size"] == len(raw)


def test_nan_infinity_and_numbers_beyond_a_double_are_rejected_at_decode() -> None:
    for value, text in [(b'{"p": NaN}', "NaN"), (b'{"p": [-Infinity]}', "-Infinity"), (b'{"p": 1e400}', "1e400")]:
        why = rejected(value)
        assert (why.step, why.rule) == ("decode", "number") and text in why.reason
    assert decode(Message("in", 0, 1, None, b'{"p": 1.5e300, "q": -0.0}')).value == {"p": 1.5e300, "q": -0.0}


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


def test_lag_counts_from_the_committed_offset_to_the_fetch_high_watermark() -> None:
    highs = {("t", 0): 100, ("t", 1): None, ("t", 2): 10}
    assert lag({("t", 0): 50, ("t", 1): 5, ("t", 2): 10}, highs.get) == 50  # 100-50, unknown, caught up


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


class BrokerRefusingBatches:
    """A producer whose broker refuses a whole produce batch holding one record above ``limit`` (as Kafka does):
    what ``send`` queued before the first acknowledgement is awaited is one batch."""

    def __init__(self, limit: int) -> None:
        self.limit, self.batch, self.accepted = limit, [], []  # type: ignore[var-annotated]

    async def send(self, topic: str, value: bytes, key: bytes | None = None, headers: object = None) -> object:
        from aiokafka.errors import MessageSizeTooLargeError

        if len(value) > self.limit * 10:  # the producer's own check, before sending
            raise MessageSizeTooLargeError("above max_request_size")
        batch = self.batch
        batch.append(value)

        async def acknowledged() -> None:
            self.batch = [] if self.batch is batch else self.batch  # the next send starts a new batch
            if any(len(v) > self.limit for v in batch):
                raise MessageSizeTooLargeError("the broker refused the batch")
            if value not in self.accepted:
                self.accepted.append(value)

        return acknowledged()


@pytest.mark.anyio
async def test_a_batch_the_broker_refuses_is_sent_again_one_at_a_time_and_only_the_big_one_refused() -> None:
    from task_components.sinks.kafka import KafkaSinkParams, KafkaWriter

    producer = BrokerRefusingBatches(limit=100)
    values = [{"id": i, "note": "x" * (500 if i == 2 else 5)} for i in range(5)]
    values.append({"id": 5, "price": float("nan")})  # not JSON: refused before sending, never a bare NaN
    values.append({"id": 6, "note": "y" * 5000})  # refused by the producer's own size check
    records = [StreamRecord("in", 0, i, b"", v, f"c{i}") for i, v in enumerate(values)]
    with pytest.raises(RecordsRefused) as refused:
        await KafkaWriter(producer, "out", KafkaSinkParams(key=["id"])).write(records)
    assert refused.value.written == 4
    assert sorted((f.record.offset, f.rule) for f in refused.value.refused) == [(2, "too_large"), (5, "encode"), (6, "too_large")]
    assert [json.loads(v)["id"] for v in producer.accepted] == [0, 1, 3, 4]


class FakeCollection:
    """Answers a bulk write as a server would with the given per-operation error codes (or a driver error)."""

    full_name = "db.customers"

    def __init__(self, codes: dict[int, int] | None = None, driver_refuses: str | None = None) -> None:
        self.codes, self.driver_refuses, self.written = codes or {}, driver_refuses, []  # type: ignore[var-annotated]

    async def bulk_write(self, ops: list, ordered: bool = False) -> None:  # type: ignore[type-arg]
        from pymongo.errors import BulkWriteError

        docs = [op._doc for op in ops]
        if self.driver_refuses and any(self.driver_refuses in d for d in docs):
            raise ValueError(f"the driver refuses {self.driver_refuses}")
        errors = [{"index": i, "code": self.codes[d["id"]], "errmsg": "no"} for i, d in enumerate(docs) if d["id"] in self.codes]
        self.written += [d["id"] for d in docs if d["id"] not in self.codes]
        if errors:
            raise BulkWriteError({"writeErrors": errors, "writeConcernErrors": [], "nInserted": 0})


def mongo_records(n: int) -> list[StreamRecord]:
    return [StreamRecord("in", 0, i, b"", {"id": i}, f"c{i}") for i in range(n)]


@pytest.mark.anyio
@pytest.mark.parametrize("code", [11602, 189, 10107, 91, 50, 6])  # step-down, shutdown, time limit, host down
async def test_a_transient_mongodb_write_error_is_an_outage_not_a_dead_letter(code: int) -> None:
    from task_components.sinks.mongo import MongoSinkParams, MongoWriter

    writer = MongoWriter(FakeCollection({1: code}), MongoSinkParams(key=["id"], create_index=False))
    breaker = CircuitBreaker(threshold=1)
    with pytest.raises(SinkDownError):
        await write_with_retry("mongodb", writer, mongo_records(3), RetrySettings(5, 0.01, 0.01, 0.05), breaker)
    assert breaker.outages == 1 and writer.suspect


@pytest.mark.anyio
@pytest.mark.parametrize("code", [2, 52, 121, 10334, 17280])
async def test_a_deterministic_mongodb_write_error_is_that_records(code: int) -> None:
    from task_components.sinks.mongo import MongoSinkParams, MongoWriter

    writer = MongoWriter(FakeCollection({1: code}), MongoSinkParams(key=["id"], create_index=False))
    with pytest.raises(RecordsRefused) as refused:
        await writer.write(mongo_records(3))
    (one,) = refused.value.refused
    assert refused.value.written == 2 and one.record.offset == 1 and f"code {code}" in one.reason


@pytest.mark.anyio
async def test_when_every_document_encodes_alone_they_are_written_one_at_a_time() -> None:
    from task_components.sinks.mongo import MongoSinkParams, MongoWriter

    collection = FakeCollection(driver_refuses="odd")
    records = mongo_records(4)
    records[1].value["odd"] = 1  # type: ignore[index]  # encodes as BSON, yet the driver refuses it
    with pytest.raises(RecordsRefused) as refused:  # was: RuntimeError, an outage on every restart
        await MongoWriter(collection, MongoSinkParams(key=["id"], create_index=False)).write(records)
    (one,) = refused.value.refused
    assert one.record.offset == 1 and one.rule == "encode" and "the driver refuses odd" in one.reason
    assert refused.value.written == 3 and sorted(collection.written) == [0, 2, 3]


@pytest.mark.anyio
async def test_true_and_one_are_two_mongodb_keys_not_one() -> None:
    from task_components.sinks.mongo import MongoSinkParams, MongoWriter

    collection = FakeCollection()
    records = [StreamRecord("in", 0, i, b"", {"id": v}, f"c{i}") for i, v in enumerate([1, True, 1.0, False, 0])]
    assert await MongoWriter(collection, MongoSinkParams(key=["id"], create_index=False)).write(records) == 4
    assert [repr(v) for v in collection.written] == ["1.0", "True", "False", "0"]  # 1 and 1.0: one key, the last
