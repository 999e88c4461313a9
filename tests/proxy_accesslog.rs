//! The access log: off unless configured (the demo included); when on, one JSON line per
//! request with app, target, attempts, status and durations, to a file, under a rate cap
//! whose drops are counted.

mod proxy_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use meridian_config::proxy::AccessLogConfig;
use meridian_routing::{FailureMode, Health};
use proxy_support::*;

fn log_file(test: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("meridian-access-{test}-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// The file's lines once it has `want` of them (the writer thread runs behind requests).
async fn lines(path: &Path, want: usize) -> Vec<serde_json::Value> {
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= want {
            return text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "fewer than {want} lines in {}: {:?}",
        path.display(),
        std::fs::read_to_string(path)
    );
}

#[test]
fn the_access_log_is_off_by_default_and_in_the_demo() {
    assert_eq!(
        meridian_config::proxy::ProxyConfig::default().access_log,
        None
    );
    let demo =
        meridian_config::parse(meridian_config::DEMO_CONFIG, Path::new("demo.yaml")).unwrap();
    assert_eq!(demo.config.proxy.access_log, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_one_json_line() {
    let path = log_file("lines");
    let a = Upstream::start("alpha").await;
    let b = Upstream::start("beta").await;
    let table = table(
        7,
        &[(&a, 1, Health::Healthy), (&b, 1, Health::Healthy)],
        FailureMode::FailOpen,
    );
    let mut config = test_config();
    config.access_log = Some(AccessLogConfig {
        file: Some(path.clone()),
        max_lines_per_second: 1000,
    });
    let (proxy, _cell) = start_proxy(config, table).await;
    let client = client();
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
    let missing = get(&client, proxy.local_addr(), "nope.test", "/")
        .await
        .unwrap();
    assert_eq!(missing.status, 404);

    let lines = lines(&path, 2).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let fields = &lines[0];
    assert_eq!(fields["app"], "shop");
    assert_eq!(fields["target"], "beta");
    assert_eq!(fields["status"], 200);
    assert_eq!(fields["method"], "GET");
    assert_eq!(fields["path"], "/fail-here/503");
    assert_eq!(fields["client"], "127.0.0.1");
    assert_eq!(fields["table_version"], 7);
    assert!(fields["ts_ms"].as_u64().unwrap() > 1_600_000_000_000);
    // The spread counter starts on alpha (which fails) or beta; either way the line says how
    // many attempts it took.
    let attempts = fields["attempts"].as_u64().unwrap();
    assert!(attempts == 1 || attempts == 2);
    assert_eq!(attempts as usize, a.hits("GET /fail-here/503") + 1);
    assert!(fields["duration_ms"].as_f64().unwrap() >= fields["upstream_ms"].as_f64().unwrap());
    // The 404 is logged too, with no app and no attempt.
    let missing = &lines[1];
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["app"], "");
    assert_eq!(missing["attempts"], 0);
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_over_the_rate_cap_are_dropped_and_counted() {
    let path = log_file("cap");
    let a = Upstream::start("alpha").await;
    let table = table(1, &[(&a, 1, Health::Healthy)], FailureMode::FailOpen);
    let mut config = test_config();
    config.access_log = Some(AccessLogConfig {
        file: Some(path.clone()),
        max_lines_per_second: 5,
    });
    let (proxy, _cell) = start_proxy(config, table).await;
    let client = client();
    let started = std::time::Instant::now();
    for _ in 0..40 {
        let answer = get(&client, proxy.local_addr(), "shop.test", "/")
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
    }
    // At most two one-second windows were touched.
    let windows = if started.elapsed() < Duration::from_secs(1) {
        2
    } else {
        3
    };
    lines(&path, 5).await;
    // Let the writer thread catch up with whatever else was admitted.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let written = lines(&path, 5).await.len();
    let metrics = proxy.metrics_text();
    let dropped = metric(&metrics, "meridian_proxy_access_log_dropped_total", "rate");
    let counted = metric(&metrics, "meridian_proxy_access_log_lines_total", "");
    assert!(written <= 5 * windows, "{written} lines written");
    assert_eq!(written as f64, counted);
    assert_eq!(
        written as f64 + dropped,
        40.0,
        "{written} written, {dropped} dropped"
    );
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_log_that_cannot_be_opened_is_a_start_error() {
    let mut config = test_config();
    config.access_log = Some(AccessLogConfig {
        file: Some("/nonexistent-dir/access.log".into()),
        max_lines_per_second: 5,
    });
    let cell = std::sync::Arc::new(meridian_subscriber::TableCell::new());
    let err = meridian_dataplane::Proxy::start(config, cell)
        .await
        .err()
        .expect("must fail");
    assert!(
        err.to_string()
            .contains("opening the access log /nonexistent-dir/access.log"),
        "{err}"
    );
}
