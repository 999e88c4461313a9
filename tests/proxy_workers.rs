//! The real `meridian proxy` binary with two workers (thread-per-core): both accept from
//! the one listening socket and serve, the connection limit is the process's and not each
//! worker's, and SIGTERM finishes the requests in flight on every worker before the
//! process exits.

mod process_support;
mod proxy_support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use process_support::{Kill, TempDir, proxy_config};
use proxy_support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const MAX_CONNECTIONS: usize = 4;

/// Opens a connection and sends one request on it; returns the connection and the
/// response head, if one came within `limit`.
async fn request(addr: SocketAddr, path: &str, limit: Duration) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: shop.test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let (head, _) = read_head(&mut stream, limit).await;
    (stream, head)
}

/// Connections accepted by each of the two workers, from the proxy's metrics.
async fn accepted(admin: SocketAddr) -> (f64, f64) {
    let text = get(&client(), admin, "admin", "/metrics")
        .await
        .unwrap()
        .body;
    let name = "meridian_proxy_worker_connections_total";
    (
        metric(&text, name, "worker=\"0\""),
        metric(&text, name, "worker=\"1\""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_listener_the_connection_limit_and_the_drain() {
    let upstream = Upstream::start("alpha").await;
    let temp = TempDir::new("proxy-workers");
    let (config, addr, admin) = proxy_config(
        &temp.0,
        upstream.addr,
        &format!(
            "  max_connections: {MAX_CONNECTIONS}\n  drain_delay: 0s\n  shutdown_grace: 10s\n"
        ),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["proxy", "-c"])
        .arg(&config)
        .args(["--workers", "2"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Kill(child);
    let started = Instant::now();
    while !matches!(get(&client(), admin, "admin", "/readyz").await, Ok(a) if a.status == 200) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "proxy not ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Both workers accept from the one socket: which one wins a connection is the
    // kernel's and the scheduler's choice, so connections are opened until each worker
    // has served some (one that never accepts fails here).
    let mut opened = 0;
    loop {
        let (_, head) = request(addr, "/", Duration::from_secs(5)).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        opened += 1;
        let (first, second) = accepted(admin).await;
        assert_eq!(
            first + second,
            f64::from(opened),
            "every connection counted once"
        );
        if first > 0.0 && second > 0.0 {
            break;
        }
        assert!(
            opened < 300,
            "one worker never accepted: {first} / {second}"
        );
    }

    // The connection limit holds for the process: with every slot held (by connections
    // on either worker), the next client waits in the accept queue, unanswered, until
    // one closes.
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let (stream, head) = request(addr, "/", Duration::from_secs(5)).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(stream);
    }
    let text = get(&client(), admin, "admin", "/metrics")
        .await
        .unwrap()
        .body;
    assert_eq!(
        metric(&text, "meridian_proxy_connections", ""),
        MAX_CONNECTIONS as f64
    );
    let over = tokio::spawn(request(addr, "/", Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !over.is_finished(),
        "a connection past the limit was served"
    );
    held.pop();
    let (_, head) = over.await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    drop(held);

    // SIGTERM with a slow request in flight on every slot: each is answered, on whichever
    // worker it is, before the process exits.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = accepted(admin).await;
    let slow: Vec<_> = (0..MAX_CONNECTIONS)
        .map(|_| tokio::spawn(request(addr, "/slow/1500", Duration::from_secs(8))))
        .collect();
    let started = Instant::now();
    loop {
        let now = accepted(admin).await;
        if now.0 + now.1 - before.0 - before.1 >= MAX_CONNECTIONS as f64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "slow requests not accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for slow in slow {
        let (_, head) = slow.await.unwrap();
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "in flight at SIGTERM: {head}"
        );
    }
    let exited = Instant::now();
    let code = loop {
        if let Some(code) = child.0.try_wait().unwrap() {
            break code;
        }
        assert!(
            exited.elapsed() < Duration::from_secs(5),
            "did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(code.success(), "{code:?}");
}
