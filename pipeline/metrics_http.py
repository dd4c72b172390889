"""``/healthz`` and Prometheus ``/metrics`` over plain HTTP, on the caller's own event loop.

Shared by the daemon (pipeline/daemon/http.py) and a streaming run (``run --metrics-port``): the same
two endpoints, each with its own registry and health figures. prometheus_client's
``start_http_server`` would run a second server thread; the two endpoints are small enough to answer
from an anyio listener, so health reflects the loop really being alive (a blocked loop stops
answering, which is what a liveness probe should see).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

import anyio
from anyio.abc import SocketAttribute, SocketStream
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["HasRegistry", "serve_http"]

_REASONS = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}


class HasRegistry(Protocol):
    """What /metrics reads: the figures' own registry (never the process-wide default one)."""

    @property
    def registry(self) -> CollectorRegistry: ...


async def serve_http(
    host: str, port: int, metrics: HasRegistry, health: Callable[[], dict[str, Any]], on_bound: Callable[[int], None]
) -> None:
    """Serve until cancelled; ``on_bound`` gets the port (useful when 0 asked for any free one).

    ``health()`` answers /healthz: 200 while its ``status`` is ``ok``, else 503, its dict as JSON.
    """
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    on_bound(listener.extra(SocketAttribute.local_port))

    async def handle(client: SocketStream) -> None:
        async with client:
            try:
                with anyio.fail_after(5):
                    head = b""
                    while b"\r\n\r\n" not in head and len(head) < 8192:
                        head += await client.receive(4096)
            except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return
            parts = head.split(b"\r\n", 1)[0].split()
            path = parts[1].decode(errors="replace").split("?")[0] if len(parts) >= 2 else ""
            if path == "/metrics":
                status, ctype, body = 200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry)
            elif path == "/healthz":
                state = health()
                status = 200 if state.get("status") == "ok" else 503
                ctype, body = "application/json", json.dumps(state).encode()
            else:
                status, ctype, body = 404, "text/plain", b"not found: try /healthz or /metrics\n"
            header = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            try:
                await client.send(header + body)
            except (anyio.BrokenResourceError, OSError):
                return

    async with listener:
        await listener.serve(handle)
