// The operator console: the router's own admin API (the same calls as curl), no framework,
// nothing fetched from elsewhere. Every value is put in the page as text, never as HTML.
"use strict";

const state = { key: sessionStorage.getItem("router-admin-key") || "", cursor: null,
  entries: new Map(), agentsTimer: null };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== false && value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function say(text, kind) {
  const node = document.getElementById("message");
  node.textContent = text;
  node.className = kind || "";
}

// One admin call; an error answer becomes an exception carrying the contract's message.
async function api(method, path, body) {
  const headers = { "X-API-Key": state.key };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers,
      body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new Error(`the router did not answer (${err.message})`);
  }
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (!response.ok) {
    const detail = data && data.error ? `${data.error.code}: ${data.error.message}` : text;
    throw new Error(`${method} ${path} answered ${response.status}: ${detail}`);
  }
  return data;
}

function when(iso) { return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : ""; }

// --- views --------------------------------------------------------------------------------

function show(view) {
  for (const button of document.querySelectorAll("nav button")) {
    button.setAttribute("aria-pressed", String(button.dataset.view === view));
  }
  for (const section of document.querySelectorAll("main section")) {
    section.hidden = section.id !== `view-${view}`;
  }
  clearInterval(state.agentsTimer);
  say("");
  if (view === "agents") { loadAgents(); state.agentsTimer = setInterval(loadAgents, 5000); }
  if (view === "stats") loadStats();
  if (view === "dlq") loadDlq(false);
}

// --- dead letters -------------------------------------------------------------------------

function dlqFilter() {
  const value = (id) => document.getElementById(id).value.trim();
  return { status: value("dlq-status"), agent: value("dlq-agent"), kind: value("dlq-kind") };
}

async function loadDlq(more) {
  if (!state.key) { say("Enter the admin key to start.", "error"); return; }
  const f = dlqFilter();
  const query = new URLSearchParams({ limit: "50" });
  for (const name of ["status", "agent", "kind"]) if (f[name]) query.set(name, f[name]);
  if (more && state.cursor) query.set("cursor", state.cursor);
  try {
    const page = await api("GET", `dlq?${query}`);
    const body = document.querySelector("#dlq-table tbody");
    if (!more) { body.replaceChildren(); state.entries.clear(); }
    for (const entry of page.items) {
      state.entries.set(entry.id, entry);
      body.append(el("tr", { "data-id": entry.id },
        el("td", {}, el("input", { type: "checkbox", class: "pick", value: entry.id,
          "aria-label": `select entry ${entry.id}`, onchange: updateActions })),
        el("td", { text: entry.id }),
        el("td", {}, el("a", { href: "#", text: entry.log_id,
          onclick: (event) => { event.preventDefault(); lookUp(entry.log_id); } })),
        el("td", { text: entry.kind }),
        el("td", { text: entry.agents.join(", ") }),
        el("td", {}, el("span", { class: `badge ${entry.status}`, text: entry.status })),
        el("td", { text: entry.attempts }),
        el("td", { text: entry.replay_count }),
        el("td", { class: "error", text: entry.last_error || "" }),
        el("td", { text: when(entry.created_at) })));
    }
    state.cursor = page.next_cursor;
    document.getElementById("dlq-next").hidden = !page.next_cursor;
    document.getElementById("select-all").checked = false;
    updateActions();
    say(`${state.entries.size} entr${state.entries.size === 1 ? "y" : "ies"} shown` +
      (page.next_cursor ? "; more on the next page" : ""), "ok");
  } catch (err) { say(err.message, "error"); }
}

function selectedIds() {
  return [...document.querySelectorAll("#dlq-table .pick:checked")].map((box) => Number(box.value));
}

function updateActions() {
  const none = selectedIds().length === 0;
  for (const id of ["preview-selected", "replay-selected", "discard-selected"]) {
    document.getElementById(id).disabled = none;
  }
}

