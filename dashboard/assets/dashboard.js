// Meridian dashboard: renders the controller's API every second; every action goes through it.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { token: localStorage.getItem("meridian-token") || "", version: 0, demo: null, regions: [] };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  // The controller takes writes only as JSON, bodiless ones included.
  if (options.body || (options.method && options.method !== "GET")) headers["Content-Type"] = "application/json";
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  if (!response.ok) {
    const message = body && body.error ? (body.field ? `${body.field}: ${body.error}` : body.error)
      : (typeof body === "string" && body ? body : response.statusText);
    const err = new Error(`${response.status}: ${message}`);
    err.status = response.status;
    throw err;
  }
  return body;
}

function banner(message) {
  const node = $("#banner");
  node.hidden = !message;
  node.textContent = message || "";
}

async function act(description, path, options) {
  try {
    await api(path, options);
    banner("");
    await refresh();
  } catch (err) {
    const hint = err.status === 401 || err.status === 403 ? " (an operator token is needed: enter it above)" : "";
    banner(`${description} failed: ${err.message}${hint}`);
  }
}

// Every time on the page: the viewer's local time and how long ago, never an epoch number.
function fmtAgo(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}
const fmtTime = (ms) => (ms ? `${new Date(ms).toLocaleTimeString()} (${fmtAgo(ms)})` : "—");
const pct = (x) => (x * 100).toFixed(1) + "%";
const enc = encodeURIComponent;

// During a drain or slow start: the percentage of its weight the target gets now.
function healthPill(health, weightPercent) {
  const cls = health === "healthy" ? "ok" : health === "unhealthy" || health === "drained" ? "bad" : "warn";
  const suffix = weightPercent !== null && weightPercent !== undefined && health !== "drained" ? ` ${Math.round(weightPercent)}% weight` : "";
  return el("span", { class: "pill " + cls, "data-health": health }, health + suffix);
}

