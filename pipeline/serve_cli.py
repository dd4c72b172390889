"""``run-pipeline serve``: the web console on 127.0.0.1 (see pipeline/serve/)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli_common import RunDirOpt, app, fail_invalid, load_settings

__all__ = ["serve"]


def _loopback(host: str) -> bool:
    """Only addresses this machine alone reaches; a name is resolved (``localhost``), every address must be."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address [default: SERVE__HOST, 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(min=0, max=65535, help="[default: SERVE__PORT, 8765; 0: any free port]")] = None,
    run_dir: RunDirOpt = None,
    pipelines_dir: Annotated[
        Path | None, typer.Option(help="pipelines the submit form offers [default: DAEMON__PIPELINES_DIR, pipelines]")
    ] = None,
) -> None:
    """The web console: runs (live while they run), the daemon's ledger, submit and cancel (SERVE__TOKEN)."""
    settings = load_settings()
    host = host or settings.serve.host
    port = settings.serve.port if port is None else port
    if not _loopback(host) and settings.serve.token is None:
        raise fail_invalid(f"--host {host} is reachable from other machines: set SERVE__TOKEN first (writing actions need it)")
    runs = (run_dir or settings.pipeline.run_dir).resolve()
    pipes = (pipelines_dir or settings.daemon.pipelines_dir).resolve()
    import uvicorn

    from pipeline.serve.app import ServeConfig, create_app

    runs.mkdir(parents=True, exist_ok=True)
    if port == 0:  # said on the first line below, so a caller learns where to go
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    api = create_app(ServeConfig(runs, pipes, settings))
    writes = "on (token set)" if settings.serve.token is not None else "off (no SERVE__TOKEN)"
    typer.echo(f"console: http://{host}:{port}/  runs {runs}  pipelines {pipes}  writing actions {writes}", err=True)
    # open event streams must not hold a stop for long: they end, browsers reconnect to the next server
    uvicorn.run(api, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=3)
