//! The fault matrix of issue 12: three clusters behind the proxy, 16 and then 256 keep-alive
//! clients sending GETs and POSTs (no retry marker), and one cluster lost abruptly in each way
//! a cluster dies: its listener closed, its process killed with SIGKILL, an upstream that
//! accepts and never answers, a network namespace whose link is cut or whose packets nft
//! drops, and 503s. No GET may fail; every POST is answered once or fails, and no POST reaches
//! two upstreams. When every cluster fails, the attempts per request stay under the bound the
//! config reference states.
//!
//! The stand-in upstreams are processes of their own (this test binary, run again) that log
//! every request head they receive, so SIGKILL is real and the logs say what reached whom.
//! The network-namespace cases need root and `ip netns` (iproute2) and `nft` (nftables):
//! without them they fail, never skip.

mod proxy_support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use meridian_config::proxy::ProxyConfig;
use meridian_routing::{FailureMode, Health};
use proxy_support::*;

/// Set in the environment of a re-executed test binary: run as a stand-in upstream that
/// appends to this log file.
const STANDIN_LOG: &str = "MERIDIAN_FAULT_STANDIN_LOG";
/// The address the stand-in binds (port 0).
const STANDIN_BIND: &str = "MERIDIAN_FAULT_STANDIN_BIND";
/// How long the stand-in takes to answer, in ms.
const STANDIN_DELAY: &str = "MERIDIAN_FAULT_STANDIN_DELAY_MS";

/// The scenarios share two cores: they run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Not a test of its own: the stand-in upstream process. This test binary runs itself with
/// `STANDIN_LOG` set and this test selected; without it, this returns at once.
#[test]
fn standin_upstream_process() {
    let Ok(log) = std::env::var(STANDIN_LOG) else {
        return;
    };
    let bind: IpAddr = std::env::var(STANDIN_BIND).unwrap().parse().unwrap();
    let delay: u64 = std::env::var(STANDIN_DELAY).unwrap().parse().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(serve(log.into(), bind, Duration::from_millis(delay)));
}

const MODE_OK: u8 = 0;
const MODE_503: u8 = 1;
const MODE_SILENT: u8 = 2;

/// Serves until killed. `GET /__control/{503,silent,close}` switches the mode: 503 to every
/// request, or read every request and never answer, or close the listener and every
/// connection (in-flight requests are answered first, as a server shutting down does).
async fn serve(log: PathBuf, bind: IpAddr, delay: Duration) {
    let listener = tokio::net::TcpListener::bind((bind, 0)).await.unwrap();
    println!("PORT {}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    let log = Arc::new(std::sync::Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap(),
    ));
    let mode = Arc::new(AtomicU8::new(MODE_OK));
    let (close_tx, close_rx) = tokio::sync::watch::channel(false);
    let close_tx = Arc::new(close_tx);
    let mut closing = close_rx.clone();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = closing.changed() => break,
        };
        let (log, mode, close_tx) = (log.clone(), mode.clone(), close_tx.clone());
        let mut close_rx = close_rx.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (log, mode, close_tx) = (log.clone(), mode.clone(), close_tx.clone());
                    async move {
                        use http_body_util::BodyExt;
                        let path = req.uri().path().to_string();
                        if let Some(control) = path.strip_prefix("/__control/") {
                            match control {
                                "503" => mode.store(MODE_503, Ordering::SeqCst),
                                "silent" => mode.store(MODE_SILENT, Ordering::SeqCst),
                                "close" => {
                                    let _ = close_tx.send(true);
                                }
                                _ => {}
                            }
                            return Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                            ));
                        }
                        let id = req
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_string();
                        // Written unbuffered as the head arrives: a SIGKILL loses no line.
                        writeln!(log.lock().unwrap(), "{id} {}", req.method()).unwrap();
                        let _ = req.into_body().collect().await;
                        let mut response = hyper::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from_static(b"done"),
                        ));
                        match mode.load(Ordering::SeqCst) {
                            MODE_503 => {
                                *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE
                            }
                            MODE_SILENT => std::future::pending::<()>().await,
                            _ => tokio::time::sleep(delay).await,
                        }
                        Ok(response)
                    }
                });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = close_rx.changed() => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    // The listener is closed (new connections are refused); connections finish what they
    // carry, then close.
    drop(listener);
    std::future::pending::<()>().await;
}