function renderClusters(status) {
  const body = $("#clusters tbody");
  body.replaceChildren();
  if (!status.clusters.length) {
    body.append(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No clusters configured.")));
    return;
  }
  for (const cluster of status.clusters) {
    // Per vantage: healthy only if it votes healthy for every app's target in this cluster.
    const votes = new Map();
    let verdictDown = false;
    for (const app of status.apps) {
      for (const t of app.targets.filter((t) => t.cluster === cluster.name)) {
        if (!t.verdict.healthy) verdictDown = true;
        for (const v of t.verdict.votes) votes.set(v.vantage, (votes.get(v.vantage) ?? true) && v.healthy);
      }
    }
    const vantages = [...votes.entries()].map(([vantage, ok]) => el("span", { class: "pill " + (ok ? "ok" : "bad"), title: vantage }, `${vantage} ${ok ? "✓" : "✗"}`));
    const drained = cluster.drain_started_at_ms !== null && cluster.drain_started_at_ms !== undefined;
    const stateCell = drained ? el("span", { class: "pill warn" }, "draining since " + fmtTime(cluster.drain_started_at_ms))
      : verdictDown ? el("span", { class: "pill bad" }, "unhealthy") : el("span", { class: "pill ok" }, "serving");
    const actions = el("td", {},
      drained
        ? el("button", { "data-action": "undrain", onclick: () => act("Undrain", `/api/v1/clusters/${enc(cluster.name)}/undrain`, { method: "POST" }) }, "Undrain")
        : el("button", { "data-action": "drain", onclick: () => act("Drain", `/api/v1/clusters/${enc(cluster.name)}/drain`, { method: "POST" }) }, "Drain"));
    const demo = state.demo && state.demo.find((d) => d.cluster === cluster.name);
    if (demo) {
      const mode = (m, label) => el("button", { "data-demo": m, disabled: demo.mode === m ? "" : null,
        onclick: () => act(`Demo: ${label}`, `/api/v1/demo/clusters/${enc(cluster.name)}`, { method: "PUT", body: JSON.stringify({ mode: m }) }) }, label);
      actions.append(" demo: ", mode("http-503", "Fail (503)"), mode("down", "Kill"), mode("up", "Recover"),
        el("span", { class: "muted" }, ` ${demo.mode}, ${demo.requests_served} served`));
    }
    body.append(el("tr", { "data-cluster": cluster.name },
      el("td", {}, el("strong", {}, cluster.name)), el("td", {}, cluster.region), el("td", {}, cluster.provider),
      el("td", { class: "muted" }, cluster.endpoints.join(", ")),
      el("td", {}, vantages.length ? vantages : el("span", { class: "muted" }, "no reports yet")),
      el("td", {}, stateCell), actions));
  }
}

function trafficCells(t) {
  const traffic = t.traffic;
  if (!traffic) return [el("td", { class: "muted" }, "—"), el("td", { class: "muted" }, "—"), el("td", { class: "muted" }, "—")];
  return [
    el("td", { "data-rps": traffic.requests_per_second }, traffic.requests_per_second.toFixed(1)),
    el("td", {}, pct(traffic.error_ratio)),
    el("td", {}, traffic.latency_seconds === null || traffic.latency_seconds === undefined ? "—" : (traffic.latency_seconds * 1000).toFixed(1) + " ms"),
  ];
}

function renderApps(status) {
  const root = $("#apps");
  root.replaceChildren();
  if (!status.apps.length) {
    root.append(el("p", { class: "muted" }, "No apps configured."));
    return;
  }
  for (const app of status.apps) {
    const total = app.targets.reduce((sum, t) => sum + t.effective_weight, 0);
    const totalRps = app.targets.reduce((sum, t) => sum + (t.traffic ? t.traffic.requests_per_second : 0), 0);
    const rows = app.targets.map((t) => {
      const share = total > 0 ? t.effective_weight / total : 0;
      const input = el("input", { class: "weight", type: "number", min: 0, max: 10000, value: t.weight, "aria-label": `weight of ${t.cluster}` });
      return el("tr", { "data-app": app.name, "data-target": t.cluster },
        el("td", {}, t.cluster), el("td", {}, t.tier),
        el("td", {}, healthPill(t.health, t.weight_percent)),
        el("td", { "data-weight": t.weight }, t.weight, t.weight_override !== null && t.weight_override !== undefined ? el("span", { class: "muted" }, ` (config ${t.configured_weight})`) : null),
        el("td", { "data-share": share.toFixed(4) }, el("span", { class: "bar", style: `width:${Math.round(share * 80)}px` }), " ", pct(share)),
        el("td", { "data-traffic-share": totalRps > 0 && t.traffic ? (t.traffic.requests_per_second / totalRps).toFixed(4) : "" },
          totalRps > 0 && t.traffic ? pct(t.traffic.requests_per_second / totalRps) : "—"),
        ...trafficCells(t),
        el("td", {}, t.verdict.votes.map((v) => el("span", { class: "pill " + (v.healthy ? "ok" : "bad"), title: v.detail }, `${v.vantage} ${v.healthy ? "✓" : "✗"}`))),
        el("td", {},
          input,
          el("button", { onclick: () => act("Set weight", `/api/v1/apps/${enc(app.name)}/targets/${enc(t.cluster)}/weight`, { method: "PUT", body: JSON.stringify({ weight: Number(input.value) }) }) }, "Set"),
          el("button", { onclick: () => act("Reset weight", `/api/v1/apps/${enc(app.name)}/targets/${enc(t.cluster)}/weight`, { method: "DELETE" }) }, "Reset"),
          t.drain_started_at_ms
            ? el("button", { onclick: () => act("Undrain target", `/api/v1/apps/${enc(app.name)}/targets/${enc(t.cluster)}/undrain`, { method: "POST" }) }, "Undrain")
            : el("button", { onclick: () => act("Drain target", `/api/v1/apps/${enc(app.name)}/targets/${enc(t.cluster)}/drain`, { method: "POST" }) }, "Drain")));
    });
    root.append(
      el("h3", {}, app.name, " ", el("span", { class: "muted" }, `${app.hostnames.join(", ")} · ${app.policy} · ${app.failure_mode}`)),
      el("table", {},
        el("thead", {}, el("tr", {}, ["Cluster", "Tier", "Health", "Weight", "Weight share", "Traffic share", "Requests/s", "Errors", "Latency", "Votes", "Controls"].map((h) => el("th", {}, h)))),
        el("tbody", {}, rows)));
  }
}

function firstAddress(cidr) {
  const [addr, len] = cidr.split("/");
  const parts = addr.split(".").map(Number);
  if (parts.length !== 4 || Number(len) > 30) return null;
  parts[3] += 1;
  return parts.join(".");
}

async function renderRegions(status) {
  const body = $("#regions tbody");
  let table;
  try { table = await api("/api/v1/table"); } catch (err) { return; }
  const subnets = (table.table.geo && table.table.geo.subnets) || [];
  const rows = [];
  for (const app of status.apps) {
    const host = app.hostnames.find((h) => !h.startsWith("*.")) || app.hostnames[0];
    for (const subnet of subnets) {
      const client = firstAddress(subnet.cidr);
      if (!client) continue;
      try {
        const e = await api(`/api/v1/explain?host=${enc(host)}&client=${enc(client)}`);
        rows.push(el("tr", { "data-region": subnet.region, "data-host": host },
          el("td", {}, host), el("td", {}, subnet.region), el("td", { class: "muted" }, client),
          el("td", {}, e.chosen || el("span", { class: "pill bad" }, "no target")), el("td", { class: "muted" }, e.summary)));
      } catch (err) {
        rows.push(el("tr", {}, el("td", {}, host), el("td", {}, subnet.region), el("td", {}, client), el("td", { colspan: 2, class: "muted" }, err.message)));
      }
    }
  }
  body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 5, class: "muted" }, "No client subnets in the config's geo section."))]));
}

