"""clients.py: where a Milvus target and its token come from, and that a recorded target holds no token."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from pydantic import BaseModel

from config.settings import Settings
from task_components.clients import kafka_options, milvus_target, milvus_token, mongo_uri
from task_components.contracts import CollectionInfo
from task_components.schema.library import resolve_schema

SERVER = "http://milvus.example:19530"


def _settings(**milvus: object) -> Settings:
    return Settings.model_validate({"milvus": milvus})


def test_a_recorded_target_drops_the_token_and_reads_it_back_from_the_settings() -> None:
    settings = _settings(uri=SERVER, token="root:s3cret", db_name="analytics")
    target = milvus_target(settings, None)
    assert (target.uri, target.token, target.db_name, target.lite) == (SERVER, "root:s3cret", "analytics", False)
    assert "s3cret" not in repr(target)
    info = CollectionInfo(
        name="c",
        target={**target.public(), "token": "root:s3cret"},
        collection_schema=resolve_schema("simple"),
        indexes={},
    )
    assert "token" not in info.target and b"s3cret" not in pickle.dumps(info)
    assert "s3cret" not in info.model_dump_json()
    assert info.milvus(settings).token == "root:s3cret"  # the same server: its token
    assert info.milvus(_settings(uri="http://elsewhere:19530", token="root:s3cret")).token is None
    assert info.milvus(_settings(uri=SERVER)).token is None


def test_a_token_goes_to_the_configured_server_only(tmp_path: Path) -> None:
    settings = _settings(uri=SERVER, token="t")
    assert milvus_token(SERVER, settings) == "t" and milvus_token("http://other:19530", settings) is None
    assert milvus_target(settings, None, uri="http://other:19530").token is None
    lite = milvus_target(_settings(token="t"), tmp_path)
    assert lite.lite and lite.token is None and lite.uri == str(tmp_path.resolve() / "milvus.db")
    with pytest.raises(ValueError, match="MILVUS__URI is not set"):
        milvus_target(Settings(), None)


def test_connection_settings_missing_are_named() -> None:
    with pytest.raises(ValueError, match="KAFKA__BOOTSTRAP_SERVERS"):
        kafka_options(Settings())
    with pytest.raises(ValueError, match="MONGODB__CONNECTION_STRING"):
        mongo_uri(Settings())
    sasl = kafka_options(Settings.model_validate({"kafka": {"bootstrap_servers": "b:9092", "api_key": "k", "api_secret": "s"}}))
    assert sasl["security_protocol"] == "SASL_SSL" and sasl["sasl_plain_username"] == "k"


def _with_token(settings: Settings) -> CollectionInfo:
    """A CollectionInfo holding the token, as results were pickled before it was dropped (no validation)."""
    target = {**milvus_target(settings, None).public(), "token": "root:s3cret"}
    schema = resolve_schema("simple")
    return CollectionInfo.model_construct(name="c", target=target, collection_schema=schema, indexes={})


def test_a_result_pickled_with_the_token_loses_it_when_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(uri=SERVER, token="root:s3cret")
    with monkeypatch.context() as old_code:  # pickled as the code before the fix did: the token on disk
        old_code.setattr(CollectionInfo, "__getstate__", BaseModel.__getstate__)
        old_code.setattr(CollectionInfo, "__setstate__", BaseModel.__setstate__)
        on_disk = pickle.dumps(_with_token(settings))
    assert b"s3cret" in on_disk
    loaded = pickle.loads(on_disk)
    assert "token" not in loaded.target and loaded.target["uri"] == SERVER
    assert b"s3cret" not in pickle.dumps(loaded)
    assert loaded.milvus(settings).token == "root:s3cret"  # still reachable: read back from the settings


def test_an_unvalidated_result_is_pickled_without_the_token() -> None:
    info = _with_token(_settings(uri=SERVER, token="root:s3cret"))
    assert "token" in info.target  # model_construct runs no validator
    assert b"s3cret" not in pickle.dumps(info) and "s3cret" not in info.model_dump_json()
    assert info.target["token"] == "root:s3cret"  # pickling does not change the object itself
