// The console's one script. It writes text only (textContent), never HTML: everything it shows came
// from runs and pipeline files. It asks this server only; run pages follow the run by server-sent events.
"use strict";

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function when(ts) {
  if (!ts) return "-";
  const d = new Date(ts * 1000);
  return d.toLocaleString();
}

function fmt(n) {
  return typeof n === "number" ? n.toLocaleString() : (n === undefined || n === null ? "" : String(n));
}

// ---- runs list ---------------------------------------------------------------------------------
function runsPage() {
  const table = document.getElementById("runs");
  for (const cell of table.querySelectorAll("td.when")) cell.textContent = when(Number(cell.dataset.ts));
  const query = new URLSearchParams();
  if (table.dataset.state) query.set("state", table.dataset.state);
  if (table.dataset.pipeline) query.set("pipeline", table.dataset.pipeline);
  async function refresh() {
    try {
      const response = await fetch("/api/runs?" + query.toString(), { cache: "no-store" });
      if (!response.ok) return;
      const rows = await response.json();
      const body = el("tbody");
      for (const r of rows) {
        const tr = el("tr");
        tr.dataset.run = r.id;
        const link = el("a", r.id);
        link.href = "/runs/" + encodeURIComponent(r.id);
        const first = el("td");
        first.appendChild(link);
        tr.append(first, el("td", r.pipeline), el("td", r.state, "state " + r.state.replace(" ", "-")),
          el("td", when(r.started)), el("td", r.duration === null ? "-" : r.duration.toFixed(2)), el("td", r.summary));
        body.appendChild(tr);
      }
      table.replaceChild(body, table.tBodies[0]);
      const empty = document.getElementById("empty");
      if (empty && rows.length) empty.hidden = true;
      document.getElementById("refreshed").textContent = "refreshed " + new Date().toLocaleTimeString();
    } catch (e) { /* the server restarting: the next refresh tries again */ }
  }
  setInterval(refresh, 2000);
}

// ---- one run -------------------------------------------------------------------------------------
const STATE_OF = {
  task_started: "running", task_retrying: "retrying", task_succeeded: "succeeded", task_failed: "failed",
  task_skipped: "skipped", task_cancelled: "cancelled", task_resumed: "succeeded",
};

