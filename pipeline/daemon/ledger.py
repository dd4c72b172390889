"""The request ledger: one row per request_id, the reason a request's effect happens once.

Tansu has no transactions, so exactly-once comes from here plus commit-after-record: a request is
*accepted* (row inserted, run id fixed), *claimed* (state running, with this daemon as owner and a lease it keeps
renewing), then *finished* (succeeded/failed with the outcome) or *interrupted* (a graceful stop: the run
directory keeps its state and the next claim resumes it). The offset is committed only after the row says
finished, so a crash at any point means a redelivery, and the redelivery reads the row:

* finished -> re-publish the recorded outcome, run nothing;
* running under a lease still renewed by a live daemon (a rebalance moved the partition) -> wait;
* running under an expired lease (its daemon died) or interrupted -> claim it and resume the same run id.

The claim is one conditional ``UPDATE`` so two daemons can never both win it. A request that finds a free
run slot is accepted and claimed in one statement (``accept_claim``: an ``INSERT ... ON CONFLICT DO UPDATE``
whose ``WHERE`` is the claim's condition), and ``announced`` (its "accepted" event reached the broker)
rides on the claim: a one-task request costs two or three statements, not four.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from task_components.clients import pg_pool

if TYPE_CHECKING:
    import asyncpg

__all__ = ["Claim", "Ledger", "LedgerRow", "PostgresLedger", "epoch", "lost_claim"]

Verdict = Literal["claimed", "finished", "busy"]
FINISHED = ("succeeded", "failed")


@dataclass(slots=True, frozen=True)
class LedgerRow:
    request_id: str
    state: str
    run_id: str
    owner: str | None
    attempts: int
    outcome: dict[str, Any] | None
    announced: bool = True  # its "accepted" event reached the broker (else the first claim tells it)
    fingerprint: str | None = None  # of the request's pipeline and params: a reused id with another body differs
    ran_for: float = 0.0  # seconds since its first claim (as of this read): the maximum run time spans resumes
    created_at: float | None = None  # epoch seconds the request was accepted (the console's request -> start latency)
    started_at: float | None = None  # epoch seconds of its first claim


@dataclass(slots=True, frozen=True)
class Claim:
    verdict: Verdict
    row: LedgerRow


def lost_claim(request_id: str, current: LedgerRow | None) -> Claim:
    """Why a claim found nothing to take: the request finished, or another live daemon holds it."""
    if current is None:
        raise RuntimeError(f"ledger entry of request {request_id!r} vanished (deleted by hand?)")
    return Claim("finished" if current.state in FINISHED else "busy", current)


class Ledger(Protocol):
    """What the daemon needs from a ledger store (PostgreSQL below; MongoDB in ledger_mongo.py)."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def accept(self, request_id: str, run_id: str, pipeline: str, fingerprint: str) -> tuple[bool, LedgerRow]: ...
    async def accept_claim(
        self, request_id: str, run_id: str, pipeline: str, fingerprint: str, owner: str, lease: float, rerun: bool = False
    ) -> tuple[bool, Claim]: ...
    async def claim(self, request_id: str, owner: str, lease: float, announced: bool = False, rerun: bool = False) -> Claim: ...
    async def unclaim(self, request_id: str, owner: str, uncount: bool = True) -> None: ...
    async def announce(self, request_id: str) -> None: ...
    async def renew(self, owner: str, request_ids: list[str], lease: float) -> None: ...
    async def finish(self, request_id: str, owner: str, state: str, outcome: dict[str, Any]) -> bool: ...
    async def row(self, request_id: str) -> LedgerRow | None: ...
    async def rows(self) -> list[LedgerRow]: ...


