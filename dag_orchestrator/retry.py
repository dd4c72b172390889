"""Retrying one operation inside a task, where a transient failure happens; the one backoff in the project.

The executor retries whole tasks, but not a stream consumer that has read chunks (they are gone) nor a
producer that has emitted (its consumers would see them twice). Such tasks ride out a short outage
of a service by retrying the failing operation itself (one file, one COPY batch, one import call)
with the same backoff arithmetic as ``RetryPolicy``; only errors the caller calls transient are retried.
``with_retries`` is for async code, ``with_retries_sync`` for a blocking call in a worker thread (pymilvus,
urllib), and ``delays`` gives the same pauses to a loop that polls rather than retries. A ``deadline``
(``time.monotonic()``) bounds the whole when the budget is a time, not a number of attempts.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import anyio

from dag_orchestrator.task import RetryPolicy

__all__ = ["INNER_RETRY", "RetryPolicy", "delays", "with_retries", "with_retries_sync"]

T = TypeVar("T")

# what an operation gets when its task declares fewer retries: rides out ~15 s of outage
INNER_RETRY = RetryPolicy(attempts=6, backoff=0.5, factor=2.0, max_delay=8.0)


def delays(policy: RetryPolicy, rng: random.Random | None = None) -> Iterator[float]:
    """The pauses before tries 2, 3, ... (endless: a poller stops when its condition holds)."""
    attempt = 0
    while True:
        attempt += 1
        yield policy.delay(attempt, rng)


def _pause(
    exc: Exception,
    attempt: int,
    policy: RetryPolicy,
    transient: Callable[[BaseException], bool],
    deadline: float | None,
    rng: random.Random | None,
    what: str,
    log: Any,
) -> float | None:
    """How long to wait before trying again after ``exc``, or None: give up (the caller re-raises)."""
    if attempt >= policy.attempts or not transient(exc):
        return None
    delay = policy.delay(attempt, rng)
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        delay = min(delay, left)
    if log is not None:
        log.warning(
            "transient error, retrying", what=what, attempt=attempt, delay=round(delay, 2), error=f"{type(exc).__name__}: {exc}"[:300]
        )
    return delay


async def with_retries(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    transient: Callable[[BaseException], bool],
    *,
    what: str,
    log: Any = None,
    rng: random.Random | None = None,
    deadline: float | None = None,
) -> T:
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fn()
        except Exception as exc:
            delay = _pause(exc, attempt, policy, transient, deadline, rng, what, log)
            if delay is None:
                raise
        await anyio.sleep(delay)


def with_retries_sync(
    fn: Callable[[], T],
    policy: RetryPolicy,
    transient: Callable[[BaseException], bool],
    *,
    what: str,
    log: Any = None,
    rng: random.Random | None = None,
    deadline: float | None = None,
) -> T:
    """``with_retries`` for a blocking call (it sleeps the calling thread: run it in a worker thread)."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:
            delay = _pause(exc, attempt, policy, transient, deadline, rng, what, log)
            if delay is None:
                raise
        time.sleep(delay)