function renderHistory(history) {
  const body = $("#history tbody");
  body.replaceChildren();
  if (!history.length) {
    body.append(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "No verdict changes yet.")));
    return;
  }
  for (const h of history) {
    // App "*": an event of the member cluster as a whole (its API server), not a verdict.
    const member = h.app === "*";
    const word = member ? (h.healthy ? "reachable" : "unreachable") : (h.healthy ? "healthy" : "unhealthy");
    body.append(el("tr", {},
      el("td", {}, fmtTime(h.at_ms)), el("td", {}, member ? "(member cluster)" : h.app), el("td", {}, h.cluster),
      el("td", {}, el("span", { class: "pill " + (h.healthy ? "ok" : "bad") }, word)),
      el("td", {}, h.cause),
      el("td", { class: "muted" }, (h.votes || []).map((v) => `${v.vantage}:${v.healthy ? "✓" : "✗"}`).join(" "))));
  }
}

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

// Member clusters: shown only in Kubernetes mode (file mode observes none).
// The vendor: the configured provider, and what the nodes themselves name when it differs
// (a cluster configured as one cloud whose nodes say another is worth a look).
function vendorCell(configured, observed) {
  if (!observed || observed === configured) return el("td", {}, configured || observed || "—");
  if (!configured) return el("td", {}, observed);
  return el("td", {}, `${configured} `, el("span", { class: "pill warn", title: "the nodes' spec.providerID names another vendor" }, `nodes say ${observed}`));
}

function renderMembers(members, clusters) {
  const provider = new Map((clusters || []).map((c) => [c.name, c.provider]));
  const section = $("#members");
  section.hidden = !members.length;
  const body = $("#members tbody");
  body.replaceChildren();
  for (const m of members) {
    const r = m.reachability;
    const api = r.Reachable ? el("span", { class: "pill ok" }, r.Reachable.version)
      : r.Unreachable ? el("span", { class: "pill bad", title: r.Unreachable.message }, `unreachable: ${r.Unreachable.message}`)
      : el("span", { class: "muted" }, "not reached yet");
    const inv = m.inventory;
    const d = m.discovered;
    body.append(el("tr", {},
      el("td", {}, m.cluster), vendorCell(provider.get(m.cluster), inv && inv.nodeProvider), el("td", {}, api),
      el("td", {}, inv ? `${inv.nodesReady} / ${inv.nodes}` : "—"),
      el("td", {}, inv ? `${(inv.requestedCpuMillis / 1000).toFixed(2)} / ${(inv.allocatableCpuMillis / 1000).toFixed(2)} cores` : "—"),
      el("td", {}, inv ? `${fmtBytes(inv.requestedMemoryBytes)} / ${fmtBytes(inv.allocatableMemoryBytes)}` : "—"),
      el("td", {}, inv && inv.workloads.length ? inv.workloads.map((w) => `${w.app} ${w.readyReplicas}/${w.desiredReplicas}`).join(", ") : "—"),
      el("td", { class: d && d.Err ? "muted" : "" }, !d ? "—" : d.Ok ? d.Ok.join(", ") : d.Err)));
  }
}

