"""MILVUS__TOKEN goes to MILVUS__URI only: ``sink.milvus`` and ``shadow compare`` resolve their Milvus the
way ``clients.milvus_target`` does, so a `uri` naming another server never receives the configured token."""

from __future__ import annotations

import pytest
import typer

from config.settings import Settings
from pipeline.shadow_cli import milvus_target_of
from task_components.sinks.milvus import MilvusSink, MilvusSinkParams

SERVER, OTHER = "http://milvus.example:19530", "http://elsewhere.example:19530"


def _settings(**milvus: object) -> Settings:
    return Settings.model_validate({"milvus": milvus})


def _sink(uri: str | None) -> MilvusSink:
    return MilvusSink(MilvusSinkParams(collection="c", key="id", uri=uri))


def test_a_milvus_sink_sends_the_token_to_the_configured_server_only() -> None:
    settings = _settings(uri=SERVER, token="root:s3cret", db_name="analytics")
    assert _sink(OTHER).target(settings).token is None
    assert _sink(None).target(settings).token == "root:s3cret"
    assert _sink(SERVER).target(settings).token == "root:s3cret"
    assert _sink(None).target(settings).db_name == "analytics"
    assert _sink("/tmp/x/milvus.db").target(settings).token is None  # Milvus Lite: a file, no server
    with pytest.raises(ValueError, match=r"MILVUS__URI is not set and sink\.milvus has no `uri`"):
        _sink(None).target(_settings(token="t"))


def test_shadow_compare_sends_the_token_to_the_configured_server_only() -> None:
    settings = _settings(uri=SERVER, token="root:s3cret")
    assert milvus_target_of(settings, OTHER, None, None).token is None
    assert milvus_target_of(settings, None, None, None).token == "root:s3cret"
    assert milvus_target_of(settings, OTHER, "mine", None).token == "mine"  # --token: the user's own choice
    assert milvus_target_of(settings, None, "", "analytics").token is None  # --token "": none at all
    assert milvus_target_of(settings, None, None, "analytics").db_name == "analytics"
    with pytest.raises(typer.Exit):  # exit 2, one line: no Milvus named anywhere
        milvus_target_of(_settings(), None, None, None)
