// HyperGPU swarm page (served by hypergpu-coordinator): polls /api/swarm every few seconds and the
// on-chain check (/api/chain-check) less often, since that one reads the chain. Plain JavaScript, no build.
"use strict";

const POLL_MS = 5000;
const CHECK_MS = 30000;
const STATUS_ORDER = { active: 0, idle: 1, bound: 2 };
const CHECK_ORDER = { differs: 0, pending: 1, matches: 2 };
const VERDICT_TEXT = {
  match: "✓ matches",
  mismatch: "✗ differs",
  missing_on_chain: "✗ missing on chain",
  unexpected_on_chain: "✗ only on chain",
  pending: "… pending",
  not_posted: "– not posted",
};
const DIFFERENCES = new Set(["mismatch", "missing_on_chain", "unexpected_on_chain"]);
const FIELD_LABELS = { compute_seconds: "s", rounds_accepted: "rounds", samples: "samples", score: "score" };

const state = {
  overview: null,
  check: null,
  checkError: null,
  sort: { key: "earned_wei", dir: -1 },
  checking: false,
};

const $ = (id) => document.getElementById(id);

// ---- formatting ----------------------------------------------------------------------------------
function fmt(value, digits = 2) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toLocaleString(undefined, { maximumFractionDigits: digits });
}
function currency() {
  return state.overview ? state.overview.chain.currency : "MON";
}
function fmtWei(wei) {
  if (wei === null || wei === undefined) return "–";
  // 18 decimals; a float is exact enough for display (the API keeps the exact decimal string)
  return `${(Number(wei) / 1e18).toLocaleString(undefined, { maximumFractionDigits: 6 })} ${currency()}`;
}
function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
function shortId(id) {
  if (!id) return "–";
  return id.length > 14 ? `${id.slice(0, 6)}…${id.slice(-6)}` : id;
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
function idCell(id) {
  return el("td", { class: "mono", title: id, text: shortId(id) });
}
function txLink(hash, url) {
  if (!hash) return el("span", { class: "muted", text: "not sent yet" });
  // no explorer (a local anvil): the hash as text, whole in the tooltip
  if (!url) return el("span", { class: "mono", title: hash, text: shortId(hash) });
  return el("a", { class: "mono", href: url, target: "_blank", rel: "noopener noreferrer", title: hash, text: shortId(hash) });
}

// ---- agents --------------------------------------------------------------------------------------
function agentCheck(wallet) {
  // the worst verdict among this wallet's records: differs > pending > matches
  if (!state.check || !state.check.configured) return null;
  const verdicts = state.check.records.filter((r) => r.wallet === wallet).map((r) => r.verdict);
  if (verdicts.length === 0) return null;
  if (verdicts.some((v) => DIFFERENCES.has(v))) return "differs";
  if (verdicts.some((v) => v === "pending")) return "pending";
  return verdicts.some((v) => v === "match") ? "matches" : null;
}
function claimed(wallet) {
  if (!state.check || !state.check.configured || !state.check.to_block) return null;
  return state.check.claimed_wei[wallet] || "0";
}

function sortValue(agent, key) {
  if (key === "status") return STATUS_ORDER[agent.status];
  if (key === "earned_wei") return Number(agent.earned_wei);
  if (key === "claimed_wei") { const c = claimed(agent.wallet); return c === null ? null : Number(c); }
  if (key === "check") { const c = agentCheck(agent.wallet); return c === null ? null : CHECK_ORDER[c]; }
  return agent[key];
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

function renderAgents() {
  const body = $("agents-body");
  const agents = [...state.overview.agents].sort(compare);
  if (agents.length === 0) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "9", text: "No agents yet: the first epoch has not closed." })));
  } else {
    const chainOn = state.overview.chain.enabled;
    body.replaceChildren(...agents.map((a) => {
      const check = agentCheck(a.wallet);
      const paid = claimed(a.wallet);
      const checkText = check === null ? (chainOn ? "–" : "no chain") : { differs: "✗ differs", pending: "… pending", matches: "✓ matches" }[check];
      return el(
        "tr",
        { "data-peer": a.peer_id, class: check === "differs" ? "diff" : "" },
        idCell(a.peer_id),
        idCell(a.wallet),
        el("td", {}, el("span", { class: `agent-status status-${a.status}`, text: a.status, title: statusHelp(a) })),
        el("td", { class: "num", text: fmt(a.rounds_accepted, 0) }),
        el("td", { class: "num", text: fmt(a.compute_seconds, 1) }),
        el("td", { class: "num", text: a.score_last === null ? "–" : fmt(a.score_last, 3) }),
        el("td", { class: "num", text: fmtWei(a.earned_wei) }),
        el("td", { class: "num", text: paid === null ? (chainOn ? "–" : "no chain") : fmtWei(paid) }),
        el("td", {}, el("span", { class: `check check-${check || "none"}`, text: checkText })),
      );
    }));
  }
  for (const th of document.querySelectorAll("#agents-table th")) {
    const key = th.querySelector("button").dataset.key;
    th.setAttribute("aria-sort", key === state.sort.key ? (state.sort.dir > 0 ? "ascending" : "descending") : "none");
  }
}

