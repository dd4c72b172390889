"""Reusable tasks, one package per concern; each package lists its tasks in ``COMPONENTS``."""

import dag_orchestrator  # noqa: F401  (first: it sets gRPC's fork mode before pymilvus can load)
