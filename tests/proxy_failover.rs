//! Per-request failover: a cluster lost abruptly costs no client error; a POST without the
//! retry marker is never replayed; outlier detection ejects the failing target.

mod proxy_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use meridian_routing::{FailureMode, Health};
use proxy_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_clusters_mid_stream_costs_no_client_error() {
    let a = Upstream::start("alpha").await;
    let b = Upstream::start("beta").await;
    let table = table(
        1,
        &[(&a, 1, Health::Healthy), (&b, 1, Health::Healthy)],
        FailureMode::FailOpen,
    );
    let (proxy, _cell) = start_proxy(test_config(), table).await;
    let addr = proxy.local_addr();
    let load = SteadyLoad::start(addr, "shop.test", "/slow/2", 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = load.ok();
    a.kill();
    let served_by_alpha = a.total.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (after, errors) = load.finish().await;
    assert!(errors.is_empty(), "client errors: {errors:?}");
    assert!(
        before > 20 && after > before + 20,
        "traffic flowed: {before} then {after}"
    );
    assert!(served_by_alpha > 0, "alpha served before it was killed");
    let metrics = proxy.metrics_text();
    // The dead cluster's failures were seen and it was ejected (2 targets, share 0.5 → 1).
    assert!(
        metric(
            &metrics,
            "meridian_proxy_upstream_failures_total",
            "target=\"alpha\""
        ) >= 1.0
    );
    assert_eq!(
        metric(
            &metrics,
            "meridian_proxy_ejections_total",
            "target=\"alpha\""
        ),
        1.0
    );
    assert_eq!(
        metric(&metrics, "meridian_proxy_requests_total", "class=\"5xx\""),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_status_fails_over_an_idempotent_request() {
    let a = Upstream::start("alpha").await;
    let b = Upstream::start("beta").await;
    let table = table(
        1,
        &[(&a, 1, Health::Healthy), (&b, 1, Health::Healthy)],
        FailureMode::FailOpen,
    );
    let (proxy, _cell) = start_proxy(test_config(), table).await;
    let client = client();
    for _ in 0..10 {
        let answer = send(
            &client,
            proxy.local_addr(),
            "GET",
            "shop.test",
            "/fail-here/503",
            &[("x-fail", "alpha")],
            "",
        )
        .await
        .unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.cluster.as_deref(), Some("beta"));
    }
    assert!(
        metric(
            &proxy.metrics_text(),
            "meridian_proxy_retries_total",
            "target=\"alpha\""
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_without_marker_is_not_replayed_and_with_marker_is() {
    let a = Upstream::start("alpha").await;
    let b = Upstream::start("beta").await;
    let table = table(
        1,
        &[(&a, 1, Health::Healthy), (&b, 1, Health::Healthy)],
        FailureMode::FailOpen,
    );
    let mut config = test_config();
    // Keep both targets in play: this test is about replay, not ejection.
    config.outlier.consecutive_failures = 1000;
    let (proxy, _cell) = start_proxy(config, table).await;
    let client = client();
    // Both upstreams fail it: a POST goes to exactly one of them and its 503 is returned.
    for i in 1..=6 {
        let answer = send(
            &client,
            proxy.local_addr(),
            "POST",
            "shop.test",
            "/fail-here/503",
            &[("x-fail", "alpha,beta")],
            "order=1",
        )
        .await
        .unwrap();
        assert_eq!(answer.status, 503);
        let sent = a.hits("POST /fail-here/503") + b.hits("POST /fail-here/503");
        assert_eq!(sent, i, "a POST reached more than one upstream");
    }
    // With the marker, a POST that fails on alpha is replayed, body and all, on beta.
    for _ in 0..4 {
        let answer = send(
            &client,
            proxy.local_addr(),
            "POST",
            "shop.test",
            "/fail-here/503",
            &[("x-fail", "alpha"), ("x-meridian-retryable", "true")],
            "order=2",
        )
        .await
        .unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "beta 7");
    }
    // The marker itself is not forwarded.
    let seen = b.last_headers.lock().unwrap().clone().unwrap();
    assert!(!seen.contains_key("x-meridian-retryable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_is_retried_even_for_post() {
    // Nothing was sent when the connection could not be opened, so replay is safe.
    let a = Upstream::start("alpha").await;
    let b = Upstream::start("beta").await;
    a.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let table = table(
        1,
        &[(&a, 1, Health::Healthy), (&b, 1, Health::Healthy)],
        FailureMode::FailOpen,
    );
    let (proxy, _cell) = start_proxy(test_config(), table).await;
    let client = client();
    for _ in 0..6 {
        let answer = send(
            &client,
            proxy.local_addr(),
            "POST",
            "shop.test",
            "/p",
            &[],
            "x",
        )
        .await
        .unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.cluster.as_deref(), Some("beta"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejection_is_capped_by_share_and_never_fails_a_request() {
    // One target, both killed: share 0.5 of 1 target allows no ejection; the client
    // gets a 502 (nothing can serve), not a hang.
    let a = Upstream::start("alpha").await;
    a.kill();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let table = table(1, &[(&a, 1, Health::Healthy)], FailureMode::FailOpen);
    let (proxy, _cell) = start_proxy(test_config(), table).await;
    let client = client();
    for _ in 0..5 {
        let answer = get(&client, proxy.local_addr(), "shop.test", "/")
            .await
            .unwrap();
        assert_eq!(answer.status, 502);
    }
    assert_eq!(
        metric(&proxy.metrics_text(), "meridian_proxy_ejections_total", ""),
        0.0
    );
}

/// Hedging: a GET that gets no answer from a silent target within the hedge delay is also
/// sent to another; the first answer wins and the silent attempt is cancelled (its
/// connection closed). A POST without the marker is never hedged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedge_answers_for_a_silent_target_and_the_loser_is_cancelled() {
    let silent = Sink::start().await;
    let b = Upstream::start("beta").await;
    let table = table_of(
        1,
        &[
            ("alpha", silent.addr, 1, Health::Healthy),
            ("beta", b.addr, 1, Health::Healthy),
        ],
        FailureMode::FailOpen,
    );
    let mut config = test_config();
    config.retry.hedge_delay = Some(Duration::from_millis(100));
    // What a POST stuck on the silent target waits.
    config.upstream_timeout = Duration::from_millis(800);
    let (proxy, _cell) = start_proxy(config, table).await;
    let client = client();
    for _ in 0..12 {
        let started = std::time::Instant::now();
        let answer = get(&client, proxy.local_addr(), "shop.test", "/")
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.cluster.as_deref(), Some("beta"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "answered after {:?}",
            started.elapsed()
        );
    }
    // Every attempt on the silent target was a first attempt hedged to beta, or a hedge
    // (when beta was slow to answer) that beta's answer beat; each had a connection of its
    // own, since none came back to the pool.
    let to_alpha = silent.connections.load(Ordering::SeqCst);
    assert!(to_alpha > 0, "no GET went to the silent target");
    assert_eq!(
        metric(&proxy.metrics_text(), "meridian_proxy_hedges_total", ""),
        to_alpha as f64,
    );
    // The losing attempts were cancelled: their connections are closed.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while silent.open.load(Ordering::SeqCst) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} connections to the silent target are still open",
            silent.open.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A POST without the marker is sent once, never hedged: the one that lands on the
    // silent target waits for the upstream timeout.
    let before = silent.connections.load(Ordering::SeqCst);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let answer = send(
            &client,
            proxy.local_addr(),
            "POST",
            "shop.test",
            "/p",
            &[],
            "x",
        )
        .await
        .unwrap();
        statuses.push(answer.status.as_u16());
    }
    let to_alpha = silent.connections.load(Ordering::SeqCst) - before;
    assert_eq!(
        statuses.iter().filter(|s| **s == 504).count(),
        to_alpha,
        "{statuses:?}"
    );
    assert_eq!(b.hits("POST /p"), 6 - to_alpha, "{statuses:?}");
}

/// A per-try timeout moves a GET stuck on a silent target to another one, and the silent
/// target's timeouts eject it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_try_timeout_moves_a_get_off_a_silent_target() {
    let silent = Sink::start().await;
    let b = Upstream::start("beta").await;
    let table = table_of(
        1,
        &[
            ("alpha", silent.addr, 1, Health::Healthy),
            ("beta", b.addr, 1, Health::Healthy),
        ],
        FailureMode::FailOpen,
    );
    let mut config = test_config();
    config.retry.per_try_timeout = Some(Duration::from_millis(150));
    let (proxy, _cell) = start_proxy(config, table).await;
    let client = client();
    for _ in 0..12 {
        let answer = get(&client, proxy.local_addr(), "shop.test", "/")
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.cluster.as_deref(), Some("beta"));
    }
    let metrics = proxy.metrics_text();
    assert!(silent.connections.load(Ordering::SeqCst) > 0);
    assert_eq!(
        metric(
            &metrics,
            "meridian_proxy_ejections_total",
            "target=\"alpha\""
        ),
        1.0
    );
    assert_eq!(
        metric(&metrics, "meridian_proxy_retry_budget_exhausted_total", ""),
        0.0
    );
}
