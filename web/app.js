// HyperGPU agent page: reads the agent's JSON API, follows its server-sent events, and falls back to
// polling while the stream is down. Plain JavaScript with no build step; charts are drawn on <canvas>
// by hand because a ~100-line painter is smaller than any vendored chart library.
"use strict";

const MAX_POINTS = 2000;
const MAX_ROUNDS = 50;
const MAX_ALERTS = 200;
const POLL_MS = 2000;
const QUALITY_ORDER = { excellent: 0, good: 1, fair: 2, poor: 3, critical: 4, unknown: 5 };

const state = {
  snapshot: null,
  metrics: [],
  rounds: [],
  alerts: [],
  sort: { key: "rtt_ms", dir: 1 },
  actionsEnabled: false,
  source: null,
  pollTimer: null,
  reconnectTimer: null,
  reconnectDelay: 1000,
  renderQueued: false,
  dirty: new Set(),
};

const $ = (id) => document.getElementById(id);

// ---- formatting ----------------------------------------------------------------------------------
function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits });
}
function fmtFixed(value, digits) {
  if (value === null || value === undefined) return "unknown";
  return Number(value).toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
function fmtPercent(ratio) {
  return ratio === null || ratio === undefined ? "–" : `${(ratio * 100).toFixed(2)} %`;
}
function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (h > 0) return `${h} h ${m} min`;
  if (m > 0) return `${m} min ${s % 60} s`;
  return `${s} s`;
}
function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
function shortId(id) {
  if (!id) return "–";
  return id.length > 14 ? `${id.slice(0, 6)}…${id.slice(-6)}` : id;
}
function fmtWei(wei) {
  // 18 decimals; a float is exact enough for display
  return `${(Number(wei) / 1e18).toLocaleString(undefined, { maximumFractionDigits: 6 })} MON`;
}
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}
function timeEl(iso) {
  return el("time", { datetime: iso || "", title: iso || "", text: fmtTime(iso) });
}

