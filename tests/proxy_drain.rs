//! Table swaps: drain stops new requests to a target while its in-flight ones finish; a
//! swap under load loses nothing; graceful shutdown finishes what is in flight, and closes
//! connections that never sent a request.

mod proxy_support;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use meridian_config::proxy::ProxyConfig;
use meridian_routing::{FailureMode, Health};
use proxy_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_stops_new_requests_while_in_flight_ones_finish() {
    let a = Upstream::start("alpha").await;
    let b = Upstream::start("beta").await;
    // Alpha only, so the slow request surely lands there.
    let v1 = table(
        1,
        &[(&a, 1, Health::Healthy), (&b, 0, Health::Healthy)],
        FailureMode::FailOpen,
    );
    let (proxy, cell) = start_proxy(test_config(), v1).await;
    let addr = proxy.local_addr();
    let slow = tokio::spawn(async move { get(&client(), addr, "shop.test", "/slow/800").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(a.hits("GET /slow/800"), 1, "the slow request reached alpha");

    let v2 = table(
        2,
        &[
            (&a, 1, Health::Draining { progress: 1.0 }),
            (&b, 1, Health::Healthy),
        ],
        FailureMode::FailOpen,
    );
    cell.store(v2);
    let client = client();
    for _ in 0..50 {
        let answer = get(&client, addr, "shop.test", "/new").await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.cluster.as_deref(), Some("beta"));
    }
    assert_eq!(a.hits("GET /new"), 0);
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.status, 200);
    assert_eq!(slow.cluster.as_deref(), Some("alpha"));
    assert_eq!(proxy.status().table_version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_swaps_under_load_lose_nothing() {
    let a = Upstream::start("alpha").await;
    let b = Upstream::start("beta").await;
    let make = |version: u64| {
        let (wa, wb) = if version.is_multiple_of(2) {
            (1, 3)
        } else {
            (3, 1)
        };
        table(
            version,
            &[(&a, wa, Health::Healthy), (&b, wb, Health::Healthy)],
            FailureMode::FailOpen,
        )
    };
    let (proxy, cell) = start_proxy(test_config(), make(1)).await;
    let addr = proxy.local_addr();
    let load = SteadyLoad::start(addr, "shop.test", "/slow/1", 4);
    for version in 2..=41 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        cell.store(make(version));
    }
    let (ok, errors) = load.finish().await;
    assert!(errors.is_empty(), "client errors: {errors:?}");
    assert!(ok > 100, "only {ok} requests went through");
    let served = a.total.load(Ordering::SeqCst) + b.total.load(Ordering::SeqCst);
    assert_eq!(served, ok, "every request was served exactly once");
    assert_eq!(proxy.status().table_version, 41);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_and_turns_readyz_503() {
    let a = Upstream::start("alpha").await;
    let table = table(1, &[(&a, 1, Health::Healthy)], FailureMode::FailOpen);
    let (proxy, _cell) = start_proxy(test_config(), table).await;
    let addr = proxy.local_addr();
    let admin = proxy.admin_addr();
    let ready = get(&client(), admin, "admin", "/readyz").await.unwrap();
    assert_eq!(ready.status, 200);
    assert!(ready.body.contains("\"table_version\":1"), "{}", ready.body);
    let slow = tokio::spawn(async move { get(&client(), addr, "shop.test", "/slow/700").await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    proxy.begin_drain();
    let ready = get(&client(), admin, "admin", "/readyz").await.unwrap();
    assert_eq!(ready.status, 503);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // No new connections are accepted.
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "listener still accepting");
    let shutdown = tokio::spawn(proxy.shutdown());
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.status, 200);
    tokio::time::timeout(Duration::from_secs(3), shutdown)
        .await
        .expect("shutdown finished once the request was answered")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_silent_connections_and_serves_one_that_speaks_in_the_drain_window() {
    let a = Upstream::start("alpha").await;
    let table = table(1, &[(&a, 1, Health::Healthy)], FailureMode::FailOpen);
    // A header timeout far beyond the test: only the drain may close the silent ones.
    let config = ProxyConfig {
        header_timeout: Duration::from_secs(60),
        ..test_config()
    };
    let (proxy, _cell) = start_proxy(config, table).await;
    let addr = proxy.local_addr();
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let mut late = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Accepted, waiting for their first bytes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let shutdown = tokio::spawn(proxy.shutdown());
    // One speaks within the drain window: served, and told to close.
    tokio::time::sleep(Duration::from_millis(300)).await;
    late.write_all(b"GET / HTTP/1.1\r\nHost: shop.test\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), late.read_to_end(&mut answer))
        .await
        .expect("the late request was answered and the connection closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The silent ones are closed (EOF), and shutdown does not wait for their header timeout.
    for mut stream in silent {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("a silent connection was closed at shutdown");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown finished")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?}",
        started.elapsed()
    );
}
