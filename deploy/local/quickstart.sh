#!/usr/bin/env bash
# README command 1: install, then run the quickstart pipeline on embedded defaults (no servers).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
bash deploy/local/install.sh
exec .venv/bin/python run_pipeline.py run pipelines/quickstart.yaml "$@"
