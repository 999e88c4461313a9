//! Watch-stream scale harness (run by `bench/watch-scale.sh`, not a test): one controller
//! process (the release `meridian` binary) with A apps × C clusters, and N simulated
//! subscribers in this process, each a lightweight task holding a real HTTP watch stream.
//! A stream of single-weight changes (the operator API) and single-verdict changes (two
//! vantages' probe reports) is made, one at a time; after each, the harness waits until every
//! subscriber holds the new version.
//!
//! Reported: the controller's CPU per change and its RSS, the bytes each subscriber received
//! per change, the time from a change to the last subscriber holding it (p50/p99/max over
//! changes), and what one full subscriber (decoding and applying every message, as a proxy
//! or DNS server does) spends per delta.
//!
//! The simulated subscribers read each message's header only (`wire::peek`); they do not
//! build tables. Most of them connect naming the version and digest a first subscriber got
//! in its snapshot (as a fleet does after a controller restart); `--snapshots K` of them
//! connect holding nothing and are sent a snapshot each. `--encoding json` follows the
//! JSON stream instead (whole tables per version, the protocol before deltas).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use meridian_routing::{RoutingTable, wire};

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn arg_str(name: &str, default: &str) -> String {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .unwrap_or_else(|| default.to_string())
}

/// The config: A apps × C clusters, a TCP probe on every app (the controller's own prober
/// off, so targets stay as the reports make them), votes kept for an hour.
fn config(apps: usize, clusters: usize) -> String {
    let mut out = String::with_capacity(apps * clusters * 40);
    out.push_str("regions:\n");
    for r in 0..10 {
        out.push_str(&format!(
            "  - {{ name: region-{r}, location: {{ lat: {}, lon: {} }} }}\n",
            -60 + 12 * r,
            -170 + 34 * r
        ));
    }
    out.push_str("clusters:\n");
    for c in 0..clusters {
        out.push_str(&format!(
            "  - {{ name: cluster-{c}, region: region-{}, provider: aws, endpoints: [\"127.0.{}.{}:443\"] }}\n",
            c % 10,
            c / 250,
            c % 250 + 1
        ));
    }
    out.push_str(
        "probes:\n  - { name: tcp, kind: tcp, interval: 1s, timeout: 500ms, rise: 1, fall: 1 }\napps:\n",
    );
    for a in 0..apps {
        out.push_str(&format!(
            "  - name: app-{a}\n    hostnames: [app-{a}.example.com]\n    failure_mode: fail-open\n    probe: tcp\n    targets:\n"
        ));
        for c in 0..clusters {
            out.push_str(&format!(
                "      - {{ cluster: cluster-{c}, weight: {} }}\n",
                1 + (a + c) % 100
            ));
        }
    }
    out.push_str(
        "controller:\n  heartbeat: 5s\n  vantage_ttl: 1h\nproxy: { listen: \"127.0.0.1:1\" }\ndns: { listen: \"127.0.0.1:2\" }\n",
    );
    out
}

/// What one simulated subscriber has seen.
#[derive(Default)]
struct Seen {
    version: AtomicU64,
    /// Microseconds since the harness started, when `version` last changed.
    at_us: AtomicU64,
    bytes: AtomicU64,
    snapshots: AtomicU64,
}

