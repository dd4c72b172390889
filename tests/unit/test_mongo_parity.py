"""What the seeding tool's users expect of a document pack, without a server: index kinds refused or
described before anything runs, Faker fields filled deterministically, packs from their own module or
file, and a localhost connection (said in the log) when nothing is configured."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import numpy as np
import pytest
from bson import ObjectId
from pydantic import BaseModel, ConfigDict, Field
from structlog.testing import capture_logs

from config.settings import Settings
from task_components.datasets.mongo import Batch, CollectionDef, DocPack, IndexDef, get_doc_pack
from task_components.datasets.mongo.fake import Fake, fake_paths
from task_components.datasets.mongo.loader import check_pack
from task_components.datasets.mongo.task import DEFAULT_URI, DocPackParams, seeding_database, seeding_uri
from task_components.datasets.pack import PackConfigError

ORIGIN = datetime(2024, 1, 1)


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid")
    city: Annotated[str, Fake("city")]
    street: str


class Person(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", populate_by_name=True)
    id: ObjectId = Field(alias="_id")
    name: Annotated[str, Fake("name")]
    born: Annotated[datetime, Fake("date_of_birth", minimum_age=18)]
    nickname: Annotated[str, Fake("user_name")]
    addresses: list[Address]


def _people(b: Batch) -> list[dict[str, Any]]:
    # the generator sets one nickname itself (it wins) and leaves every other Faker field to the marker
    return [
        {"_id": i, "addresses": [{"street": "a"}, {"street": "b"}], **({"nickname": "chosen"} if k == 0 else {})}
        for k, i in enumerate(b.ids())
    ]


PEOPLE = CollectionDef("people", Person, 10, _people)


def _docs(seed: int, locale: str = "en_US") -> list[dict[str, Any]]:
    batch = Batch("people", np.random.default_rng([seed, 0]), 0, 5, 5, {}, ORIGIN, locale)
    return PEOPLE.documents(batch)


def test_index_kinds_are_described_and_mongodbs_own_refusals_come_first() -> None:
    assert IndexDef((("body", "text"), ("title", "text")), "t").kind == "text"
    assert IndexDef((("loc", "2dsphere"),), "g").kind == "2dsphere"
    assert IndexDef((("user", "hashed"),), "h").kind == "hashed"
    partial = IndexDef((("email", 1),), "p", unique=True, partial={"active": True})
    assert partial.kind == "partial unique single"
    assert partial.options() == {"name": "p", "unique": True, "partialFilterExpression": {"active": True}}
    assert IndexDef((("ts", 1),), "ttl", ttl_seconds=60).options()["expireAfterSeconds"] == 60
    with pytest.raises(ValueError, match=r"index 'h' \(unique hashed\): MongoDB refuses unique hashed"):
        IndexDef((("user", "hashed"),), "h", unique=True)
    with pytest.raises(ValueError, match="a TTL index has exactly one"):
        IndexDef((("a", 1), ("b", 1)), "ttl", ttl_seconds=5)
    with pytest.raises(ValueError, match="one hashed field"):
        IndexDef((("a", "hashed"), ("b", "hashed")), "hh")
    with pytest.raises(ValueError, match="key kind 'geo' is none of"):
        IndexDef((("a", "geo"),), "bad")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty partial filter"):
        IndexDef((("a", 1),), "p", partial={})


def test_faker_fields_are_filled_the_same_for_a_seed_and_a_generators_value_wins() -> None:
    assert [(p, m.provider) for p, m in fake_paths(Person)] == [
        (("name",), "name"),
        (("born",), "date_of_birth"),
        (("nickname",), "user_name"),
        (("addresses", "city"), "city"),
    ]
    a, b, other = _docs(1), _docs(1), _docs(2)
    assert a == b and a != other
    for d in a:
        Person.model_validate(d)  # every field present and of its type (Faker's date stored as a datetime)
        assert isinstance(d["born"], datetime) and all(addr["city"] for addr in d["addresses"])
    assert a[0]["nickname"] == "chosen" and a[1]["nickname"] != "chosen"
    assert len({d["name"] for d in a}) > 1
    german = _docs(1, "de_DE")
    assert german != a
    batch = lambda seed: Batch("people", np.random.default_rng([seed, 0]), 0, 5, 5, {}, ORIGIN)  # noqa: E731
    assert [batch(1).faker().company() for _ in range(2)] == [batch(1).faker().company()] * 2  # for hand-made values


def test_a_generators_own_numpy_draws_do_not_move_when_faker_fields_are_filled() -> None:
    pack = get_doc_pack("ecommerce")
    users = pack.collections["users"]
    batch = lambda: Batch("users", np.random.default_rng([3, 0]), 0, 50, 50, {}, ORIGIN)  # noqa: E731
    raw, filled = users.generate(batch()), users.documents(batch())
    assert [{k: v for k, v in d.items() if k != "name"} for d in filled] == raw


def test_unknown_faker_provider_is_refused_with_the_closest_name() -> None:
    class Bad(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        id: ObjectId = Field(alias="_id")
        email: Annotated[str, Fake("emial")]

    pack = DocPack("bad", "", {"x": CollectionDef("x", Bad, 1, _people)})
    with pytest.raises(PackConfigError, match=r"x.email: Faker has no provider 'emial'; did you mean 'email'\?"):
        check_pack(pack)
    check_pack(get_doc_pack("ecommerce"))


PACK_SOURCE = """
from typing import Annotated
from bson import ObjectId
from pydantic import BaseModel, ConfigDict, Field
from task_components.datasets.mongo import Batch, CollectionDef, DocPack, IndexDef
from task_components.datasets.mongo.fake import Fake

