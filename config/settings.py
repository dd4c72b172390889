"""Typed settings for every service the pipelines talk to.

Everything is optional: with nothing configured the embedded defaults apply (Milvus Lite file,
embedded PostgreSQL, a local directory as object store) so the quickstart needs no server. Secrets are
``SecretStr`` so they print as ``**********`` in logs, reports and ``repr``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
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
    pool_min: int = 2
    pool_max: int = 20


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
