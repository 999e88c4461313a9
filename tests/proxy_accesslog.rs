//! One JSON access log line per request, with app, target, attempts, status and durations.

mod proxy_support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use meridian_routing::{FailureMode, Health};
use proxy_support::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_one_json_line() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "warn,{}=info",
            meridian_dataplane::ACCESS_LOG_TARGET
        )))
        .with_writer(move || writer.clone())
        .init();

    let a = Upstream::start("alpha").await;
    let b = Upstream::start("beta").await;
    let table = table(
        7,
        &[(&a, 1, Health::Healthy), (&b, 1, Health::Healthy)],
        FailureMode::FailOpen,
    );
    let (proxy, _cell) = start_proxy(test_config(), table).await;
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

    let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["target"] == meridian_dataplane::ACCESS_LOG_TARGET)
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let fields = &lines[0]["fields"];
    assert_eq!(fields["app"], "shop");
    assert_eq!(fields["target"], "beta");
    assert_eq!(fields["status"], 200);
    assert_eq!(fields["method"], "GET");
    assert_eq!(fields["path"], "/fail-here/503");
    assert_eq!(fields["table_version"], 7);
    // The spread counter starts on alpha (which fails) or beta; either way the line says how
    // many attempts it took.
    let attempts = fields["attempts"].as_u64().unwrap();
    assert!(attempts == 1 || attempts == 2);
    assert_eq!(attempts as usize, a.hits("GET /fail-here/503") + 1);
    assert!(fields["duration_ms"].as_f64().unwrap() >= fields["upstream_ms"].as_f64().unwrap());
    // The 404 is logged too, with no app and no attempt.
    let missing = &lines[1]["fields"];
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["app"], "");
    assert_eq!(missing["attempts"], 0);
}