// ---- charts --------------------------------------------------------------------------------------
function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function drawChart(canvas, points, { color, label, format, yMin, yMax }) {
  const dpr = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (width === 0 || height === 0) return;
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(height * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "11px system-ui, sans-serif";
  const muted = cssVar("--muted");
  if (points.length === 0) {
    ctx.fillStyle = muted;
    ctx.fillText("no data yet", 10, height / 2);
    canvas.setAttribute("aria-label", `${label} over time: no data yet`);
    return;
  }
  const pad = { left: 48, right: 10, top: 10, bottom: 20 };
  const xs = points.map((p) => p.t);
  const ys = points.map((p) => p.v);
  let lo = yMin ?? Math.min(...ys);
  let hi = yMax ?? Math.max(...ys);
  if (hi - lo < 1e-9) { hi += 0.5; lo -= 0.5; }
  const x0 = xs[0];
  const x1 = Math.max(xs[xs.length - 1], x0 + 1);
  const px = (t) => pad.left + ((t - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const py = (v) => pad.top + (1 - (v - lo) / (hi - lo)) * (height - pad.top - pad.bottom);

  ctx.strokeStyle = cssVar("--chart-grid");
  ctx.fillStyle = muted;
  ctx.lineWidth = 1;
  for (let i = 0; i <= 3; i++) {
    const v = lo + ((hi - lo) * i) / 3;
    const y = Math.round(py(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(pad.left, y);
    ctx.lineTo(width - pad.right, y);
    ctx.stroke();
    ctx.fillText(format(v), 4, y + 4);
  }
  const spanS = (x1 - x0) / 1000;
  ctx.fillText(`-${fmtDuration(spanS)}`, pad.left, height - 5);
  const nowLabel = "now";
  ctx.fillText(nowLabel, width - pad.right - ctx.measureText(nowLabel).width, height - 5);

  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.beginPath();
  points.forEach((p, i) => (i === 0 ? ctx.moveTo(px(p.t), py(p.v)) : ctx.lineTo(px(p.t), py(p.v))));
  ctx.stroke();
  if (points.length === 1) {
    ctx.fillStyle = color;
    ctx.beginPath();
    ctx.arc(px(points[0].t), py(points[0].v), 3, 0, 2 * Math.PI);
    ctx.fill();
  }
  const last = points[points.length - 1].v;
  canvas.setAttribute(
    "aria-label",
    `${label} over time: ${points.length} points, latest ${format(last)}, range ${format(Math.min(...ys))} to ${format(Math.max(...ys))}`,
  );
}

function renderCharts() {
  const series = (pick) =>
    state.metrics
      .filter((m) => pick(m) !== null && pick(m) !== undefined)
      .map((m) => ({ t: Date.parse(m.timestamp), v: pick(m) }));
  drawChart($("chart-loss"), series((m) => m.loss), {
    color: cssVar("--chart-loss"), label: "Loss", format: (v) => fmt(v, 3), yMin: 0,
  });
  drawChart($("chart-accuracy"), series((m) => m.accuracy), {
    color: cssVar("--chart-accuracy"), label: "Accuracy", format: (v) => `${(v * 100).toFixed(0)}%`, yMin: 0, yMax: 1,
  });
  drawChart($("chart-sps"), series((m) => m.samples_per_s), {
    color: cssVar("--chart-sps"), label: "Samples per second", format: (v) => fmt(v, 0), yMin: 0,
  });
}

// ---- panels --------------------------------------------------------------------------------------
function renderHeader(s) {
  $("run-id").textContent = s.run_id || "–";
  $("peer-id").textContent = shortId(s.peer_id);
  $("peer-id").title = s.peer_id || "";
  $("wallet").textContent = shortId(s.wallet);
  $("wallet").title = s.wallet || "";
  $("device").textContent = s.device_name ? `${s.device} (${s.device_name})` : s.device;
  const stateText = s.paused && s.status !== "paused" ? `${s.status} (paused)` : s.status;
  $("state").replaceChildren(el("span", { class: `state state-${s.status}`, text: stateText }));
  $("round").textContent = fmt(s.round, 0);
  $("epoch").textContent = fmt(s.epoch, 2);
  document.title = `HyperGPU · ${s.run_id || "agent"} · ${stateText}`;
}

function renderStats(s) {
  $("stat-loss").textContent = fmt(s.loss, 4);
  $("stat-accuracy").textContent = fmtPercent(s.accuracy);
  $("stat-sps").textContent = fmt(s.samples_per_s, 0);
  $("stat-samples").textContent = fmt(s.samples_total, 0);
  $("stat-batch").textContent = fmt(s.local_batch_size, 0);
  $("stat-local-steps").textContent = fmt(s.local_steps, 0);
  $("stat-eta").textContent = s.target_accuracy === null || s.target_accuracy === undefined
    ? fmtDuration(s.eta_to_target_s)
    : `${fmtDuration(s.eta_to_target_s)} (target ${fmtPercent(s.target_accuracy)})`;
}

function sortValue(peer, key) {
  if (key === "quality") return QUALITY_ORDER[peer.quality] ?? 9;
  if (key === "in_group") return peer.in_group ? 0 : 1;
  if (key === "last_seen") return peer.last_seen ? -Date.parse(peer.last_seen) : null;
  return peer[key];
}

function compare(a, b) {
  const { key, dir } = state.sort;
  const va = sortValue(a, key);
  const vb = sortValue(b, key);
  // unknown values sort last whatever the direction
  if (va === null || va === undefined) return vb === null || vb === undefined ? 0 : 1;
  if (vb === null || vb === undefined) return -1;
  if (va < vb) return -dir;
  if (va > vb) return dir;
  return a.peer_id < b.peer_id ? -1 : 1;
}

function renderPeers(s) {
  const body = $("peers-body");
  const peers = [...(s.peers || [])].sort(compare);
  if (peers.length === 0) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "7", text: "No peer measurements yet." })));
  } else {
    body.replaceChildren(
      ...peers.map((p) =>
        el(
          "tr",
          { class: p.in_group ? "in-group" : "", "data-peer": p.peer_id },
          el("td", { class: "mono", title: p.peer_id, text: shortId(p.peer_id) }),
          el("td", { class: "num", text: fmtFixed(p.rtt_ms, 1) }),
          el("td", { class: "num", text: fmtFixed(p.jitter_ms, 1) }),
          el("td", { class: "num", text: p.loss === null ? "unknown" : fmtPercent(p.loss) }),
          el("td", {}, el("span", { class: `quality q-${p.quality}`, text: p.quality })),
          el("td", { text: p.in_group ? "in group" : "–" }),
          el("td", {}, p.last_seen ? timeEl(p.last_seen) : "never"),
        ),
      ),
    );
  }
  for (const th of document.querySelectorAll("#peers-table th")) {
    const key = th.querySelector("button").dataset.key;
    th.setAttribute("aria-sort", key === state.sort.key ? (state.sort.dir > 0 ? "ascending" : "descending") : "none");
  }
}

