"""clients.py: where a Milvus target and its token come from, and that a recorded target holds no token."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

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
    sasl = kafka_options(
        Settings.model_validate({"kafka": {"bootstrap_servers": "b:9092", "api_key": "k", "api_secret": "s"}})
    )
    assert sasl["security_protocol"] == "SASL_SSL" and sasl["sasl_plain_username"] == "k"
