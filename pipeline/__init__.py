"""Turning pipeline specs (YAML files) into runs: spec model, registry, runner, CLI."""