function statusHelp(agent) {
  const last = agent.last_round_at ? `last counted round ${fmtTime(agent.last_round_at)}` : "no round counted yet";
  const registered = agent.registered_on_chain ? "registered on chain" : "not registered on chain";
  return `${last}; ${registered}`;
}

// ---- epochs --------------------------------------------------------------------------------------
const PURPOSE_TEXT = { register_nodes: "registration", record_contributions: "records", post_epoch_root: "root" };

function renderEpochs() {
  const body = $("epochs-body");
  const epochs = [...state.overview.epochs].reverse();
  $("epochs-hint").textContent = state.overview.chain.enabled
    ? state.overview.chain.has_explorer
      ? "Newest first. Transaction hashes link to the block explorer."
      : "Newest first. This chain has no block explorer (a local anvil): hashes are shown without links."
    : "Newest first. This coordinator runs without a chain (--no-chain): nothing is posted.";
  if (epochs.length === 0) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "9", text: "No epoch closed yet." })));
    return;
  }
  body.replaceChildren(...epochs.map((e) => {
    const txs = el("ul", { class: "txs" }, ...e.txs.map((tx) =>
      el("li", {}, el("span", { class: "muted", text: `${PURPOSE_TEXT[tx.purpose] || tx.purpose}: ` }), txLink(tx.tx_hash, tx.explorer_url),
        tx.tx_hash ? "" : el("span", { class: "muted", text: ` (${tx.state})` }))));
    return el(
      "tr",
      { "data-epoch": String(e.epoch) },
      el("td", { class: "num", text: String(e.epoch) }),
      el("td", {}, el("span", { class: `epoch-status epoch-${e.status}`, text: e.status === "posted" ? "✓ posted" : "closed, posting" })),
      el("td", {}, el("time", { datetime: e.closed_at || "", text: fmtTime(e.closed_at) })),
      el("td", { class: "num", text: fmt(e.agents, 0) }),
      el("td", { class: "num", text: fmt(e.rounds_accepted, 0) }),
      el("td", { class: "num", text: fmtWei(e.distributed_wei) }),
      el("td", { class: "num", text: fmtWei(e.carried_out_wei) }),
      idCell(e.root),
      el("td", {}, e.txs.length ? txs : el("span", { class: "muted", text: state.overview.chain.enabled ? "none yet" : "not posted (no chain)" })),
    );
  }));
}

// ---- on-chain check ------------------------------------------------------------------------------
function values(v, differing) {
  if (!v) return el("span", { class: "muted", text: "none" });
  const parts = [
    ["rounds_accepted", `${fmt(v.rounds_accepted, 0)} rounds`],
    ["compute_seconds", `${fmt(v.compute_seconds, 0)} s`],
    ["samples", `${fmt(v.samples, 0)} samples`],
    ["score", `score ${fmt(v.score / 1e6, 6)}`],
  ];
  const holder = el("span", { class: "values" });
  parts.forEach(([field, text], i) => {
    if (i) holder.append(" · ");
    holder.append(differing.includes(field) ? el("mark", { title: `${FIELD_LABELS[field]} differ`, text }) : text);
  });
  return holder;
}
function rootValues(root, total, differing) {
  if (!root) return el("span", { class: "muted", text: "none" });
  const rootText = el("span", { class: "mono", title: root, text: shortId(root) });
  const totalText = `${fmtWei(total)} allocated`;
  return el("span", { class: "values" },
    differing.includes("root") ? el("mark", {}, rootText) : rootText, " · ",
    differing.includes("total_allocated_wei") ? el("mark", { text: totalText }) : totalText);
}

function checkRows() {
  const rows = [
    ...state.check.roots.map((r) => ({
      epoch: r.epoch, verdict: r.verdict, note: r.note, tx: r.tx_hash, url: r.explorer_url,
      item: el("span", { text: "epoch root" }),
      mine: rootValues(r.coordinator_root, r.coordinator_total_wei, r.differing_fields),
      theirs: rootValues(r.onchain_root, r.onchain_total_wei, r.differing_fields),
    })),
    ...state.check.records.map((r) => ({
      epoch: r.epoch, verdict: r.verdict, note: r.note, tx: r.tx_hash, url: r.explorer_url,
      item: el("span", {}, "record of ", el("span", { class: "mono", title: `${r.wallet} (peers: ${r.peer_ids.join(", ") || "unknown"})`, text: shortId(r.wallet) })),
      mine: values(r.coordinator, r.differing_fields),
      theirs: values(r.onchain, r.differing_fields),
    })),
  ];
  const weight = (row) => (DIFFERENCES.has(row.verdict) ? 0 : row.verdict === "pending" ? 1 : 2);
  return rows.sort((a, b) => weight(a) - weight(b) || b.epoch - a.epoch);
}