/// A network namespace with a veth link to this one: `10.R.S.1` here, `10.R.S.2` there.
/// Deleted (with the link) on drop.
struct Netns {
    name: String,
    outer: String,
    inner: String,
    there: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("`ip` (iproute2) is required for this test: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Namespaces of this file are named `mrdfm<pid>x…`, their links here `mfm<pid>x…`.
const NETNS_PREFIX: &str = "mrdfm";
const LINK_PREFIX: &str = "mfm";

/// Deletes the namespaces and links of runs whose process is gone (a run that was killed
/// cannot clean up after itself).
fn sweep() {
    let gone = |name: &str, prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.split('x').next())
            .filter(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
            .is_some_and(|pid| !Path::new("/proc").join(pid).exists())
    };
    if let Ok(out) = Command::new("ip").args(["-br", "link"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split(['@', ' ']).next().unwrap_or_default();
            if gone(name, LINK_PREFIX) {
                let _ = Command::new("ip").args(["link", "del", name]).status();
            }
        }
    }
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if gone(name, NETNS_PREFIX) {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }
}

impl Netns {
    fn create(tag: usize) -> Netns {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        sweep();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id() as usize;
        let name = format!("{NETNS_PREFIX}{pid}x{tag}x{n}");
        // Interface names have at most 15 bytes (a pid has at most 7 digits).
        let outer = format!("{LINK_PREFIX}{pid}x{n}");
        let inner = format!("mfi{pid}x{n}");
        let third = ((pid + n * 7 + tag) % 250) as u8;
        let second = 200 + ((pid / 250 + n) % 50) as u8;
        let here = Ipv4Addr::new(10, second, third, 1);
        let there = Ipv4Addr::new(10, second, third, 2);
        ip(&["netns", "add", &name]);
        let netns = Netns {
            name,
            outer,
            inner,
            there,
        };
        ip(&[
            "link",
            "add",
            &netns.outer,
            "type",
            "veth",
            "peer",
            "name",
            &netns.inner,
        ]);
        ip(&["link", "set", &netns.inner, "netns", &netns.name]);
        ip(&["addr", "add", &format!("{here}/30"), "dev", &netns.outer]);
        ip(&["link", "set", &netns.outer, "up"]);
        netns.exec_ip(&["addr", "add", &format!("{there}/30"), "dev", &netns.inner]);
        netns.exec_ip(&["link", "set", &netns.inner, "up"]);
        netns.exec_ip(&["link", "set", "lo", "up"]);
        netns
    }

    fn exec_ip(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name, "ip"];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// The link goes down on the far side: packets to it are dropped, silently.
    fn cut_link(&self) {
        self.exec_ip(&["link", "set", &self.inner, "down"]);
    }

