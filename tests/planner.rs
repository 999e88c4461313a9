//! The dry-run planner against what the controller then does, with real processes:
//! `meridian up --demo` on ephemeral ports, steady traffic through its proxy, the plan of a
//! drain from `GET /api/v1/plan` and from `meridian plan`, then the drain itself — the weights
//! the controller publishes must be the plan's, and the traffic the proxy measures must split
//! as the plan said. Also the peak scenario's replicas, and bad scenarios named.
//!
//! Beside it (one binary, so the two run in parallel): a minute of steady probes and traffic
//! through the demo publishes no table version, and a failed cluster publishes versions only
//! at its failure and its recovery.

mod process_support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use process_support::{Kill, TempDir, api_write, free_port, http};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_meridian");
/// The demo's shop app: weights 100/100/50, a target of 5 requests/s per replica, at least 3.
const DRAINED: &str = "aws-us-east-1";
const TARGET_RPS: f64 = 5.0;
const MIN_REPLICAS: u64 = 3;

fn api(controller: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = http(controller, "GET", "localhost", path).unwrap();
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, value)
}

/// `meridian up --demo` on ports of its own, with 2 s drain periods and 3 s slow starts;
/// returns the process, the controller and the proxy.
fn start_demo(dir: &Path) -> (Kill, SocketAddr, SocketAddr) {
    let cluster_port = free_port("127.0.1.1");
    let proxy_admin = free_port("127.0.0.1");
    let config = std::fs::read_to_string(Path::new(ROOT).join("deploy/examples/demo.yaml"))
        .unwrap()
        .replace(":18080", &format!(":{cluster_port}"))
        .replace("drain_period: 10s", "drain_period: 2s")
        .replace("slow_start: 10s", "slow_start: 3s")
        .replace(
            "dns_ttl: 30\n",
            "dns_ttl: 30\n    drain_period: 2s\n    slow_start: 3s\n",
        );
    assert_eq!(config.matches("drain_period: 2s").count(), 2);
    assert_eq!(config.matches("slow_start: 3s").count(), 2);
    let config_file = dir.join("demo.yaml");
    std::fs::write(&config_file, config).unwrap();
    let mut up = Kill(
        Command::new(BIN)
            .args(["up", "--demo", "-c"])
            .arg(&config_file)
            .args(["--controller-listen", "127.0.0.1:0"])
            .args(["--proxy-listen", "127.0.0.1:0"])
            .args(["--dns-listen", "127.0.0.1:0"])
            .args(["--proxy-admin-listen", &format!("127.0.0.1:{proxy_admin}")])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start meridian up --demo"),
    );
    let (mut controller, mut proxy) = (None, None);
    let mut lines = BufReader::new(up.0.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    while controller.is_none() || proxy.is_none() {
        assert!(
            Instant::now() < deadline,
            "meridian up printed no listeners"
        );
        let line = lines.next().expect("meridian up exited").unwrap();
        let addr_in = |line: &str, prefix: &str| -> Option<SocketAddr> {
            let rest = line.trim().strip_prefix(prefix)?.trim();
            let rest = rest.strip_prefix("http://").unwrap_or(rest);
            rest.split(['/', ' ']).next()?.parse().ok()
        };
        controller = controller.or_else(|| addr_in(&line, "dashboard"));
        proxy = proxy.or_else(|| addr_in(&line, "proxy"));
    }
    // Keep reading stdout so the process never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (up, controller.unwrap(), proxy.unwrap())
}

/// Requests to shop.demo.test at a steady pace from a thread, until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(proxy: SocketAddr, every: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let (s, o) = (stop.clone(), ok.clone());
        let thread = std::thread::spawn(move || {
            let mut next = Instant::now();
            while !s.load(Ordering::Relaxed) {
                if let Ok((200, _)) = http(proxy, "GET", "shop.demo.test", "/") {
                    o.fetch_add(1, Ordering::Relaxed);
                }
                next += every;
                if let Some(wait) = next.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        });
        Load {
            stop,
            ok,
            thread: Some(thread),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The shop app of a status: per cluster (effective weight, health, requests/s).
fn shop_targets(status: &Value) -> BTreeMap<String, (u64, String, Option<f64>)> {
    let shop = status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "shop")
        .expect("shop in status");
    shop["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["cluster"].as_str().unwrap().to_string(),
                (
                    t["effective_weight"].as_u64().unwrap(),
                    t["health"].as_str().unwrap().to_string(),
                    t["traffic"]["requests_per_second"].as_f64(),
                ),
            )
        })
        .collect()
}

