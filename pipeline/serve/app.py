"""The console's routes: pages for people, the JSON API behind them (FastAPI documents it at /docs).

Everything shown comes from files runs wrote and from pipeline files: hostile text as far as a page is
concerned. Pages are Jinja2 templates with autoescaping, data reaches the page's script as JSON in a
non-executable script element, and the script writes only ``textContent``; the Content-Security-Policy
allows scripts, styles, frames and connections from this server only, so a page makes no request
elsewhere. A run id from a URL must name a directory directly in the run dir (anything else is a 404).
Writing actions (submit, cancel) need ``Authorization: Bearer <SERVE__TOKEN>``; without a configured
token they are off (401 says so). The token is compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import structlog
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from pydantic import BaseModel, Field

from config.settings import Settings
from pipeline.report_html import ReportError, load_report, redact
from pipeline.run_events import EVENTS, live_since
from pipeline.run_index import RUN_ID, RunIndex, request_pipeline
from pipeline.serve.catalog import Catalog, ParamError, checked_params
from pipeline.serve.launch import Launcher, NotOurs
from pipeline.serve.ledger_view import dead_letters, ledger_rows
from pipeline.serve.live import event_stream, folded

__all__ = ["ServeConfig", "create_app"]

STATES = ("succeeded", "failed", "cancelled", "skipped", "running", "no report", "corrupt report")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'"
)
# report.html is self-contained: its own inline script and style, nothing fetched
# sandboxed: an opaque origin, so a report.html someone else wrote cannot reach the console's page or its API
REPORT_CSP = (
    "sandbox allow-scripts; default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data:; frame-ancestors 'self'"
)
MAX_STREAMS = 200  # event streams open at once; more get 503

log = structlog.get_logger("pipeline.serve")
MAX_BODY = 64 * 1024  # a submission is a pipeline name and a few parameters
StateQ = Annotated[str | None, Query(max_length=40, description="only runs in this state")]
PipelineQ = Annotated[str | None, Query(max_length=100, description="only runs of this pipeline")]


@dataclass(slots=True)
class ServeConfig:
    run_dir: Path
    pipelines_dir: Path
    settings: Settings


class SubmitBody(BaseModel):
    pipeline: str = Field(..., max_length=100, description="a pipeline's name in the pipelines directory")
    params: dict[str, Any] = Field(default_factory=dict, max_length=100, description="name -> value or text as --set takes it")
    via: Literal["local", "daemon"] = Field("local", description="run here, or send a request to the daemon")


def _older(path: Path, since: float | None) -> bool:
    """The file was written before ``since`` (a live holder's lock time); False when either is unknown."""
    try:
        return since is not None and path.stat().st_mtime < since
    except OSError:
        return False


def _unprocessable(field: str, message: str) -> HTTPException:
    loc = ["body", *field.split(".", 1)] if field != "pipeline" else ["body", "pipeline"]
    return HTTPException(422, detail=[{"loc": loc, "msg": message, "type": "value_error"}])


def create_app(config: ServeConfig) -> BodyLimit:
    settings = config.settings
    token = settings.serve.token.get_secret_value() if settings.serve.token is not None else None
    index = RunIndex(config.run_dir)
    catalog = Catalog(config.pipelines_dir)
    launcher = Launcher(config.run_dir, settings)
    registry = CollectorRegistry()
    runs_gauge = Gauge("pipeline_serve_runs", "runs in the run directory by state", ["state"], registry=registry)
    actions = Counter("pipeline_serve_actions", "writing actions by kind and outcome", ["action", "outcome"], registry=registry)
    pages = Environment(loader=PackageLoader("pipeline", "templates/serve"), autoescape=select_autoescape(default=True))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        async with anyio.create_task_group() as tg:
            tg.start_soon(reap_children)
            yield
            tg.cancel_scope.cancel()
        await anyio.to_thread.run_sync(launcher.stop_all)

    async def reap_children() -> None:
        """Ended children are waited for at once: none stays a zombie until someone looks at the list."""
        while True:
            launcher.reap()
            await anyio.sleep(1.0)

    app = FastAPI(
        title="dag-pipeline console",
        description="Runs, live run events, the daemon's ledger; submit and cancel with the SERVE__TOKEN.",
        lifespan=lifespan,
    )

    streams = {"open": 0}

    def authorize(authorization: str | None = Header(None)) -> None:
        if token is None:
            raise HTTPException(401, "writing actions are off: the server has no SERVE__TOKEN")
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not given or not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "a valid token is needed: Authorization: Bearer <SERVE__TOKEN>")

    def run_path(run_id: str) -> Path:
        path = config.run_dir / run_id
        if not RUN_ID.fullmatch(run_id) or not path.is_dir() or path.resolve().parent != config.run_dir.resolve():
            raise HTTPException(404, "no such run")
        return path

    def html(template: str, **data: Any) -> HTMLResponse:
        body = pages.get_template(template).render(**data)
        return HTMLResponse(body, headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"})

    def run_rows(state: str | None, pipeline: str | None) -> list[dict[str, Any]]:
        ours = launcher.live()
        rows = [asdict(r) for r in index.rows()]
        for r in rows:
            if r["id"] in ours and r["state"] == "no report":  # started here, its process still starting
                r["state"], r["summary"] = "running", "starting"
        return [r for r in rows if (not state or r["state"] == state) and (not pipeline or r["pipeline"] == pipeline)]

    def run_detail(run_id: str) -> dict[str, Any]:
        path = run_path(run_id)
        view, _ = folded(path)
        since = live_since(path)
        running = since is not None or run_id in launcher.live()
        report: dict[str, Any] | None = None
        # a resumed run's old report is not what happens now (nor until the new one is written)
        if not (running and view.finished is None) and not _older(path / "report.json", since):
            with contextlib.suppress(ReportError):
                report = load_report(path / "report.json")
        live = view.to_dict()
        live["params"] = redact(live["params"])
        if live["pipeline"] == "?":  # no event yet: the run was prepared, its process is starting
            live["pipeline"] = request_pipeline(path)
        if not running and view.finished is None:
            live["state"] = "stopped"  # no process holds it and it never said it finished (killed)
        return {
            "id": run_id,
            "live": live,
            "report": redact(report) if report is not None else None,
            "has_page": (path / "report.html").is_file() and not (path / "report.html").is_symlink(),
            "ours": run_id in launcher.live(),
        }

    # -- JSON API --------------------------------------------------------------------------------
    @app.get("/api/runs", tags=["runs"], summary="Runs, newest first")
    def api_runs(state: StateQ = None, pipeline: PipelineQ = None) -> list[dict[str, Any]]:
        return run_rows(state, pipeline)

    @app.get("/api/runs/{run_id}", tags=["runs"], summary="One run: live state from its events, its report when done")
    def api_run(run_id: str) -> dict[str, Any]:
        return run_detail(run_id)

    @app.get("/api/runs/{run_id}/events", tags=["runs"], summary="Server-sent events of a run: snapshot, event..., end")
    def api_events(run_id: str, last_event_id: str | None = Header(None)) -> StreamingResponse:
        path = run_path(run_id)
        resume: int | None = None
        if last_event_id and re.fullmatch(r"[0-9]{1,18}", last_event_id):
            with contextlib.suppress(OSError):
                resume = min(int(last_event_id), (path / EVENTS).stat().st_size)
        if streams["open"] >= MAX_STREAMS:
            raise HTTPException(503, f"{MAX_STREAMS} event streams are open; try again later")
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(counted(event_stream(path, resume)), media_type="text/event-stream", headers=headers)

    async def counted(stream: AsyncIterator[str]) -> AsyncIterator[str]:
        streams["open"] += 1
        try:
            async for message in stream:
                yield message
        finally:
            streams["open"] -= 1

    @app.post("/api/runs", tags=["runs"], status_code=201, summary="Start a pipeline (token needed)")
    async def api_submit(body: SubmitBody, _: None = Depends(authorize)) -> dict[str, Any]:
        try:
            entry = catalog.get(body.pipeline)
            params = checked_params(entry, dict(body.params))
            if body.via == "daemon":
                rid = await launcher.submit_daemon(entry, params)
                actions.labels("submit_daemon", "ok").inc()
                log.info("request sent to the daemon", pipeline=entry.name, request_id=rid)
                return {"request_id": rid, "via": "daemon"}
            run_id = await anyio.to_thread.run_sync(launcher.start_local, entry, params)
        except ParamError as exc:
            actions.labels("submit", "refused").inc()
            raise _unprocessable(exc.field, exc.message) from None
        except (OSError, TimeoutError) as exc:
            actions.labels("submit", "error").inc()
            raise HTTPException(503, f"cannot start the run: {type(exc).__name__}: {exc}") from None
        actions.labels("submit", "ok").inc()
        log.info("run started from the console", pipeline=entry.name, run_id=run_id)
        return {"run_id": run_id, "via": "local"}

    @app.post("/api/runs/{run_id}/cancel", tags=["runs"], status_code=202, summary="Cancel a run this server started")
    def api_cancel(run_id: str, _: None = Depends(authorize)) -> dict[str, Any]:
        view, _offset = folded(run_path(run_id))
        if view.finished is not None:  # its process may still be closing down: the run itself has ended
            raise HTTPException(409, f"the run has ended ({view.state})")
        try:
            launcher.cancel(run_id)
        except NotOurs:
            raise HTTPException(409, "not a live run started by this server (stop other runs where they run)") from None
        actions.labels("cancel", "ok").inc()
        log.info("run cancelled from the console", run_id=run_id)
        return {"run_id": run_id, "cancelling": True}

    @app.get("/api/pipelines", tags=["submit"], summary="Pipelines that can be started, with their parameters")
    def api_pipelines() -> list[dict[str, Any]]:
        return [{"name": e.name, "description": e.description, "params": e.form_fields()} for e in catalog.entries()]

    @app.get("/api/ledger", tags=["daemon"], summary="The daemon's ledger and its dead-lettered requests")
    async def api_ledger() -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            out.update(await ledger_rows(settings))
        except Exception as exc:  # noqa: BLE001 - an unreachable ledger is said on the page, not a 500
            out.update({"ledger": None, "why": f"cannot read the ledger: {type(exc).__name__}: {exc}", "rows": []})
        try:
            out["dead_letters"] = await dead_letters(settings)
        except Exception as exc:  # noqa: BLE001 - the same for the broker
            out["dead_letters"] = {"topic": None, "why": f"cannot read the dead-letter topic: {type(exc).__name__}: {exc}", "items": []}
        return out

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "run_dir": str(config.run_dir), "live_children": len(launcher.live())}

    @app.get("/metrics", tags=["ops"])
    def metrics() -> Response:
        counts: dict[str, int] = dict.fromkeys((*STATES, "other"), 0)
        for row in index.rows():  # a state read from a file is a label only if it is one of ours
            state = row.state if row.state in counts else "other"
            counts[state] += 1
        for state, n in counts.items():
            runs_gauge.labels(state).set(n)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # -- pages -----------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page_runs(state: StateQ = None, pipeline: PipelineQ = None) -> HTMLResponse:
        rows = run_rows(state, pipeline)
        names = sorted({r["pipeline"] for r in run_rows(None, None)})
        return html("runs.html.j2", rows=rows, state=state or "", pipeline=pipeline or "", states=STATES, pipelines=names)

    @app.get("/runs/{run_id}", response_class=HTMLResponse, include_in_schema=False)
    def page_run(run_id: str) -> HTMLResponse:
        return html("run.html.j2", run=run_detail(run_id))

    @app.get("/runs/{run_id}/report.html", include_in_schema=False)
    def page_report(run_id: str) -> FileResponse:
        page = run_path(run_id) / "report.html"
        if page.is_symlink() or not page.is_file():  # a link could lead anywhere on this host
            raise HTTPException(404, "this run has no report page yet")
        return FileResponse(page, media_type="text/html", headers={"Content-Security-Policy": REPORT_CSP})

    @app.get("/submit", response_class=HTMLResponse, include_in_schema=False)
    def page_submit(pipeline: str | None = Query(None, max_length=100)) -> HTMLResponse:
        entries = catalog.entries()
        chosen = next((e for e in entries if e.name == pipeline), entries[0] if entries else None)
        return html("submit.html.j2", entries=entries, chosen=chosen, fields=chosen.form_fields() if chosen else [])

    @app.get("/daemon", response_class=HTMLResponse, include_in_schema=False)
    async def page_daemon() -> HTMLResponse:
        return html("daemon.html.j2", ledger=await api_ledger())

    @app.get("/static/console.js", include_in_schema=False)
    def script() -> FileResponse:
        return FileResponse(Path(__file__).parent / "console.js", media_type="text/javascript")

    @app.get("/static/console.css", include_in_schema=False)
    def style() -> FileResponse:
        return FileResponse(Path(__file__).parent / "console.css", media_type="text/css")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers={"X-Content-Type-Options": "nosniff"})

    return BodyLimit(app, MAX_BODY)


class BodyLimit:
    """Refuse a request body over ``limit`` bytes (413) as it arrives, declared or chunked: never buffered whole."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    def __getattr__(self, name: str) -> Any:  # routes, openapi(): the wrapped app's, for whoever looks
        return getattr(self.app, name)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(send, self.limit)
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _too_large(send, self.limit)


class _TooLarge(Exception):
    pass


async def _too_large(send: Any, limit: int) -> None:
    body = json.dumps({"detail": f"request body over {limit} bytes"}).encode()
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
