"""A stop during a ledger outage, against the running broker and PostgreSQL (through a proxy that cuts it off):
the daemon acts on the stop at once instead of sleeping out its backoff and trying each remaining message."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.integration.conftest import service_uri
from tests.integration.daemon_helpers import DaemonEnv, committed_and_end, create_topics, produce, wait_for
from tests.integration.faults import CuttableProxy

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[DaemonEnv, CuttableProxy]]:
    dsn = urlsplit(service_uri("TEST_POSTGRES_DSN"))
    proxy = CuttableProxy(dsn.hostname or "127.0.0.1", dsn.port or 5432)
    user = dsn.netloc.rsplit("@", 1)[0] + "@" if "@" in dsn.netloc else ""
    netloc = f"{user}127.0.0.1:{proxy.port}"
    env = DaemonEnv(service_uri("TEST_KAFKA_BOOTSTRAP"), urlunsplit(dsn._replace(netloc=netloc)), tmp_path)
    create_topics(env)
    try:
        yield env, proxy
    finally:
        env.stop_all()
        proxy.close()


def test_a_stop_during_a_ledger_outage_backoff_is_acted_on_at_once(proxied: tuple[DaemonEnv, CuttableProxy]) -> None:
    """Before: the backoff (8 s by its fifth try, up to 30 s) was slept out after SIGTERM, and each remaining
    message of the fetched batch made one more ledger try."""
    env, proxy = proxied
    daemon = env.start("d1")
    wait_for("daemon up", lambda: "daemon started" in env.log("d1"), 60)
    threading.Thread(target=proxy.outage, args=(120,), daemon=True).start()  # the ledger is gone from now on
    wait_for("the outage cut", lambda: proxy.cut.is_set(), 5, every=0.05)
    at = produce(env, [(b"k", json.dumps({"request_id": f"q{i}", "pipeline": "demo"}).encode()) for i in range(3)])
    fifth = re.compile(r'"what": "ledger: accept q0".*"attempt": 5|"attempt": 5.*"what": "ledger: accept q0"')
    wait_for("backing off after the fifth try", lambda: fifth.search(env.log("d1")), 60, every=0.05)
    signalled = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0, env.log("d1")[-2000:]
    took = time.monotonic() - signalled
    assert took < 5, f"the stop waited {took:.1f} s for the backoff"
    log = env.log("d1")
    assert "ledger: accept q1" not in log and "ledger: accept q2" not in log, "the rest of the batch was tried"
    committed, _ = committed_and_end(env)
    assert committed.get(at[0][0], 0) <= at[0][1], "an offset passed a request the ledger never recorded"
