"""Seeding the e-commerce document pack into the real MongoDB-protocol server (SecantusDB), end to end
through the runner: dependency order, bulk batches, indexes, duplicates reported, zero orphans."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient

from config.settings import Settings
from dag_orchestrator.state import RunResult
from pipeline.runner import RunOptions, execute, prepare_spec
from pipeline.spec import PipelineSpec
from task_components.datasets.mongo import doc_pack_tasks, get_doc_pack
from tests.integration.conftest import service_uri

pytestmark = pytest.mark.integration
PACK = get_doc_pack("ecommerce")


def _run(tmp_path: Path, database: str, tasks: dict[str, Any]) -> tuple[RunResult, dict[str, Any]]:
    settings = Settings.model_validate({"mongodb": {"connection_string": service_uri("TEST_MONGO_URI")}})
    options = RunOptions(run_dir=tmp_path)
    prepared = prepare_spec(PipelineSpec.model_validate({"name": "seed", "tasks": tasks}), "<seed>", {}, options)
    result = anyio.run(lambda: execute(prepared, settings, options, handle_signals=False))
    return result, {n: t for n, t in result.to_dict()["tasks"].items()}


async def _snapshot(database: str) -> dict[str, Any]:
    client: AsyncMongoClient = AsyncMongoClient(service_uri("TEST_MONGO_URI"), tz_aware=False)
    try:
        db = client[database]
        out: dict[str, Any] = {}
        for name in PACK.collections:
            docs = [d async for d in db[name].find({}).sort("_id", 1)]
            out[name] = {
                "count": len(docs),
                "digest": hashlib.sha256(repr(docs).encode()).hexdigest(),
                "indexes": {i["name"]: dict(i) async for i in await db[name].list_indexes()},
                "options": await db[name].options(),
            }
        out["user_ids"] = {d["_id"] async for d in db["users"].find({}, {"_id": 1})}
        out["order_users"] = {d["user_id"] async for d in db["orders"].find({}, {"user_id": 1})}
        return out
    finally:
        await client.close()


def test_seeding_the_pack_leaves_no_orphans_and_every_index(tmp_path: Path) -> None:
    database = f"seed_{uuid.uuid4().hex[:8]}"
    result, tasks = _run(tmp_path, database, doc_pack_tasks(PACK, database=database, seed=3, scale=0.6))
    assert result.ok, {n: t.get("error") for n, t in tasks.items()}
    text = (tmp_path / result.run_id / "ecommerce_validation.txt").read_text()
    assert "OK: 0 orphans, 0 schema violations" in text
    snap = anyio.run(_snapshot, database)
    seeded = {n: t for n, t in tasks.items() if n != "validate"}
    for name, coll in PACK.collections.items():
        wanted = round(coll.count * 0.6)
        dupes = int(text.split(f"\n{name}")[1].split()[1])
        assert snap[name]["count"] + dupes == wanted, name  # every document inserted or reported
        assert {i.name for i in coll.indexes if not i.optional} <= set(snap[name]["indexes"]), name
        assert name in seeded
    assert int(text.split("\nusers")[1].split()[1]) > 0, "the e-mail space is small enough for a few duplicates"
    users = snap["users"]["indexes"]
    assert users["email_unique"]["unique"] is True
    assert list(users["country_tier"]["key"].items()) == [("country", 1), ("tier", 1)]
    assert list(users["newest_first"]["key"].items()) == [("created_at", -1)]
    assert snap["sessions"]["indexes"]["expire_after_5y"]["expireAfterSeconds"] == 5 * 365 * 24 * 3600
    assert dict(snap["users"]["indexes"]["location_geo"]["key"]) == {"location": "2dsphere"}
    assert snap["reviews"]["indexes"]["well_rated_recent"]["partialFilterExpression"] == {"rating": {"$gte": 4}}
    assert snap["page_views"]["options"]["timeseries"]["timeField"] == "ts"
    assert snap["order_users"] <= snap["user_ids"], "orders only reference users that were stored"


def test_same_seed_seeds_the_same_documents(tmp_path: Path) -> None:
    a, b = f"seed_{uuid.uuid4().hex[:8]}", f"seed_{uuid.uuid4().hex[:8]}"
    for db in (a, b):
        result, tasks = _run(tmp_path, db, doc_pack_tasks(PACK, database=db, seed=5, scale=0.3, batch_size=250))
        assert result.ok, {n: t.get("error") for n, t in tasks.items()}
    snap_a, snap_b = anyio.run(_snapshot, a), anyio.run(_snapshot, b)
    for name in PACK.collections:
        assert snap_a[name]["digest"] == snap_b[name]["digest"], name


def test_validation_counts_an_orphan_and_fails_the_run(tmp_path: Path) -> None:
    database = f"seed_{uuid.uuid4().hex[:8]}"
    result, tasks = _run(tmp_path, database, doc_pack_tasks(PACK, database=database, seed=4, scale=0.1))
    assert result.ok

    async def add_orphan() -> None:
        client: AsyncMongoClient = AsyncMongoClient(service_uri("TEST_MONGO_URI"))
        try:
            order = await client[database]["orders"].find_one({})
            assert order is not None
            await client[database]["orders"].insert_one({**order, "_id": ObjectId(), "user_id": ObjectId()})
        finally:
            await client.close()

    anyio.run(add_orphan)
    # seeding again without dropping: every document is a duplicate _id (reported, not fatal), nothing
    # changes, and the validation pass finds the one orphan and fails the run
    again = doc_pack_tasks(PACK, database=database, seed=4, scale=0.1, drop=False)
    result, tasks = _run(tmp_path, database, again)
    assert not result.ok and all(tasks[n]["state"] == "succeeded" for n in PACK.collections)
    assert "validation found problems in orders" in tasks["validate"]["error"]
    text = (tmp_path / result.run_id / "ecommerce_validation.txt").read_text()
    assert "PROBLEMS FOUND: 1 orphans, 0 schema violations" in text and "user_id -> missing" in text
    snap = anyio.run(_snapshot, database)
    assert snap["orders"]["count"] == round(PACK.collections["orders"].count * 0.1) + 1


def test_duplicates_fail_the_task_only_when_asked(tmp_path: Path) -> None:
    database = f"seed_{uuid.uuid4().hex[:8]}"
    with_ = {"pack": "ecommerce", "collection": "users", "database": database, "seed": 3, "scale": 0.6, "fail_on_duplicates": True}
    tasks = {"users": {"uses": "mongo.seed", "with": with_}}
    result, out = _run(tmp_path, database, tasks)
    assert not result.ok and "refused as duplicate keys" in out["users"]["error"]
