"""Typed settings for every service the pipelines talk to.

Everything is optional: with nothing configured the embedded defaults apply (Milvus Lite file,
embedded PostgreSQL, a local directory as object store) so the quickstart needs no server. Secrets are
``SecretStr`` so they print as ``**********`` in logs, reports and ``repr``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class MilvusSettings(BaseModel):
    uri: str | None = Field(None, description="Milvus server URI; unset = Milvus Lite file in the run dir")
    token: SecretStr | None = None
    db_name: str = "default"


class S3Settings(BaseModel):
    endpoint_url: str | None = Field(None, description="S3 endpoint; unset = local directory object store")
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    bucket: str = "vector-pipeline"
    region: str = "us-east-1"
    prefix: str = "runs"
    verify_ssl: bool = Field(True, description="false: accept any TLS certificate (self-signed MinIO)")


class PostgresSettings(BaseModel):
    dsn: SecretStr | None = Field(None, description="PostgreSQL DSN; unset = embedded PostgreSQL")

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, v: SecretStr | None) -> SecretStr | None:
        """A malformed DSN is a configuration error (exit 2 before anything runs), not a task failure."""
        if v is None:
            return v
        parts = urlsplit(v.get_secret_value())
        if parts.scheme not in ("postgresql", "postgres") or not (parts.hostname or "host=" in parts.query):
            raise ValueError("must be a URL like postgresql://user:password@host:5432/database")
        try:
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError:
            raise ValueError("has a port that is not a number") from None
        return v


class KafkaSettings(BaseModel):
    """The broker, the streaming topics and, for managed Kafka (e.g. Confluent Cloud), SASL credentials.

    ``api_key``/``api_secret`` are the managed-Kafka names for the SASL username/password; setting them
    switches the default security protocol to SASL_SSL with PLAIN, as those services expect.
    """

    bootstrap_servers: str | None = None
    topic_source: str = "records-in"
    topic_sink: str = "records-out"
    dead_letter_topic: str = "records-dlq"
    consumer_group: str = "dag-pipeline-streaming"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    api_key: SecretStr | None = None
    api_secret: SecretStr | None = None
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = Field(
        None, description="unset: PLAINTEXT, or SASL_SSL when api_key is set"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    request_topic: str = "pipeline-requests"
    status_topic: str = "pipeline-status"


class MongoSettings(BaseModel):
    """Where the streaming MongoDB sink writes; ``MONGODB__URI`` is kept as an alias of the connection string."""

    model_config = ConfigDict(populate_by_name=True)

    connection_string: SecretStr | None = Field(None, validation_alias=AliasChoices("connection_string", "uri", "CONNECTION_STRING", "URI"))
    database: str = "pipeline"
    collection: str = "records"

    @property
    def uri(self) -> SecretStr | None:
        return self.connection_string


class PipelineSettings(BaseModel):
    run_dir: Path = Path("runs")
    max_concurrency: int = Field(8, ge=1)
    backend: Literal["local", "dask"] = "local"
    scheduler: str | None = Field(None, description="Dask scheduler address (tcp://host:8786); unset: a LocalCluster")
    workers: int | None = Field(None, ge=1, description="worker processes for CPU work; unset = CPU count")
    batch_size: int = Field(100, ge=1, description="streaming: records per batch")
    max_workers: int = Field(10, ge=1, description="streaming: batches in flight at once")
    retry_count: int = Field(3, ge=0, description="streaming: sink retries before the circuit breaker opens")
    retry_delay_seconds: float = Field(5.0, ge=0, description="streaming: first retry delay, doubling")


# Inline-spec components that write only inside the run directory (their path parameters are checked too)
SAFE_INLINE_COMPONENTS = ("demo.count", "demo.sum", "demo.sleep", "demo.fail", "generate", "partition", "standardize", "quality.check")
# The largest value a request may give a size or count (COMPONENT.FIELD): a request cannot fill the disk or memory
DEFAULT_PARAM_BOUNDS = {
    "demo.sleep.seconds": 3_600.0,
    "demo.count.delay": 60.0,
    "demo.count.total": 10_000_000.0,
    "generate.total_rows": 10_000_000.0,
    "generate.chunk_rows": 1_000_000.0,
    "partition.writer_threads": 16.0,
    "testdata.produce.total": 10_000_000.0,
    "mongo.seed.scale": 10.0,
    "mongo.seed.count": 10_000_000.0,
}


class DaemonSettings(BaseModel):
    """``run_pipeline.py daemon``: where requests come from, how many run at once, the ledger, the HTTP port.

    The request and status topics are ``KAFKA__REQUEST_TOPIC``/``KAFKA__STATUS_TOPIC``. The ledger (one
    row per request_id: what makes each request's effect happen once) is PostgreSQL at ``DAEMON__LEDGER_DSN``,
    else ``POSTGRES__DSN``, else an embedded PostgreSQL under the run directory; ``DAEMON__LEDGER=mongodb``
    keeps it in MongoDB instead (``MONGODB__CONNECTION_STRING``, ``MONGODB__DATABASE``, collection named
    like the table). The trust settings below say what a writer of the request topic may make the daemon do
    (pipeline/daemon/policy.py); the defaults trust it with named pipelines and nothing that writes elsewhere.
    """

    pipelines_dir: Path = Field(Path("pipelines"), description="where request pipeline names are looked up")
    consumer_group: str = "dag-pipeline-daemon"
    dead_letter_topic: str = "pipeline-requests-dlq"
    max_runs: int = Field(2, ge=1, description="pipeline runs at once")
    prefetch: int = Field(16, ge=1, description="requests read ahead of the running ones (for priority order)")
    max_request_bytes: int = Field(1_048_576, ge=256, description="larger request messages are dead-lettered")
    grace_seconds: float = Field(30.0, ge=0, description="on SIGTERM, how long running pipelines may finish")
    lease_seconds: float = Field(15.0, gt=0, description="an unrenewed run is taken over after this")
    ledger: Literal["postgres", "mongodb"] = "postgres"
    ledger_dsn: SecretStr | None = Field(None, description="ledger PostgreSQL; default POSTGRES__DSN/embedded")
    ledger_table: str = Field("pipeline_requests", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    http_host: str = "127.0.0.1"
    http_port: int = Field(9108, ge=0, le=65535, description="/healthz and /metrics; 0 picks a free port")
    session_timeout_ms: int = Field(10_000, ge=1000)
    heartbeat_interval_ms: int = Field(3_000, ge=100)
    # trust: what a writer of the request topic may make the daemon do (pipeline/daemon/policy.py)
    inline_specs: bool = Field(False, description="accept requests that carry their own pipeline spec")
    inline_components: list[str] = Field(
        default_factory=lambda: list(SAFE_INLINE_COMPONENTS),
        description="components an inline spec may use (default: none writing outside the run dir or to topics)",
    )
    path_roots: list[Path] = Field(default_factory=list, description="directories a request's runs may write besides their run dir")
    read_roots: list[Path] = Field(
        default_factory=list,
        description="directories a request's runs may only read (besides the write roots and the pipelines dir)",
    )
    topic_prefixes: list[str] = Field(
        default_factory=list,
        description="prefixes (exact, or followed by . - _) a request's topics, groups and reply_topic must have",
    )
    name_prefixes: list[str] = Field(
        default_factory=list,
        description="prefixes a database/collection/table a request chooses must have (default: only the pipeline file's own)",
    )
    max_run_seconds: float = Field(
        21_600.0, gt=0, description="every request ends (failed) this long after its first start, resumes included"
    )
    max_attempts: int = Field(3, ge=1, description="claims of one request (crashes, resumes); past it: failed")
    signature_max_age_seconds: float = Field(300.0, gt=0, description="older signed requests are refused")
    param_bounds: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_PARAM_BOUNDS),
        description="COMPONENT.FIELD -> largest value a request may give it",
    )
    signing_secret: SecretStr | None = Field(
        None, description="set: requests must carry x-signed-at and x-signature (HMAC-SHA256 of both, see policy.py)"
    )

    @field_validator("param_bounds")
    @classmethod
    def _bounds(cls, v: dict[str, float]) -> dict[str, float]:
        for key in v:
            if key.count(".") < 1:
                raise ValueError(f"key {key!r} must be COMPONENT.FIELD, e.g. demo.sleep.seconds")
        return v


class TestDataSettings(BaseModel):
    """Defaults of ``produce-test-data`` (the streaming seed tool's TEST_DATA__* variables); flags win."""

    rate: float = Field(10.0, ge=0, description="records per second (0: as fast as possible)")
    pattern: Literal["valid", "invalid", "mixed"] = "mixed"
    total_records: int | None = Field(None, ge=0, description="unset or 0: unlimited (until SIGTERM)")
    invalid_ratio: float = Field(0.1, ge=0, le=1)


class ServeSettings(BaseModel):
    """``run-pipeline serve``: the web console."""

    host: str = Field("127.0.0.1", description="bind address; a non-loopback one needs SERVE__TOKEN")
    port: int = Field(8765, ge=0, le=65535, description="0 picks a free port")
    token: SecretStr | None = Field(None, description="needed by writing actions (submit, cancel); never logged")

    @field_validator("token")
    @classmethod
    def _set_or_not(cls, token: SecretStr | None) -> SecretStr | None:
        """An empty token is no token (writes stay off), and a short one is refused: it is all that guards them."""
        if token is None or not token.get_secret_value():
            return None
        if len(token.get_secret_value()) < 8:
            raise ValueError("SERVE__TOKEN must be at least 8 characters (e.g. openssl rand -hex 16)")
        return token


class LoggingSettings(BaseModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "text"] = "auto"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_nested_delimiter="__", env_file=".env", env_file_encoding="utf-8", extra="ignore")

    milvus: MilvusSettings = MilvusSettings()
    s3: S3Settings = S3Settings()
    postgres: PostgresSettings = PostgresSettings()
    kafka: KafkaSettings = KafkaSettings()
    mongodb: MongoSettings = MongoSettings()
    pipeline: PipelineSettings = PipelineSettings()
    daemon: DaemonSettings = DaemonSettings()
    test_data: TestDataSettings = TestDataSettings()
    serve: ServeSettings = ServeSettings()
    logging: LoggingSettings = LoggingSettings()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