function counts(result) {
  const skipped = result.skipped.map((s) => `${s.id} (${s.reason})`).join(", ");
  return `replayed ${result.replayed}: resolved ${result.resolved}, failed ${result.failed}` +
    `, parked ${result.parked}` + (skipped ? `; skipped ${skipped}` : "");
}

function showPreview(result) {
  const target = document.getElementById("dlq-preview");
  target.replaceChildren(el("h3", { text: `A replay would send ${result.ids.length} entr` +
    `${result.ids.length === 1 ? "y" : "ies"}` }));
  const list = el("ul", {});
  for (const entry of result.entries) {
    list.append(el("li", { text: `${entry.id} · ${entry.kind} · ${entry.agents.join(", ")}` +
      ` · ${entry.last_error || "no error recorded"}` }));
  }
  target.append(list);
  if (result.skipped.length) {
    target.append(el("p", { text: "Not replayable: " +
      result.skipped.map((s) => `${s.id} (${s.reason})`).join(", ") }));
  }
}

// Replays ids in chunks, so a large set shows its progress and one failure stops nothing.
async function replayIds(ids) {
  const progress = document.getElementById("dlq-progress");
  const total = { replayed: 0, resolved: 0, failed: 0, parked: 0, skipped: [] };
  for (let start = 0; start < ids.length; start += 25) {
    progress.textContent = `Replaying ${Math.min(start + 25, ids.length)} of ${ids.length}…`;
    const result = await api("POST", "dlq/replay", { ids: ids.slice(start, start + 25) });
    for (const name of ["replayed", "resolved", "failed", "parked"]) total[name] += result[name];
    total.skipped.push(...result.skipped);
  }
  progress.textContent = `Done: ${counts(total)}.`;
  return total;
}

async function onPreviewSelected() {
  try { showPreview(await api("POST", "dlq/replay", { ids: selectedIds(), dry_run: true })); }
  catch (err) { say(err.message, "error"); }
}

async function onReplaySelected() {
  try {
    const total = await replayIds(selectedIds());
    say(`Replay: ${counts(total)}.`, total.failed ? "error" : "ok");
    await loadDlq(false);
  } catch (err) { say(err.message, "error"); }
}

async function onDiscardSelected() {
  const ids = selectedIds();
  if (!confirm(`Discard ${ids.length} entr${ids.length === 1 ? "y" : "ies"}? They are kept for audit.`)) return;
  const progress = document.getElementById("dlq-progress");
  let done = 0;
  try {
    for (const id of ids) {
      await api("DELETE", `dlq/${id}`);
      done += 1;
      progress.textContent = `Discarded ${done} of ${ids.length}`;
    }
    say(`Discarded ${done}.`, "ok");
  } catch (err) { say(`Discarded ${done} of ${ids.length}; then ${err.message}`, "error"); }
  await loadDlq(false);
}

function filteredRequest(dryRun) {
  const f = dlqFilter();
  const body = { limit: 1000, dry_run: dryRun };
  if (f.agent) body.agent = f.agent;
  if (f.kind) body.kind = f.kind;
  return body;
}

async function onPreviewFiltered() {
  try { showPreview(await api("POST", "dlq/replay", filteredRequest(true))); }
  catch (err) { say(err.message, "error"); }
}

async function onReplayFiltered() {
  try {
    const preview = await api("POST", "dlq/replay", filteredRequest(true));
    if (!preview.ids.length) { say("No pending entry matches.", "ok"); return; }
    if (!confirm(`Replay ${preview.ids.length} pending entries?`)) return;
    const total = await replayIds(preview.ids);
    say(`Replay: ${counts(total)}.`, total.failed ? "error" : "ok");
    await loadDlq(false);
  } catch (err) { say(err.message, "error"); }
}

// --- agents -------------------------------------------------------------------------------

function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

