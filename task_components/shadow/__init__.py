"""PostgreSQL shadow of a collection: type mapping, COPY sync task (verification reads it)."""

from task_components.shadow.sync import ShadowResult, ShadowSync, arrow_records, shadow_dsn

COMPONENTS = [ShadowSync]

__all__ = ["COMPONENTS", "ShadowResult", "ShadowSync", "arrow_records", "shadow_dsn"]