// Charts over time, from /api/v1/timeline: one uPlot per reading, events drawn as lines.
const charts = { windowMs: 900000, app: "", plots: {}, timeline: null };
const PALETTE = ["#2563eb", "#f59e0b", "#10b981", "#8b5cf6", "#ef4444", "#0ea5e9", "#84cc16", "#ec4899"];
const EVENT_COLOURS = { unhealthy: "#c81e1e", healthy: "#15803d", operator: "#2563eb", member: "#7a5a00" };
const CHARTS = [
  { id: "traffic", field: "requests_per_second", stacked: true, fmt: (v) => v.toFixed(1) + "/s" },
  { id: "errors", field: "error_ratio", fmt: (v) => pct(v) },
  { id: "latency", field: "latency_p99_seconds", fmt: (v) => (v * 1000).toFixed(1) + " ms" },
  { id: "answers", field: "dns_answers_per_second", fmt: (v) => v.toFixed(1) + "/s" },
  { id: "replicas", field: "replicas_ready", fmt: (v) => String(Math.round(v)) },
];

function eventColour(e) {
  return e.kind === "verdict" ? (e.healthy ? EVENT_COLOURS.healthy : EVENT_COLOURS.unhealthy) : EVENT_COLOURS[e.kind] || "#6b7385";
}

function drawEvents(u) {
  const tl = charts.timeline;
  if (!tl) return;
  const { ctx, bbox } = u;
  ctx.save();
  ctx.lineWidth = 2 * devicePixelRatio;
  for (const e of tl.events) {
    if (e.app && e.app !== charts.app && e.app !== "*") continue;
    const x = Math.round(u.valToPos(e.at_ms / 1000, "x", true));
    if (x < bbox.left || x > bbox.left + bbox.width) continue;
    ctx.strokeStyle = eventColour(e);
    ctx.setLineDash(e.kind === "operator" ? [6, 4] : []);
    ctx.beginPath();
    ctx.moveTo(x, bbox.top);
    ctx.lineTo(x, bbox.top + bbox.height);
    ctx.stroke();
  }
  ctx.restore();
}

// Columns for uPlot: x in seconds, then one column per cluster (stacked: running sums,
// tallest first, so each band is drawn over the one below it and shows through).
function chartData(spec, clusters, series, times) {
  const raw = clusters.map((c) => {
    const s = series.find((x) => x.cluster === c);
    return s ? s[spec.field] : times.map(() => null);
  });
  if (!spec.stacked) return { raw, columns: raw };
  const sums = [];
  let running = times.map(() => null);
  for (const column of raw) {
    running = running.map((r, i) => (r === null && column[i] === null ? null : (r || 0) + (column[i] || 0)));
    sums.push(running);
  }
  return { raw: raw.slice().reverse(), columns: sums.reverse() };
}