async function loadAgents() {
  try {
    const [metricsText, ready] = await Promise.all([
      fetch("metrics").then((r) => r.text()),
      fetch("health/ready").then((r) => r.json()),
    ]);
    const byAgent = new Map();
    const row = (agent) => byAgent.get(agent) || byAgent.set(agent, {}).get(agent);
    const sums = { agent_breaker_open: "open", auto_replayed_total: "replayed",
      routing_errors_total: "failed", retry_attempts_total: "retries",
      agent_inflight_requests: "inflight" };
    for (const s of parseMetrics(metricsText)) {
      if (s.name in sums && s.labels.agent) {
        const r = row(s.labels.agent);
        r[sums[s.name]] = (r[sums[s.name]] || 0) + s.value;
      }
    }
    const open = new Set(ready.open_breakers || []);
    const body = document.querySelector("#agents-table tbody");
    body.replaceChildren();
    const names = document.getElementById("agent-names");
    names.replaceChildren();
    for (const [agent, r] of [...byAgent].sort()) {
      names.append(el("option", { value: agent }));
      const breaker = open.has(agent) || r.open ? "open" : "closed";
      const pending = el("td", { text: "…" });
      body.append(el("tr", { "data-agent": agent },
        el("td", { text: agent }),
        el("td", {}, el("span", { class: `badge ${breaker}`, text: breaker })),
        el("td", { text: r.replayed || 0 }), el("td", { text: r.failed || 0 }),
        el("td", { text: r.retries || 0 }), el("td", { text: r.inflight || 0 }), pending));
      if (state.key) {
        api("GET", `dlq?status=pending&agent=${encodeURIComponent(agent)}&limit=1000`)
          .then((page) => { pending.textContent = page.items.length +
            (page.next_cursor ? "+" : ""); })
          .catch(() => { pending.textContent = "?"; });
      }
    }
  } catch (err) { say(`Agents: ${err.message}`, "error"); }
}

// --- traffic ------------------------------------------------------------------------------

function sparkline(values, label) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 60 20");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const max = Math.max(...values.map((v) => v || 0), 1e-9);
  const points = values.map((v, i) => `${i},${20 - 18 * (v || 0) / max}`).join(" ");
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points);
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "#1d4ed8");
  line.setAttribute("stroke-width", "1.5");
  line.setAttribute("vector-effect", "non-scaling-stroke");
  svg.append(line);
  return svg;
}

async function loadStats() {
  const target = document.getElementById("stats-charts");
  if (!state.key) { say("Enter the admin key to start.", "error"); return; }
  try {
    const since = new Date(Date.now() - 3600 * 1000);
    since.setSeconds(0, 0);
    const page = await api("GET", `stats?since=${encodeURIComponent(since.toISOString())}&limit=10000`);
    const series = new Map();
    for (const item of page.items) {
      const name = `${item.kind} → ${item.agent}`;
      if (!series.has(name)) series.set(name, new Map());
      series.get(name).set(item.minute, item);
    }
    const minutes = [];
    for (let t = since.getTime(); t <= Date.now(); t += 60000) minutes.push(new Date(t).toISOString().replace(".000Z", "Z"));
    const grid = el("div", { class: "charts" });
    for (const [name, rows] of [...series].sort()) {
      const at = minutes.map((m) => rows.get(m));
      const last = page.items.find((i) => `${i.kind} → ${i.agent}` === name);
      const total = at.reduce((n, r) => n + (r ? r.count : 0), 0);
      const errors = at.reduce((n, r) => n + (r ? r.errors : 0), 0);
      grid.append(el("div", { class: "chart" },
        el("h3", { text: name }),
        el("div", { class: "row", text: `deliveries per minute (${total} in the hour)` }),
        sparkline(at.map((r) => r && r.count), `${name}: deliveries per minute`),
        el("div", { class: "row", text: `error rate (${errors} failed)` }),
        sparkline(at.map((r) => r && r.count ? r.errors / r.count : 0), `${name}: error rate`),
        el("div", { class: "row", text: `p95 ms (last minute: ${last.p95_ms})` }),
        sparkline(at.map((r) => r && r.p95_ms), `${name}: p95 per minute`)));
    }
    target.replaceChildren(series.size ? grid : el("p", { text: "No traffic in the last hour " +
      "(rows appear within a minute of it)." }));
  } catch (err) { say(`Traffic: ${err.message}`, "error"); }
}