function runPage() {
  const data = JSON.parse(document.getElementById("run-data").textContent);
  const runId = data.id;
  let tasks = data.live.tasks || {};
  if (data.report && data.report.tasks && typeof data.report.tasks === "object") {
    tasks = {};
    for (const [name, t] of Object.entries(data.report.tasks)) {
      if (t && typeof t === "object") tasks[name] = { state: t.state, attempt: t.attempts, error: t.error };
    }
  }
  const body = document.querySelector("#tasks tbody");
  const rows = {};

  function row(name) {
    if (rows[name]) return rows[name];
    const tr = el("tr");
    tr.dataset.task = name;
    const cells = {};
    for (const key of ["name", "state", "attempt", "progress", "rate", "eta", "error"]) {
      cells[key] = el("td", "", key === "state" ? "state" : (key === "error" ? "error" : ""));
      tr.appendChild(cells[key]);
    }
    cells.name.textContent = name;
    body.appendChild(tr);
    rows[name] = cells;
    return cells;
  }

  // the DAG while the run is live (report.html draws it, with the timeline, once the run has ended):
  // layered by depth from the edges its events carry, each node coloured by its task's state
  const SVG = "http://www.w3.org/2000/svg";
  const nodes = {};
  function drawDag(edges, names) {
    const svg = document.getElementById("live-dag");
    if (!names.length || data.report) return;
    const depth = {};
    const needs = {};
    for (const n of names) { depth[n] = 0; needs[n] = []; }
    for (const e of edges) { if (needs[e.to] && e.from in depth) needs[e.to].push(e.from); }
    for (let i = 0; i < names.length; i++) {
      for (const n of names) for (const up of needs[n]) depth[n] = Math.max(depth[n], depth[up] + 1);
    }
    const layers = {};
    for (const n of names) (layers[depth[n]] = layers[depth[n]] || []).push(n);
    const W = 170, H = 34, GX = 50, GY = 12;
    const at = {};
    let height = 0;
    for (const [d, members] of Object.entries(layers)) {
      members.forEach((n, i) => { at[n] = { x: 10 + Number(d) * (W + GX), y: 10 + i * (H + GY) }; });
      height = Math.max(height, 10 + members.length * (H + GY));
    }
    svg.replaceChildren();
    svg.setAttribute("width", String(20 + Object.keys(layers).length * (W + GX)));
    svg.setAttribute("height", String(height + 10));
    for (const e of edges) {
      if (!at[e.from] || !at[e.to]) continue;
      const line = document.createElementNS(SVG, "line");
      line.setAttribute("x1", at[e.from].x + W); line.setAttribute("y1", at[e.from].y + H / 2);
      line.setAttribute("x2", at[e.to].x); line.setAttribute("y2", at[e.to].y + H / 2);
      line.setAttribute("class", e.stream ? "edge stream" : "edge");
      svg.appendChild(line);
    }
    for (const n of names) {
      const g = document.createElementNS(SVG, "g");
      g.setAttribute("data-task", n);
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("x", at[n].x); rect.setAttribute("y", at[n].y); rect.setAttribute("width", W); rect.setAttribute("height", H);
      rect.setAttribute("rx", "5");
      const label = document.createElementNS(SVG, "text");
      label.setAttribute("x", at[n].x + 8); label.setAttribute("y", at[n].y + H / 2 + 5);
      label.textContent = n.length > 22 ? n.slice(0, 21) + "…" : n;
      g.append(rect, label);
      svg.appendChild(g);
      nodes[n] = g;
    }
    svg.hidden = false;
    for (const [n, t] of Object.entries(tasks)) if (nodes[n]) nodes[n].setAttribute("class", "node " + (t.state || "waiting"));
  }

  function draw(name, t) {
    if (nodes[name]) nodes[name].setAttribute("class", "node " + (t.state || "waiting"));
    const c = row(name);
    c.state.textContent = t.state || "waiting";
    c.state.className = "state " + (t.state || "waiting");
    c.attempt.textContent = t.attempt ? String(t.attempt) : "";
    const p = t.progress || {};
    c.progress.textContent = p.done !== undefined ? fmt(p.done) + (p.total ? " / " + fmt(p.total) : "") + " " + (p.unit || "") : (p.detail || "");
    c.rate.textContent = p.rate ? fmt(Math.round(p.rate)) + " " + (p.unit || "rows") + "/s" : "";
    c.eta.textContent = p.eta_seconds !== undefined && t.state === "running" ? p.eta_seconds + " s" : "";
    c.error.textContent = t.error || "";
  }

  for (const [name, t] of Object.entries(tasks)) draw(name, t);
  const reason = document.getElementById("run-reason");
  if (data.report && data.report.state !== "succeeded" && data.report.reason) reason.textContent = data.report.reason;

  const stateEl = document.getElementById("run-state");
  stateEl.className = "state " + stateEl.textContent;

  async function finished(tries) {
    const response = await fetch("/api/runs/" + encodeURIComponent(runId), { cache: "no-store" });
    if (!response.ok) return;
    const now = await response.json();
    // the report is written just after the run says it finished: look again, a while, until it is there
    if (!now.report && now.live.state !== "stopped" && tries < 40) { setTimeout(() => finished(tries + 1), 500); return; }
    if (!now.report) { stateEl.textContent = now.live.state; stateEl.className = "state " + now.live.state; }
    if (now.report) {
      stateEl.textContent = now.report.state;
      stateEl.className = "state " + now.report.state;
      for (const [name, t] of Object.entries(now.report.tasks || {})) {
        if (!t || typeof t !== "object") continue;
        draw(name, { ...(tasks[name] || {}), state: t.state, attempt: t.attempts, error: t.error });  // progress kept
      }
      if (now.report.state !== "succeeded" && now.report.reason) reason.textContent = now.report.reason;
    }
    if (now.has_page) {
      document.getElementById("live-dag").hidden = true;  // the report's own DAG and timeline replace it
      const frame = document.getElementById("report");
      frame.src = "/runs/" + encodeURIComponent(runId) + "/report.html";
      frame.hidden = false;
    }
    document.getElementById("controls").hidden = true;
  }

  if (!data.report) {
    const source = new EventSource("/api/runs/" + encodeURIComponent(runId) + "/events");
    source.addEventListener("snapshot", (m) => {
      const view = JSON.parse(m.data);
      tasks = view.tasks || {};
      drawDag(view.edges || [], Object.keys(tasks));
      for (const [name, t] of Object.entries(tasks)) draw(name, t);
      stateEl.textContent = view.state;
      stateEl.className = "state " + view.state;
      if (view.pipeline && view.pipeline !== "?") heading(view.pipeline, view.params);
    });
    source.addEventListener("event", (m) => {
      const e = JSON.parse(m.data);
      if (e.kind === "dag") {
        heading(e.pipeline, e.params);
        drawDag(e.edges || [], e.tasks || []);
        for (const name of e.tasks || []) { if (!tasks[name]) { tasks[name] = { state: "waiting" }; draw(name, tasks[name]); } }
        return;
      }
      if (e.kind === "run_finished") {
        stateEl.textContent = (e.data && e.data.state) || "finished";
        stateEl.className = "state " + stateEl.textContent;
        return;
      }
      if (!e.task) return;
      const t = tasks[e.task] || (tasks[e.task] = { state: "waiting" });
      if (e.kind === "task_progress") {
        const d = e.data || {};
        t.progress = { done: d.done, total: d.total, unit: d.unit, detail: d.detail };
        if (typeof d.done === "number" && t.started && e.at > t.started && d.done > 0) {
          t.progress.rate = d.done / (e.at - t.started);
          if (typeof d.total === "number" && d.total >= d.done) t.progress.eta_seconds = Math.round((d.total - d.done) / t.progress.rate);
        }
      } else if (STATE_OF[e.kind]) {
        t.state = STATE_OF[e.kind];
        t.attempt = e.attempt;
        if (e.kind === "task_started") { t.started = e.at; delete t.error; delete t.progress; }
        if (e.kind === "task_succeeded" || e.kind === "task_resumed") delete t.error;
        if (e.error) t.error = e.error;
      }
      draw(e.task, t);
    });
    source.addEventListener("end", () => { source.close(); setTimeout(() => finished(0), 300); });
  }

  function heading(pipeline, params) {
    document.getElementById("pipeline").textContent = pipeline;
    document.getElementById("params").textContent = JSON.stringify(params || {});
  }

  document.getElementById("controls").addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = document.getElementById("cancel-result");
    const response = await fetch("/api/runs/" + encodeURIComponent(runId) + "/cancel", {
      method: "POST", headers: { Authorization: "Bearer " + document.getElementById("token").value },
    });
    const answer = await response.json();
    out.textContent = response.ok ? "cancelling..." : String(answer.detail);
  });
}

// ---- submit --------------------------------------------------------------------------------------
function submitPage() {
  const form = document.getElementById("submit");
  if (!form) return;
  document.getElementById("choose").addEventListener("change", (e) => {
    window.location.href = "/submit?pipeline=" + encodeURIComponent(e.target.value);
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = document.getElementById("submit-result");
    out.textContent = "";
    const params = {};
    for (const input of form.querySelectorAll("input[data-kind]")) params[input.name] = input.value;
    const via = form.querySelector("input[name=via]:checked").value;
    const response = await fetch("/api/runs", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + document.getElementById("token").value },
      body: JSON.stringify({ pipeline: form.dataset.pipeline, params: params, via: via }),
    });
    const answer = await response.json();
    if (response.ok && answer.run_id) { window.location.href = "/runs/" + encodeURIComponent(answer.run_id); return; }
    if (response.ok) { out.textContent = "request " + answer.request_id + " sent to the daemon"; return; }
    const detail = Array.isArray(answer.detail) ? answer.detail.map((d) => (d.loc || []).slice(1).join(".") + ": " + d.msg).join("\n") : String(answer.detail);
    out.textContent = detail;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "runs") runsPage();
  if (page === "run") runPage();
  if (page === "submit") submitPage();
});
