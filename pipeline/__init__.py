"""Turning pipeline specs (YAML files) into runs: spec model, registry, runner, CLI."""

import dag_orchestrator  # noqa: F401  (first: it sets gRPC's fork mode before pymilvus can load)
