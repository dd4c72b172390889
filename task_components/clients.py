"""Every client the components open, built from Settings in one place.

Kafka producers, consumers and admins, MongoDB, Milvus (server or Lite), PostgreSQL and S3 were each
built where they were used, so a connection option (SASL for managed Kafka, a Milvus database name,
an ``appname``) reached some call sites and not others. A component asks here for a client and passes
only what is its own choice (acks, a group id, a pool size) as overrides.

Heavy client libraries are imported inside the functions: a run that never talks to Kafka does not
pay for importing aiokafka.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.settings import Settings, get_settings

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient
    from asyncpg import Connection, Pool
    from pymilvus import MilvusClient
    from pymongo import AsyncMongoClient

__all__ = [
    "MilvusTarget",
    "kafka_admin",
    "kafka_consumer",
    "kafka_options",
    "kafka_producer",
    "milvus_client",
    "milvus_target",
    "milvus_token",
    "mongo_client",
    "mongo_uri",
    "pg_connect",
    "pg_pool",
    "s3_client",
]


# -- Kafka ----------------------------------------------------------------------------------------------
def kafka_options(settings: Settings) -> dict[str, Any]:
    """aiokafka connection options shared by every producer, consumer and admin client.

    ``KAFKA__API_KEY``/``API_SECRET`` (managed Kafka such as Confluent Cloud) mean SASL_SSL + PLAIN
    unless ``KAFKA__SECURITY_PROTOCOL``/``SASL_MECHANISM`` say otherwise.
    """
    k = settings.kafka
    if not k.bootstrap_servers:
        raise ValueError("KAFKA__BOOTSTRAP_SERVERS is not set (the Kafka broker to read and write)")
    protocol = k.security_protocol or ("SASL_SSL" if k.api_key else "PLAINTEXT")
    options: dict[str, Any] = {"bootstrap_servers": k.bootstrap_servers, "security_protocol": protocol}
    if protocol.startswith("SASL"):
        if k.api_key is None or k.api_secret is None:
            raise ValueError(f"KAFKA__SECURITY_PROTOCOL={protocol} needs KAFKA__API_KEY and KAFKA__API_SECRET")
        options.update(
            sasl_mechanism=k.sasl_mechanism,
            sasl_plain_username=k.api_key.get_secret_value(),
            sasl_plain_password=k.api_secret.get_secret_value(),
        )
    if protocol.endswith("SSL"):
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context()
    return options


def kafka_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """An unstarted producer; the caller starts and stops it (``async with`` works too)."""
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(**{**kafka_options(settings), **overrides})


def kafka_consumer(settings: Settings, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    """An unstarted consumer of ``topics`` (none: the caller subscribes or assigns itself)."""
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(*topics, **{**kafka_options(settings), **overrides})


def kafka_admin(settings: Settings, **overrides: Any) -> AIOKafkaAdminClient:
    from aiokafka.admin import AIOKafkaAdminClient

    return AIOKafkaAdminClient(**{**kafka_options(settings), **overrides})


# -- MongoDB --------------------------------------------------------------------------------------------
def mongo_uri(settings: Settings) -> str:
    uri = settings.mongodb.connection_string
    if uri is None:
        raise ValueError("MONGODB__CONNECTION_STRING (or MONGODB__URI) is not set (the MongoDB to write)")
    return uri.get_secret_value()


def mongo_client(settings: Settings | str, **overrides: Any) -> AsyncMongoClient[dict[str, Any]]:
    """PyMongo's async client for the configured MongoDB (or an explicit URI), named in the server's logs."""
    from pymongo import AsyncMongoClient

    uri = settings if isinstance(settings, str) else mongo_uri(settings)
    options: dict[str, Any] = {"appname": "dag-pipeline", **overrides}
    return AsyncMongoClient(uri, **options)


# -- Milvus ---------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MilvusTarget:
    """Where a collection lives. ``token`` is held in memory only: results record the target without it
    (``contracts.CollectionInfo``) and a reader gets it back from the settings (``milvus_token``)."""

    uri: str
    token: str | None = field(repr=False)
    db_name: str
    lite: bool

    def client(self) -> Any:
        return milvus_client(self)

    def public(self) -> dict[str, Any]:
        """What may be written to disk: everything but the token."""
        return {"uri": self.uri, "db_name": self.db_name, "lite": self.lite}


def milvus_token(uri: str, settings: Settings | None = None) -> str | None:
    """The configured token, for the configured server only: a token is never sent to another URI."""
    m = (settings or get_settings()).milvus
    if m.token is None or (m.uri and m.uri != uri) or uri.endswith(".db"):
        return None
    return m.token.get_secret_value()


def milvus_target(settings: Settings, run_dir: Path | None, uri: str | None = None) -> MilvusTarget:
    """The Milvus a run talks to: ``uri`` if given, else ``MILVUS__URI``, else Milvus Lite in the run directory."""
    m = settings.milvus
    uri = uri or m.uri
    if uri:
        return MilvusTarget(uri, milvus_token(uri, settings), m.db_name, lite=uri.endswith(".db"))
    if run_dir is None:
        raise ValueError("MILVUS__URI is not set and the run has no run directory for Milvus Lite")
    return MilvusTarget(str(Path(run_dir).resolve() / "milvus.db"), None, "default", lite=True)


def milvus_client(target: MilvusTarget, **overrides: Any) -> MilvusClient:
    """A client of ``target``; for Milvus Lite one that serializes writes (``lite_client``)."""
    from pymilvus import MilvusClient

    kwargs: dict[str, Any] = {"uri": target.uri}
    if target.token:
        kwargs["token"] = target.token
    if target.lite:
        from task_components.lite_client import LiteClient  # Lite corrupts its WAL under concurrent writes

        return LiteClient(**kwargs, **overrides)
    if target.db_name and target.db_name != "default":
        kwargs["db_name"] = target.db_name
    return MilvusClient(**kwargs, **overrides)


# -- PostgreSQL -----------------------------------------------------------------------------------------
async def pg_connect(dsn: str, **overrides: Any) -> Connection:
    import asyncpg

    return await asyncpg.connect(dsn, **overrides)


async def pg_pool(dsn: str, **overrides: Any) -> Pool:
    import asyncpg

    return await asyncpg.create_pool(dsn, **overrides)


# -- S3 -------------------------------------------------------------------------------------------------
def s3_client(settings: Settings | None = None, *, max_pool_connections: int = 10, **overrides: Any) -> Any:
    """An aiobotocore S3 client context (``async with s3_client(...) as c``) for the configured endpoint.

    Path-style addressing (MinIO and most S3-compatibles), botocore's standard retries, and checksums
    only where required (S3-compatibles reject the newer default trailing checksums). ``overrides``
    replace the settings' values (``endpoint_url``, ``aws_access_key_id``...).
    """
    from botocore.config import Config

    args: dict[str, Any] = {}
    if settings is not None:
        s3 = settings.s3
        args = {
            "endpoint_url": s3.endpoint_url,
            "aws_access_key_id": s3.access_key.get_secret_value() if s3.access_key else None,
            "aws_secret_access_key": s3.secret_key.get_secret_value() if s3.secret_key else None,
            "region_name": s3.region,
            "verify": s3.verify_ssl,
        }
    args["config"] = Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 6, "mode": "standard"},
        max_pool_connections=max_pool_connections,
    )
    args.update(overrides)
    return _aio_session().create_client("s3", **args)


_sessions = threading.local()


def _aio_session() -> Any:
    """One aiobotocore session per thread: a new one parses botocore's S3 service model again (0.1-0.3 s),
    which a worker making a client per file paid per file; per thread because botocore sessions are not
    thread-safe (a Dask worker with several threads, the local backend's thread mode)."""
    session = getattr(_sessions, "session", None)
    if session is None:
        from aiobotocore.session import get_session

        session = _sessions.session = get_session()
    return session
