// Drives the dashboard of a real `meridian up --demo` in headless Chromium: the page lists the
// demo clusters and the live traffic the proxy reports, a click on Drain changes the weights
// shown and the traffic through the proxy; a failover (the demo's Kill, then Recover) shows on
// the charts over time with its verdicts. Screenshots are kept in tests/artifacts/.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { request } from "node:http";
import { Resolver } from "node:dns/promises";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const binary = process.env.MERIDIAN_BIN || join(root, "target", "debug", "meridian");
const artifacts = join(root, "tests", "artifacts");

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
    server.on("error", reject);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, check, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await check();
      if (last) return last;
    } catch (err) {
      last = err;
    }
    await sleep(200);
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

// One GET through the proxy for the demo app (fetch cannot set Host, node:http can).
function get(proxy) {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port: proxy, path: "/", headers: { Host: "shop.demo.test" } }, (res) => {
      let body = "";
      res.on("data", (chunk) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode, body }));
    });
    req.on("error", reject);
    req.end();
  });
}

// Sends `n` GETs through the proxy and counts which cluster answered (first body line).
async function traffic(proxy, n) {
  const counts = {};
  for (let i = 0; i < n; i++) {
    const response = await get(proxy);
    assert.equal(response.status, 200, "every GET through the proxy succeeds");
    const cluster = response.body.split("\n")[0].replace("cluster=", "");
    counts[cluster] = (counts[cluster] || 0) + 1;
  }
  return counts;
}

// Starts `meridian up --demo` on free ports and waits until every target is probed healthy
// and the proxy serves.
async function startDemo(t) {
  const [controller, proxy, dns, admin] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  const dataDir = mkdtempSync(join(tmpdir(), "meridian-browser-"));
  const meridian = spawn(binary, ["up", "--demo",
    "--controller-listen", `127.0.0.1:${controller}`, "--proxy-listen", `127.0.0.1:${proxy}`,
    "--dns-listen", `127.0.0.1:${dns}`, "--proxy-admin-listen", `127.0.0.1:${admin}`, "--data-dir", dataDir],
    { stdio: ["ignore", "pipe", "pipe"] });
  let logs = "";
  meridian.stdout.on("data", (d) => (logs += d));
  meridian.stderr.on("data", (d) => (logs += d));
  // Wait for the exit: the demo's stand-ins listen on fixed ports the next test needs.
  t.after(() => new Promise((resolve) => {
    if (meridian.exitCode !== null || meridian.signalCode !== null) return resolve();
    meridian.once("exit", resolve);
    meridian.kill("SIGTERM");
  }));

  const base = `http://127.0.0.1:${controller}`;
  await until("the controller", async () => (await fetch(`${base}/readyz`)).ok).catch((err) => {
    throw new Error(`${err.message}\n${logs}`);
  });
  await until("the proxy", async () => (await get(proxy)).status === 200);
  // A target serves once a vantage has probed it (unknown is not up): wait for every verdict,
  // then for the proxy's table to carry them.
  await until("every target probed and healthy", async () => {
    const status = await (await fetch(`${base}/api/v1/status`)).json();
    return status.apps.every((a) => a.targets.every((t) => t.verdict.known && t.health === "healthy"));
  });
  await sleep(300);
  return { base, proxy, dns, logs: () => logs };
}

async function openPage(t, base, viewport = { width: 1400, height: 1200 }) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport });
  const pageErrors = [];
  page.on("pageerror", (err) => pageErrors.push(err.message));
  await page.goto(`${base}/`);
  return { page, pageErrors };
}