function renderRounds() {
  const body = $("rounds-body");
  const rounds = state.rounds.slice(-MAX_ROUNDS).reverse();
  if (rounds.length === 0) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "6", text: "No rounds yet." })));
    return;
  }
  body.replaceChildren(
    ...rounds.map((r) =>
      el(
        "tr",
        { "data-round": String(r.round) },
        el("td", { class: "num", text: String(r.round) }),
        el("td", {}, el("span", { class: r.success ? "outcome-ok" : "outcome-failed", text: r.success ? "✓ ok" : "✗ failed" })),
        el("td", { class: "num", text: String(r.members.length) }),
        el("td", { class: "num", text: fmt(r.samples, 0) }),
        el("td", { class: "num", text: fmt(r.wait_seconds, 2) }),
        el("td", {}, timeEl(r.timestamp)),
      ),
    ),
  );
}

function tailId(id) {
  return id.length > 8 ? `…${id.slice(-6)}` : id;
}

function heatColor(ms) {
  // 0 ms green -> 300 ms and more red, in HSL so the steps look even
  const ratio = Math.min(1, Math.max(0, ms / 300));
  return `hsl(${Math.round(120 * (1 - ratio))}, 70%, 62%)`;
}

function renderRtt(s) {
  const holder = $("rtt-matrix");
  const matrix = s.rtt_matrix || { peers: [], rtt_ms: [] };
  if (!matrix.peers.length) {
    holder.replaceChildren(el("p", { class: "muted", text: "No RTT measurements yet." }));
    return;
  }
  const head = el("tr", {}, el("th", { scope: "col", text: "from \\ to" }),
    ...matrix.peers.map((p) => el("th", { scope: "col", title: p, text: tailId(p) })));
  const rows = matrix.peers.map((from, i) =>
    el("tr", {}, el("th", { scope: "row", title: from, text: tailId(from) }),
      ...matrix.rtt_ms[i].map((ms, j) => {
        if (i === j) return el("td", { class: "self", "aria-label": "same peer", text: "—" });
        if (ms === null) return el("td", { class: "cell unknown", text: "unknown" });
        const cell = el("td", { class: "cell", title: `${shortId(from)} → ${shortId(matrix.peers[j])}: ${fmt(ms, 1)} ms`, text: fmt(ms, 0) });
        cell.style.background = heatColor(ms);
        return cell;
      })));
  holder.replaceChildren(
    el("table", { class: "heatmap" }, el("thead", {}, head), el("tbody", {}, ...rows)),
    el("p", { class: "muted", text: "Round-trip times in ms, row to column: green is fast, red is 300 ms or more." }),
  );
}

