//! Limits per client address, attacked: one address (127.0.0.2) opens more connections
//! than it may and sends faster than its rate, and gets refused connections and 429s with
//! Retry-After, none of which reaches an upstream, while another address (127.0.0.1) is
//! served all along.

mod proxy_support;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use meridian_config::proxy::PerClientConfig;
use meridian_routing::{FailureMode, Health};
use proxy_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const ATTACKER: &str = "127.0.0.2";

/// A client whose connections leave from `source`.
fn client_from(source: &str) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(source.parse().unwrap()));
    Client::builder(TokioExecutor::new()).build(connector)
}

/// A TCP connection to `addr` from `source`.
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0))
        .unwrap();
    socket.connect(addr).await.unwrap()
}

/// True when the proxy serves a request on `stream`; false when it closed it instead.
async fn served(stream: &mut TcpStream) -> bool {
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    let (head, _) = read_head(stream, Duration::from_secs(5)).await;
    head.starts_with("HTTP/1.1 200")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_over_its_limits_is_refused_while_another_is_served() {
    let upstream = Upstream::start("alpha").await;
    let table = table(1, &[(&upstream, 1, Health::Healthy)], FailureMode::FailOpen);
    let mut config = test_config();
    config.per_client = Some(PerClientConfig {
        max_connections: Some(4),
        requests_per_second: Some(20),
        burst: Some(20),
        ..PerClientConfig::default()
    });
    let (proxy, _cell) = start_proxy(config, table).await;
    let addr = proxy.local_addr();

    // Connections: the attacker opens ten; four are served, the other six are closed
    // without an answer.
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(connect_from(ATTACKER, addr).await);
    }
    let mut open = 0;
    for stream in &mut held {
        if served(stream).await {
            open += 1;
        }
    }
    assert_eq!(
        open, 4,
        "connections served for one address over a limit of 4"
    );
    // Another address still connects and is served meanwhile.
    let mut victim = connect_from("127.0.0.1", addr).await;
    assert!(served(&mut victim).await, "another address was refused");
    drop(victim);

    // Rate: the attacker's four served requests took four tokens of its bucket. A burst of
    // 100 more over a keep-alive connection gets 429s past the bucket.
    let served_before = upstream.total.load(Ordering::SeqCst);
    drop(held);
    // The proxy counts a connection closed once it reads the close: wait for it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&proxy.metrics_text(), "meridian_proxy_connections", "") > 0.0 {
        assert!(
            Instant::now() < deadline,
            "closed connections still counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let attacker = client_from(ATTACKER);
    let victim = client_from("127.0.0.1");
    let started = Instant::now();
    let (mut ok, mut limited, mut retry_after) = (0u32, 0u32, None);
    for _ in 0..100 {
        let answer = get(&attacker, addr, "shop.test", "/").await.unwrap();
        match answer.status.as_u16() {
            200 => ok += 1,
            429 => {
                limited += 1;
                retry_after = answer
                    .headers
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
            }
            other => panic!("attacker got {other}"),
        }
    }
    let took = started.elapsed().as_secs_f64();
    // At most the bucket (less the four spent) plus what refilled meanwhile.
    let allowed = 20.0 - 4.0 + 20.0 * took + 1.0;
    assert!(
        f64::from(ok) <= allowed,
        "{ok} requests served in {took:.2} s; the limit allows {allowed:.0}"
    );
    assert!(limited > 0, "no request answered 429");
    assert_eq!(retry_after.as_deref(), Some("1"));
    // The victim, at its own pace, is never limited.
    for _ in 0..15 {
        let answer = get(&victim, addr, "shop.test", "/").await.unwrap();
        assert_eq!(answer.status, 200, "another address was rate limited");
    }
    // No 429 reached the upstream: it saw exactly the requests answered 200.
    assert_eq!(
        upstream.total.load(Ordering::SeqCst),
        served_before + ok as usize + 15
    );
    let metrics = proxy.metrics_text();
    assert_eq!(
        metric(
            &metrics,
            "meridian_proxy_refused_total",
            "client-connections"
        ),
        6.0
    );
    assert_eq!(
        metric(&metrics, "meridian_proxy_refused_total", "client-rate"),
        f64::from(limited)
    );

    // Over time the attacker's bucket refills: it is limited, not banned.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answer = get(&attacker, addr, "shop.test", "/").await.unwrap();
    assert_eq!(answer.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_limits_one_address_may_hold_many_connections() {
    let upstream = Upstream::start("alpha").await;
    let table = table(1, &[(&upstream, 1, Health::Healthy)], FailureMode::FailOpen);
    let (proxy, _cell) = start_proxy(test_config(), table).await;
    let mut held = Vec::new();
    for _ in 0..10 {
        held.push(connect_from(ATTACKER, proxy.local_addr()).await);
    }
    for stream in &mut held {
        assert!(served(stream).await);
    }
    // A closed connection reads EOF; these are all open.
    let mut byte = [0u8; 1];
    for stream in &mut held {
        let read = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut byte)).await;
        assert!(read.is_err(), "a connection was closed");
    }
}
