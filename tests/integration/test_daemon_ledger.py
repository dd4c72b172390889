"""The ledgers' attempt count against the real stores: a daemon claiming again what it already holds (its
ledger write or the broker failed, or the run directory was busy, and it requeued the request) is the same
attempt, not a new one; only another process's claim counts. A claim given back before its pipeline started
(a stop) is not counted either."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import anyio
import pytest

from pipeline.daemon.ledger import Ledger, PostgresLedger
from pipeline.daemon.ledger_mongo import MongoLedger
from tests.integration.conftest import service_uri

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["postgres", "mongodb"])
async def ledger(request: pytest.FixtureRequest) -> AsyncIterator[Ledger]:
    tag = uuid.uuid4().hex[:10]
    store: Ledger = (
        PostgresLedger(service_uri("TEST_POSTGRES_DSN"), f"attempts_{tag}")
        if request.param == "postgres"
        else MongoLedger(service_uri("TEST_MONGO_URI"), f"attempts_{tag}", "requests")
    )
    await store.open()
    try:
        yield store
    finally:
        if isinstance(store, PostgresLedger) and store.pool is not None:
            await store.pool.execute(f"DROP TABLE attempts_{tag}")
        elif isinstance(store, MongoLedger) and store.client is not None:
            await store.client.drop_database(f"attempts_{tag}")
        await store.close()


@pytest.mark.anyio
async def test_a_reclaim_by_the_same_daemon_is_not_a_new_attempt(ledger: Ledger) -> None:
    """Before: each re-claim after a requeue added one, so three retries of one run made it "claimed 4 times"
    and it was failed without running, though every task had succeeded."""
    await ledger.accept("r1", "run-a", "demo", "fp1")
    for _ in range(5):  # the first claim, then four requeues in the same process
        claim = await ledger.claim("r1", "me", 30)
        assert claim.verdict == "claimed" and claim.row.attempts == 1
    created, claim = await ledger.accept_claim("r1", "run-x", "demo", "fp1", "me", 30)  # the folded statement too
    assert not created and claim.verdict == "claimed" and claim.row.attempts == 1 and claim.row.run_id == "run-a"
    created, claim = await ledger.accept_claim("r2", "run-b", "demo", "fp1", "me", 0.001)
    assert created and claim.row.attempts == 1
    await anyio.sleep(0.05)  # its lease lapsed, nobody took it: still this daemon's attempt
    assert (await ledger.claim("r2", "me", 30)).row.attempts == 1
    # another process (its daemon died: the lease lapsed) counts
    assert (await ledger.claim("r1", "me", 0.001)).row.attempts == 1
    await anyio.sleep(0.05)
    claim = await ledger.claim("r1", "heir", 30)
    assert claim.verdict == "claimed" and claim.row.attempts == 2 and claim.row.owner == "heir"
    assert (await ledger.claim("r1", "me", 30)).verdict == "busy"


@pytest.mark.anyio
async def test_a_reclaim_after_the_pipeline_ran_is_a_new_attempt(ledger: Ledger) -> None:
    """A re-claim by the same daemon whose pipeline already ran (its outcome could not be recorded, or the
    message came back after a revoke) runs the pipeline again: that is an attempt, or a request whose outcome
    can never be recorded would re-run for ever without reaching DAEMON__MAX_ATTEMPTS."""
    await ledger.accept("r1", "run-a", "demo", "fp1")
    assert (await ledger.claim("r1", "me", 30)).row.attempts == 1
    for n in (2, 3):
        assert (await ledger.claim("r1", "me", 30, rerun=True)).row.attempts == n
    created, claim = await ledger.accept_claim("r1", "run-x", "demo", "fp1", "me", 30, rerun=True)
    assert not created and claim.row.attempts == 4
    await ledger.unclaim("r1", "me", uncount=False)  # a stop after a run here: the attempt stays counted
    row = await ledger.row("r1")
    assert row is not None and row.state == "interrupted" and row.attempts == 4


@pytest.mark.anyio
async def test_a_claim_given_back_before_its_pipeline_started_is_not_counted(ledger: Ledger) -> None:
    await ledger.accept("r1", "run-a", "demo", "fp1")
    assert (await ledger.claim("r1", "me", 30)).row.attempts == 1
    await ledger.unclaim("r1", "other")  # not its holder: nothing changes
    row = await ledger.row("r1")
    assert row is not None and row.state == "running" and row.attempts == 1
    await ledger.unclaim("r1", "me")
    row = await ledger.row("r1")
    assert row is not None and row.state == "interrupted" and row.attempts == 0 and row.run_id == "run-a"
    claim = await ledger.claim("r1", "next", 30)  # no lease to wait out
    assert claim.verdict == "claimed" and claim.row.attempts == 1
    await ledger.unclaim("r1", "next", uncount=False)  # its pipeline had run here: the attempt stays
    row = await ledger.row("r1")
    assert row is not None and row.state == "interrupted" and row.attempts == 1
    assert await ledger.finish("r1", "next", "succeeded", {}) is False  # given back: no longer its to finish


@pytest.mark.anyio
async def test_values_that_look_like_field_paths_are_stored_as_given(ledger: Ledger) -> None:
    """MongoDB claims are update pipelines, where a string starting with "$" reads as a field: a sender's
    request must not steer them (an inline spec names its own pipeline)."""
    created, claim = await ledger.accept_claim("r1", "$owner", "$state", "$attempts", "$run_id", 30)
    assert created and claim.row.run_id == "$owner" and claim.row.fingerprint == "$attempts"
    assert claim.row.owner == "$run_id" and claim.row.attempts == 1
    assert (await ledger.claim("r1", "$run_id", 30)).row.attempts == 1  # the same holder, read as a value