class Team(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, populate_by_name=True)
    id: ObjectId = Field(alias="_id")
    name: Annotated[str, Fake("company")]

def teams(b: Batch) -> list[dict]:
    return [{"_id": i} for i in b.ids()]

TEAMS = DocPack("PACK_NAME", "teams", {"teams": CollectionDef("teams", Team, 20, teams, (IndexDef((("name", 1),), "name"),))})
"""


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    saved = list(sys.path)
    yield tmp_path
    sys.path[:] = saved
    for name in [m for m in sys.modules if m.startswith("my_team_pack")]:
        del sys.modules[name]


def test_a_pack_comes_from_the_users_module_or_file(user_dir: Path) -> None:
    (user_dir / "my_team_pack.py").write_text(PACK_SOURCE.replace("PACK_NAME", "teams_mod"))
    by_module = get_doc_pack("my_team_pack:TEAMS")
    assert by_module.name == "teams_mod" and list(by_module.collections) == ["teams"]
    assert get_doc_pack("my_team_pack:TEAMS") is by_module  # loaded once: the same model classes everywhere
    (user_dir / "sub").mkdir()
    (user_dir / "sub" / "pack.py").write_text(PACK_SOURCE.replace("PACK_NAME", "teams_file"))
    by_file = get_doc_pack("sub/pack.py")
    assert by_file.name == "teams_file"
    assert get_doc_pack(f"{user_dir}/sub/pack.py:TEAMS") is get_doc_pack("./sub/pack.py") is by_file


@pytest.mark.parametrize(
    ("spec", "source", "message"),
    [
        ("ecomerce", None, "unknown document pack 'ecomerce'; did you mean 'ecommerce'?"),
        ("nowhere/pack.py", None, "no such file"),
        ("no_such_module_xyz:PACK", None, "no module 'no_such_module_xyz'"),
        ("p1.py", "X = 1\n", "the module defines no DocPack"),
        ("p2.py:X", "X = 1\n", "X is a int, not a DocPack"),
        ("p3.py:Y", "X = 1\n", "the module has no 'Y'"),
        ("p4.py", "raise RuntimeError('boom')\n", "p4.py failed to import: RuntimeError: boom"),
        (
            "p5.py",
            "from task_components.datasets.mongo import IndexDef\nIndexDef((('u', 'hashed'),), 'h', unique=True)\n",
            "index 'h' (unique hashed): MongoDB refuses unique hashed",
        ),
    ],
)
def test_a_pack_that_cannot_be_loaded_says_why(user_dir: Path, spec: str, source: str | None, message: str) -> None:
    if source is not None:
        (user_dir / spec.split(":")[0]).write_text(source)
    with pytest.raises(PackConfigError) as exc:
        get_doc_pack(spec)
    assert message in str(exc.value)


def test_no_setting_connects_to_localhost_and_the_log_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("MONGODB_URI", "MONGODB__URI", "MONGODB__CONNECTION_STRING"):
        monkeypatch.delenv(var, raising=False)
    nothing = Settings.model_validate({})
    with capture_logs() as logs:
        assert seeding_uri(nothing) == DEFAULT_URI == "mongodb://localhost:27017"
    assert [(e["event"], e["uri"]) for e in logs] == [("mongo_default_connection", "mongodb://localhost:27017")]
    monkeypatch.setenv("MONGODB_URI", "mongodb://user:secret@db.example:27017")  # the seeding tool's own variable
    with capture_logs() as logs:
        assert seeding_uri(nothing) == "mongodb://user:secret@db.example:27017"
    assert logs[0]["source"] == "MONGODB_URI" and "secret" not in repr(logs)
    configured = Settings.model_validate({"mongodb": {"connection_string": "mongodb://127.0.0.1:1"}})
    with capture_logs() as logs:
        assert seeding_uri(configured) == "mongodb://127.0.0.1:1"
    assert logs == []


@pytest.mark.anyio
async def test_a_task_with_nothing_configured_opens_its_client_on_localhost(monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``mongo.seed``/``mongo.validate`` open (the client connects lazily: no server is needed)."""
    for var in ("MONGODB_URI", "MONGODB__URI", "MONGODB__CONNECTION_STRING"):
        monkeypatch.delenv(var, raising=False)
    ctx: Any = SimpleNamespace(services=SimpleNamespace(settings=Settings.model_validate({})))
    with capture_logs() as logs:
        async with seeding_database(ctx, DocPackParams(pack="ecommerce", database="shop")) as db:
            assert list(db.client.topology_description.server_descriptions()) == [("localhost", 27017)]
            assert db.name == "shop"
    assert [e["event"] for e in logs] == ["mongo_default_connection"]
