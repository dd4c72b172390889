"""Retrying one operation inside a task, where a transient failure happens.

The executor retries whole tasks, but not a stream consumer that has read chunks (they are gone) nor a
producer that has emitted (its consumers would see them twice). Such tasks ride out a short outage
of a service by retrying the failing operation itself (one file, one COPY batch, one import call)
with the same backoff arithmetic as ``RetryPolicy``; only errors the caller calls transient are retried.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

from dag_orchestrator.task import RetryPolicy

__all__ = ["INNER_RETRY", "with_retries"]

T = TypeVar("T")

# what an operation gets when its task declares fewer retries: rides out ~15 s of outage
INNER_RETRY = RetryPolicy(attempts=6, backoff=0.5, factor=2.0, max_delay=8.0)


async def with_retries(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    transient: Callable[[BaseException], bool],
    *,
    what: str,
    log: Any = None,
    rng: random.Random | None = None,
) -> T:
    attempt = 0
    while True:
        attempt += 1
        try:
            return await fn()
        except Exception as exc:
            if attempt >= policy.attempts or not transient(exc):
                raise
            delay = policy.delay(attempt, rng)
            if log is not None:
                log.warning("transient error, retrying", what=what, attempt=attempt, delay=round(delay, 2),
                            error=f"{type(exc).__name__}: {exc}"[:300])  # fmt: skip
            await anyio.sleep(delay)