class PostgresLedger:
    def __init__(self, dsn: str, table: str = "pipeline_requests", connections: int = 4) -> None:
        self.dsn, self.table = dsn, table  # table: validated by the settings pattern, safe to format
        self.connections = connections  # each run slot claims and finishes while the intake accepts
        self.pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        self.pool = await pg_pool(self.dsn, min_size=1, max_size=self.connections)
        # two daemons starting together both run this: the lock makes the second wait, not fail
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.table)
            await conn.execute(f"""
                    CREATE TABLE IF NOT EXISTS {self.table} (
                        request_id  text PRIMARY KEY,
                        state       text NOT NULL,
                        run_id      text NOT NULL,
                        pipeline    text NOT NULL,
                        owner       text,
                        lease_until timestamptz,
                        attempts    integer NOT NULL DEFAULT 0,
                        announced   boolean NOT NULL DEFAULT false,
                        fingerprint text,
                        started_at  timestamptz,
                        outcome     jsonb,
                        created_at  timestamptz NOT NULL DEFAULT now(),
                        updated_at  timestamptz NOT NULL DEFAULT now()
                    )""")
            # a table made by an older daemon gains the newer columns
            await conn.execute(
                f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS announced boolean NOT NULL "
                "DEFAULT true, ADD COLUMN IF NOT EXISTS fingerprint text, "
                "ADD COLUMN IF NOT EXISTS started_at timestamptz"
            )

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    def _pool(self) -> asyncpg.Pool:
        if self.pool is None:
            raise RuntimeError("the ledger is not open")
        return self.pool

    async def accept(self, request_id: str, run_id: str, pipeline: str, fingerprint: str) -> tuple[bool, LedgerRow]:
        """Record a valid request once; returns (new?, its row). A known one keeps its row and run id."""
        row = await self._pool().fetchrow(
            f"INSERT INTO {self.table} (request_id, state, run_id, pipeline, fingerprint) "
            "VALUES ($1, 'accepted', $2, $3, $4) ON CONFLICT (request_id) DO NOTHING RETURNING *",
            request_id,
            run_id,
            pipeline,
            fingerprint,
        )
        if row is not None:
            return True, row_of(row)
        current = await self.row(request_id)
        if current is None:
            raise RuntimeError(f"ledger row of request {request_id!r} vanished (deleted by hand?)")
        return False, current

    async def accept_claim(
        self, request_id: str, run_id: str, pipeline: str, fingerprint: str, owner: str, lease: float, rerun: bool = False
    ) -> tuple[bool, Claim]:
        """``accept`` and ``claim`` in one statement: (new?, the claim or why not)."""
        t = self.table
        row = await self._pool().fetchrow(
            f"""
            INSERT INTO {t} AS t (request_id, state, run_id, pipeline, fingerprint, owner, lease_until, attempts,
                                  started_at)
            VALUES ($1, 'running', $2, $3, $4, $5, now() + make_interval(secs => $6), 1, now())
            ON CONFLICT (request_id) DO UPDATE
               SET state = 'running', owner = $5, lease_until = now() + make_interval(secs => $6),
                   attempts = t.attempts + {_NEW_ATTEMPT.format(t="t.", owner="$5", rerun="$7")}, updated_at = now(),
                   started_at = COALESCE(t.started_at, now())
             WHERE (t.fingerprint IS NULL OR t.fingerprint = $4)
               AND (t.state IN ('accepted', 'interrupted')
                    OR (t.state = 'running' AND (t.lease_until < now() OR t.owner = $5)))
            RETURNING *, {_RAN_FOR}""",
            request_id,
            run_id,
            pipeline,
            fingerprint,
            owner,
            lease,
            rerun,
        )
        if row is not None:
            return row["run_id"] == run_id, Claim("claimed", row_of(row))  # a fresh run id: the row is new
        current = await self.row(request_id)
        return False, lost_claim(request_id, current)

    async def claim(self, request_id: str, owner: str, lease: float, announced: bool = False, rerun: bool = False) -> Claim:
        row = await self._pool().fetchrow(
            f"""
            UPDATE {self.table}
               SET state = 'running', owner = $2, lease_until = now() + make_interval(secs => $3),
                   attempts = attempts + {_NEW_ATTEMPT.format(t="", owner="$2", rerun="$5")}, announced = announced OR $4,
                   updated_at = now(), started_at = COALESCE(started_at, now())
             WHERE request_id = $1
               AND (state IN ('accepted', 'interrupted')
                    OR (state = 'running' AND (lease_until < now() OR owner = $2)))
            RETURNING *, {_RAN_FOR}""",
            request_id,
            owner,
            lease,
            announced,
            rerun,
        )
        if row is not None:
            return Claim("claimed", row_of(row))
        return lost_claim(request_id, await self.row(request_id))

    async def unclaim(self, request_id: str, owner: str, uncount: bool = True) -> None:
        """A claim whose pipeline did not start (a stop came first): give it back now, so the next daemon need
        not wait for the lease; ``uncount``: no pipeline ran under this attempt, so it is not counted either."""
        await self._pool().execute(
            f"UPDATE {self.table} SET state = 'interrupted', lease_until = NULL, updated_at = now(), "
            "attempts = GREATEST(attempts - $3::int, 0) WHERE request_id = $1 AND owner = $2 AND state = 'running'",
            request_id,
            owner,
            int(uncount),
        )

    async def announce(self, request_id: str) -> None:
        await self._pool().execute(f"UPDATE {self.table} SET announced = true WHERE request_id = $1", request_id)

    async def renew(self, owner: str, request_ids: list[str], lease: float) -> None:
        if request_ids:
            await self._pool().execute(
                f"UPDATE {self.table} SET lease_until = now() + make_interval(secs => $3) "
                "WHERE owner = $1 AND state = 'running' AND request_id = ANY($2)",
                owner,
                request_ids,
                lease,
            )

    async def finish(self, request_id: str, owner: str, state: str, outcome: dict[str, Any]) -> bool:
        """Record the end; False if another daemon took the request over meanwhile (its result stands)."""
        done = await self._pool().execute(
            f"UPDATE {self.table} SET state = $3, outcome = $4::jsonb, lease_until = NULL, updated_at = now() "
            "WHERE request_id = $1 AND owner = $2 AND state = 'running'",
            request_id,
            owner,
            state,
            json.dumps(outcome, default=str),
        )
        return done.endswith(" 1")

    async def row(self, request_id: str) -> LedgerRow | None:
        row = await self._pool().fetchrow(f"SELECT * FROM {self.table} WHERE request_id = $1", request_id)
        return row_of(row) if row is not None else None

    async def rows(self) -> list[LedgerRow]:
        return [row_of(r) for r in await self._pool().fetch(f"SELECT * FROM {self.table} ORDER BY created_at")]