async fn connect(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(tcp) => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .expect("handshake");
                tokio::spawn(conn);
                return sender;
            }
            Err(e) => {
                eprintln!("connect: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One simulated subscriber: follows the stream until the process ends. With `full`, it
/// decodes and applies every message and sends (version, digest, apply time) on `applied`.
#[allow(clippy::too_many_arguments, reason = "a bench's task")]
async fn subscriber(
    addr: SocketAddr,
    i: usize,
    query: String,
    json: bool,
    seen: Arc<Seen>,
    start: Instant,
    applied: Option<tokio::sync::mpsc::UnboundedSender<(RoutingTable, Duration)>>,
) {
    let mut held: Option<RoutingTable> = None;
    // A connection the controller's accept queue dropped is tried again.
    let response = loop {
        let mut sender = connect(addr).await;
        let request = http::Request::get(format!(
            "/api/v1/watch?{query}&subscriber=sim-{i}{}",
            if json { "" } else { "&encoding=binary" }
        ))
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
        match sender.send_request(request).await {
            Ok(response) => break response,
            Err(e) => {
                eprintln!("subscriber {i}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(
        response.status(),
        200,
        "watch answered {}",
        response.status()
    );
    let mut body = response.into_body();
    let mut buf = BytesMut::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        buf.extend_from_slice(&data);
        loop {
            let message = if json {
                let Some(end) = buf.iter().position(|b| *b == b'\n') else {
                    break;
                };
                let line = buf.split_to(end + 1);
                if line.len() == 1 {
                    continue;
                }
                // A line is a whole table: its version is in its first bytes.
                let text = std::str::from_utf8(&line[..line.len().min(200)]).unwrap_or("");
                let version = text
                    .split("\"version\":")
                    .nth(1)
                    .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                seen.snapshots.fetch_add(1, Ordering::Relaxed);
                seen.version.store(version, Ordering::Release);
                seen.at_us
                    .store(start.elapsed().as_micros() as u64, Ordering::Release);
                continue;
            } else {
                if buf.len() < 4 {
                    break;
                }
                let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if buf.len() < 4 + len {
                    break;
                }
                buf.advance(4);
                buf.split_to(len)
            };
            if message.is_empty() {
                continue;
            }
            let version = match wire::peek(&message).expect("a wire message") {
                wire::Peek::Snapshot { version } => {
                    seen.snapshots.fetch_add(1, Ordering::Relaxed);
                    version
                }
                wire::Peek::Delta { version, .. } => version,
            };
            if let Some(tx) = &applied {
                let t = Instant::now();
                let next = match wire::decode_message(&message).expect("decodes") {
                    wire::Message::Snapshot(table) => table,
                    wire::Message::Delta(delta) => held
                        .as_ref()
                        .expect("a snapshot first")
                        .apply(&delta)
                        .expect("applies"),
                };
                let took = t.elapsed();
                let _ = tx.send((next.clone(), took));
                held = Some(next);
            }
            seen.version.store(version, Ordering::Release);
            seen.at_us
                .store(start.elapsed().as_micros() as u64, Ordering::Release);
        }
    }
    eprintln!("subscriber {i}: stream ended");
}

/// utime + stime of a process, seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: state is field 3 (index 0), utime 14, stime 15.
    (ticks(11) + ticks(12)) / 100.0
}

/// VmRSS and VmHWM of a process, MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn api(addr: SocketAddr, method: &str, path: &str, body: String) -> (u16, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.expect("api call");
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::main]
async fn main() {
    let subscribers = arg("--subscribers", 10_000);
    let snapshots = arg("--snapshots", 100).min(subscribers);
    let apps = arg("--apps", 10_000);
    let clusters = arg("--clusters", 50);
    let changes = arg("--changes", 40);
    let json = arg_str("--encoding", "binary") == "json";
    let binary = PathBuf::from(arg_str("--meridian", "target/release/meridian"));
    let start = Instant::now();

    let dir = std::env::temp_dir().join(format!("meridian-watch-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("meridian.yaml");
    std::fs::File::create(&config_path)
        .unwrap()
        .write_all(config(apps, clusters).as_bytes())
        .unwrap();
    let mut child = Command::new(&binary)
        .args(["controller", "--no-probe", "-c"])
        .arg(&config_path)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn meridian controller");
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("controller listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    eprintln!(
        "controller up at {url} after {:.1} s",
        start.elapsed().as_secs_f64()
    );

    // The first subscriber takes a snapshot and applies everything (the full subscriber).
    let (tx, mut applied) = tokio::sync::mpsc::unbounded_channel();
    let first = Arc::new(Seen::default());
    tokio::spawn(subscriber(
        addr,
        0,
        "version=0".into(),
        json,
        first.clone(),
        start,
        (!json).then_some(tx),
    ));
    let (held, snapshot_decode) = if json {
        while first.version.load(Ordering::Acquire) == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (None, Duration::ZERO)
    } else {
        let (table, took) = applied.recv().await.expect("a snapshot");
        (Some(table), took)
    };
    let version0 = held
        .as_ref()
        .map_or_else(|| first.version.load(Ordering::Acquire), |t| t.version());
    let snapshot_bytes = first.bytes.load(Ordering::Relaxed);
    eprintln!(
        "first snapshot: version {version0}, {:.2} MiB, decode+validate {:.1} ms",
        snapshot_bytes as f64 / (1024.0 * 1024.0),
        snapshot_decode.as_secs_f64() * 1000.0
    );

    // The fleet: most resume from the version held, `snapshots` of them hold nothing.
    let resume = match &held {
        Some(t) => format!("version={}&digest={}", t.version(), t.digest()),
        None => format!("version={version0}"),
    };
    let mut seen = vec![first.clone()];
    let t_connect = Instant::now();
    for i in 1..subscribers {
        let s = Arc::new(Seen::default());
        let query = if i <= snapshots {
            "version=0".to_string()
        } else {
            s.version.store(version0, Ordering::Release);
            resume.clone()
        };
        tokio::spawn(subscriber(addr, i, query, json, s.clone(), start, None));
        seen.push(s);
        // Paced: 100 connections per 20 ms stays within the controller's accept backlog.
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let all_hold =
        |seen: &[Arc<Seen>], v: u64| seen.iter().all(|s| s.version.load(Ordering::Acquire) >= v);
    let deadline = Instant::now() + Duration::from_secs(600);
    while !all_hold(&seen, version0)
        || seen
            .iter()
            .take(snapshots + 1)
            .any(|s| s.snapshots.load(Ordering::Relaxed) == 0)
    {
        assert!(Instant::now() < deadline, "the fleet never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Streams of resuming subscribers are open once the controller counts them.
    loop {
        let (_, metrics) = api(addr, "GET", "/metrics", String::new()).await;
        let connected = metrics
            .lines()
            .find_map(|l| l.strip_prefix("meridian_subscribers_connected "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if connected as usize >= subscribers {
            break;
        }
        assert!(Instant::now() < deadline, "only {connected} streams open");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let connected_at = t_connect.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_idle, _) = rss_mib(pid);
    eprintln!(
        "{subscribers} subscribers connected in {:.1} s ({snapshots} with a snapshot); controller RSS {rss_idle:.0} MiB",
        connected_at.as_secs_f64()
    );

    // Changes, one at a time.
    let bytes_before: u64 = seen.iter().map(|s| s.bytes.load(Ordering::Relaxed)).sum();
    let cpu_before = cpu_seconds(pid);
    let mut last_times = Vec::new();
    let mut all_times = Vec::new();
    let mut apply_times = Vec::new();
    let mut version = version0;
    for n in 0..changes {
        let t0 = Instant::now();
        let t0_us = start.elapsed().as_micros() as u64;
        if n % 2 == 0 {
            let (status, body) = api(
                addr,
                "PUT",
                &format!("/api/v1/apps/app-{}/targets/cluster-1/weight", n * 7 % apps),
                format!("{{\"weight\": {}}}", 200 + n),
            )
            .await;
            assert_eq!(status, 200, "weight change: {body}");
        } else {
            // Two vantages find one target healthy: its verdict changes from unknown.
            let app = n * 13 % apps;
            for vantage in ["bench-a", "bench-b"] {
                let report = serde_json::json!({
                    "vantage": vantage,
                    "observations": [{
                        "app": format!("app-{app}"), "cluster": "cluster-0", "healthy": true,
                        "last_ok": true, "latency_seconds": 0.001, "detail": "bench",
                        "at_ms": meridian_subscriber::probe::now_ms(),
                    }],
                });
                let (status, body) = api(addr, "POST", "/api/v1/reports", report.to_string()).await;
                assert_eq!(status, 200, "report: {body}");
            }
        }
        let wait = Instant::now() + Duration::from_secs(60);
        while !all_hold(&seen, version + 1) {
            assert!(
                Instant::now() < wait,
                "change {n} never reached every subscriber"
            );
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        last_times.push(t0.elapsed());
        version = seen
            .iter()
            .map(|s| s.version.load(Ordering::Acquire))
            .min()
            .unwrap_or(version + 1);
        for s in &seen {
            let at = s.at_us.load(Ordering::Acquire);
            all_times.push(Duration::from_micros(at.saturating_sub(t0_us)));
        }
        while let Ok((_, took)) = applied.try_recv() {
            apply_times.push(took);
        }
    }
    let cpu = cpu_seconds(pid) - cpu_before;
    let bytes: u64 = seen
        .iter()
        .map(|s| s.bytes.load(Ordering::Relaxed))
        .sum::<u64>()
        - bytes_before;
    let (rss, hwm) = rss_mib(pid);
    last_times.sort();
    all_times.sort();
    apply_times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "watch scale ({}): {apps} apps x {clusters} clusters, {subscribers} subscribers, {changes} changes (weight / verdict alternately), version {version0} -> {version}",
        if json {
            "JSON whole tables"
        } else {
            "binary deltas"
        }
    );
    println!(
        "  snapshot: {:.2} MiB on the wire, decode+validate {:.1} ms",
        snapshot_bytes as f64 / (1024.0 * 1024.0),
        ms(snapshot_decode)
    );
    println!(
        "  controller: CPU {:.1} ms per change, RSS {rss:.0} MiB (peak {hwm:.0} MiB, idle with the fleet {rss_idle:.0} MiB)",
        cpu * 1000.0 / changes as f64
    );
    println!(
        "  bytes per change per subscriber: {:.0} (heartbeats included)",
        bytes as f64 / (changes as f64 * subscribers as f64)
    );
    println!(
        "  change -> last subscriber: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; change -> each subscriber: p50 {:.1} ms, p99 {:.1} ms",
        ms(percentile(&last_times, 0.5)),
        ms(percentile(&last_times, 0.99)),
        ms(*last_times.last().unwrap_or(&Duration::ZERO)),
        ms(percentile(&all_times, 0.5)),
        ms(percentile(&all_times, 0.99)),
    );
    if !apply_times.is_empty() {
        println!(
            "  full subscriber, per delta (decode+apply+validate+digest): p50 {:.1} ms, max {:.1} ms",
            ms(percentile(&apply_times, 0.5)),
            ms(*apply_times.last().unwrap()),
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
