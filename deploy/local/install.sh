#!/usr/bin/env bash
# Create .venv and install the project (plus test tools with --test). Idempotent and quiet.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
[ -x .venv/bin/python ] || python3 -m venv .venv
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extra" 2>&1 | grep -vE "^(WARNING: Location|$)" || true
.venv/bin/python -c "import dag_orchestrator, pipeline, pymilvus, pyarrow" || { echo "install failed" >&2; exit 1; }
# one consistent set: e.g. moto's boto3 must not pull a botocore newer than aiobotocore allows
.venv/bin/python -m pip check >/dev/null || { .venv/bin/python -m pip check >&2; echo "dependency conflict" >&2; exit 1; }
# the browser tests (report.html, the web console) need a headless Chromium and its driver; Debian's packages
if [ "${1:-}" = "--test" ] && ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1 \
            || echo "warning: could not install chromium and chromium-driver (the browser tests will fail)" >&2
    else
        echo "warning: chromium or chromedriver is missing; as root: apt-get install chromium chromium-driver" >&2
    fi
fi
# the compose specification's JSON schema (the deploy test validates deploy/docker-compose.yml with it): the
# copy shipped in docker-compose 1.29.2's wheel, fetched without its dependencies, kept in .local/
if [ "${1:-}" = "--test" ] && [ ! -s .local/compose_spec.json ]; then
    mkdir -p .local
    tmp=$(mktemp -d)
    if .venv/bin/python -m pip download -q --disable-pip-version-check --no-deps -d "$tmp" docker-compose==1.29.2 \
            >/dev/null 2>&1; then
        .venv/bin/python -c "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); \
open('.local/compose_spec.json', 'wb').write(z.read('compose/config/compose_spec.json'))" "$tmp"/docker_compose-*.whl
    else
        echo "warning: could not fetch the compose schema (the deploy test will fail)" >&2
    fi
    rm -rf "$tmp"
fi
# milvus-ingest itself, in its own venv: the interop test runs its loader on a directory we wrote
if [ "${1:-}" = "--test" ] && [ ! -x bench/.venvs/milvus-ingest/bin/milvus-ingest ]; then
    { .venv/bin/python -m venv bench/.venvs/milvus-ingest \
        && bench/.venvs/milvus-ingest/bin/pip install -q --disable-pip-version-check milvus-ingest==0.1.2; } \
        >/dev/null 2>&1 || echo "warning: could not install milvus-ingest (its interop test will skip)" >&2
fi
