"""One self-contained ``report.html`` per run, built from ``report.json`` alone.

Why from report.json and not from the live RunResult: the same code then serves the end of a run and
``run-pipeline report RUN_ID`` for any old, interrupted or crashed run, and the page can never show
something the JSON record does not hold. The page is mailed or attached to tickets, so it has no
network dependency at all: inline CSS, inline SVG, no script. Markup comes from a Jinja2 template with
autoescaping (task names, errors and params are user text); this module only computes geometry:

- the DAG: tasks layered by topological depth (networkx), coloured by final state, stream edges drawn
  thick and dashed, plain needs thin;
- the timeline: one bar per attempt (retries visible as separate bars with the backoff gap between
  them), a faint bar from "ready" (every need met) to the first start, the critical path outlined;
- totals: wall time, the sum of attempt times and their ratio (achieved parallelism).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import networkx as nx

__all__ = ["ReportError", "build_html", "load_report", "redact", "write_html"]

SECRET_WORDS = ("token", "secret", "password", "dsn", "key", "uri", "connection_string")
STATE_COLOURS = {
    "succeeded": "#2e9d4f",
    "failed": "#d64545",
    "cancelled": "#e0a526",
    "skipped": "#9aa0a6",
    "running": "#3b7dd8",
    "pending": "#c7ccd1",
}
_TEMPLATE = Path(__file__).with_name("templates") / "report.html.j2"
_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATE.parent), autoescape=True, trim_blocks=True, lstrip_blocks=True)


class ReportError(Exception):
    """report.json is missing, half-written or not a run report: one line for the user, exit 2."""


def load_report(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: missing (the run has not ended, or this is not a run)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"{path}: corrupt or half-written ({type(exc).__name__})") from None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict) or "started_at" not in data:
        raise ReportError(f"{path}: not a run report (no tasks or start time)")
    return data


def redact(value: Any, key: str = "") -> Any:
    """Secrets never reach a page that gets mailed around: any key naming one is masked, at any depth."""
    if key and any(w in key.lower() for w in SECRET_WORDS):
        return "********"
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


@dataclass(slots=True)
class _Task:
    name: str
    state: str
    attempts: list[tuple[float, float]]
    ready_at: float | None
    data: dict[str, Any]
    needs: list[str] = field(default_factory=list)
    critical: bool = False

    @property
    def busy(self) -> float:
        return sum(e - s for s, e in self.attempts)

    @property
    def waited(self) -> float | None:
        if self.ready_at is None or not self.attempts:
            return None
        return max(0.0, self.attempts[0][0] - self.ready_at)


def _tasks(report: dict[str, Any]) -> dict[str, _Task]:
    out: dict[str, _Task] = {}
    for name, t in report["tasks"].items():
        spans = [(float(s), float(e)) for s, e in t.get("attempt_times") or []]
        if not spans and t.get("started_at") and t.get("ended_at") and not t.get("resumed"):
            spans = [(float(t["started_at"]), float(t["ended_at"]))]  # a report from before per-attempt spans
        out[name] = _Task(name, str(t.get("state", "pending")), spans, t.get("ready_at"), t)
    for edge in report.get("edges") or []:
        if edge.get("to") in out and edge.get("from") in out:
            out[edge["to"]].needs.append(edge["from"])
    return out


def _critical_path(tasks: dict[str, _Task]) -> list[str]:
    """Walk back from the task that ended last through the need that ended last (the one it waited for)."""
    ended = {n: t.attempts[-1][1] for n, t in tasks.items() if t.attempts}
    if not ended:
        return []
    path, name = [], max(ended, key=ended.__getitem__)
    seen: set[str] = set()
    while name and name not in seen:
        seen.add(name)
        path.append(name)
        needs = [n for n in tasks[name].needs if n in ended]
        name = max(needs, key=ended.__getitem__) if needs else ""
    return path[::-1]


def _dag_svg(report: dict[str, Any], tasks: dict[str, _Task]) -> dict[str, Any]:
    g = nx.DiGraph()
    g.add_nodes_from(tasks)
    stream = {}
    for edge in report.get("edges") or []:
        if edge.get("from") in tasks and edge.get("to") in tasks:
            g.add_edge(edge["from"], edge["to"])
            stream[(edge["from"], edge["to"])] = bool(edge.get("stream"))
    try:
        layers = [sorted(layer, key=list(tasks).index) for layer in nx.topological_generations(g)]
    except nx.NetworkXUnfeasible:  # a hand-edited report with a cycle: still draw every node
        layers = [list(tasks)]
    w, h, gap_x, gap_y = 150, 30, 60, 14
    pos: dict[str, tuple[float, float]] = {}
    for depth, layer in enumerate(layers):
        for i, name in enumerate(layer):
            pos[name] = (10 + depth * (w + gap_x), 10 + i * (h + gap_y))
    nodes = [
        {
            "name": n,
            "x": x,
            "y": y,
            "w": w,
            "h": h,
            "state": tasks[n].state,
            "critical": tasks[n].critical,
            "fill": STATE_COLOURS.get(tasks[n].state, "#c7ccd1"),
            "label": n if len(n) <= 20 else n[:19] + "…",
        }
        for n, (x, y) in pos.items()
    ]
    edges = []
    for a, b in g.edges:
        (ax, ay), (bx, by) = pos[a], pos[b]
        x1, y1, x2, y2 = ax + w, ay + h / 2, bx, by + h / 2
        mid = (x1 + x2) / 2
        edges.append(
            {
                "d": f"M{x1:.0f},{y1:.0f} C{mid:.0f},{y1:.0f} {mid:.0f},{y2:.0f} {x2:.0f},{y2:.0f}",
                "stream": stream[(a, b)],
                "title": f"{a} → {b}",
            }
        )
    width = 20 + len(layers) * (w + gap_x)
    height = 20 + max((len(layer) for layer in layers), default=1) * (h + gap_y)
    return {"nodes": nodes, "edges": edges, "width": width, "height": height}


def _timeline(report: dict[str, Any], tasks: dict[str, _Task]) -> dict[str, Any]:
    t0 = float(report["started_at"])
    t1 = max([float(report.get("ended_at") or t0)] + [t.attempts[-1][1] for t in tasks.values() if t.attempts])
    span = max(t1 - t0, 1e-6)
    label_w, plot_w, row_h = 170, 900, 20
    scale = plot_w / span
    order = sorted(tasks.values(), key=lambda t: (t.attempts[0][0] if t.attempts else float("inf"), t.name))
    rows, bars, waits = [], [], []
    for i, t in enumerate(order):
        y = 24 + i * row_h
        rows.append({"name": t.name, "y": y, "label": t.name if len(t.name) <= 24 else t.name[:23] + "…"})
        if t.waited and t.ready_at is not None:
            waits.append(
                {
                    "x": label_w + (t.ready_at - t0) * scale,
                    "y": y + 5,
                    "w": max(t.waited * scale, 1),
                    "title": f"{t.name}: waited {t.waited:.3f}s ready, not started",
                }
            )
        retry_errors = t.data.get("retry_errors") or []
        for k, (s, e) in enumerate(t.attempts, 1):
            last = k == len(t.attempts)
            state = t.state if last else "failed"
            why = f": {retry_errors[k - 1]}" if not last and k <= len(retry_errors) else ""
            bars.append(
                {
                    "x": label_w + (s - t0) * scale,
                    "y": y + 2,
                    "w": max((e - s) * scale, 2),
                    "task": t.name,
                    "attempt": k,
                    "fill": STATE_COLOURS.get(state, "#c7ccd1"),
                    "critical": t.critical,
                    "title": f"{t.name} attempt {k}/{len(t.attempts)}: {e - s:.3f}s ({state}){why}",
                }
            )
    ticks = [{"x": label_w + plot_w * i / 5, "label": f"{span * i / 5:.2f}s"} for i in range(6)]
    return {
        "rows": rows,
        "bars": bars,
        "waits": waits,
        "ticks": ticks,
        "label_w": label_w,
        "width": label_w + plot_w + 40,
        "height": 34 + len(order) * row_h,
    }


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.2f}"
    return str(v)


def build_html(report: dict[str, Any]) -> str:
    """The whole page as one string (no file access): what ``write_html`` and the tests call."""
    tasks = _tasks(report)
    critical = _critical_path(tasks)
    for name in critical:
        tasks[name].critical = True
    wall = float(report.get("ended_at") or report["started_at"]) - float(report["started_at"])
    busy = sum(t.busy for t in tasks.values())
    summary = report.get("summary") or {}
    rows = [
        {
            "name": t.name,
            "state": t.state,
            "fill": STATE_COLOURS.get(t.state, "#c7ccd1"),
            "attempts": len(t.attempts) or t.data.get("attempts", 0),
            "busy": t.busy,
            "waited": t.waited,
            "resumed": bool(t.data.get("resumed")),
            "error": t.data.get("error") if t.state != "succeeded" else None,
            "retry_errors": [str(x) for x in t.data.get("retry_errors") or []],
            "figures": ", ".join(f"{k}={_fmt(v)}" for k, v in (summary.get(t.name) or {}).items()),
        }
        for t in tasks.values()
    ]
    counts: dict[str, int] = {}
    for t in tasks.values():
        counts[t.state] = counts.get(t.state, 0) + 1
    return _ENV.get_template(_TEMPLATE.name).render(
        run_id=report.get("run_id", "?"),
        pipeline=report.get("pipeline") or report.get("dag") or "?",
        state=str(report.get("state", "?")),
        reason=report.get("reason"),
        started=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(report["started_at"]))),
        wall=wall,
        busy=busy,
        parallelism=busy / wall if wall > 0 else 0.0,
        counts=counts,
        params=json.dumps(redact(report.get("params") or {}), indent=2, default=str),
        dag=_dag_svg(report, tasks),
        timeline=_timeline(report, tasks),
        tasks=rows,
        critical=critical,
        colours=STATE_COLOURS,
        has_edges="edges" in report,
    )


def write_html(run_path: Path, report: dict[str, Any] | None = None) -> Path:
    """(Re)build ``<run_path>/report.html`` from report.json; atomic, so a reader never sees half a page."""
    data = report if report is not None else load_report(run_path / "report.json")
    target = run_path / "report.html"
    tmp = target.with_suffix(".html.tmp")
    tmp.write_text(build_html(data), encoding="utf-8")
    tmp.replace(target)
    return target