    /// Every packet into and out of the namespace is dropped by nftables.
    fn drop_packets(&self) {
        let rules = "table inet meridian_cut {\n\
                     chain input { type filter hook input priority 0; policy drop; }\n\
                     chain output { type filter hook output priority 0; policy drop; }\n\
                     }\n";
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("`ip netns exec` is required for this test");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft (nftables) is required for this test: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting this end of the veth pair deletes both ends at once; the namespace
        // itself may linger a while after its name is gone, for as long as the kernel
        // still holds sockets of the killed stand-in.
        for args in [["link", "del", &self.outer], ["netns", "del", &self.name]] {
            let _ = Command::new("ip").args(args).stderr(Stdio::null()).status();
        }
    }
}

/// A stand-in upstream process, killed on drop.
struct StandIn {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl StandIn {
    fn start(dir: &Path, name: &str, delay: Duration, netns: Option<&Netns>) -> StandIn {
        let log = dir.join(format!("{name}.log"));
        let exe = std::env::current_exe().unwrap();
        let (mut command, bind) = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.name]).arg(&exe);
                (c, IpAddr::V4(ns.there))
            }
            None => (Command::new(&exe), IpAddr::V4(Ipv4Addr::LOCALHOST)),
        };
        let mut child = command
            .args(["--exact", "standin_upstream_process", "--nocapture"])
            .env(STANDIN_LOG, &log)
            .env(STANDIN_BIND, bind.to_string())
            .env(STANDIN_DELAY, delay.as_millis().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let port: u16 = stdout
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("PORT ")?.parse().ok())
            .expect("the stand-in printed no port");
        StandIn {
            child,
            addr: SocketAddr::new(bind, port),
            log,
        }
    }

    /// SIGKILL, and wait until the process is gone.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn control(&self, what: &str) {
        let answer = get(
            &client(),
            self.addr,
            "control",
            &format!("/__control/{what}"),
        )
        .await
        .unwrap();
        assert_eq!(answer.status, 200);
    }

    /// Request ids this upstream received, with the method.
    fn received(&self) -> Vec<(u64, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (id, method) = line.split_once(' ')?;
                Some((id.parse().ok()?, method.to_string()))
            })
            .collect()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How the first cluster dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    ListenerClosed,
    Kill9,
    AcceptsNeverAnswers,
    NetnsLinkCut,
    NetnsNftDrop,
    Status503,
}

impl Fault {
    fn in_netns(self) -> bool {
        matches!(self, Fault::NetnsLinkCut | Fault::NetnsNftDrop)
    }
}

/// The proxy settings the matrix runs with: the test defaults, and a per-try timeout so a
/// request stuck on a silent upstream moves on.
fn matrix_config() -> ProxyConfig {
    let mut config = test_config();
    config.upstream_timeout = Duration::from_secs(3);
    // Above the stand-ins' slowest normal answer on two busy cores.
    config.retry.per_try_timeout = Some(Duration::from_secs(1));
    config
}

/// What the clients saw and the upstreams received in one scenario.
struct Outcome {
    gets: usize,
    failed_gets: Vec<String>,
    posts: usize,
    posts_ok: usize,
    posts_failed: usize,
    /// Attempts per request, most seen (from the upstreams' logs).
    max_received: usize,
    /// Requests sent, request heads the upstreams received, and requests that reached an
    /// upstream at all.
    sent: usize,
    received: usize,
    distinct: usize,
    /// From the first request to the last answer.
    elapsed: Duration,
    metrics: String,
}