function renderChart(spec, clusters, series, times) {
  const figure = $(`#chart-${spec.id}`);
  const holder = figure.querySelector(".plot");
  const known = series.some((s) => s[spec.field].some((v) => v !== null));
  if (!known) {
    if (charts.plots[spec.id]) { charts.plots[spec.id].destroy(); delete charts.plots[spec.id]; }
    const why = spec.id === "replicas" ? "No replica counts: they come from the member clusters (Kubernetes mode)."
      : spec.id === "answers" ? "No DNS answers reported in this window."
      : "No traffic reported in this window.";
    holder.replaceChildren(el("p", { class: "empty" }, why));
    figure.dataset.state = "empty";
    return;
  }
  figure.dataset.state = "drawn";
  const { raw, columns } = chartData(spec, clusters, series, times);
  const order = spec.stacked ? clusters.slice().reverse() : clusters;
  const data = [times.map((t) => t / 1000), ...columns];
  const key = order.join(",");
  let plot = charts.plots[spec.id];
  if (plot && plot.meridianKey === key) {
    plot.meridianRaw = raw;
    plot.setData(data);
    return;
  }
  if (plot) plot.destroy();
  holder.replaceChildren();
  const colour = (c) => PALETTE[clusters.indexOf(c) % PALETTE.length];
  plot = new uPlot({
    width: Math.max(280, holder.clientWidth || 560),
    height: 180,
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
    axes: [{}, { size: 64, values: (u, ticks) => ticks.map((v) => spec.fmt(v)) }],
    series: [{}, ...order.map((c, i) => ({
      label: c,
      stroke: colour(c),
      fill: spec.stacked ? colour(c) + "66" : undefined,
      width: 1.5,
      spanGaps: false,
      value: (u, v, si, idx) => {
        const x = idx === null || idx === undefined ? null : u.meridianRaw[si - 1][idx];
        return x === null || x === undefined ? "—" : spec.fmt(x);
      },
    }))],
    hooks: { draw: [drawEvents] },
  }, data, holder);
  plot.meridianKey = key;
  plot.meridianRaw = raw;
  charts.plots[spec.id] = plot;
}

// The traffic split now, as text under the chart: each cluster's share of the last step.
function renderShares(clusters, series) {
  const holder = $("#chart-traffic .shares");
  const last = (s) => {
    for (let i = s.requests_per_second.length - 1; i >= 0; i--) if (s.requests_per_second[i] !== null) return s.requests_per_second[i];
    return null;
  };
  const now = clusters.map((c) => ({ c, v: last(series.find((s) => s.cluster === c) || { requests_per_second: [] }) }));
  const total = now.reduce((sum, x) => sum + (x.v || 0), 0);
  holder.replaceChildren(...now.map(({ c, v }) => {
    const share = total > 0 && v !== null ? v / total : null;
    return el("span", { class: "pill", "data-cluster": c, "data-share": share === null ? "" : share.toFixed(4) },
      el("span", { style: `color:${PALETTE[clusters.indexOf(c) % PALETTE.length]}` }, "■ "),
      `${c}: ${share === null ? "no traffic" : pct(share)}`);
  }));
}

