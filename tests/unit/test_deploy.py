"""The real-deployment files, checked without Docker: the compose file against the compose specification's
JSON schema, pinned images, health checks everywhere, and an .env.example that names every setting; the
local (Docker-less) Milvus picks free ports for everything it listens on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
SCHEMA = ROOT / ".local" / "compose_spec.json"  # fetched by deploy/local/install.sh --test


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_file_validates_against_the_compose_specification() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    if not SCHEMA.is_file():
        message = f"{SCHEMA} is missing: run deploy/local/install.sh --test"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    schema = json.loads(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft201909Validator(schema).iter_errors(_compose()), key=lambda e: list(e.path))
    assert not errors, "; ".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors[:5])


def test_compose_rejects_what_the_schema_forbids() -> None:
    """The validation can fail: an unknown service key is reported (so a passing check means something)."""
    jsonschema = pytest.importorskip("jsonschema")
    if not SCHEMA.is_file():
        pytest.skip(f"{SCHEMA} is missing")
    broken = _compose()
    broken["services"]["postgres"]["healthcheck"]["tests"] = ["CMD", "true"]
    assert list(jsonschema.Draft201909Validator(json.loads(SCHEMA.read_text())).iter_errors(broken))


def test_every_image_is_pinned_and_every_service_has_a_health_check() -> None:
    services = _compose()["services"]
    expected = {"etcd", "minio", "milvus", "postgres", "kafka", "mongo", "dask-scheduler", "dask-worker-1", "dask-worker-2", "engine"}
    assert set(services) == expected
    for name, svc in services.items():
        image = svc.get("image", "")
        tag = image.rsplit(":", 1)[-1] if ":" in image else ""
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{name}: image {image!r} is not pinned"
        test = (svc.get("healthcheck") or {}).get("test")
        assert test, f"{name}: no health check"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond == {"condition": "service_healthy"}, f"{name} -> {dep}: does not wait for health"


def test_dockerfile_is_pinned_and_runs_as_a_non_root_user() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert bases and all(re.search(r":\d", b) for b in bases), bases
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")


def test_env_example_names_every_setting() -> None:
    text = (ROOT / "deploy" / ".env.example").read_text()
    missing = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for key in model.model_fields:
            if f"{section.upper()}__{key.upper()}=" not in text:
                missing.append(f"{section.upper()}__{key.upper()}")
    assert not missing, f".env.example lacks {missing}"


def _milvus_wrapper() -> Any:
    spec = importlib.util.spec_from_file_location("milvus_server", ROOT / "deploy" / "local" / "milvus_server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # imports no milvus: that happens in main()
    return module


def test_local_milvus_ports_are_free_and_distinct_never_the_fixed_etcd_ones() -> None:
    """Two checkouts' Milvus (two SERVICES_DIRs) run at once: etcd and health ports are chosen free."""
    wrapper = _milvus_wrapper()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))  # a port in use elsewhere is never offered
    try:
        ports = wrapper.free_ports(3)
        assert len(set(ports)) == 3 and taken.getsockname()[1] not in ports
        for port in ports:  # each is bindable now
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
    finally:
        taken.close()


def test_local_milvus_embedded_etcd_listens_where_it_is_told_on_loopback() -> None:
    config = yaml.safe_load(_milvus_wrapper().etcd_config(41001, 41002))
    assert config["listen-client-urls"] == config["advertise-client-urls"] == "http://127.0.0.1:41001"
    assert config["listen-peer-urls"] == config["initial-advertise-peer-urls"] == "http://127.0.0.1:41002"
    assert config["initial-cluster"] == f"{config['name']}=http://127.0.0.1:41002"
    text = (ROOT / "deploy" / "local" / "milvus_server.py").read_text()
    assert 'os.environ["ETCD_CONFIG_PATH"]' in text and "etcd_port=etcd_client" in text  # the file is used
