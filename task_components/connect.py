"""How components reach the stores they share: Milvus (server or Lite) and the shadow PostgreSQL.

Several components talk to the same store (create, import and verify to Milvus; shadow and verify to
PostgreSQL), so where a store is lives here, beside the contracts, not in one component's task module.
With nothing configured the embedded defaults apply: Milvus Lite and a PostgreSQL in the run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio

from config.settings import Settings
from task_components.contracts import MilvusTarget

__all__ = ["count_rows", "embedded_dsn", "kafka_options", "mongo_uri", "shadow_dsn", "target_for"]

_embedded: dict[str, Any] = {}


def target_for(settings: Settings, run_dir: Path | None) -> MilvusTarget:
    m = settings.milvus
    token = m.token.get_secret_value() if m.token else None
    if m.uri:
        return MilvusTarget(m.uri, token, m.db_name, lite=m.uri.endswith(".db"))
    if run_dir is None:
        raise ValueError("MILVUS__URI is not set and the run has no run directory for Milvus Lite")
    return MilvusTarget(str(Path(run_dir).resolve() / "milvus.db"), None, "default", lite=True)


def count_rows(client: Any, collection: str) -> int:
    reply = client.query(collection, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return int(reply[0]["count(*)"])


def embedded_dsn(run_dir: Path) -> str:
    """Start (once per process) a PostgreSQL in ``<run dir>/postgres``; it stops when the process exits."""
    key = str(run_dir.resolve())
    if key not in _embedded:
        import pgserver

        base = run_dir.resolve() / "postgres"
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o755)  # pgserver runs PostgreSQL as its own OS user, which must traverse this
        # the data directory itself belongs to pgserver: PostgreSQL refuses one that is not 0700/0750
        _embedded[key] = pgserver.get_server(str(base / "data"), cleanup_mode="stop")
    return str(_embedded[key].get_uri())


async def shadow_dsn(settings: Settings, run_dir: Path | None) -> tuple[str, bool]:
    if settings.postgres.dsn is not None:
        return settings.postgres.dsn.get_secret_value(), False
    if run_dir is None:
        raise ValueError("POSTGRES__DSN is not set and the run has no run directory for an embedded PostgreSQL")
    return await anyio.to_thread.run_sync(embedded_dsn, Path(run_dir)), True


def kafka_options(settings: Settings) -> dict[str, Any]:
    """aiokafka connection options shared by the source, the sinks and the test-data producer.

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


def mongo_uri(settings: Settings) -> str:
    uri = settings.mongodb.connection_string
    if uri is None:
        raise ValueError("MONGODB__CONNECTION_STRING (or MONGODB__URI) is not set (the MongoDB to write)")
    return uri.get_secret_value()