function renderEvents(events) {
  const body = $("#chart-events tbody");
  const shown = events.filter((e) => !e.app || e.app === charts.app || e.app === "*").slice().reverse();
  body.replaceChildren(...(shown.length ? shown.map((e) => {
    const word = e.kind === "verdict" ? (e.healthy ? "healthy" : "unhealthy") : e.kind === "member" ? (e.healthy ? "member reachable" : "member unreachable") : "operator";
    const cls = e.kind === "operator" ? "pill" : "pill " + (e.healthy ? "ok" : "bad");
    return el("tr", { "data-kind": e.kind, "data-cluster": e.cluster || "", "data-healthy": e.healthy === null || e.healthy === undefined ? "" : String(e.healthy) },
      el("td", {}, fmtTime(e.at_ms)), el("td", {}, el("span", { class: cls }, word)), el("td", {}, e.cluster || "—"), el("td", {}, e.text));
  }) : [el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No verdict changes, drains or operator changes in this window."))]));
}

async function refreshCharts() {
  let tl;
  try {
    tl = await api(`/api/v1/timeline?window_ms=${charts.windowMs}`);
  } catch (err) {
    $("#chart-step").textContent = `charts unavailable: ${err.message}`;
    return;
  }
  charts.timeline = tl;
  const apps = [...new Set(tl.series.map((s) => s.app))].sort();
  const select = $("#chart-app");
  if (!charts.app || !apps.includes(charts.app)) charts.app = apps[0] || "";
  if ([...select.options].map((o) => o.value).join() !== apps.join()) {
    select.replaceChildren(...apps.map((a) => el("option", { value: a }, a)));
  }
  select.value = charts.app;
  $("#chart-step").textContent = `one point per ${tl.step_ms / 1000} s, up to ${new Date(tl.times_ms[tl.times_ms.length - 1]).toLocaleTimeString()}`;
  const series = tl.series.filter((s) => s.app === charts.app);
  const clusters = series.map((s) => s.cluster).sort();
  for (const spec of CHARTS) renderChart(spec, clusters, series, tl.times_ms);
  renderShares(clusters, series);
  renderEvents(tl.events);
  window.meridianCharts = { app: charts.app, timeline: tl, plots: charts.plots };
}

// Cost and capacity: the planner's what-if (GET /api/v1/plan), grouped by cloud.
const plans = { clusters: [], ran: false };
const money = (x) => (x === null || x === undefined ? "unknown" : x.toFixed(3));

function scenarioOptions(clusters) {
  const names = clusters.map((c) => c.name).join();
  if (names === plans.clusters.map((c) => c.name).join()) return;
  plans.clusters = clusters;
  const select = $("#plan-scenario");
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "now" }, "nothing changes (now)"),
    ...clusters.map((c) => el("option", { value: `fail:${c.name}` }, `${c.name} fails`)),
    ...clusters.map((c) => el("option", { value: `drain:${c.name}` }, `${c.name} is drained`)),
    ...[1.5, 2, 3].map((f) => el("option", { value: `peak:${f}` }, `traffic peaks ×${f}`)));
  if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
}

async function runPlan() {
  const scenario = $("#plan-scenario").value;
  let plan;
  try {
    plan = await api(`/api/v1/plan?scenario=${enc(scenario)}`);
  } catch (err) {
    $("#plan-summary").textContent = `The planner could not answer: ${err.message}`;
    return;
  }
  plans.ran = true;
  const delta = plan.costPerHourAfter - plan.costPerHourBefore;
  const sign = delta > 0 ? "+" : delta < 0 ? "−" : "±";
  $("#plan-summary").replaceChildren(
    el("span", { class: "pill " + (plan.sufficient ? "ok" : "bad"), "data-sufficient": String(plan.sufficient) },
      plan.sufficient ? "capacity sufficient" : "capacity short"),
    ` cost/h ${money(plan.costPerHourBefore)} now → ${money(plan.costPerHourAfter)} planned (${sign}${Math.abs(delta).toFixed(3)})`,
    plan.unknownCost.length ? ` · cost unknown for ${plan.unknownCost.join(", ")}` : "");
  const byProvider = new Map();
  for (const c of plans.clusters) {
    if (!byProvider.has(c.provider)) byProvider.set(c.provider, []);
    byProvider.get(c.provider).push(c);
  }
  const rows = [];
  for (const [provider, clusters] of [...byProvider.entries()].sort()) {
    const sum = { rb: 0, ra: 0, cb: 0, ca: 0, unknown: false };
    for (const c of clusters) {
      const p = plan.clusters[c.name] || { replicasBefore: 0, replicasAfter: 0, costPerHourBefore: null, costPerHourAfter: null };
      const n = plan.nodes[c.name];
      sum.rb += p.replicasBefore; sum.ra += p.replicasAfter;
      if (p.costPerHourBefore === null) sum.unknown = true;
      sum.cb += p.costPerHourBefore || 0; sum.ca += p.costPerHourAfter || 0;
      const changed = p.replicasAfter !== p.replicasBefore;
      rows.push(el("tr", { "data-cluster": c.name, "data-cost-after": p.costPerHourAfter === null ? "" : p.costPerHourAfter.toFixed(4) },
        el("td", {}, provider), el("td", {}, c.name),
        el("td", { class: changed ? "changed" : "" }, `${p.replicasBefore} → ${p.replicasAfter}`),
        el("td", { class: changed ? "changed" : "" }, `${money(p.costPerHourBefore)} → ${money(p.costPerHourAfter)}`),
        el("td", {}, n ? `${n.machinesNow} / ${n.machinesNeeded} / ${n.maxMachines}${n.machinesNeeded > n.maxMachines ? " (short)" : ""}` : "—")));
    }
    rows.push(el("tr", { class: "subtotal", "data-provider": provider },
      el("td", {}, el("strong", {}, provider)), el("td", { class: "muted" }, "all clusters"),
      el("td", {}, `${sum.rb} → ${sum.ra}`),
      el("td", {}, `${sum.cb.toFixed(3)} → ${sum.ca.toFixed(3)}${sum.unknown ? " (some unknown)" : ""}`), el("td", {})));
  }
  $("#plan-clusters tbody").replaceChildren(...rows);
  const short = plan.apps.filter((a) => a.replicaShortfall > 0 || a.missingRps > 1e-6);
  $("#plan-short").replaceChildren(...(short.length
    ? short.map((a) => el("li", { class: "bad" }, `${a.app}: ${a.replicaShortfall} replicas short, ${a.missingRps.toFixed(1)} requests/s without capacity`))
    : [el("li", { class: "muted" }, "No app is short of replicas or capacity in this plan.")]));
}

