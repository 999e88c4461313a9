//! Client faults are the client's: a malformed, oversized or stalled request body gets 400,
//! 413 or 408, and never counts against the target (no upstream failure, no ejection).

mod proxy_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use meridian_routing::{FailureMode, Health};
use proxy_support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Neither an upstream failure nor an ejection was recorded.
fn assert_no_blame(proxy: &meridian_dataplane::RunningProxy) {
    let metrics = proxy.metrics_text();
    assert_eq!(
        metric(&metrics, "meridian_proxy_upstream_failures_total", ""),
        0.0,
        "a client fault was counted as an upstream failure"
    );
    assert_eq!(
        metric(&metrics, "meridian_proxy_ejections_total", ""),
        0.0,
        "a client fault ejected a target"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_bad_chunk_posts_get_400_and_eject_nothing() {
    let a = Upstream::start("alpha").await;
    let b = Upstream::start("beta").await;
    let table = table(
        1,
        &[(&a, 1, Health::Healthy), (&b, 1, Health::Healthy)],
        FailureMode::FailOpen,
    );
    let (proxy, _cell) = start_proxy(test_config(), table).await;
    let addr = proxy.local_addr();
    for _ in 0..12 {
        let (response, _) = raw(
            addr,
            b"POST /p HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n",
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 400"), "{response:?}");
    }
    assert_no_blame(&proxy);
    // Both clusters still take traffic.
    let client = client();
    for _ in 0..20 {
        let answer = get(&client, addr, "shop.test", "/").await.unwrap();
        assert_eq!(answer.status, 200);
    }
    assert!(a.hits("GET /") > 0 && b.hits("GET /") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_body_gets_413_before_any_upstream_byte_or_when_crossed() {
    let sink = Sink::start().await;
    let table = table_of(
        1,
        &[("alpha", sink.addr, 1, Health::Healthy)],
        FailureMode::FailOpen,
    );
    let mut config = test_config();
    config.max_body_bytes = 100_000;
    config.replay_buffer_bytes = 1_000;
    let (proxy, _cell) = start_proxy(config, table).await;
    let addr = proxy.local_addr();

    // Content-Length over the limit: refused from the head, nothing goes upstream.
    let (response, _) = raw(
        addr,
        b"POST /p HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 200000\r\n\r\nabc",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response:?}");
    assert_eq!(sink.connections.load(Ordering::SeqCst), 0);

    // Chunked, 1 MB: cut off when the limit is crossed, not after the whole body.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /p HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let write = tokio::spawn(async move {
        let chunk = format!("2710\r\n{}\r\n", "x".repeat(10_000));
        for _ in 0..100 {
            if writer.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
        }
        let _ = writer.write_all(b"0\r\n\r\n").await;
    });
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && Instant::now() < deadline {
        use tokio::io::AsyncReadExt;
        match tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let response = String::from_utf8_lossy(&head);
    assert!(response.starts_with("HTTP/1.1 413"), "{response:?}");
    write.abort();
    let received = sink.bytes.load(Ordering::SeqCst);
    assert!(
        received < 150_000,
        "the upstream received {received} bytes of a body limited to 100000"
    );
    assert_no_blame(&proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_streamed_body_gets_408_and_blames_no_target() {
    let a = Upstream::start("alpha").await;
    let table = table(1, &[(&a, 1, Health::Healthy)], FailureMode::FailOpen);
    let mut config = test_config();
    config.body_timeout = Duration::from_millis(300);
    // Bodies over this are streamed, not buffered.
    config.replay_buffer_bytes = 100;
    let (proxy, _cell) = start_proxy(config, table).await;
    let addr = proxy.local_addr();
    let heads: [&[u8]; 2] = [
        b"POST /p HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5000\r\n\r\nabc",
        b"POST /p HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    ];
    for head in heads {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(head).await.unwrap();
        let (response, _) = read_head(&mut stream, Duration::from_secs(4)).await;
        assert!(response.starts_with("HTTP/1.1 408"), "{response:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }
    assert_no_blame(&proxy);
}
