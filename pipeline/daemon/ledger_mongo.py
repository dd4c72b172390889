"""The request ledger in MongoDB (``DAEMON__LEDGER=mongodb``), for teams whose pipelines already live there.

Same states and the same guarantee as the PostgreSQL ledger (see ledger.py): one document per request_id
(``_id``), the claim a single ``find_one_and_update`` whose filter holds the whole condition, so two daemons
cannot both win it. Leases are compared with the daemons' clocks (MongoDB has no ``now()`` usable in a
filter here), so hosts running daemons need synchronised clocks, as they do for any lease.
PyMongo's async API (``AsyncMongoClient``) is Motor's official successor.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from pipeline.daemon.ledger import Claim, LedgerRow, epoch, lost_claim
from task_components.clients import mongo_client

if TYPE_CHECKING:
    from pymongo import AsyncMongoClient

__all__ = ["MongoLedger"]


def _now() -> datetime:
    return datetime.now(UTC)


class MongoLedger:
    def __init__(self, uri: str, database: str, collection: str = "pipeline_requests") -> None:
        self.uri, self.database, self.collection = uri, database, collection
        self.client: AsyncMongoClient[dict[str, Any]] | None = None

    @property
    def _coll(self) -> Any:
        if self.client is None:
            raise RuntimeError("the ledger is not open")
        return self.client[self.database][self.collection]

    async def open(self) -> None:
        self.client = mongo_client(self.uri, tz_aware=True, serverSelectionTimeoutMS=10_000)
        await self.client.admin.command("ping")

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def accept(self, request_id: str, run_id: str, pipeline: str, fingerprint: str) -> tuple[bool, LedgerRow]:
        doc = {
            "_id": request_id,
            "state": "accepted",
            "run_id": run_id,
            "pipeline": pipeline,
            "owner": None,
            "lease_until": None,
            "attempts": 0,
            "announced": False,
            "outcome": None,
            "fingerprint": fingerprint,
            "created_at": _now(),
        }
        try:
            await self._coll.insert_one(doc)
            return True, row_of(doc)
        except DuplicateKeyError:
            current = await self.row(request_id)
            if current is None:
                raise RuntimeError(f"ledger document of request {request_id!r} vanished") from None
            return False, current

    async def accept_claim(
        self, request_id: str, run_id: str, pipeline: str, fingerprint: str, owner: str, lease: float, rerun: bool = False
    ) -> tuple[bool, Claim]:
        """``accept`` and ``claim`` in one upsert: the filter is the claim's condition (and the same fingerprint);
        a document that exists but fails it makes the upsert's insert collide, which is the "not ours" answer."""
        now = _now()
        try:
            doc = await self._coll.find_one_and_update(
                {"_id": request_id, "$and": [_claimable(owner, now), {"$or": [{"fingerprint": None}, {"fingerprint": fingerprint}]}]},
                [
                    {
                        "$set": {
                            **_claimed(owner, now, lease, rerun),
                            # (an update pipeline has no $setOnInsert: a field the document lacks is a new one's)
                            **{
                                k: {"$ifNull": [f"${k}", {"$literal": v}]}
                                for k, v in {
                                    "run_id": run_id,
                                    "pipeline": pipeline,
                                    "announced": False,
                                    "fingerprint": fingerprint,
                                    "created_at": now,
                                }.items()
                            },
                            "outcome": {"$ifNull": ["$outcome", None]},
                        }
                    }
                ],
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return False, lost_claim(request_id, await self.row(request_id))
        return doc["run_id"] == run_id, Claim("claimed", row_of(doc))  # a fresh run id: the document is new

    async def claim(self, request_id: str, owner: str, lease: float, announced: bool = False, rerun: bool = False) -> Claim:
        now = _now()
        told = {"announced": True} if announced else {}
        doc = await self._coll.find_one_and_update(
            {"_id": request_id, **_claimable(owner, now)},
            [{"$set": {**_claimed(owner, now, lease, rerun), **told}}],
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            return Claim("claimed", row_of(doc))
        return lost_claim(request_id, await self.row(request_id))

    async def unclaim(self, request_id: str, owner: str, uncount: bool = True) -> None:
        """See ``PostgresLedger.unclaim``."""
        await self._coll.update_one(
            {"_id": request_id, "owner": owner, "state": "running"},
            [
                {
                    "$set": {
                        "state": "interrupted",
                        "lease_until": None,
                        "updated_at": _now(),
                        "attempts": {"$max": [0, {"$subtract": ["$attempts", int(uncount)]}]},
                    }
                }
            ],
        )

    async def announce(self, request_id: str) -> None:
        await self._coll.update_one({"_id": request_id}, {"$set": {"announced": True}})

    async def renew(self, owner: str, request_ids: list[str], lease: float) -> None:
        if request_ids:
            await self._coll.update_many(
                {"_id": {"$in": request_ids}, "owner": owner, "state": "running"},
                {"$set": {"lease_until": _now() + timedelta(seconds=lease)}},
            )

    async def finish(self, request_id: str, owner: str, state: str, outcome: dict[str, Any]) -> bool:
        done = await self._coll.update_one(
            {"_id": request_id, "owner": owner, "state": "running"},
            {"$set": {"state": state, "outcome": outcome, "lease_until": None, "updated_at": _now()}},
        )
        return bool(done.modified_count)

    async def row(self, request_id: str) -> LedgerRow | None:
        doc = await self._coll.find_one({"_id": request_id})
        return row_of(doc) if doc is not None else None

    async def rows(self) -> list[LedgerRow]:
        return [row_of(d) async for d in self._coll.find({}).sort("created_at", 1)]


def _claimable(owner: str, now: datetime) -> dict[str, Any]:
    """The claim's condition: waiting, interrupted, or running under a lapsed lease (or our own)."""
    return {
        "$or": [
            {"state": {"$in": ["accepted", "interrupted"]}},
            {"state": "running", "$or": [{"lease_until": {"$lt": now}}, {"owner": owner}]},
        ]
    }


def _claimed(owner: str, now: datetime, lease: float, rerun: bool = False) -> dict[str, Any]:
    """The claim's update, as pipeline stages' fields (each reads the document as it was): a claim by the daemon
    already holding it (one process run) is that attempt retried, not a new one, unless its pipeline already ran."""
    me = {"$literal": owner}  # (a value in a pipeline starting with "$" would read as a field path)
    held = {"$and": [{"$eq": ["$state", "running"]}, {"$eq": ["$owner", me]}, {"$literal": not rerun}]}
    return {
        "state": "running",
        "owner": me,
        "lease_until": now + timedelta(seconds=lease),
        "updated_at": now,
        "attempts": {"$add": [{"$ifNull": ["$attempts", 0]}, {"$cond": [held, 0, 1]}]},
        "started_at": {"$ifNull": ["$started_at", now]},
    }


def row_of(d: dict[str, Any]) -> LedgerRow:
    started = d.get("started_at")  # the first claim's time: the maximum run time spans resumes
    ran_for = max(0.0, (_now() - started).total_seconds()) if isinstance(started, datetime) else 0.0
    return LedgerRow(
        d["_id"],
        d["state"],
        d["run_id"],
        d.get("owner"),
        d.get("attempts", 0),
        d.get("outcome"),
        d.get("announced", False),
        d.get("fingerprint"),
        ran_for,
        epoch(d.get("created_at")),
        epoch(started),
    )