# A claim by the daemon already holding it (its owner names one process run) is that attempt retried, after a
# ledger or broker error or a busy run directory, not a new attempt: only another process's claim counts.
# a claim by the daemon already holding the row is that attempt retried (0), unless its pipeline already ran
_NEW_ATTEMPT = "(CASE WHEN {t}state = 'running' AND {t}owner = {owner} AND NOT {rerun}::bool THEN 0 ELSE 1 END)"
# seconds since the first claim, on the server's clock (so a daemon's clock cannot stretch the maximum run time)
_RAN_FOR = "extract(epoch from now() - started_at)::float8 AS ran_for"


def row_of(r: asyncpg.Record) -> LedgerRow:
    outcome = r["outcome"]
    ran_for = r.get("ran_for")
    return LedgerRow(
        r["request_id"],
        r["state"],
        r["run_id"],
        r["owner"],
        r["attempts"],
        json.loads(outcome) if isinstance(outcome, str) else outcome,
        r["announced"],
        r["fingerprint"],
        max(0.0, ran_for or 0.0),
        epoch(r.get("created_at")),
        epoch(r.get("started_at")),
    )


def epoch(value: Any) -> float | None:
    """A timestamptz (or a Mongo datetime) as epoch seconds; None stays None."""
    return value.timestamp() if hasattr(value, "timestamp") else None