/// Every app's effective weights in a status: app → cluster → weight.
fn table_weights(status: &Value) -> BTreeMap<String, BTreeMap<String, u64>> {
    status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let weights = a["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    (
                        t["cluster"].as_str().unwrap().to_string(),
                        t["effective_weight"].as_u64().unwrap(),
                    )
                })
                .collect();
            (a["name"].as_str().unwrap().to_string(), weights)
        })
        .collect()
}

fn plan_app<'a>(plan: &'a Value, app: &str) -> &'a Value {
    plan["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["app"] == app)
        .unwrap_or_else(|| panic!("{app} in {plan}"))
}

fn plan_weights(plan: &Value) -> BTreeMap<String, BTreeMap<String, u64>> {
    plan["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let weights = a["weights"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(c, w)| (c.clone(), w.as_u64().unwrap()))
                .collect();
            (a["app"].as_str().unwrap().to_string(), weights)
        })
        .collect()
}

fn numbers(v: &Value) -> BTreeMap<String, f64> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
        .collect()
}

fn shares(rates: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let total: f64 = rates.values().sum();
    assert!(total > 0.0, "no traffic in {rates:?}");
    rates.iter().map(|(k, v)| (k.clone(), v / total)).collect()
}

/// Polls `/api/v1/status` until `done` holds for the shop app, or panics after `limit`.
fn wait_for(
    controller: SocketAddr,
    limit: Duration,
    what: &str,
    done: impl Fn(&BTreeMap<String, (u64, String, Option<f64>)>) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let (_, status) = api(controller, "/api/v1/status");
        if done(&shop_targets(&status)) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {:#?}",
            shop_targets(&status)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn cli_plan(controller: SocketAddr, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("plan")
        .args(["--controller", &format!("http://{controller}")])
        .args(args)
        .env_remove("MERIDIAN_TOKEN")
        .env_remove("MERIDIAN_CONTROLLER")
        .output()
        .expect("run meridian plan")
}

#[test]
fn drain_plan_matches_what_the_controller_then_does() {
    let dir = TempDir::new("planner");
    let (_up, controller, proxy) = start_demo(&dir.0);
    wait_for(
        controller,
        Duration::from_secs(30),
        "every shop target healthy",
        |t| t.len() == 3 && t.values().all(|(_, h, _)| h == "healthy"),
    );
    // About 40 requests/s, spread by the proxy over the targets by weight.
    let load = Load::start(proxy, Duration::from_millis(25));
    wait_for(
        controller,
        Duration::from_secs(20),
        "traffic reported for every shop target",
        |t| t.values().all(|(_, _, rps)| rps.is_some_and(|r| r > 0.0)),
    );

    // Bad scenarios are refused, naming the parameter.
    for bad in [
        "melt",
        "drain:",
        "peak:-1",
        "peak:NaN",
        "fail:nowhere",
        "now:1",
    ] {
        let (status, body) = api(controller, &format!("/api/v1/plan?scenario={bad}"));
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["field"], "scenario", "{bad}: {body}");
        assert!(
            body["error"].as_str().unwrap().starts_with("scenario: "),
            "{body}"
        );
    }
    let (_, body) = api(controller, "/api/v1/plan?scenario=fail:nowhere");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(r#"unknown cluster "nowhere""#),
        "{body}"
    );
    let out = cli_plan(controller, &["--drain", "nowhere"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"scenario: unknown cluster "nowhere""#),
        "{stderr}"
    );
    let out = cli_plan(controller, &["--peak=-2"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a peak factor"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The peak: every cluster's traffic ×3, and replicas for it at 5 requests/s each.
    let (status, peak) = api(controller, "/api/v1/plan?scenario=peak:3");
    assert_eq!(status, 200, "{peak}");
    assert_eq!(peak["scenario"]["kind"], "peak");
    let shop = plan_app(&peak, "shop");
    let (before, after) = (
        numbers(&shop["trafficRpsBefore"]),
        numbers(&shop["trafficRps"]),
    );
    for (cluster, rps) in &after {
        assert!(
            (rps - 3.0 * before[cluster]).abs() < 1e-6,
            "{cluster}: {rps} vs 3 × {}",
            before[cluster]
        );
    }
    let replicas: BTreeMap<String, u64> = shop["replicas"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(c, r)| (c.clone(), r.as_u64().unwrap()))
        .collect();
    let needed: u64 = after
        .values()
        .map(|rps| (rps / TARGET_RPS - 1e-9).ceil() as u64)
        .sum();
    assert_eq!(
        replicas.values().sum::<u64>(),
        needed.max(MIN_REPLICAS),
        "{shop}"
    );
    for (cluster, rps) in &after {
        assert!(
            replicas[cluster] as f64 * TARGET_RPS >= rps - 1e-6,
            "{cluster}: {} replicas for {rps} req/s",
            replicas[cluster]
        );
    }
    assert_eq!(peak["sufficient"], true, "{peak}");
    // Maps has no placement or scaling: weights and traffic only.
    assert_eq!(plan_app(&peak, "maps")["replicasKnown"], false);

    // The drain's plan, from the API and from the CLI.
    let (status, plan) = api(
        controller,
        &format!("/api/v1/plan?scenario=drain:{DRAINED}"),
    );
    assert_eq!(status, 200, "{plan}");
    let shop = plan_app(&plan, "shop");
    assert_eq!(shop["weights"][DRAINED], 0, "{shop}");
    assert_eq!(shop["status"]["state"], "converged", "{shop}");
    assert_eq!(plan["sufficient"], true, "{plan}");
    let planned_shares = shares(&numbers(&shop["trafficRps"]));
    assert!(planned_shares[DRAINED] < 1e-9, "{planned_shares:?}");
    let cost_before = plan["costPerHourBefore"].as_f64().unwrap();
    let cost_after = plan["costPerHourAfter"].as_f64().unwrap();
    assert!(cost_before > 0.0 && cost_after > 0.0, "{plan}");

    let out = cli_plan(controller, &["--drain", DRAINED, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cli["scenario"], plan["scenario"]);
    assert_eq!(plan_weights(&cli), plan_weights(&plan));
    // Rates move a little between two requests: the same split, replicas within one.
    let cli_shop = plan_app(&cli, "shop");
    let cli_shares = shares(&numbers(&cli_shop["trafficRps"]));
    for (cluster, share) in &planned_shares {
        assert!((cli_shares[cluster] - share).abs() < 1e-6, "{cluster}");
    }
    for (cluster, r) in shop["replicas"].as_object().unwrap() {
        let (a, b) = (
            r.as_i64().unwrap(),
            cli_shop["replicas"][cluster].as_i64().unwrap(),
        );
        assert!((a - b).abs() <= 1, "{cluster}: {a} vs {b}");
    }
    let out = cli_plan(controller, &["--drain", DRAINED]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("plan: cluster {DRAINED} is drained")),
        "{text}"
    );
    let row = |cluster: &str| {
        text.lines()
            .skip_while(|l| !l.starts_with("APP shop"))
            .find(|l| l.trim_start().starts_with(cluster))
            .unwrap_or_else(|| panic!("no {cluster} row in\n{text}"))
            // Columns are padded inside too ("20.0% →  0.0%"): compare words.
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    // The columns line up: every number column is right-aligned to its header's end, so the
    // header and each row of the app's table end at the same character.
    let shop_table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("APP shop"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(shop_table.len(), 4, "header and three clusters: {text}");
    let ends: Vec<usize> = shop_table.iter().map(|l| l.chars().count()).collect();
    assert!(
        ends.iter().all(|&e| e == ends[0]),
        "ragged columns:\n{text}"
    );
    let arrows: Vec<Option<usize>> = shop_table[1..]
        .iter()
        .map(|l| l.chars().position(|c| c == '→'))
        .collect();
    assert!(
        arrows.iter().all(|&a| a == arrows[0]),
        "weights not aligned:\n{text}"
    );
    // Weights 100/100/50 → 100/100/0, as shares.
    assert!(row(DRAINED).contains("20.0% → 0.0%"), "{text}");
    assert!(row("aws-eu-west-1").contains("40.0% → 50.0%"), "{text}");
    assert!(row("gcp-europe-west3").contains("40.0% → 50.0%"), "{text}");
    assert!(text.contains("\ncost/h: "), "{text}");
    assert!(text.contains("capacity sufficient: yes"), "{text}");
    assert!(
        text.contains("APP maps") && text.contains("replicas unknown"),
        "{text}"
    );

    // Now the drain itself.
    let (status, body) = api_write(
        controller,
        "POST",
        &format!("/api/v1/clusters/{DRAINED}/drain"),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    // Every app's drain ramps over its drain period; then the table holds still.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, status) = api(controller, "/api/v1/status");
        let ramping = status["apps"].as_array().unwrap().iter().any(|a| {
            a["targets"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["cluster"] == DRAINED && t["effective_weight"] != 0)
        });
        if !ramping || Instant::now() > deadline {
            assert_eq!(
                table_weights(&status),
                plan_weights(&plan),
                "the controller's weights after the drain are the plan's"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // The proxy's measured split, once its reports cover only post-drain traffic: averaged
    // over a few report intervals, within 0.1 of the plan's shares.
    std::thread::sleep(Duration::from_millis(2500));
    let mut measured: BTreeMap<String, f64> = BTreeMap::new();
    for _ in 0..5 {
        let (_, status) = api(controller, "/api/v1/status");
        for (cluster, (_, _, rps)) in shop_targets(&status) {
            *measured.entry(cluster).or_default() += rps.unwrap_or(0.0);
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
    let measured = shares(&measured);
    for (cluster, planned) in &planned_shares {
        assert!(
            (measured[cluster] - planned).abs() < 0.1,
            "{cluster}: measured {measured:?}, planned {planned_shares:?}"
        );
    }
    assert!(measured[DRAINED] < 0.01, "{measured:?}");
    assert!(load.ok.load(Ordering::Relaxed) > 100, "the load ran");
}

/// The published version, and the versions counted by cause, from the controller.
fn versions(controller: SocketAddr) -> (u64, BTreeMap<String, u64>) {
    let (_, status) = api(controller, "/api/v1/status");
    let (_, metrics) = http(controller, "GET", "localhost", "/metrics").unwrap();
    let causes = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("meridian_table_versions_total{cause=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(cause, n)| (cause.to_string(), n.parse().unwrap()))
        .collect();
    (status["table_version"].as_u64().unwrap(), causes)
}

/// Asserts for `hold` that the version stays `version`, checking every 500 ms.
fn holds(controller: SocketAddr, version: u64, hold: Duration, what: &str) {
    let start = Instant::now();
    while start.elapsed() < hold {
        std::thread::sleep(Duration::from_millis(500));
        let (now, causes) = versions(controller);
        assert_eq!(
            now,
            version,
            "{what}: a version after {:?} (versions by cause: {causes:?})",
            start.elapsed()
        );
    }
}

/// Sets a demo stand-in cluster `up` or `down` through the demo control.
fn set_stand_in(controller: SocketAddr, cluster: &str, mode: &str) {
    use std::io::{Read, Write};
    let body = format!(r#"{{"mode":"{mode}"}}"#);
    let mut stream = std::net::TcpStream::connect(controller).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "PUT /api/v1/demo/clusters/{cluster} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

/// Every app's health of its target in `cluster`.
fn healths_in(controller: SocketAddr, cluster: &str) -> Vec<String> {
    let (_, status) = api(controller, "/api/v1/status");
    status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["targets"].as_array().unwrap())
        .filter(|t| t["cluster"] == cluster)
        .map(|t| t["health"].as_str().unwrap().to_string())
        .collect()
}

fn wait_healths(controller: SocketAddr, cluster: &str, health: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = healths_in(controller, cluster);
        if now.len() == 2 && now.iter().all(|h| h == health) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{cluster} never {health}: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The issue's churn (a version every 0.5–1.5 s under load) seen where it was seen: the
/// demo with its proxy and DNS server probing and reporting from their regions, and traffic.
#[test]
fn steady_probes_and_traffic_publish_no_version_and_a_failure_only_its_own() {
    const FAILED: &str = "gcp-europe-west3";
    let dir = TempDir::new("steady-versions");
    let (_up, controller, proxy) = start_demo(&dir.0);
    wait_for(
        controller,
        Duration::from_secs(30),
        "every shop target healthy",
        |t| t.len() == 3 && t.values().all(|(_, h, _)| h == "healthy"),
    );
    let load = Load::start(proxy, Duration::from_millis(25));
    wait_for(
        controller,
        Duration::from_secs(20),
        "traffic reported for every shop target",
        |t| t.values().all(|(_, _, rps)| rps.is_some_and(|r| r > 0.0)),
    );
    wait_healths(controller, FAILED, "healthy");

    // A minute of steady probes (every second, from three vantages) and about 40
    // requests/s: not one version.
    let (steady, before) = versions(controller);
    let served = load.ok.load(Ordering::Relaxed);
    holds(
        controller,
        steady,
        Duration::from_secs(60),
        "steady probes and traffic",
    );
    let served = load.ok.load(Ordering::Relaxed) - served;
    assert!(served > 60 * 20, "the load ran: {served} requests in 60 s");

    // One cluster fails: its targets (one per app) leave the table, then nothing moves.
    set_stand_in(controller, FAILED, "down");
    wait_healths(controller, FAILED, "unhealthy");
    let (failed, _) = versions(controller);
    assert!(
        (steady + 1..=steady + 2).contains(&failed),
        "one version per app at most for the failure: {steady} → {failed}"
    );
    holds(
        controller,
        failed,
        Duration::from_secs(5),
        "while it stays failed",
    );

    // It recovers: the verdicts, then the slow start's steps, then nothing.
    set_stand_in(controller, FAILED, "up");
    wait_healths(controller, FAILED, "healthy");
    let (recovered, after) = versions(controller);
    holds(
        controller,
        recovered,
        Duration::from_secs(5),
        "after the recovery",
    );
    let delta = |cause: &str| after.get(cause).unwrap_or(&0) - before.get(cause).unwrap_or(&0);
    assert!(
        (2..=4).contains(&delta("verdict")),
        "the failure and the recovery, per app: {before:?} → {after:?}"
    );
    assert_eq!(
        delta("operator") + delta("config"),
        0,
        "{before:?} → {after:?}"
    );
    assert!(
        recovered - failed <= 2 + 2 * 20 + delta("latency"),
        "recovery: verdicts and 5 % slow-start steps per app: {before:?} → {after:?}"
    );
}
