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

from pydantic import BaseModel, Field, SecretStr, field_validator
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
    bootstrap_servers: str | None = None
    request_topic: str = "pipeline-requests"
    status_topic: str = "pipeline-status"
    dead_letter_topic: str = "pipeline-requests-dlq"


class MongoSettings(BaseModel):
    uri: SecretStr | None = None
    database: str = "pipeline"


class PipelineSettings(BaseModel):
    run_dir: Path = Path("runs")
    max_concurrency: int = Field(8, ge=1)
    backend: Literal["local", "dask"] = "local"
    workers: int | None = Field(None, ge=1, description="worker processes for CPU work; unset = CPU count")


class LoggingSettings(BaseModel):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "json", "text"] = "auto"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_nested_delimiter="__", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    milvus: MilvusSettings = MilvusSettings()
    s3: S3Settings = S3Settings()
    postgres: PostgresSettings = PostgresSettings()
    kafka: KafkaSettings = KafkaSettings()
    mongodb: MongoSettings = MongoSettings()
    pipeline: PipelineSettings = PipelineSettings()
    logging: LoggingSettings = LoggingSettings()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
