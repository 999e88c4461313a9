//! The real `meridian proxy` binary: serves the config's table, and on SIGTERM turns
//! `/readyz` 503, keeps accepting for the drain delay, then stops accepting, tells kept-alive
//! clients `Connection: close`, finishes the request in flight and exits 0.

mod process_support;
mod proxy_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use process_support::{Kill, TempDir, proxy_config};
use proxy_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_real_binary() {
    let upstream = Upstream::start("alpha").await;
    let temp = TempDir::new("proxy-sigterm");
    let (config, addr, admin) = proxy_config(
        &temp.0,
        upstream.addr,
        "  drain_delay: 1s\n  shutdown_grace: 5s\n",
    );
    let child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["proxy", "-c"])
        .arg(&config)
        .args(["--workers", "1"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Kill(child);
    let pid = child.0.id();

    let started = Instant::now();
    loop {
        if let Ok(answer) = get(&client(), admin, "admin", "/readyz").await
            && answer.status == 200
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "proxy did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = get(&client(), addr, "shop.test", "/").await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.cluster.as_deref(), Some("alpha"));

    // A kept-alive connection from before the signal.
    let (mut kept, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(
        tokio::net::TcpStream::connect(addr).await.unwrap(),
    ))
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = || {
        http::Request::get("/")
            .header("host", "shop.test")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let first = kept.send_request(request()).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("connection").is_none());
    drop(first);

    let slow = tokio::spawn(async move { get(&client(), addr, "shop.test", "/slow/2500").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let signalled = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ready = get(&client(), admin, "admin", "/readyz").await.unwrap();
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert!(ready.body.contains("\"draining\":true"));
    // Within the drain delay new clients are still served.
    let during = get(&client(), addr, "shop.test", "/").await.unwrap();
    assert_eq!(during.status, 200);
    assert!(
        signalled.elapsed() < Duration::from_secs(1),
        "checked within the delay"
    );
    // After it, the listener closes.
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            signalled.elapsed() < Duration::from_secs(3),
            "still accepting 3 s after SIGTERM with a 1 s drain delay"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(signalled.elapsed() >= Duration::from_millis(900));
    // A kept-alive client is told to go on its next response.
    let last = kept.send_request(request()).await.unwrap();
    assert_eq!(last.status(), 200);
    assert_eq!(
        last.headers().get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    drop(last);
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.status, 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "proxy did not exit after draining"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status {exit}");
}