// --- one signal ---------------------------------------------------------------------------

function detailList(pairs) {
  const list = el("dl", {});
  for (const [name, value] of pairs) list.append(el("dt", { text: name }), el("dd", { text: value }));
  return list;
}

async function lookUp(logId) {
  show("signal");
  document.getElementById("signal-id").value = logId;
  const target = document.getElementById("signal-detail");
  target.replaceChildren();
  try {
    const row = await api("GET", `logs/${encodeURIComponent(logId)}`);
    target.append(el("h3", { text: "Log row" }), detailList([
      ["status", row.status], ["kind", row.kind], ["sender", row.sender_id],
      ["trace id", row.trace_id], ["attempts", String(row.attempts)],
      ["created", when(row.created_at)], ["updated", when(row.updated_at)]]));
    const agents = el("table", {}, el("thead", {}, el("tr", {}, ...["agent", "ok", "status",
      "attempts", "latency ms", "error"].map((h) => el("th", { text: h })))));
    const body = el("tbody", {});
    for (const o of row.response || []) {
      body.append(el("tr", {}, el("td", { text: o.agent }), el("td", { text: String(o.ok) }),
        el("td", { text: o.status_code ?? "" }), el("td", { text: o.attempts }),
        el("td", { text: o.latency_ms }), el("td", { class: "error", text: o.error || "" })));
    }
    agents.append(body);
    target.append(agents);
    const page = await api("GET", `dlq?log_id=${encodeURIComponent(logId)}`);
    if (!page.items.length) { target.append(el("p", { text: "No DLQ entry." })); return; }
    const entry = page.items[0];
    target.append(el("h3", { text: `DLQ entry ${entry.id}` }), detailList([
      ["status", entry.status], ["agents", entry.agents.join(", ")],
      ["last error", entry.last_error || ""], ["replays", String(entry.replay_count)]]));
    if (entry.status === "pending" || entry.status === "parked") {
      target.append(el("button", { type: "button", text: `Replay entry ${entry.id}`,
        onclick: async () => {
          try {
            const result = await api("POST", "dlq/replay", { ids: [entry.id] });
            say(`Replay of ${entry.id}: ${counts(result)}.`, result.failed ? "error" : "ok");
            await lookUp(logId);
          } catch (err) { say(err.message, "error"); }
        } }));
    }
  } catch (err) { say(err.message, "error"); }
}

// --- wiring -------------------------------------------------------------------------------

document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.key = document.getElementById("key").value.trim();
  sessionStorage.setItem("router-admin-key", state.key);
  say("Key set.", "ok");
  loadDlq(false);
});
for (const button of document.querySelectorAll("nav button")) {
  button.addEventListener("click", () => show(button.dataset.view));
}
document.getElementById("dlq-filter").addEventListener("submit", (event) => {
  event.preventDefault(); loadDlq(false);
});
document.getElementById("dlq-next").addEventListener("click", () => loadDlq(true));
document.getElementById("select-all").addEventListener("change", (event) => {
  for (const box of document.querySelectorAll("#dlq-table .pick")) box.checked = event.target.checked;
  updateActions();
});
document.getElementById("preview-selected").addEventListener("click", onPreviewSelected);
document.getElementById("replay-selected").addEventListener("click", onReplaySelected);
document.getElementById("discard-selected").addEventListener("click", onDiscardSelected);
document.getElementById("preview-filtered").addEventListener("click", onPreviewFiltered);
document.getElementById("replay-filtered").addEventListener("click", onReplayFiltered);
document.getElementById("signal-form").addEventListener("submit", (event) => {
  event.preventDefault(); lookUp(document.getElementById("signal-id").value.trim());
});
if (state.key) { document.getElementById("key").value = state.key; loadDlq(false); }
else say("Enter the admin key to start.");