/// One client's requests: id, method, status or error.
type Answers = Vec<(u64, &'static str, Result<u16, String>)>;

fn start_clients(
    addr: SocketAddr,
    clients: usize,
    stop: &Arc<AtomicBool>,
    ok: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<Answers>> {
    let next_id = Arc::new(AtomicU64::new(1));
    (0..clients)
        .map(|_| {
            let (stop, next_id, ok) = (stop.clone(), next_id.clone(), ok.clone());
            tokio::spawn(async move {
                let client = client();
                let mut answers = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    // One request in four is a POST without the retry marker.
                    let method = if id % 4 == 0 { "POST" } else { "GET" };
                    let id_text = id.to_string();
                    let answer = send(
                        &client,
                        addr,
                        method,
                        "shop.test",
                        "/item",
                        &[("x-request-id", &id_text)],
                        if method == "POST" { "order=1" } else { "" },
                    )
                    .await
                    .map(|a| a.status.as_u16());
                    if matches!(answer, Ok(200)) {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    answers.push((id, method, answer));
                }
                answers
            })
        })
        .collect()
}

/// Polls `ok` until it reaches `n`, for at most `limit`.
async fn wait_for(ok: &AtomicUsize, n: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    while ok.load(Ordering::Relaxed) < n {
        assert!(Instant::now() < deadline, "load did not get going: {ok:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Three clusters, `clients` keep-alive clients; `fault` strikes the first cluster (or
/// every cluster when `all`) once the load runs, and the load goes on for `after`.
async fn scenario(fault: Fault, clients: usize, all: bool, after: Duration) -> Outcome {
    scenario_with(matrix_config(), fault, clients, all, after).await
}

/// [`scenario`] with proxy settings of its own.
async fn scenario_with(
    config: ProxyConfig,
    fault: Fault,
    clients: usize,
    all: bool,
    after: Duration,
) -> Outcome {
    let dir = std::env::temp_dir().join(format!(
        "meridian-fault-matrix-{}-{fault:?}-{clients}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Slow enough that requests are in flight on every cluster when it dies, and that 256
    // clients stay within what two cores serve.
    let delay = Duration::from_millis(if clients > 64 { 100 } else { 20 });
    let netns = fault.in_netns().then(|| Netns::create(clients));
    let mut standins: Vec<StandIn> = ["alpha", "beta", "gamma"]
        .iter()
        .enumerate()
        .map(|(i, name)| StandIn::start(&dir, name, delay, netns.as_ref().filter(|_| i == 0)))
        .collect();
    let table = table_of(
        1,
        &[
            ("alpha", standins[0].addr, 1, Health::Healthy),
            ("beta", standins[1].addr, 1, Health::Healthy),
            ("gamma", standins[2].addr, 1, Health::Healthy),
        ],
        FailureMode::FailOpen,
    );
    let (proxy, _cell) = start_proxy(config, table).await;

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let workers = start_clients(proxy.local_addr(), clients, &stop, &ok);
    // Every client has a kept-alive connection and traffic reaches every cluster.
    wait_for(&ok, clients * 3, Duration::from_secs(20)).await;

    let struck = if all { 0..3 } else { 0..1 };
    for i in struck {
        match fault {
            Fault::ListenerClosed => standins[i].control("close").await,
            Fault::Kill9 => standins[i].kill(),
            Fault::AcceptsNeverAnswers => standins[i].control("silent").await,
            Fault::Status503 => standins[i].control("503").await,
            Fault::NetnsLinkCut => netns.as_ref().unwrap().cut_link(),
            Fault::NetnsNftDrop => netns.as_ref().unwrap().drop_packets(),
        }
    }
    // The load goes on through the fault and its retries (a fixed span of load, not a wait
    // for a condition).
    tokio::time::sleep(after).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for worker in workers {
        answers.extend(worker.await.unwrap());
    }
    let elapsed = started.elapsed();
    let metrics = proxy.metrics_text();
    drop(proxy);
    for s in &mut standins {
        s.kill();
    }

    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut received = 0;
    for s in &standins {
        for (id, _) in s.received() {
            *seen.entry(id).or_default() += 1;
            received += 1;
        }
    }
    let mut outcome = Outcome {
        gets: 0,
        failed_gets: Vec::new(),
        posts: 0,
        posts_ok: 0,
        posts_failed: 0,
        max_received: seen.values().copied().max().unwrap_or(0),
        sent: answers.len(),
        received,
        distinct: seen.len(),
        elapsed,
        metrics,
    };
    for (id, method, answer) in &answers {
        let times = seen.get(id).copied().unwrap_or(0);
        if *method == "GET" {
            outcome.gets += 1;
            if !matches!(answer, Ok(200)) {
                outcome.failed_gets.push(format!("GET {id}: {answer:?}"));
            }
            continue;
        }
        outcome.posts += 1;
        // The exactly-once property, from the upstreams' own logs.
        assert!(
            times <= 1,
            "{fault:?}, {clients} clients: POST {id} reached {times} upstreams"
        );
        match answer {
            Ok(200) => {
                assert_eq!(
                    times, 1,
                    "{fault:?}, {clients} clients: POST {id} answered 200, received {times} times"
                );
                outcome.posts_ok += 1;
            }
            _ => outcome.posts_failed += 1,
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "{fault:?}{}, {clients} clients: {} GETs, {} failed; {} POSTs, {} answered, {} failed; \
         at most {} attempts per request; {} requests, {} received upstream; \
         budget refusals {}",
        if all { " (every cluster)" } else { "" },
        outcome.gets,
        outcome.failed_gets.len(),
        outcome.posts,
        outcome.posts_ok,
        outcome.posts_failed,
        outcome.max_received,
        outcome.sent,
        outcome.received,
        metric(
            &outcome.metrics,
            "meridian_proxy_retry_budget_exhausted_total",
            ""
        ),
    );
    outcome
}

/// The fault at 16 and at 256 clients: no failed GET (POSTs are checked in `scenario`).
async fn no_failed_get(fault: Fault) {
    no_failed_get_with(matrix_config(), fault).await;
}

async fn no_failed_get_with(config: ProxyConfig, fault: Fault) -> Vec<Outcome> {
    let _serial = SERIAL.lock().await;
    let mut failures = Vec::new();
    let mut outcomes = Vec::new();
    for clients in [16, 256] {
        let outcome = scenario_with(
            config.clone(),
            fault,
            clients,
            false,
            Duration::from_millis(2500),
        )
        .await;
        assert!(
            outcome.gets > clients * 5,
            "too little load: {}",
            outcome.gets
        );
        if !outcome.failed_gets.is_empty() {
            failures.push(format!(
                "{clients} clients: {} of {} GETs failed: {:?}",
                outcome.failed_gets.len(),
                outcome.gets,
                &outcome.failed_gets[..outcome.failed_gets.len().min(5)]
            ));
        }
        outcomes.push(outcome);
    }
    assert!(failures.is_empty(), "{fault:?}: {failures:?}");
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_closed() {
    no_failed_get(Fault::ListenerClosed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_killed_with_sigkill() {
    no_failed_get(Fault::Kill9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_accepts_and_never_answers() {
    no_failed_get(Fault::AcceptsNeverAnswers).await;
}

/// Hedging on, and a cluster that accepts and never answers: a GET stuck there is also
/// sent to another cluster after the hedge delay, and no GET fails. A POST (no retry marker)
/// is never hedged: `scenario` asserts from the upstreams' logs that none reached two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedging_through_an_upstream_that_never_answers() {
    let mut config = matrix_config();
    // Above the stand-ins' normal answer (20 ms, 100 ms at 256 clients) on busy cores.
    config.retry.hedge_delay = Some(Duration::from_millis(300));
    for outcome in no_failed_get_with(config, Fault::AcceptsNeverAnswers).await {
        let hedges = metric(&outcome.metrics, "meridian_proxy_hedges_total", "");
        assert!(hedges > 0.0, "no request was hedged");
        assert!(outcome.posts > 0, "no POST was sent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_link_cut() {
    no_failed_get(Fault::NetnsLinkCut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn netns_packets_dropped_by_nft() {
    no_failed_get(Fault::NetnsNftDrop).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_answers_503() {
    no_failed_get(Fault::Status503).await;
}

/// Every cluster answers 503: no request reaches the upstreams more than `max_attempts`
/// times, and the retries stay within the budget's bound (config reference,
/// `proxy.retry`): `budget_burst + budget_ratio × requests + budget_min_per_second × T`,
/// plus at most one free retry per request in flight on a target when it was ejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cluster_failing_stays_under_the_attempt_bound() {
    let _serial = SERIAL.lock().await;
    let retry = matrix_config().retry;
    for clients in [16, 256] {
        let outcome = scenario(Fault::Status503, clients, true, Duration::from_millis(1500)).await;
        assert!(
            outcome.max_received <= retry.max_attempts as usize,
            "{clients} clients: a request reached the upstreams {} times",
            outcome.max_received
        );
        let retries = outcome.received - outcome.distinct;
        let bound = f64::from(retry.budget_burst)
            + retry.budget_ratio * outcome.sent as f64
            + f64::from(retry.budget_min_per_second) * outcome.elapsed.as_secs_f64().ceil()
            + clients as f64;
        assert!(
            retries as f64 <= bound,
            "{clients} clients: {retries} retries for {} requests, over the bound {bound}",
            outcome.sent
        );
        assert!(
            outcome.sent > clients * 5,
            "too little load: {}",
            outcome.sent
        );
    }
}
