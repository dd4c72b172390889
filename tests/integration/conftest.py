"""Integration tests use the real services started by deploy/local/services.sh.

Their URIs come from the environment (the script writes them to services.env). Without them a test
is skipped, unless REQUIRE_SERVICES=1 (set by the README's test command and CI): then a missing
service is a failure, so CI can never pass by skipping.
"""

from __future__ import annotations

import os

import pytest


def service_uri(var: str) -> str:
    value = os.environ.get(var)
    if value:
        return value
    message = f"{var} is not set: start the services with deploy/local/services.sh start"
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)