function renderCheck() {
  const summary = $("check-summary");
  const body = $("check-body");
  const button = $("check-run");
  button.disabled = state.checking;
  button.textContent = state.checking ? "Checking…" : "Check again";
  if (state.checkError) {
    summary.className = "check-summary check-error";
    summary.textContent = `The check could not run: ${state.checkError}`;
    return;
  }
  const c = state.check;
  if (!c) return;
  if (!c.configured || c.to_block === null) {
    summary.className = "check-summary";
    summary.textContent = c.note;
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "6", text: "Nothing compared." })));
    return;
  }
  const compared = c.roots.length + c.records.length;
  const blocks = `blocks ${fmt(c.from_block, 0)}–${fmt(c.to_block, 0)}, checked ${fmtTime(c.checked_at)}`;
  summary.className = `check-summary ${c.differences ? "check-bad" : "check-ok"}`;
  summary.textContent = c.differences
    ? `✗ ${c.differences} difference${c.differences === 1 ? "" : "s"} between the chain and the coordinator (${blocks}).`
    : `✓ The chain matches the coordinator: ${compared} item${compared === 1 ? "" : "s"} compared (${blocks}).`;
  if (c.note) summary.append(el("span", { class: "check-note", text: ` ${c.note}` }));
  const rows = checkRows();
  if (rows.length === 0) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "6", text: "No epoch posted yet." })));
    return;
  }
  body.replaceChildren(...rows.map((row) => el(
    "tr",
    { class: DIFFERENCES.has(row.verdict) ? "diff" : "", "data-verdict": row.verdict },
    el("td", { class: "num", text: String(row.epoch) }),
    el("td", {}, row.item),
    el("td", {}, el("span", { class: `verdict verdict-${row.verdict}`, text: VERDICT_TEXT[row.verdict] || row.verdict }),
      row.note ? el("div", { class: "muted note", text: row.note }) : ""),
    el("td", {}, row.mine),
    el("td", {}, row.theirs),
    el("td", {}, row.tx ? txLink(row.tx, row.url) : el("span", { class: "muted", text: "–" })),
  )));
}

// ---- header --------------------------------------------------------------------------------------
function renderHeader() {
  const o = state.overview;
  $("run-id").textContent = o.run_id;
  $("network").textContent = o.chain.enabled ? `${o.chain.network} (chain ${o.chain.chain_id})` : "no chain";
  $("contract").textContent = o.chain.enabled ? shortId(o.chain.contract) : "–";
  $("contract").title = o.chain.contract || "";
  $("open-epoch").textContent = o.open_epoch ? String(o.open_epoch.epoch) : "–";
  $("agent-count").textContent = String(o.agents.length);
  $("epoch-count").textContent = String(o.epochs.length);
  document.title = `HyperGPU swarm · ${o.run_id}`;
}

function render() {
  if (state.overview) {
    renderHeader();
    renderAgents();
    renderEpochs();
  }
  renderCheck();
}

// ---- data ----------------------------------------------------------------------------------------
async function getJson(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.detail || `${path}: HTTP ${response.status}`);
  return body;
}

function setConnection(mode, text) {
  const node = $("connection");
  node.className = `connection ${mode}`;
  node.textContent = text;
}

async function refreshOverview() {
  try {
    state.overview = await getJson("api/swarm");
    setConnection("live", `live · updated ${new Date().toLocaleTimeString()}`);
    render();
  } catch (error) {
    setConnection("polling", "coordinator unreachable: retrying");
  }
}

async function runCheck() {
  if (state.checking) return;
  state.checking = true;
  renderCheck();
  try {
    state.check = await getJson("api/chain-check");
    state.checkError = null;
  } catch (error) {
    state.checkError = error.message;
  } finally {
    state.checking = false;
    render();
  }
}

// ---- controls ------------------------------------------------------------------------------------
function initSorting() {
  for (const button of document.querySelectorAll("#agents-table th button")) {
    button.addEventListener("click", () => {
      const key = button.dataset.key;
      state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : 1 };
      if (state.overview) renderAgents();
    });
  }
}

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  const toggle = $("theme-toggle");
  toggle.setAttribute("aria-pressed", String(theme === "dark"));
  toggle.textContent = theme === "dark" ? "Light mode" : "Dark mode";
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

function init() {
  initTheme();
  initSorting();
  $("check-run").addEventListener("click", runCheck);
  refreshOverview().then(runCheck);
  setInterval(refreshOverview, POLL_MS);
  setInterval(runCheck, CHECK_MS);
}

document.addEventListener("DOMContentLoaded", init);
