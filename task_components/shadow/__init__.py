"""PostgreSQL shadow of a collection: COPY sync task, mirrored client, key tracker, filter conversion."""

from task_components.shadow.sync import ShadowSync

COMPONENTS = [ShadowSync]

__all__ = ["COMPONENTS", "ShadowSync"]
