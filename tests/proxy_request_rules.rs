//! One host per request and the other request rules: a target authority that differs from
//! Host is refused (HTTP/1.1 and HTTP/2); Connection cannot remove Host; framing checks
//! hold for every request of a connection, also after one asking for an upgrade; every
//! X-Forwarded-For line is kept; CONNECT gets 501; an over-long URI 414; every 503 of the
//! proxy's own carries Retry-After.

mod proxy_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use meridian_routing::{FailureMode, Health};
use proxy_support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn one_upstream() -> (Upstream, meridian_dataplane::RunningProxy) {
    let a = Upstream::start("alpha").await;
    let table = table(1, &[(&a, 1, Health::Healthy)], FailureMode::FailOpen);
    let (proxy, _cell) = start_proxy(test_config(), table).await;
    (a, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_target_authority_and_host_must_agree() {
    let (a, proxy) = one_upstream().await;
    let addr = proxy.local_addr();
    let (response, _) = raw(
        addr,
        b"GET http://shop.test/x HTTP/1.1\r\nHost: other.test\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response:?}");
    assert_eq!(a.total.load(Ordering::SeqCst), 0);
    // The same host (any case, default port spelled out) is served, with that Host.
    let (response, _) = raw(
        addr,
        b"GET http://shop.test/x HTTP/1.1\r\nHost: SHOP.test:80\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    let seen = a.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(seen["host"], "SHOP.test:80");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_authority_and_host_must_agree() {
    let (a, proxy) = one_upstream().await;
    let stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = |host: &str| {
        hyper::Request::builder()
            .uri("http://shop.test/x")
            .header("host", host)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let response = sender.send_request(request("other.test")).await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(a.total.load(Ordering::SeqCst), 0);
    let response = sender.send_request(request("shop.test")).await.unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_header_cannot_remove_host() {
    let (a, proxy) = one_upstream().await;
    let (response, _) = raw(
        proxy.local_addr(),
        b"GET / HTTP/1.1\r\nHost: shop.test\r\nConnection: Host, X-Private\r\nX-Private: 1\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    let seen = a.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(seen["host"], "shop.test");
    assert!(!seen.contains_key("x-private"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_checks_hold_after_a_request_asking_for_an_upgrade() {
    let (a, proxy) = one_upstream().await;
    let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
    // The upstream answers 200 at `/` (no 101), so the connection stays HTTP/1.1.
    stream
        .write_all(
            b"GET / HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        )
        .await
        .unwrap();
    let (response, _) = read_head(&mut stream, Duration::from_secs(3)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    let before = a.total.load(Ordering::SeqCst);
    stream
        .write_all(
            b"POST /smuggle HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        .await
        .unwrap();
    let (response, _) = read_head(&mut stream, Duration::from_secs(3)).await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response:?}");
    assert_eq!(a.total.load(Ordering::SeqCst), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_x_forwarded_for_line_is_kept_in_order() {
    let (a, proxy) = one_upstream().await;
    let (response, _) = raw(
        proxy.local_addr(),
        b"GET / HTTP/1.1\r\nHost: shop.test\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-For: 198.51.100.2\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    let seen = a.last_headers.lock().unwrap().clone().unwrap();
    let xff: Vec<_> = seen.get_all("x-forwarded-for").iter().collect();
    assert_eq!(xff, ["192.0.2.1, 198.51.100.2, 127.0.0.1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_gets_501_and_reaches_no_upstream() {
    let (a, proxy) = one_upstream().await;
    let (response, _) = raw(
        proxy.local_addr(),
        b"CONNECT shop.test:443 HTTP/1.1\r\nHost: shop.test:443\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 501"), "{response:?}");
    assert_eq!(a.total.load(Ordering::SeqCst), 0);
    assert_eq!(a.connections.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_long_uri_gets_414() {
    let (a, proxy) = one_upstream().await;
    // Over max_uri_bytes (8 KiB by default), and over 64 KiB.
    for len in [10_000, 70_000] {
        let request = format!(
            "GET /{} HTTP/1.1\r\nHost: shop.test\r\n\r\n",
            "a".repeat(len)
        );
        let (response, _) = raw(proxy.local_addr(), request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 414"), "{len}: {response:?}");
    }
    assert_eq!(a.total.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_503_of_the_proxy_carries_retry_after() {
    // No table yet.
    let cell = std::sync::Arc::new(meridian_subscriber::TableCell::new());
    let proxy = meridian_dataplane::Proxy::start(test_config(), cell)
        .await
        .unwrap();
    let answer = get(&client(), proxy.local_addr(), "shop.test", "/")
        .await
        .unwrap();
    assert_eq!(answer.status, 503);
    assert_eq!(answer.headers["retry-after"], "1");
    // Fail-closed with no serving target.
    let a = Upstream::start("alpha").await;
    let table = table(1, &[(&a, 1, Health::Unhealthy)], FailureMode::FailClosed);
    let (proxy, _cell) = start_proxy(test_config(), table).await;
    let answer = get(&client(), proxy.local_addr(), "shop.test", "/")
        .await
        .unwrap();
    assert_eq!(answer.status, 503);
    assert_eq!(answer.headers["retry-after"], "1");
    // Every target at its concurrency limit.
    let mut config = test_config();
    config.max_requests_per_target = Some(1);
    let table = proxy_support::table(2, &[(&a, 1, Health::Healthy)], FailureMode::FailOpen);
    let (proxy, _cell) = start_proxy(config, table).await;
    let addr = proxy.local_addr();
    let slow = tokio::spawn(async move { get(&client(), addr, "shop.test", "/slow/500").await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let answer = get(&client(), addr, "shop.test", "/").await.unwrap();
    assert_eq!(answer.status, 503);
    assert_eq!(answer.headers["retry-after"], "1");
    assert_eq!(slow.await.unwrap().unwrap().status, 200);
}
