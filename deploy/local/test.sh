#!/usr/bin/env bash
# README command 2: install, start the real local services, run lint, the type checker, the import
# contracts (layers, components independent, no circles) and the whole test suite, stop.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
bash deploy/local/install.sh --test
trap 'bash deploy/local/services.sh stop' EXIT
env_file=$(bash deploy/local/services.sh start)
# shellcheck disable=SC1090
source "$env_file"
export REQUIRE_SERVICES=1
.venv/bin/ruff check .
.venv/bin/ruff format --check .  # the formatter's style, no overrides (ruff pinned: styles move between releases)
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/python -m pytest --durations=30 "$@"  # the slowest 30 listed: what to gate when CI grows