function renderAlerts() {
  const list = $("alerts-list");
  const alerts = state.alerts.slice(-MAX_ALERTS).reverse();
  if (alerts.length === 0) {
    list.replaceChildren(el("li", { class: "muted", text: "No alerts." }));
    return;
  }
  list.replaceChildren(
    ...alerts.map((a) =>
      el("li", {}, timeEl(a.timestamp), el("span", { class: `level level-${a.level}`, text: a.level }),
        el("span", { text: a.message }), a.peer_id ? el("span", { class: "muted mono", text: ` (${shortId(a.peer_id)})` }) : ""),
    ),
  );
}

function renderRewards(s) {
  const r = s.rewards;
  $("rewards-pending").textContent = r.configured ? fmtWei(r.pending_wei) : "not configured";
  $("rewards-claimed").textContent = r.configured ? fmtWei(r.claimed_wei) : "not configured";
  $("rewards-note").textContent = r.note || "";
  $("actions-form").hidden = !state.actionsEnabled;
  $("actions-readonly").hidden = state.actionsEnabled;
  $("action-pause").textContent = s.paused ? "Resume training" : "Pause training";
  $("action-claim").disabled = !r.configured;
}

const ALL_PARTS = ["snapshot", "rounds", "alerts", "charts"];

function render() {
  // only the parts that changed: a full repaint costs tens of ms on a busy machine
  state.renderQueued = false;
  const parts = state.dirty;
  state.dirty = new Set();
  const s = state.snapshot;
  if (s && parts.has("snapshot")) {
    renderHeader(s);
    renderStats(s);
    renderPeers(s);
    renderRtt(s);
    renderRewards(s);
  }
  if (parts.has("rounds")) renderRounds();
  if (parts.has("alerts")) renderAlerts();
  if (parts.has("charts")) renderCharts();
}

function scheduleRender(...parts) {
  for (const part of parts.length ? parts : ALL_PARTS) state.dirty.add(part);
  if (state.renderQueued) return;
  state.renderQueued = true;
  requestAnimationFrame(render);
}

// ---- data ----------------------------------------------------------------------------------------
async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

const KEYS = {
  metrics: (m) => `${m.timestamp}|${m.step}`,
  rounds: (r) => `${r.timestamp}|${r.round}`,
  alerts: (a) => `${a.timestamp}|${a.kind}|${a.message}`,
};

function mergeNewer(fetched, current, key) {
  // keep what the stream delivered while the request was in flight (ISO UTC strings sort by time)
  const last = fetched.length ? fetched[fetched.length - 1].timestamp : "";
  const seen = new Set(fetched.map(key));
  return fetched.concat(current.filter((item) => item.timestamp > last && !seen.has(key(item))));
}

async function refreshAll() {
  const [snapshot, metrics, rounds, alerts, actions] = await Promise.all([
    getJson("api/status"),
    getJson(`api/metrics/history?limit=${MAX_POINTS}`),
    getJson(`api/rounds?limit=${MAX_ROUNDS}`),
    getJson(`api/alerts?limit=${MAX_ALERTS}`),
    getJson("api/actions"),
  ]);
  if (!state.snapshot || !state.snapshot.updated_at || snapshot.updated_at >= state.snapshot.updated_at) {
    state.snapshot = snapshot;
  }
  state.metrics = mergeNewer(metrics, state.metrics, KEYS.metrics).slice(-MAX_POINTS);
  state.rounds = mergeNewer(rounds, state.rounds, KEYS.rounds).slice(-MAX_ROUNDS);
  state.alerts = mergeNewer(alerts, state.alerts, KEYS.alerts).slice(-MAX_ALERTS);
  state.actionsEnabled = actions.enabled;
  scheduleRender();
}

function pushBounded(list, item, max, key) {
  // an event may also have come with the refresh that followed the stream's (re)opening
  const id = key(item);
  if (list.slice(-50).some((other) => key(other) === id)) return;
  list.push(item);
  if (list.length > max) list.splice(0, list.length - max);
}

function setConnection(mode, text) {
  const node = $("connection");
  node.className = `connection ${mode}`;
  node.textContent = text;
}

