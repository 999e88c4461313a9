//! `GET /api/v1/plan` on a real controller: roles, the OpenAPI entry, bad scenarios named,
//! traffic from vantage reports as the planner's input, a capacity-short drain, and the typed
//! client.

mod common;

use std::time::Duration;

use common::*;
use http::Method;
use meridian_controller::client::ApiClient;
use meridian_controller::plan::{Scenario, TransitionStatus};

const OP: &str = "op-secret-1";
const RO: &str = "ro-secret-2";
const SUB: &str = "sub-secret-3";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_endpoint_roles_errors_and_a_capacity_short_drain() {
    let (b1, b2) = (Backend::start().await, Backend::start().await);
    let dir = temp_dir("plan");
    let tokens = format!(
        "  tokens:\n    - {{ name: alice, role: operator, sha256: \"{}\" }}\n    - {{ name: robot, role: read-only, sha256: \"{}\" }}\n    - {{ name: edge, role: subscriber, sha256: \"{}\", vantages: [edge-1] }}\n",
        sha256_hex(OP),
        sha256_hex(RO),
        sha256_hex(SUB)
    );
    // c1 carries at most 5 replicas of 10 requests/s each; c2 is unbounded.
    let yaml = config_yaml(b1.addr, b2.addr, &tokens)
        .replace(
            "provider: aws,",
            "provider: aws, capacity: { max_replicas: 5, cost_per_replica_hour: 2.0 },",
        )
        .replace(
            "provider: gcp,",
            "provider: gcp, capacity: { cost_per_replica_hour: 1.0 },",
        )
        .replace(
            "    slow_start: 1s\n",
            "    slow_start: 1s\n    scaling: { target_rps_per_replica: 10 }\n",
        );
    assert!(yaml.contains("target_rps_per_replica"));
    let ctl = start_controller(&yaml, &dir, true).await;

    // Read roles only.
    let path = "/api/v1/plan?scenario=now";
    for (token, want) in [
        (None, 401),
        (Some("nope"), 401),
        (Some(RO), 200),
        (Some(SUB), 403),
        (Some(OP), 200),
    ] {
        let (status, body) = call(&client(&ctl, token), Method::GET, path, None).await;
        assert_eq!(status, want, "{token:?}: {body}");
    }
    let (_, doc) = call(&client(&ctl, None), Method::GET, "/openapi.json", None).await;
    assert!(doc["paths"]["/api/v1/plan"]["get"].is_object(), "{doc}");

    // Bad scenarios: 422 naming the parameter and what is wrong.
    let ro = client(&ctl, Some(RO));
    for (scenario, message) in [
        ("soon", r#"scenario: "soon" is not a scenario"#),
        ("fail:", r#"scenario: "fail:" names no cluster"#),
        ("peak:-3", r#"scenario: "-3" is not a peak factor"#),
        (
            "drain:c9",
            r#"scenario: unknown cluster "c9" (clusters: c1, c2)"#,
        ),
    ] {
        let (status, body) = call(
            &ro,
            Method::GET,
            &format!("/api/v1/plan?scenario={scenario}"),
            None,
        )
        .await;
        assert_eq!(status, 422, "{scenario}: {body}");
        assert_eq!(body["field"], "scenario");
        assert!(
            body["error"].as_str().unwrap().starts_with(message),
            "{scenario}: {body}"
        );
    }

    // No traffic reported yet: nothing to carry, the scaler's floor (0) everywhere.
    let api = ApiClient::new(&ctl.url(), Some(RO.into())).unwrap();
    let plan = api.plan(&Scenario::Now).await.unwrap();
    assert_eq!(plan.apps[0].traffic_rps.values().sum::<f64>(), 0.0);
    assert_eq!(plan.apps[0].replicas.values().sum::<u32>(), 0);

    // A vantage reports traffic counters twice: the rate between them is the input.
    let sub = client(&ctl, Some(SUB));
    for requests in [0, 200] {
        let report = serde_json::json!({
            "vantage": "edge-1",
            "observations": [],
            "traffic": [
                {"app": "shop", "cluster": "c1", "requests": requests, "errors": 0,
                 "latency_seconds_sum": 0.0, "latency_count": 0},
                {"app": "shop", "cluster": "c2", "requests": requests, "errors": 0,
                 "latency_seconds_sum": 0.0, "latency_count": 0},
            ],
        })
        .to_string();
        let (status, body) = call(&sub, Method::POST, "/api/v1/reports", Some(&report)).await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let plan = api.plan(&Scenario::Now).await.unwrap();
    let shop = &plan.apps[0];
    let total: f64 = shop.traffic_rps_before.values().sum();
    // 400 requests over about half a second.
    assert!(total > 100.0 && total < 2000.0, "{total}");
    assert!((shop.traffic_rps_before["c1"] - total / 2.0).abs() < 1e-6);

    // Draining c2 sends everything to c1, which holds at most 5 replicas: capacity short.
    let plan = api
        .plan(&Scenario::Drain {
            cluster: "c2".into(),
        })
        .await
        .unwrap();
    let shop = &plan.apps[0];
    assert_eq!(shop.weights_before["c2"], 100_000);
    assert_eq!(shop.replicas["c1"], 5, "{shop:?}");
    assert!(shop.replica_shortfall > 0, "{shop:?}");
    assert!(
        matches!(shop.status, TransitionStatus::CapacityShort { .. }),
        "{shop:?}"
    );
    assert!(!plan.sufficient);
    assert!(plan.cost_per_hour_after > 0.0);

    // The typed client surfaces the API's message.
    let err = api
        .plan(&Scenario::Fail {
            cluster: "c9".into(),
        })
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(r#"scenario: unknown cluster "c9""#),
        "{err}"
    );
    ctl.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
