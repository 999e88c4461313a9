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

const fmtTime = (ms) => (ms ? new Date(ms).toLocaleTimeString() : "—");
const pct = (x) => (x * 100).toFixed(1) + "%";
const enc = encodeURIComponent;

function healthPill(health, progress) {
  const cls = health === "healthy" ? "ok" : health === "unhealthy" || health === "drained" ? "bad" : "warn";
  const suffix = progress !== null && progress !== undefined && health !== "healthy" ? ` ${Math.round(progress * 100)}%` : "";
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
        el("td", {}, healthPill(t.health, t.progress)),
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
function renderMembers(members) {
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
      el("td", {}, m.cluster), el("td", {}, api),
      el("td", {}, inv ? `${inv.nodesReady} / ${inv.nodes}` : "—"),
      el("td", {}, inv ? `${(inv.requestedCpuMillis / 1000).toFixed(2)} / ${(inv.allocatableCpuMillis / 1000).toFixed(2)} cores` : "—"),
      el("td", {}, inv ? `${fmtBytes(inv.requestedMemoryBytes)} / ${fmtBytes(inv.allocatableMemoryBytes)}` : "—"),
      el("td", {}, inv && inv.workloads.length ? inv.workloads.map((w) => `${w.app} ${w.readyReplicas}/${w.desiredReplicas}`).join(", ") : "—"),
      el("td", { class: d && d.Err ? "muted" : "" }, !d ? "—" : d.Ok ? d.Ok.join(", ") : d.Err)));
  }
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
  renderApps(status);
  try { renderMembers(await api("/api/v1/inventory")); } catch (_) { renderMembers([]); }
  try { renderHistory(await api("/api/v1/history?limit=20")); } catch (err) { banner(`History: ${err.message}`); }
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
refresh();
setInterval(refresh, 1000);
