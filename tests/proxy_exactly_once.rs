//! Exactly once for what cannot be replayed: stand-in upstreams run as processes of their
//! own, log every request head they receive, answer after 200 ms, and are killed with
//! SIGKILL under 16 keep-alive clients sending POSTs without the retry marker. Their logs
//! must show no POST reaching two upstreams; every POST is answered once or fails.

mod proxy_support;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use meridian_routing::{FailureMode, Health};
use proxy_support::*;

/// Set in the environment of a re-executed test binary: run as a stand-in upstream that
/// appends to this log file.
const STANDIN_LOG: &str = "MERIDIAN_TEST_STANDIN_LOG";

/// Not a test of its own: the stand-in upstream process. This test binary runs itself
/// with `STANDIN_LOG` set and this test selected; without it, this returns at once.
#[test]
fn standin_upstream_process() {
    let Ok(log) = std::env::var(STANDIN_LOG) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(serve_and_log(log.into()));
}

async fn serve_and_log(log: std::path::PathBuf) {
    use std::io::Write;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("PORT {}", listener.local_addr().unwrap().port());
    std::io::stdout().flush().unwrap();
    let log = Arc::new(std::sync::Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap(),
    ));
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        let log = log.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move {
                        use http_body_util::BodyExt;
                        let id = req
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_string();
                        // Written unbuffered as the head arrives: a SIGKILL loses no line.
                        writeln!(log.lock().unwrap(), "{id} {}", req.method()).unwrap();
                        let _ = req.into_body().collect().await;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"done")),
                        ))
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// A stand-in upstream process, killed on drop.
struct StandIn {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl StandIn {
    fn start(dir: &std::path::Path, name: &str) -> StandIn {
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "standin_upstream_process", "--nocapture"])
            .env(STANDIN_LOG, &log)
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
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        }
    }

    /// SIGKILL, and wait until the process is gone.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The request ids this upstream received.
    fn received(&self) -> Vec<u64> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split(' ').next()?.parse().ok())
            .collect()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_post_reaches_two_upstreams_when_upstreams_are_killed() {
    let dir = std::env::temp_dir().join(format!("meridian-exactly-once-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut standins: Vec<StandIn> = ["alpha", "beta", "gamma"]
        .iter()
        .map(|name| StandIn::start(&dir, name))
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
    let (proxy, _cell) = start_proxy(test_config(), table).await;
    let addr = proxy.local_addr();

    // 16 keep-alive clients, each POST with an id of its own and no retry marker.
    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(1));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (stop, next_id) = (stop.clone(), next_id.clone());
            tokio::spawn(async move {
                let client = client();
                let mut answers: Vec<(u64, Result<u16, String>)> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let id_text = id.to_string();
                    let answer = send(
                        &client,
                        addr,
                        "POST",
                        "shop.test",
                        "/order",
                        &[("x-request-id", &id_text)],
                        "item=1",
                    )
                    .await
                    .map(|a| a.status.as_u16());
                    answers.push((id, answer));
                }
                answers
            })
        })
        .collect();

    // Two of the three upstreams die abruptly while POSTs are in flight on kept-alive
    // connections.
    tokio::time::sleep(Duration::from_millis(800)).await;
    standins[0].kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    standins[1].kill();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    let mut answers = Vec::new();
    for client in clients {
        answers.extend(client.await.unwrap());
    }
    standins[2].kill();

    let mut seen_by: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, standin) in standins.iter().enumerate() {
        let received = standin.received();
        let unique: HashSet<_> = received.iter().collect();
        assert_eq!(
            unique.len(),
            received.len(),
            "upstream {i} received a POST twice"
        );
        for id in received {
            seen_by.entry(id).or_default().push(i);
        }
    }
    let twice: Vec<_> = seen_by.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "POSTs that reached two upstreams: {twice:?}"
    );

    let mut failed = 0;
    for (id, answer) in &answers {
        match answer {
            Ok(200) => assert_eq!(
                seen_by.get(id).map(Vec::len),
                Some(1),
                "POST {id} answered 200 but the upstreams saw it {:?}",
                seen_by.get(id)
            ),
            Ok(502 | 504) => failed += 1,
            other => panic!("POST {id}: unexpected answer {other:?}"),
        }
    }
    let metrics = proxy.metrics_text();
    eprintln!(
        "{} POSTs: {} answered 200, {failed} failed, none reached two upstreams; \
         retries refused by the budget: {}, 502s {}, 504s {}",
        answers.len(),
        answers.len() - failed,
        metric(&metrics, "meridian_proxy_retry_budget_exhausted_total", ""),
        answers.iter().filter(|(_, a)| matches!(a, Ok(502))).count(),
        answers.iter().filter(|(_, a)| matches!(a, Ok(504))).count(),
    );
    // Without POSTs in flight at the kills the test would prove nothing.
    assert!(
        failed > 0,
        "no POST was in flight when an upstream was killed"
    );
    assert!(
        answers.len() > 100,
        "only {} POSTs were sent",
        answers.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
