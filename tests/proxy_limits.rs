//! Bad input and limits, written as raw bytes on TCP: malformed and smuggling-shaped
//! requests are refused and never reach an upstream; oversized heads and bodies, slow
//! clients and slow bodies are cut off.

mod proxy_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use meridian_routing::{FailureMode, Health};
use proxy_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn setup(
    config: meridian_config::proxy::ProxyConfig,
) -> (Upstream, meridian_dataplane::RunningProxy) {
    let a = Upstream::start("alpha").await;
    let table = table(1, &[(&a, 1, Health::Healthy)], FailureMode::FailOpen);
    let (proxy, _cell) = start_proxy(config, table).await;
    (a, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_are_refused_and_never_forwarded() {
    let (a, proxy) = setup(test_config()).await;
    let addr = proxy.local_addr();
    let cases: [&[u8]; 6] = [
        // CL.TE: both framings.
        b"POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        // TE.CL with an obfuscated Transfer-Encoding value.
        b"POST / HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: \tchunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        // Duplicate, equal Content-Length.
        b"POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        // Conflicting Content-Length.
        b"POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
        // A list in one Content-Length.
        b"POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 3, 5\r\n\r\nabcde",
        // Transfer-Encoding that is not chunked last.
        b"POST / HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    ];
    for case in cases {
        let (response, _) = raw(addr, case).await;
        assert!(
            response.starts_with("HTTP/1.1 400"),
            "{:?} → {response:?}",
            String::from_utf8_lossy(case)
        );
    }
    assert_eq!(
        a.total.load(Ordering::SeqCst),
        0,
        "a refused request reached the upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400() {
    let (a, proxy) = setup(test_config()).await;
    let addr = proxy.local_addr();
    let cases: [&[u8]; 5] = [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost shop.test\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: shop.test\r\nHost: other.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: bad host\r\n\r\n",
    ];
    for case in cases {
        let (response, _) = raw(addr, case).await;
        assert!(
            response.starts_with("HTTP/1.1 400"),
            "{:?} → {response:?}",
            String::from_utf8_lossy(case)
        );
    }
    assert_eq!(a.total.load(Ordering::SeqCst), 0);
    // A well-formed request on the same listener still works.
    let (response, _) = raw(addr, b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_head_and_body_are_refused() {
    let mut config = test_config();
    config.max_header_bytes = 8192;
    config.max_body_bytes = 1000;
    config.replay_buffer_bytes = 500;
    let (a, proxy) = setup(config).await;
    let addr = proxy.local_addr();
    let big = format!(
        "GET / HTTP/1.1\r\nHost: shop.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let (response, _) = raw(addr, big.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response:?}");
    let (response, _) = raw(
        addr,
        b"POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5000\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response:?}");
    // A chunked body over the limit is cut off while streaming: the upstream never gets
    // all of it.
    let mut chunked =
        b"POST /c HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"1f4\r\n");
        chunked.extend_from_slice(&[b'x'; 500]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (response, _) = raw(addr, &chunked).await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response:?}");
    assert_eq!(a.hits("POST /"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_slow_bodies_are_cut_off() {
    let mut config = test_config();
    config.header_timeout = Duration::from_millis(300);
    config.body_timeout = Duration::from_millis(300);
    let (a, proxy) = setup(config).await;
    let addr = proxy.local_addr();
    // Slowloris: a head that never ends.
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n")
        .await
        .unwrap();
    let (_, closed) = read_head(&mut stream, Duration::from_secs(3)).await;
    assert!(closed, "connection left open");
    assert!(started.elapsed() < Duration::from_secs(2));
    // A body that stalls: 408, nothing forwarded.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let (response, _) = read_head(&mut stream, Duration::from_secs(3)).await;
    assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");
    // An idle keep-alive connection is closed too.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .await
        .unwrap();
    let (response, _) = read_head(&mut stream, Duration::from_secs(3)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
    let idle_from = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "idle connection not closed");
    assert!(idle_from.elapsed() < Duration::from_secs(2));
    assert_eq!(a.hits("POST /"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_wait() {
    let mut config = test_config();
    config.max_connections = 2;
    let (_a, proxy) = setup(config).await;
    let addr = proxy.local_addr();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
            .await
            .unwrap();
        let (response, _) = read_head(&mut s, Duration::from_secs(3)).await;
        assert!(response.starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    // The third connection sits in the accept queue unanswered…
    let mut third = TcpStream::connect(addr).await.unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .await
        .unwrap();
    let (response, _) = read_head(&mut third, Duration::from_millis(300)).await;
    assert!(response.is_empty(), "{response:?}");
    // …until a slot frees.
    held.pop();
    let (response, _) = read_head(&mut third, Duration::from_secs(3)).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response:?}");
}
