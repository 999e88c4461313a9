//! Traffic counters that subscribers report become per-target rates in the status the
//! dashboard reads; counters for unknown targets are refused and change nothing.

mod common;

use std::time::Duration;

use common::*;
use http::Method;

fn report(requests: u64, errors: u64, latency_sum: f64) -> String {
    serde_json::json!({
        "vantage": "proxy-a",
        "observations": [],
        "traffic": [{
            "app": "shop", "cluster": "c1", "requests": requests, "errors": errors,
            "latency_seconds_sum": latency_sum, "latency_count": requests
        }]
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_counters_become_rates_in_the_status() {
    let (b1, b2) = (Backend::start().await, Backend::start().await);
    let dir = temp_dir("traffic");
    let ctl = start_controller(&config_yaml(b1.addr, b2.addr, ""), &dir, false).await;
    let api = client(&ctl, None);
    let traffic_of = |status: &serde_json::Value, cluster: &str| {
        status["apps"][0]["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["cluster"] == cluster)
            .unwrap()["traffic"]
            .clone()
    };

    assert_eq!(
        call(
            &api,
            Method::POST,
            "/api/v1/reports",
            Some(&report(1000, 0, 1.0))
        )
        .await
        .0,
        200
    );
    let (_, status) = call(&api, Method::GET, "/api/v1/status", None).await;
    assert!(
        traffic_of(&status, "c1").is_null(),
        "one report is a baseline, not a rate"
    );

    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        call(
            &api,
            Method::POST,
            "/api/v1/reports",
            Some(&report(1100, 10, 2.0))
        )
        .await
        .0,
        200
    );
    let (_, status) = call(&api, Method::GET, "/api/v1/status", None).await;
    let traffic = traffic_of(&status, "c1");
    let rps = traffic["requests_per_second"].as_f64().unwrap();
    // 100 requests in ~0.5 s (the controller times reports on arrival).
    assert!((120.0..=220.0).contains(&rps), "{traffic}");
    assert!(
        (traffic["error_ratio"].as_f64().unwrap() - 0.1).abs() < 1e-9,
        "{traffic}"
    );
    assert!(
        (traffic["latency_seconds"].as_f64().unwrap() - 0.01).abs() < 1e-9,
        "{traffic}"
    );
    assert!(
        traffic_of(&status, "c2").is_null(),
        "no traffic reported for c2"
    );

    let unknown = serde_json::json!({
        "vantage": "proxy-a", "observations": [],
        "traffic": [{"app": "shop", "cluster": "nope", "requests": 1, "errors": 0, "latency_seconds_sum": 0.0, "latency_count": 0}]
    })
    .to_string();
    let (code, body) = call(&api, Method::POST, "/api/v1/reports", Some(&unknown)).await;
    assert_eq!(code, 422);
    assert_eq!(body["field"], "traffic[0]", "{body}");
    let (_, after) = call(&api, Method::GET, "/api/v1/status", None).await;
    assert_eq!(
        traffic_of(&after, "c1"),
        traffic,
        "a refused report changes nothing"
    );
    ctl.shutdown().await;
}