function startPolling() {
  if (state.pollTimer !== null) return;
  setConnection("polling", "stream lost: polling every 2 s, reconnecting");
  state.pollTimer = setInterval(() => refreshAll().catch(() => setConnection("polling", "agent unreachable: retrying")), POLL_MS);
}

function stopPolling() {
  if (state.pollTimer !== null) clearInterval(state.pollTimer);
  state.pollTimer = null;
}

function connectStream() {
  if (state.source) state.source.close();
  const source = new EventSource("api/events");
  state.source = source;
  const on = (kind, part, handler) => source.addEventListener(kind, (event) => {
    handler(JSON.parse(event.data));
    scheduleRender(part);
  });
  source.addEventListener("open", () => {
    state.reconnectDelay = 1000;
    stopPolling();
    setConnection("live", "live");
    // whatever happened while the stream was down is in the API; later changes come as events
    refreshAll().catch(() => setConnection("polling", "agent unreachable: retrying"));
  });
  on("snapshot", "snapshot", (data) => { state.snapshot = data; });
  on("status", "snapshot", (data) => { state.snapshot = { ...(state.snapshot || {}), ...data }; });
  on("metrics", "charts", (data) => pushBounded(state.metrics, data, MAX_POINTS, KEYS.metrics));
  on("round", "rounds", (data) => pushBounded(state.rounds, data, MAX_ROUNDS, KEYS.rounds));
  on("alert", "alerts", (data) => pushBounded(state.alerts, data, MAX_ALERTS, KEYS.alerts));
  source.addEventListener("error", () => {
    // The browser retries by itself only while readyState is CONNECTING; we take over so the page
    // keeps updating (polling) and the stream comes back with a capped backoff.
    source.close();
    if (state.source !== source) return;
    state.source = null;
    startPolling();
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = setTimeout(connectStream, state.reconnectDelay);
    state.reconnectDelay = Math.min(state.reconnectDelay * 2, 30000);
  });
}

// ---- controls ------------------------------------------------------------------------------------
function initSorting() {
  for (const button of document.querySelectorAll("#peers-table th button")) {
    button.addEventListener("click", () => {
      const key = button.dataset.key;
      state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
      if (state.snapshot) renderPeers(state.snapshot);
    });
  }
}

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  const toggle = $("theme-toggle");
  toggle.setAttribute("aria-pressed", String(theme === "dark"));
  toggle.textContent = theme === "dark" ? "Light mode" : "Dark mode";
  scheduleRender("charts");
}

function initTheme() {
  let stored = null;
  try { stored = localStorage.getItem("hypergpu-theme"); } catch { /* storage may be disabled */ }
  const prefersDark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  applyTheme(stored || (prefersDark ? "dark" : "light"));
  $("theme-toggle").addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    try { localStorage.setItem("hypergpu-theme", next); } catch { /* not fatal */ }
    applyTheme(next);
  });
}

async function postAction(name) {
  const token = $("action-token").value;
  if (!token) {
    $("action-result").textContent = "Enter the action token first.";
    $("action-token").focus();
    return;
  }
  const response = await fetch(`api/actions/${name}`, { method: "POST", headers: { Authorization: `Bearer ${token}` } });
  const body = await response.json().catch(() => ({}));
  $("action-result").textContent = response.ok ? body.message : `Refused (${response.status}): ${body.detail || "unknown error"}`;
}

function initActions() {
  $("actions-form").addEventListener("submit", (event) => event.preventDefault());
  $("action-pause").addEventListener("click", () => postAction(state.snapshot && state.snapshot.paused ? "resume" : "pause"));
  $("action-claim").addEventListener("click", () => {
    const pending = state.snapshot ? fmtWei(state.snapshot.rewards.pending_wei) : "the pending rewards";
    if (window.confirm(`Claim ${pending}? This sends a transaction from this agent's wallet.`)) postAction("claim");
  });
}

function init() {
  initTheme();
  initSorting();
  initActions();
  window.addEventListener("resize", () => scheduleRender("charts"));
  connectStream();
}

document.addEventListener("DOMContentLoaded", init);
