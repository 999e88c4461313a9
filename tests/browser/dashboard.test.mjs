// Drives the dashboard of a real `meridian up --demo` in headless Chromium: the page lists the
// demo clusters and the live traffic the proxy reports, a click on Drain changes the weights
// shown and the traffic through the proxy, and a screenshot is kept in tests/artifacts/.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync } from "node:fs";
import { createServer } from "node:net";
import { request } from "node:http";
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

test("dashboard lists the demo clusters and a drain click moves weights and traffic", async (t) => {
  const [controller, proxy, dns, admin] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
  const dataDir = mkdtempSync(join(tmpdir(), "meridian-browser-"));
  const meridian = spawn(binary, ["up", "--demo",
    "--controller-listen", `127.0.0.1:${controller}`, "--proxy-listen", `127.0.0.1:${proxy}`,
    "--dns-listen", `127.0.0.1:${dns}`, "--proxy-admin-listen", `127.0.0.1:${admin}`, "--data-dir", dataDir],
    { stdio: ["ignore", "pipe", "pipe"] });
  let logs = "";
  meridian.stdout.on("data", (d) => (logs += d));
  meridian.stderr.on("data", (d) => (logs += d));
  t.after(() => meridian.kill("SIGTERM"));

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

  const before = await traffic(proxy, 100);
  assert.ok(before["aws-eu-west-1"] > 10, `aws-eu-west-1 serves before the drain: ${JSON.stringify(before)}`);

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  t.after(() => browser.close());
  const page = await browser.newPage({ viewport: { width: 1400, height: 1200 } });
  const pageErrors = [];
  page.on("pageerror", (err) => pageErrors.push(err.message));
  await page.goto(`${base}/`);

  for (const cluster of ["aws-eu-west-1", "gcp-europe-west3", "aws-us-east-1"]) {
    await page.locator(`#clusters tr[data-cluster="${cluster}"]`).waitFor({ timeout: 10000 });
  }
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
