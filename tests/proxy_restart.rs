//! Restarts lose nothing: the real `meridian proxy` binary is replaced by a new process
//! five times while keep-alive clients send requests without pause, once by SIGTERM and a
//! new process started during the drain delay, once by a handover (the new process takes
//! the listening sockets of the running one), and every request must be answered 200.

mod process_support;
mod proxy_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use process_support::{Kill, TempDir, proxy_config};
use proxy_support::Upstream;

/// Clients sending at once, each on its own kept-alive connection.
const CLIENTS: usize = 16;
/// Restarts per test.
const RESTARTS: usize = 5;

struct Setup {
    config: PathBuf,
    addr: SocketAddr,
    admin: SocketAddr,
}

fn setup(dir: &Path, upstream: SocketAddr) -> Setup {
    // The drain delay is far longer than a new process needs to start: the handover, not
    // the delay, is what ends the old process's accepting.
    let (config, addr, admin) = proxy_config(
        dir,
        upstream,
        &format!(
            "  drain_delay: 20s\n  shutdown_grace: 10s\n  handover_socket: {}\n",
            dir.join("proxy.sock").display()
        ),
    );
    Setup {
        config,
        addr,
        admin,
    }
}

fn spawn(setup: &Setup) -> Kill {
    Kill(
        Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["proxy", "-c"])
            .arg(&setup.config)
            .args(["--workers", "1"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// `/readyz`'s status, 0 when the admin listener does not answer.
async fn readyz(admin: SocketAddr) -> u16 {
    tokio::task::spawn_blocking(move || {
        process_support::http(admin, "GET", "admin", "/readyz").map_or(0, |(status, _)| status)
    })
    .await
    .unwrap()
}

async fn wait_for(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for the process to exit, and asserts it exited 0 (it drained, not crashed).
async fn exits_cleanly(process: &mut Kill, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = process.0.try_wait().unwrap() {
            assert!(status.success(), "old proxy exited with {status}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "old proxy still running {within:?} after it was replaced"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Keep-alive clients that send GETs without pause and count every answer and every
/// failure. A client reconnects when the proxy says `Connection: close`, or when it finds
/// its idle connection closed before it sent anything (nothing was lost then); a request
/// that was sent and not answered 200, or a refused connection, is a failure.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let clients = (0..CLIENTS)
            .map(|i| {
                let (stop, ok, connections, failures) = (
                    stop.clone(),
                    ok.clone(),
                    connections.clone(),
                    failures.clone(),
                );
                tokio::spawn(async move {
                    let fail = |what: String| failures.lock().unwrap().push(what);
                    let mut sender: Option<http1::SendRequest<Empty<Bytes>>> = None;
                    // Every fourth client asks for a slower answer, so restarts find
                    // requests in flight.
                    let path = if i % 4 == 0 { "/slow/150" } else { "/slow/2" };
                    while !stop.load(Ordering::Relaxed) {
                        let Some(send) = sender.as_mut().filter(|s| !s.is_closed()) else {
                            match connect(addr).await {
                                Ok(new) => {
                                    connections.fetch_add(1, Ordering::Relaxed);
                                    sender = Some(new);
                                }
                                Err(err) => {
                                    fail(format!("connect: {err}"));
                                    tokio::time::sleep(Duration::from_millis(20)).await;
                                }
                            }
                            continue;
                        };
                        if send.ready().await.is_err() {
                            sender = None;
                            continue;
                        }
                        let req = http::Request::get(path)
                            .header("host", "shop.test")
                            .body(Empty::new())
                            .unwrap();
                        let answer =
                            tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
                                .await;
                        match answer {
                            Ok(Ok(response)) => {
                                let status = response.status();
                                let close = response
                                    .headers()
                                    .get("connection")
                                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                                match response.into_body().collect().await {
                                    Ok(_) if status == 200 => {
                                        ok.fetch_add(1, Ordering::Relaxed);
                                    }
                                    Ok(_) => fail(format!("status {status}")),
                                    Err(err) => fail(format!("body: {err}")),
                                }
                                if close {
                                    sender = None;
                                }
                            }
                            Ok(Err(err)) => {
                                fail(format!("request: {err}"));
                                sender = None;
                            }
                            Err(_) => {
                                fail("no answer within 10 s".into());
                                sender = None;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            connections,
            failures,
            clients,
        }
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Waits until `n` more requests were answered.
    async fn more(&self, n: usize) {
        let target = self.ok() + n;
        let ok = self.ok.clone();
        wait_for(
            &format!("{n} more answers"),
            Duration::from_secs(15),
            async || ok.load(Ordering::Relaxed) >= target,
        )
        .await;
    }

    async fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for client in self.clients {
            client.await.unwrap();
        }
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (
            self.ok.load(Ordering::Relaxed),
            self.connections.load(Ordering::Relaxed),
            failures,
        )
    }
}

async fn connect(addr: SocketAddr) -> Result<http1::SendRequest<Empty<Bytes>>, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

/// How the running proxy is replaced.
#[derive(Clone, Copy, PartialEq)]
enum Restart {
    /// SIGTERM, then a new process started while the old one is in its drain delay.
    SigtermThenNew,
    /// A new process started beside the running one, no signal.
    Handover,
}

async fn restarts_under_load_lose_nothing(how: Restart, tag: &str) {
    let upstream = Upstream::start("alpha").await;
    let dir = TempDir::new(tag);
    let setup = setup(&dir.0, upstream.addr);
    let mut running = spawn(&setup);
    let admin = setup.admin;
    wait_for(
        "the first proxy ready",
        Duration::from_secs(15),
        async || readyz(admin).await == 200,
    )
    .await;
    let load = Load::start(setup.addr);
    load.more(200).await;
    for _ in 0..RESTARTS {
        let replaced = Instant::now();
        if how == Restart::SigtermThenNew {
            let pid = running.0.id().to_string();
            assert!(
                Command::new("kill")
                    .args(["-TERM", &pid])
                    .status()
                    .unwrap()
                    .success()
            );
            // Not ready first, while it still serves and accepts.
            wait_for(
                "/readyz 503 after SIGTERM",
                Duration::from_secs(5),
                async || readyz(admin).await == 503,
            )
            .await;
            load.more(50).await;
        }
        let mut old = std::mem::replace(&mut running, spawn(&setup));
        exits_cleanly(&mut old, Duration::from_secs(15)).await;
        // The handover, not the 20 s drain delay, ended the old process's accepting.
        assert!(replaced.elapsed() < Duration::from_secs(15));
        wait_for(
            "/readyz 200 from the new proxy",
            Duration::from_secs(5),
            async || readyz(admin).await == 200,
        )
        .await;
        load.more(200).await;
    }
    let (ok, connections, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed requests of {}: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(20)]
    );
    // Every client moved to each new process: at least one new connection per restart.
    assert!(
        connections >= CLIENTS * (RESTARTS + 1),
        "only {connections} connections over {RESTARTS} restarts"
    );
    assert!(
        running.0.try_wait().unwrap().is_none(),
        "the last proxy serves on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_then_a_new_process_five_times_under_load() {
    restarts_under_load_lose_nothing(Restart::SigtermThenNew, "restart-sigterm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_to_a_new_process_five_times_under_load() {
    restarts_under_load_lose_nothing(Restart::Handover, "restart-handover").await;
}
