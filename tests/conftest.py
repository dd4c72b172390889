from __future__ import annotations

import os

import pytest

from config.settings import Settings

# The services' env file (deploy/local/services.sh) exports the program's own settings beside the tests'
# TEST_* variables, so that a user who sources it runs the program on these services. The tests choose
# their settings themselves (embedded defaults unless a test says otherwise): the program's variables are
# dropped here, before any test or child process can read them.
SETTINGS_SECTIONS = tuple(f"{name.upper()}__" for name in Settings.model_fields)
for _name in [n for n in os.environ if n.upper().startswith(SETTINGS_SECTIONS)]:
    del os.environ[_name]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
