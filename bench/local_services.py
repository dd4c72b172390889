"""The services a benchmark needs: the TEST_* URIs when set (services already running), else started
here with deploy/local/services.sh (and stopped again by ``stop``), so a benchmark runs on its own.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def services(names: str, needed: list[str]) -> tuple[dict[str, str], bool]:
    """(environment with the ``needed`` TEST_* variables, whether this call started the services)."""
    if all(os.environ.get(var) for var in needed):
        return dict(os.environ), False
    started = subprocess.run(
        ["bash", "deploy/local/services.sh", "start"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "SERVICES": names},
    )
    env = dict(os.environ)
    for line in Path(started.stdout.strip()).read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    return env, True


def stop(names: str) -> None:
    subprocess.run(["bash", "deploy/local/services.sh", "stop"], cwd=ROOT, check=False, env={**os.environ, "SERVICES": names})
