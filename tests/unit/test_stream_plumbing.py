"""In-order offset commits, the circuit breaker and sink retries (pure bookkeeping, no services)."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from task_components.contracts import StreamRecord
from task_components.streaming.offsets import OffsetTracker
from task_components.streaming.resilience import (
    CircuitBreaker,
    PermanentSinkError,
    RetrySettings,
    SinkDownError,
    write_with_retry,
)


def test_offsets_commit_only_the_finished_prefix() -> None:
    t = OffsetTracker()
    a = t.register({("t", 0): 10})
    b = t.register({("t", 0): 20, ("t", 1): 5})
    c = t.register({("t", 1): 9})
    t.finish(b)
    t.finish(c)
    assert t.ready() == {}  # batch a still running: committing b would cover a's records
    assert t.in_flight == 1
    t.finish(a)
    assert t.ready() == {("t", 0): 20, ("t", 1): 9}
    assert t.ready() == {} and t.in_flight == 0
    with pytest.raises(KeyError):
        t.finish(a)


@given(st.permutations(list(range(8))))
def test_offsets_any_finish_order_commits_exactly_the_finished_prefix(order: list[int]) -> None:
    t = OffsetTracker()
    seqs = [t.register({("t", 0): (i + 1) * 10}) for i in range(8)]
    finished: set[int] = set()
    prefix = 0
    for i in order:
        t.finish(seqs[i])
        finished.add(i)
        before = prefix
        while prefix in finished:
            prefix += 1
        assert t.ready() == ({("t", 0): prefix * 10} if prefix > before else {})
    assert prefix == 8 and t.in_flight == 0


class FlakyWriter:
    def __init__(self, failures: int) -> None:
        self.failures, self.calls = failures, 0

    async def write(self, records: Sequence[StreamRecord]) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("down")
        return len(records)


@pytest.mark.anyio
async def test_retry_opens_the_breaker_after_retry_count_and_closes_on_success() -> None:
    breaker = CircuitBreaker(threshold=2)
    writer = FlakyWriter(failures=3)
    seen_open = anyio.Event()

    async def watch() -> None:
        while not breaker.is_open:
            await anyio.sleep(0.001)
        seen_open.set()

    with capture_logs() as logs:  # also keeps these lines off a stderr an earlier CLI test may have closed
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            n = await write_with_retry("s", writer, [], RetrySettings(retry_count=2, retry_delay=0.01), breaker)
    assert n.count == 0 and n.refused == [] and writer.calls == 4 and seen_open.is_set()
    assert [e["event"] for e in logs] == ["sink_retry", "circuit_open", "sink_retry", "sink_retry", "circuit_closed"]
    assert not breaker.is_open and breaker.outages == 1
    with anyio.fail_after(1):
        await breaker.wait_closed()


@pytest.mark.anyio
async def test_a_sink_down_too_long_fails_with_the_reason() -> None:
    breaker = CircuitBreaker(threshold=1)
    with capture_logs(), pytest.raises(SinkDownError, match=r"sink s failed .* ConnectionError: down"):
        await write_with_retry("s", FlakyWriter(10**6), [], RetrySettings(1, 0.01, 0.02, 0.1), breaker)
    assert breaker.is_open


class RefusingWriter:
    calls = 0

    async def write(self, records: Sequence[StreamRecord]) -> int:
        self.calls += 1
        raise PermanentSinkError("document fails validation")


@pytest.mark.anyio
async def test_a_refusal_is_not_an_outage_and_is_never_retried() -> None:
    breaker, writer = CircuitBreaker(threshold=1), RefusingWriter()
    with capture_logs(), pytest.raises(PermanentSinkError, match="fails validation"):
        await write_with_retry("s", writer, [], RetrySettings(3, 0.01), breaker)
    assert writer.calls == 1 and not breaker.is_open
