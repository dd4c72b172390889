"""Outages for fault tests: a TCP proxy that can cut a service off, and a real PostgreSQL restart.

The proxy sits between the pipeline and a real server (the data stays on the server, so an outage
loses nothing but connections). While cut, it accepts and immediately resets every connection, so
clients see the errors a crashed or restarting server gives, and it counts them: a test can prove the
outage really hit the run instead of falling between two requests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class CuttableProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.cut = threading.Event()
        self.refused = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.cut.is_set():
                self.refused += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()  # RST: what a client sees from a dead server
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_RDWR)  # wakes the other direction's recv
            except OSError:
                pass
            src.close()

    def outage(self, seconds: float) -> None:
        """Cut every open connection and refuse new ones for ``seconds``."""
        self.cut.set()
        self._drop_all()
        time.sleep(seconds)
        self.cut.clear()

    def _drop_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)  # the pipe threads then close their sockets
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self.server.close()
        self._drop_all()
        time.sleep(0.3)  # let the pipe threads close their sockets


def restart_postgres(seconds: float) -> None:
    """Stop the local test PostgreSQL, keep it down ``seconds``, start it again (data kept)."""
    env = {**os.environ, "SERVICES_DIR": os.environ["TEST_SERVICES_DIR"]}
    subprocess.run(
        ["bash", str(ROOT / "deploy" / "local" / "postgres.sh"), "restart", str(seconds)],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
