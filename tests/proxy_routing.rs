//! The proxy routes by host to an app and splits by weight; forwarding headers; fail-closed.

mod proxy_support;

use meridian_routing::{FailureMode, Health};
use proxy_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_within_tolerance() {
    let a = Upstream::start("alpha").await;
    let b = Upstream::start("beta").await;
    let table = table(
        1,
        &[(&a, 300, Health::Healthy), (&b, 100, Health::Healthy)],
        FailureMode::FailOpen,
    );
    let (proxy, _cell) = start_proxy(test_config(), table).await;
    let client = client();
    let mut alpha = 0;
    let n = 400;
    for _ in 0..n {
        let answer = get(&client, proxy.local_addr(), "shop.test", "/")
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        if answer.cluster.as_deref() == Some("alpha") {
            alpha += 1;
        }
    }
    // Spread picks are low-discrepancy: 3:1 over 400 requests lands within a few requests.
    let share = alpha as f64 / n as f64;
    assert!((share - 0.75).abs() < 0.03, "alpha share {share}");
    assert_eq!(a.total.load(std::sync::atomic::Ordering::SeqCst), alpha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_exact_and_wildcard_host_and_404s_the_rest() {
    let a = Upstream::start("alpha").await;
    let table = table(1, &[(&a, 1, Health::Healthy)], FailureMode::FailOpen);
    let (proxy, _cell) = start_proxy(test_config(), table).await;
    let client = client();
    let addr = proxy.local_addr();
    let exact = get(&client, addr, "SHOP.test:8080", "/").await.unwrap();
    assert_eq!(exact.status, 200);
    assert_eq!(exact.cluster.as_deref(), Some("alpha"));
    let wild = get(&client, addr, "eu.wild.test", "/").await.unwrap();
    assert_eq!(wild.status, 200);
    let unknown = get(&client, addr, "other.test", "/").await.unwrap();
    assert_eq!(unknown.status, 404);
    // The wildcard does not match its own apex.
    let apex = get(&client, addr, "wild.test", "/").await.unwrap();
    assert_eq!(apex.status, 404);
    assert_eq!(a.total.load(std::sync::atomic::Ordering::SeqCst), 2);
    let metrics = proxy.metrics_text();
    assert_eq!(
        metric(&metrics, "meridian_proxy_requests_total", "class=\"2xx\""),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_added_hop_by_hop_removed_trace_kept() {
    let a = Upstream::start("alpha").await;
    let table = table(1, &[(&a, 1, Health::Healthy)], FailureMode::FailOpen);
    let (proxy, _cell) = start_proxy(test_config(), table).await;
    let client = client();
    let answer = send(
        &client,
        proxy.local_addr(),
        "GET",
        "shop.test",
        "/h?q=1",
        &[
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("x-forwarded-for", "203.0.113.9"),
            ("connection", "x-secret"),
            ("x-secret", "hop"),
            ("proxy-authorization", "Basic eA=="),
        ],
        "",
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);
    let seen = a.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(seen["host"], "shop.test");
    assert_eq!(
        seen["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["forwarded"], "for=127.0.0.1;proto=http");
    assert!(!seen.contains_key("x-secret"));
    assert!(!seen.contains_key("proxy-authorization"));
    assert_eq!(a.hits("GET /h"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_app_without_serving_target_gets_503() {
    let a = Upstream::start("alpha").await;
    let table = table(1, &[(&a, 1, Health::Unhealthy)], FailureMode::FailClosed);
    let (proxy, _cell) = start_proxy(test_config(), table).await;
    let answer = get(&client(), proxy.local_addr(), "shop.test", "/")
        .await
        .unwrap();
    assert_eq!(answer.status, 503);
    assert_eq!(a.total.load(std::sync::atomic::Ordering::SeqCst), 0);

    // Fail-open uses the unhealthy target rather than fail.
    let b = Upstream::start("beta").await;
    let table = proxy_support::table(2, &[(&b, 1, Health::Unhealthy)], FailureMode::FailOpen);
    let (proxy, _cell) = start_proxy(test_config(), table).await;
    let answer = get(&client(), proxy.local_addr(), "shop.test", "/")
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_is_served() {
    let a = Upstream::start("alpha").await;
    let table = table(1, &[(&a, 1, Health::Healthy)], FailureMode::FailOpen);
    let (proxy, _cell) = start_proxy(test_config(), table).await;
    let stream = tokio::net::TcpStream::connect(proxy.local_addr())
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri("http://shop.test/two")
        .version(http::Version::HTTP_2)
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.headers()["x-cluster"], "alpha");
    assert_eq!(a.hits("GET /two"), 1);
    let seen = a.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(seen["host"], "shop.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_reused() {
    let a = Upstream::start("alpha").await;
    let table = table(1, &[(&a, 1, Health::Healthy)], FailureMode::FailOpen);
    let (proxy, _cell) = start_proxy(test_config(), table).await;
    let client = client();
    for _ in 0..50 {
        let answer = get(&client, proxy.local_addr(), "shop.test", "/")
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
    }
    // Sequential requests reuse one connection once the previous body has been read.
    let opened = a.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        opened <= 2,
        "{opened} upstream connections for 50 sequential requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_are_passed_through() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Upstream::start("alpha").await;
    let table = table(1, &[(&a, 1, Health::Healthy)], FailureMode::FailOpen);
    let (proxy, _cell) = start_proxy(test_config(), table).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.local_addr())
        .await
        .unwrap();
    stream
        .write_all(
            b"GET /upgrade HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.unwrap(),
            1,
            "closed before the head ended"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for word in ["ping", "pong"] {
        stream.write_all(word.as_bytes()).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(std::time::Duration::from_secs(3), stream.read(&mut buf))
            .await
            .expect("echo through the tunnel")
            .unwrap();
        assert_eq!(&buf[..n], format!("alpha:{word}").as_bytes());
    }
}
