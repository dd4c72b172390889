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

import json
import re
import secrets
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import structlog
from fastapi import FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from pydantic import BaseModel, Field

from config.settings import Settings
from pipeline.report_html import ReportError, load_report, redact
from pipeline.run_index import RunIndex, request_pipeline
from pipeline.serve.catalog import Catalog, ParamError, checked_params
from pipeline.serve.launch import Launcher, NotOurs
from pipeline.serve.ledger_view import dead_letters, ledger_rows
from pipeline.serve.live import event_stream, folded

__all__ = ["ServeConfig", "create_app"]

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
STATES = ("succeeded", "failed", "cancelled", "running", "no report", "corrupt report")
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'"
)
# report.html is self-contained: its own inline script and style, nothing fetched
REPORT_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'"

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
    params: dict[str, str | int | float | bool | None] = Field(default_factory=dict, max_length=100)
    via: Literal["local", "daemon"] = Field("local", description="run here, or send a request to the daemon")


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
        yield
        launcher.stop_all()

    app = FastAPI(
        title="dag-pipeline console",
        description="Runs, live run events, the daemon's ledger; submit and cancel with the SERVE__TOKEN.",
        lifespan=lifespan,
    )

    def authorize(authorization: str | None) -> None:
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
        launcher.reap()
        rows = [asdict(r) for r in index.rows()]
        return [r for r in rows if (not state or r["state"] == state) and (not pipeline or r["pipeline"] == pipeline)]

    def run_detail(run_id: str) -> dict[str, Any]:
        path = run_path(run_id)
        view, _ = folded(path)
        try:
            report: dict[str, Any] | None = load_report(path / "report.json")
        except ReportError:
            report = None
        live = view.to_dict()
        live["params"] = redact(live["params"])
        if live["pipeline"] == "?":  # no event yet: the run was prepared, its process is starting
            live["pipeline"] = request_pipeline(path)
        return {
            "id": run_id,
            "live": live,
            "report": redact(report) if report is not None else None,
            "has_page": (path / "report.html").is_file(),
            "ours": run_id in launcher.children and launcher.children[run_id].poll() is None,
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
        resume = int(last_event_id) if last_event_id and last_event_id.isdigit() else None
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(event_stream(path, resume), media_type="text/event-stream", headers=headers)

    @app.post("/api/runs", tags=["runs"], status_code=201, summary="Start a pipeline (token needed)")
    async def api_submit(body: SubmitBody, authorization: str | None = Header(None)) -> dict[str, Any]:
        authorize(authorization)
        try:
            entry = catalog.get(body.pipeline)
            params = checked_params(entry, dict(body.params))
            if body.via == "daemon":
                rid = await launcher.submit_daemon(entry, params)
                actions.labels("submit_daemon", "ok").inc()
                log.info("request sent to the daemon", pipeline=entry.name, request_id=rid)
                return {"request_id": rid, "via": "daemon"}
            run_id = launcher.start_local(entry, params)
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
    def api_cancel(run_id: str, authorization: str | None = Header(None)) -> dict[str, Any]:
        authorize(authorization)
        view, _ = folded(run_path(run_id))
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
        return {"status": "ok", "run_dir": str(config.run_dir), "live_children": len(launcher.children)}

    @app.get("/metrics", tags=["ops"])
    def metrics() -> Response:
        counts: dict[str, int] = dict.fromkeys(STATES, 0)
        for row in index.rows():
            counts[row.state] = counts.get(row.state, 0) + 1
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
        if not page.is_file():
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