test("dashboard lists the demo clusters and a drain click moves weights and traffic", async (t) => {
  const { base, proxy } = await startDemo(t);
  const before = await traffic(proxy, 100);
  assert.ok(before["aws-eu-west-1"] > 10, `aws-eu-west-1 serves before the drain: ${JSON.stringify(before)}`);

  const { page, pageErrors } = await openPage(t, base);

  for (const cluster of ["aws-eu-west-1", "gcp-europe-west3", "aws-us-east-1"]) {
    await page.locator(`#clusters tr[data-cluster="${cluster}"]`).waitFor({ timeout: 10000 });
  }
  // The planner's what-if from the page: if aws-eu-west-1 failed, its replicas and cost
  // would move to the others, grouped by cloud.
  await page.locator("#plan-scenario").selectOption("fail:aws-eu-west-1");
  await page.locator("#plan-form button[type=submit]").click();
  await until("the plan for a failed aws-eu-west-1", async () =>
    (await page.locator('#plan-clusters tr[data-cluster="aws-eu-west-1"]').getAttribute("data-cost-after", { timeout: 1000 })) === "0.0000");
  const gcp = Number(await page.locator('#plan-clusters tr[data-cluster="gcp-europe-west3"]').getAttribute("data-cost-after"));
  assert.ok(gcp > 0, "the surviving cloud carries the cost");
  assert.equal(await page.locator('#plan-clusters tr.subtotal').count(), 2, "one subtotal per cloud (aws, gcp)");
  assert.match(await page.locator("#plan-summary").innerText(), /cost\/h [0-9.]+ now → [0-9.]+ planned/);

  // Live traffic: the proxy reports what it sends to each target; the page shows the rate.
  let flowing = true;
  const flow = async () => {
    while (flowing) {
      await get(proxy);
      await sleep(10);
    }
  };
  let background = flow();
  const rps = (cluster) =>
    page.locator(`tr[data-app="shop"][data-target="${cluster}"] td[data-rps]`).getAttribute("data-rps", { timeout: 1000 });
  await until("the dashboard to show live requests/s", async () => Number(await rps("gcp-europe-west3")) > 0, 20000);
  flowing = false;
  await background;

  const share = (cluster) =>
    page.locator(`tr[data-app="shop"][data-target="${cluster}"] td[data-share]`).getAttribute("data-share");
  assert.ok(Number(await share("aws-eu-west-1")) > 0.3, "aws-eu-west-1 has a share before the drain");

  await page.locator('#clusters tr[data-cluster="aws-eu-west-1"] button[data-action="drain"]').click();
  // The drain ramps over the demo app's drain_period (10 s); the page must show it reach zero.
  await until("the dashboard to show the drained share", async () => Number(await share("aws-eu-west-1")) === 0, 25000);
  await page.locator('#clusters tr[data-cluster="aws-eu-west-1"] button[data-action="undrain"]').waitFor();
  const after = await traffic(proxy, 100);
  assert.equal(after["aws-eu-west-1"] || 0, 0, `no traffic to the drained cluster: ${JSON.stringify(after)}`);

  // The screenshot shows traffic flowing to the two clusters that remain.
  flowing = true;
  background = flow();
  await until("live traffic after the drain", async () => Number(await rps("aws-us-east-1")) > 0, 20000);
  await sleep(1200);
  flowing = false;
  await background;
  assert.equal(Number(await rps("aws-eu-west-1")), 0, "the drained cluster gets no traffic on the page either");
  mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: join(artifacts, "dashboard.png"), fullPage: true });
  assert.deepEqual(pageErrors, [], "the page raised no script errors");
});

