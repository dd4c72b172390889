"""dag_orchestrator.retry: one backoff for async calls, blocking calls and pollers."""

from __future__ import annotations

import itertools
import time

import anyio
import pytest

from dag_orchestrator.retry import RetryPolicy, delays, with_retries, with_retries_sync

QUICK = RetryPolicy(attempts=5, backoff=0.01, factor=2.0, max_delay=0.02, jitter=0.0)


class Flaky:
    def __init__(self, failures: int, error: type[Exception] = ConnectionError) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")
        return "done"


def test_sync_and_async_retry_transient_errors_alike() -> None:
    sync = Flaky(3)
    assert with_retries_sync(sync, QUICK, lambda e: isinstance(e, ConnectionError), what="call") == "done"
    assert sync.calls == 4

    flaky = Flaky(3)

    async def call() -> str:
        return flaky()

    assert anyio.run(lambda: with_retries(call, QUICK, lambda e: isinstance(e, ConnectionError), what="call"))
    assert flaky.calls == 4


def test_a_refusal_is_raised_at_once_and_attempts_are_bounded() -> None:
    refused = Flaky(1, ValueError)
    with pytest.raises(ValueError):
        with_retries_sync(refused, QUICK, lambda e: isinstance(e, ConnectionError), what="call")
    assert refused.calls == 1
    down = Flaky(100)
    with pytest.raises(ConnectionError, match="failure 5"):
        with_retries_sync(down, QUICK, lambda e: True, what="call")
    assert down.calls == QUICK.attempts


def test_a_deadline_bounds_the_whole_and_shortens_the_last_pause() -> None:
    endless = RetryPolicy(attempts=1_000_000, backoff=0.05, factor=2.0, max_delay=0.05, jitter=0.0)
    down = Flaky(10**9)
    started = time.monotonic()
    with pytest.raises(ConnectionError):
        with_retries_sync(down, endless, lambda e: True, what="call", deadline=started + 0.3)
    took = time.monotonic() - started
    assert 0.3 <= took < 0.6 and 4 <= down.calls <= 8


def test_delays_follow_the_policy() -> None:
    policy = RetryPolicy(backoff=0.1, factor=1.5, max_delay=0.3, jitter=0.0)
    assert [round(d, 3) for d in itertools.islice(delays(policy), 5)] == [0.1, 0.15, 0.225, 0.3, 0.3]


def test_a_retry_forever_loop_past_attempt_1024_still_gets_the_capped_delay() -> None:
    """factor**attempt overflows a float near attempt 1025 (factor 2): a daemon retrying for hours must not crash."""
    policy = RetryPolicy(attempts=10**9, backoff=0.5, factor=2.0, max_delay=30.0, jitter=0.0)
    assert policy.delay(1) == 0.5
    assert policy.delay(2000) == 30.0