async function refresh() {
  let status;
  try {
    status = await api("/api/v1/status");
  } catch (err) {
    const hint = err.status === 401 || err.status === 403 ? " Enter a read-only or operator token above." : "";
    banner(`Cannot read the controller's status: ${err.message}.${hint}`);
    return;
  }
  if ($("#banner").textContent.startsWith("Cannot")) banner("");
  $("#table-version").textContent = `table v${status.table_version}`;
  $("#updated").textContent = `computed ${fmtTime(status.generated_at_ms)} · refreshed ${new Date().toLocaleTimeString()}`;
  try { state.demo = await api("/api/v1/demo/clusters"); } catch (_) { state.demo = null; }
  renderClusters(status);
  scenarioOptions(status.clusters);
  if (!plans.ran) await runPlan();
  renderApps(status);
  try { renderMembers(await api("/api/v1/inventory"), status.clusters); } catch (_) { renderMembers([]); }
  try { renderHistory(await api("/api/v1/history?limit=20")); } catch (err) { banner(`History: ${err.message}`); }
  await refreshCharts();
  if (status.table_version !== state.version) {
    state.version = status.table_version;
    await renderRegions(status);
  }
}

$("#token").value = state.token;
$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("#token").value.trim();
  localStorage.setItem("meridian-token", state.token);
  refresh();
});
$("#explain-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const host = $("#explain-host").value.trim();
  const client = $("#explain-client").value.trim();
  try {
    const e = await api(`/api/v1/explain?host=${enc(host)}&client=${enc(client)}`);
    $("#explain-result").textContent = `${e.summary}\n\n` + e.targets.map((t) =>
      `${t.chosen ? "→" : " "} ${t.cluster} (${t.region}) tier ${t.tier} weight ${t.weight} effective ${t.effective_weight} ${t.health.state}${t.candidate ? "" : " — not a candidate"}`).join("\n");
  } catch (err) {
    $("#explain-result").textContent = err.message;
  }
});
$("#plan-form").addEventListener("submit", (event) => {
  event.preventDefault();
  runPlan();
});
$("#chart-app").addEventListener("change", (event) => {
  charts.app = event.target.value;
  for (const plot of Object.values(charts.plots)) plot.destroy();
  charts.plots = {};
  refreshCharts();
});
for (const button of document.querySelectorAll("#chart-controls button[data-window]")) {
  button.addEventListener("click", () => {
    charts.windowMs = Number(button.dataset.window);
    for (const b of document.querySelectorAll("#chart-controls button[data-window]")) b.setAttribute("aria-pressed", String(b === button));
    refreshCharts();
  });
}
window.addEventListener("resize", () => {
  for (const plot of Object.values(charts.plots)) {
    const width = plot.root.parentElement.clientWidth;
    if (width > 0) plot.setSize({ width: Math.max(280, width), height: 180 });
  }
});
refresh();
setInterval(refresh, 1000);