test("a failover shows on the charts: the failed cluster's share drops to 0 and returns, with its verdicts", async (t) => {
  const { base, proxy, dns } = await startDemo(t);
  const { page, pageErrors } = await openPage(t, base);
  const failed = "aws-eu-west-1";
  // A DNS client asking the demo's DNS server now and then: the answers chart.
  const resolver = new Resolver({ timeout: 1000, tries: 1 });
  resolver.setServers([`127.0.0.1:${dns}`]);

  // Steady traffic through the proxy for the whole test; every failure is counted.
  let flowing = true;
  const outcome = { ok: 0, failed: 0, last: "" };
  const flow = (async () => {
    for (let i = 0; flowing; i++) {
      if (i % 5 === 0) await resolver.resolve4("shop.demo.test").catch(() => {});
      try {
        const r = await get(proxy);
        if (r.status === 200) outcome.ok++;
        else { outcome.failed++; outcome.last = `HTTP ${r.status}`; }
      } catch (err) {
        outcome.failed++;
        outcome.last = err.message;
      }
      await sleep(15);
    }
  })();
  t.after(async () => { flowing = false; await flow; });

  const share = async (cluster) => {
    const v = await page.locator(`#chart-traffic .shares [data-cluster="${cluster}"]`).getAttribute("data-share", { timeout: 1000 });
    return v === "" || v === null ? null : Number(v);
  };
  const verdictRow = (cluster, healthy) =>
    page.locator(`#chart-events tr[data-kind="verdict"][data-cluster="${cluster}"][data-healthy="${healthy}"]`);

  await until("every cluster's share on the traffic chart", async () => {
    for (const c of ["aws-eu-west-1", "gcp-europe-west3", "aws-us-east-1"]) if (!((await share(c)) > 0)) return false;
    return true;
  }, 30000);
  assert.equal(await page.locator("#chart-traffic").getAttribute("data-state"), "drawn");
  await until("the DNS answers chart", async () => (await page.locator("#chart-answers").getAttribute("data-state")) === "drawn", 20000);
  assert.equal(await page.locator("#chart-traffic canvas").count(), 1, "the traffic chart is drawn on a canvas");
  mkdirSync(artifacts, { recursive: true });
  await page.screenshot({ path: join(artifacts, "charts-normal.png"), fullPage: true });

  // The demo's Kill: the cluster's stand-in stops answering (as a dead cloud region).
  const failedAt = Date.now();
  await page.locator(`#clusters tr[data-cluster="${failed}"] button[data-demo="down"]`).click();
  await until("the failed cluster's share to reach 0 on the chart", async () => (await share(failed)) === 0, 30000);
  await verdictRow(failed, false).first().waitFor({ timeout: 10000 });
  await page.screenshot({ path: join(artifacts, "charts-failover.png"), fullPage: true });

  await page.locator(`#clusters tr[data-cluster="${failed}"] button[data-demo="up"]`).click();
  await verdictRow(failed, true).first().waitFor({ timeout: 30000 });
  await until("the recovered cluster's share to come back on the chart", async () => (await share(failed)) > 0, 40000);
  await page.screenshot({ path: join(artifacts, "charts-recovered.png"), fullPage: true });

  // The chart's own data tells the same story: the failed cluster carried traffic, then none
  // (while the others did), then some again; the verdicts are drawn in the same window.
  const story = await page.evaluate((cluster) => {
    const tl = window.meridianCharts.timeline;
    const mine = tl.series.find((s) => s.app === "shop" && s.cluster === cluster).requests_per_second;
    const others = tl.series.filter((s) => s.app === "shop" && s.cluster !== cluster);
    const share = mine.map((v, i) => {
      const total = (v || 0) + others.reduce((sum, s) => sum + (s.requests_per_second[i] || 0), 0);
      return v === null || total === 0 ? null : v / total;
    });
    const before = share.findIndex((x) => x > 0.05);
    const zero = share.findIndex((x, i) => i > before && x === 0);
    const after = share.findIndex((x, i) => i > zero && x > 0);
    const drawn = window.meridianCharts.plots.traffic.data[0].length;
    const verdicts = tl.events.filter((e) => e.kind === "verdict" && e.app === "shop" && e.cluster === cluster).map((e) => e.healthy);
    return { before, zero, after, drawn, points: tl.times_ms.length, verdicts };
  }, failed);
  assert.ok(story.before >= 0 && story.zero > story.before && story.after > story.zero,
    `share before, at 0 and after on the chart: ${JSON.stringify(story)}`);
  assert.equal(story.drawn, story.points, "the chart draws every point of the window");
  assert.deepEqual(story.verdicts.slice(-2), [false, true], `verdicts in the window: ${JSON.stringify(story.verdicts)}`);

  flowing = false;
  await flow;
  assert.equal(outcome.failed, 0, `no request failed through the failover (${outcome.ok} ok; last failure: ${outcome.last})`);
  assert.ok(Date.now() - failedAt < 120000);

  // Readable everywhere: no epoch number on the page, and the page fits a phone's width.
  const text = await page.locator("body").innerText();
  assert.doesNotMatch(text, /\b1[6-9]\d{11}\b/, "no epoch milliseconds on the page");
  await page.setViewportSize({ width: 390, height: 844 });
  await sleep(1200);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the page fits 390 px (overflows by ${overflow} px)`);
  await page.screenshot({ path: join(artifacts, "charts-phone.png"), fullPage: true });
  assert.deepEqual(pageErrors, [], "the page raised no script errors");
});
