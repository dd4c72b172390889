"""The seeding tool's users on the real MongoDB-protocol server (SecantusDB): their own pack module, run
from their own directory; 2dsphere, partial, TTL, compound and unique indexes made and obeyed; text and
hashed indexes, which SecantusDB lacks, refused by name (or skipped, and said, when optional); Faker
values stored. (The localhost default is tested without a server: tests/unit/test_mongo_parity.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from pymongo import AsyncMongoClient

from config.settings import Settings
from pipeline.runner import RunOptions, execute, prepare_spec
from pipeline.spec import PipelineSpec
from task_components.datasets.mongo import doc_pack_tasks
from tests.integration.conftest import service_uri

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

PACK_MODULE = """
from datetime import datetime, timedelta
from typing import Annotated
from bson import ObjectId
from pydantic import BaseModel, ConfigDict, Field
from task_components.datasets.mongo import Batch, CollectionDef, DocPack, Fake, GeoPoint, IndexDef, Ref, geo_points

class Doc(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", populate_by_name=True)
    id: ObjectId = Field(alias="_id")

class Shop(Doc):
    name: Annotated[str, Fake("company")]
    code: str
    active: bool
    location: GeoPoint
    opened: datetime

class Visit(Doc):
    shop_id: Annotated[ObjectId, Ref("shops")]
    visitor: Annotated[str, Fake("name")]
    note: Annotated[str, Fake("sentence", nb_words=6)]

def shops(b: Batch) -> list[dict]:
    # codes repeat every 10 shops; only the first 12 are active, so 2 active codes collide (S0, S1)
    places = geo_points(b.rng, [(2.35, 48.85)] * b.count, spread_deg=0.05)  # around Paris
    return [{"_id": i, "code": f"S{(b.first + k) % 10}", "active": b.first + k < 12, "location": places[k],
             "opened": datetime(2024, 1, 1) + timedelta(days=b.first + k)} for k, i in enumerate(b.ids())]

def visits(b: Batch) -> list[dict]:
    ids = b.parents["shops"]
    return [{"_id": i, "shop_id": ids[int(b.rng.integers(len(ids)))]} for i in b.ids()]

def make_pack(text_optional: bool = True) -> DocPack:
    return DocPack("places", "shops and their visits", {
        "shops": CollectionDef("shops", Shop, 40, shops, (
            IndexDef((("location", "2dsphere"),), "near"),
            IndexDef((("code", 1),), "active_code", unique=True, partial={"active": True}),
            IndexDef((("opened", 1),), "expire", ttl_seconds=10 * 365 * 86400),
            IndexDef((("active", 1), ("code", -1)), "active_code_desc"),
        )),
        "visits": CollectionDef("visits", Visit, 200, visits, (
            IndexDef((("visitor", "text"), ("note", "text")), "visitor_text", optional=text_optional),
            IndexDef((("shop_id", "hashed"),), "shop_hashed", optional=True),
        )),
    })

PLACES = make_pack()
STRICT_TEXT = make_pack(text_optional=False)
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONGODB")}
    return {**env, "MONGODB__CONNECTION_STRING": service_uri("TEST_MONGO_URI"), "PYTHONPATH": str(ROOT)}


async def _read(database: str) -> dict[str, Any]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(service_uri("TEST_MONGO_URI"), tz_aware=False)
    try:
        db = client[database]
        near = {"location": {"$near": {"$geometry": {"type": "Point", "coordinates": [2.35, 48.85]}, "$maxDistance": 100_000}}}
        return {
            "shops": [d async for d in db["shops"].find({}).sort("_id", 1)],
            "visits": [d async for d in db["visits"].find({}).sort("_id", 1)],
            "indexes": {c: {i["name"]: dict(i) async for i in await db[c].list_indexes()} for c in ("shops", "visits")},
            # $near sorts by distance, so find (count_documents runs an aggregate, where mongod refuses $near)
            "near_paris": len(await db["shops"].find(near).to_list()),
            "far": len(await db["shops"].find({"location": {"$near": {**near["location"]["$near"], "$maxDistance": 1}}}).to_list()),
        }
    finally:
        await client.drop_database(database)
        await client.close()


def test_a_users_own_pack_module_seeds_from_their_directory_with_every_supported_index_kind(tmp_path: Path) -> None:
    database = f"parity_{uuid.uuid4().hex[:8]}"
    (tmp_path / "my_places.py").write_text(PACK_MODULE)
    spec = {
        "name": "places",
        "tasks": {
            "shops": {"uses": "mongo.seed", "with": {"pack": "my_places:PLACES", "collection": "shops", "database": database}},
            "visits": {
                "uses": "mongo.seed",
                "needs": ["shops"],
                "with": {"pack": "my_places:PLACES", "collection": "visits", "database": database},
            },
            "validate": {
                "uses": "mongo.validate",
                "needs": ["shops", "visits"],
                "with": {"pack": "my_places:PLACES", "database": database},
            },
        },
    }
    (tmp_path / "places.yaml").write_text(yaml.safe_dump(spec))
    cmd = [sys.executable, str(ROOT / "run_pipeline.py"), "run", "places.yaml", "--run-dir", "runs", "--no-progress"]
    done = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "OK: 0 orphans, 0 schema violations" in out
    # SecantusDB has no text or hashed indexes: the optional ones are skipped, by name and kind
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    skipped = {(e["collection"], e["index"], e["kind"]) for e in events if e["event"] == "mongo_index_skipped"}
    assert skipped == {("visits", "visitor_text", "text"), ("visits", "shop_hashed", "hashed")}

    got = anyio.run(_read, database)
    shops, visits, indexes = got["shops"], got["visits"], got["indexes"]
    assert len(shops) == 38, "40 shops, 2 active ones refused by the partial unique index"
    assert sorted(s["code"] for s in shops if s["active"]) == [f"S{i}" for i in range(10)]
    assert sum(not s["active"] for s in shops) == 28, "inactive shops share codes: outside the partial filter"
    assert dict(indexes["shops"]["near"]["key"]) == {"location": "2dsphere"}
    assert indexes["shops"]["active_code"]["partialFilterExpression"] == {"active": True}
    assert indexes["shops"]["active_code"]["unique"] is True
    assert indexes["shops"]["expire"]["expireAfterSeconds"] == 10 * 365 * 86400
    assert list(indexes["shops"]["active_code_desc"]["key"].items()) == [("active", 1), ("code", -1)]
    assert got["near_paris"] == 38 and got["far"] == 0, "the 2dsphere index answers $near"
    assert set(indexes["visits"]) == {"_id_"}
    assert len(visits) == 200 and all(v["visitor"] and v["note"] for v in visits)
    assert len({v["visitor"] for v in visits}) > 50, "Faker names, not one repeated value"
    assert {v["shop_id"] for v in visits} <= {s["_id"] for s in shops}


def _run(settings: Settings, tmp_path: Path, tasks: dict[str, Any]) -> dict[str, Any]:
    options = RunOptions(run_dir=tmp_path / "runs")
    prepared = prepare_spec(PipelineSpec.model_validate({"name": "seed", "tasks": tasks}), "<seed>", {}, options)
    result = anyio.run(lambda: execute(prepared, settings, options, handle_signals=False))
    return dict(result.to_dict()["tasks"])


def test_an_index_kind_the_server_lacks_is_refused_by_collection_index_and_kind(tmp_path: Path) -> None:
    (tmp_path / "strict.py").write_text(PACK_MODULE)
    database = f"parity_{uuid.uuid4().hex[:8]}"
    settings = Settings.model_validate({"mongodb": {"connection_string": service_uri("TEST_MONGO_URI")}})
    tasks = doc_pack_tasks(f"{tmp_path}/strict.py:STRICT_TEXT", database=database, seed=1)
    out = _run(settings, tmp_path, tasks)
    assert out["shops"]["state"] == "succeeded" and out["visits"]["state"] == "failed"
    error = out["visits"]["error"]
    assert "IndexRefusedError: collection 'visits': the server refused index 'visitor_text' (kind text)" in error
    assert "text indexes are not supported by SecantusDB" in error and "optional=True" in error
    anyio.run(_read, database)  # drops it


def test_seed_mongo_takes_a_users_pack_file_by_flag_with_no_pipeline_file(tmp_path: Path) -> None:
    database = f"parity_{uuid.uuid4().hex[:8]}"
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "places_pack.py").write_text(PACK_MODULE)
    cmd = [sys.executable, str(ROOT / "run_pipeline.py"), "seed-mongo", "--pack", "places_pack.py:PLACES", "--database", database]
    done = subprocess.run([*cmd, "--run-dir", "runs", "--no-progress"], cwd=work, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK: 0 orphans, 0 schema violations" in done.stdout + done.stderr
    got = anyio.run(_read, database)
    assert len(got["shops"]) == 38 and len(got["visits"]) == 200
    bad = subprocess.run([*cmd[:-3], "no_such_pack.py:PLACES"], cwd=work, env=_env(), capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no_such_pack.py" in bad.stderr and "Traceback" not in bad.stderr
