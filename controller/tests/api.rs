//! The operator API: every endpoint, every role, malformed input (4xx naming the field,
//! state unchanged), the OpenAPI document, metrics and health endpoints.

mod common;

use std::time::Duration;

use common::*;
use http::Method;
use meridian_controller::RunningController;

const OP: &str = "op-secret-1";
const RO: &str = "ro-secret-2";
const SUB: &str = "sub-secret-3";

async fn setup(name: &str) -> (RunningController, std::path::PathBuf, Backend, Backend) {
    let (b1, b2) = (Backend::start().await, Backend::start().await);
    let dir = temp_dir(name);
    std::fs::write(dir.join("ro.token"), format!("{RO}\n")).unwrap();
    let tokens = format!(
        "  tokens:\n    - {{ name: alice, role: operator, sha256: \"{}\" }}\n    - {{ name: robot, role: read-only, file: ro.token }}\n    - {{ name: edge, role: subscriber, sha256: \"{}\", vantages: [edge-1, \"pod-*\"] }}\n",
        sha256_hex(OP),
        sha256_hex(SUB)
    );
    let ctl = start_controller(&config_yaml(b1.addr, b2.addr, &tokens), &dir, true).await;
    wait_all_healthy(&ctl).await;
    (ctl, dir, b1, b2)
}

/// Every endpoint and the status each role gets (401: no token / unknown token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_on_every_endpoint() {
    let (ctl, dir, _b1, _b2) = setup("roles").await;
    let report = serde_json::json!({"vantage": "edge-1", "observations": []}).to_string();
    // (method, path, body, [none, unknown, read-only, subscriber, operator])
    let cases: Vec<(Method, &str, Option<&str>, [u16; 5])> = vec![
        (
            Method::GET,
            "/api/v1/status",
            None,
            [401, 401, 200, 403, 200],
        ),
        (
            Method::GET,
            "/api/v1/apps/shop",
            None,
            [401, 401, 200, 403, 200],
        ),
        (
            Method::GET,
            "/api/v1/table",
            None,
            [401, 401, 200, 200, 200],
        ),
        (
            Method::GET,
            "/api/v1/explain?host=shop.test&client=192.0.2.7",
            None,
            [401, 401, 200, 403, 200],
        ),
        (
            Method::GET,
            "/api/v1/history",
            None,
            [401, 401, 200, 403, 200],
        ),
        (
            Method::GET,
            "/api/v1/audit",
            None,
            [401, 401, 200, 403, 200],
        ),
        (
            Method::GET,
            "/api/v1/timeline",
            None,
            [401, 401, 200, 403, 200],
        ),
        (
            Method::GET,
            "/api/v1/probes",
            None,
            [401, 401, 403, 200, 200],
        ),
        (
            Method::POST,
            "/api/v1/reports",
            Some(&report),
            // The operator's token names no vantage edge-1.
            [401, 401, 403, 200, 403],
        ),
        (
            Method::PUT,
            "/api/v1/apps/shop/targets/c2/weight",
            Some(r#"{"weight": 40}"#),
            [401, 401, 403, 403, 200],
        ),
        (
            Method::DELETE,
            "/api/v1/apps/shop/targets/c2/weight",
            None,
            [401, 401, 403, 403, 200],
        ),
        (
            Method::POST,
            "/api/v1/apps/shop/targets/c2/drain",
            None,
            [401, 401, 403, 403, 200],
        ),
        (
            Method::POST,
            "/api/v1/apps/shop/targets/c2/undrain",
            None,
            [401, 401, 403, 403, 200],
        ),
        (
            Method::POST,
            "/api/v1/clusters/c2/drain",
            None,
            [401, 401, 403, 403, 200],
        ),
        (
            Method::POST,
            "/api/v1/clusters/c2/undrain",
            None,
            [401, 401, 403, 403, 200],
        ),
    ];
    let tokens = [None, Some("wrong"), Some(RO), Some(SUB), Some(OP)];
    for (method, path, body, want) in &cases {
        for (token, want) in tokens.iter().zip(want) {
            let c = client(&ctl, *token);
            let (status, json) = call(&c, method.clone(), path, *body).await;
            assert_eq!(status, *want, "{method} {path} as {token:?}: {json}");
            if status == 401 || status == 403 {
                assert!(json["error"].is_string(), "{json}");
            }
        }
    }
    // The watch stream: read-only, subscriber and operator may follow; others may not.
    for (token, want) in tokens.iter().zip([401, 401, 200, 200, 200]) {
        let c = client(&ctl, *token);
        let response = c
            .send(Method::GET, "/api/v1/watch?version=0", None)
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), want, "watch as {token:?}");
    }
    // Every change was audited with who made it; reads were not.
    let (_, audit) = call(&client(&ctl, Some(RO)), Method::GET, "/api/v1/audit", None).await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "undrain",
            "drain",
            "undrain",
            "drain",
            "reset-weight",
            "set-weight"
        ]
    );
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["who"] == "alice" && e["role"] == "operator")
    );
    assert_eq!(audit[5]["subject"], "target:shop/c2");
    assert_eq!(audit[5]["detail"]["weight"], 40);
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_name_the_field_and_change_nothing() {
    let (ctl, dir, _b1, _b2) = setup("malformed").await;
    let op = client(&ctl, Some(OP));
    let version_before = ctl.table().unwrap().version();
    let weight = "/api/v1/apps/shop/targets/c1/weight";
    let cases: Vec<(Method, &str, Option<&str>, u16, &str)> = vec![
        (
            Method::PUT,
            weight,
            Some(r#"{"weight": "heavy"}"#),
            422,
            "weight",
        ),
        (
            Method::PUT,
            weight,
            Some(r#"{"weight": -1}"#),
            422,
            "weight",
        ),
        (
            Method::PUT,
            weight,
            Some(r#"{"weight": 20000}"#),
            422,
            "weight",
        ),
        (Method::PUT, weight, Some(r#"{}"#), 422, "weight"),
        (
            Method::PUT,
            weight,
            Some(r#"{"weight": 5, "wieght": 5}"#),
            422,
            "wieght",
        ),
        (Method::PUT, weight, Some("not json"), 422, "request body"),
        (Method::PUT, weight, None, 400, ""),
        (
            Method::PUT,
            "/api/v1/apps/nope/targets/c1/weight",
            Some(r#"{"weight": 5}"#),
            404,
            "app",
        ),
        (
            Method::PUT,
            "/api/v1/apps/shop/targets/c9/weight",
            Some(r#"{"weight": 5}"#),
            404,
            "cluster",
        ),
        (Method::DELETE, weight, None, 409, ""),
        (
            Method::POST,
            "/api/v1/clusters/c9/drain",
            None,
            404,
            "cluster",
        ),
        (Method::POST, "/api/v1/clusters/c1/undrain", None, 409, ""),
        (
            Method::POST,
            "/api/v1/apps/shop/targets/c1/undrain",
            None,
            409,
            "",
        ),
        (
            Method::GET,
            "/api/v1/explain?host=shop.test&client=not-an-ip",
            None,
            400,
            "client",
        ),
        (
            Method::GET,
            "/api/v1/explain?client=192.0.2.1",
            None,
            400,
            "host",
        ),
        (
            Method::GET,
            "/api/v1/explain?host=other.test&client=192.0.2.1",
            None,
            404,
            "host",
        ),
        (
            Method::GET,
            "/api/v1/history?limit=many",
            None,
            400,
            "limit",
        ),
        (Method::GET, "/api/v1/watch?version=x", None, 400, "version"),
        (
            Method::POST,
            "/api/v1/reports",
            Some(r#"{"vantage": "alice", "observations": [{"app": "shop"}]}"#),
            422,
            "observations[0]",
        ),
        (
            Method::POST,
            "/api/v1/reports",
            Some(
                r#"{"vantage": "alice", "observations": [{"app": "zzz", "cluster": "c1", "healthy": false, "last_ok": false, "latency_seconds": 0, "detail": "", "at_ms": 1}]}"#,
            ),
            422,
            "observations[0]",
        ),
        (Method::GET, "/api/v1/nothing-here", None, 404, ""),
    ];
    for (method, path, body, want, field) in cases {
        let (status, json) = call(&op, method.clone(), path, body).await;
        assert_eq!(status, want, "{method} {path} {body:?}: {json}");
        if !field.is_empty() {
            assert_eq!(json["field"], field, "{method} {path} {body:?}: {json}");
            assert!(json["error"].as_str().unwrap().starts_with(field), "{json}");
        }
    }
    // Nothing changed: no audit entry, no override, the same table version.
    let (_, audit) = call(&op, Method::GET, "/api/v1/audit", None).await;
    assert_eq!(audit, serde_json::json!([]));
    let (_, status) = call(&op, Method::GET, "/api/v1/status", None).await;
    for target in status["apps"][0]["targets"].as_array().unwrap() {
        assert_eq!(target["weight_override"], serde_json::Value::Null);
        assert_eq!(target["drain_started_at_ms"], serde_json::Value::Null);
        assert_eq!(target["weight"], 100);
    }
    assert_eq!(ctl.table().unwrap().version(), version_before);
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_explain_and_status_show_the_change() {
    let (ctl, dir, _b1, _b2) = setup("weight").await;
    let op = client(&ctl, Some(OP));
    let (status, change) = call(
        &op,
        Method::PUT,
        "/api/v1/apps/shop/targets/c1/weight",
        Some(r#"{"weight": 0}"#),
    )
    .await;
    assert_eq!(status, 200, "{change}");
    let version = change["table_version"].as_u64().unwrap();
    assert_eq!(ctl.table().unwrap().version(), version);
    let (_, status) = call(&op, Method::GET, "/api/v1/status", None).await;
    let c1 = &status["apps"][0]["targets"][0];
    assert_eq!(
        (c1["cluster"].as_str(), c1["weight"].as_u64()),
        (Some("c1"), Some(0))
    );
    assert_eq!(c1["weight_override"], 0);
    assert_eq!(c1["configured_weight"], 100);
    // With c1 at weight 0 every client goes to c2, and explain says so.
    for client_addr in ["192.0.2.1", "198.51.100.9", "2001:db8::1"] {
        let (code, explanation) = call(
            &op,
            Method::GET,
            &format!("/api/v1/explain?host=SHOP.test&client={client_addr}"),
            None,
        )
        .await;
        assert_eq!(code, 200, "{explanation}");
        assert_eq!(explanation["chosen"], "c2", "{explanation}");
        assert_eq!(explanation["table_version"], version);
        assert!(explanation["summary"].as_str().unwrap().contains("c2"));
    }
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_metrics_and_health_endpoints() {
    let (ctl, dir, _b1, _b2) = setup("surface").await;
    let anon = client(&ctl, None);
    let (status, doc) = call(&anon, Method::GET, "/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/status",
        "/api/v1/apps/{app}/targets/{cluster}/weight",
        "/api/v1/clusters/{cluster}/drain",
        "/api/v1/explain",
        "/api/v1/history",
        "/api/v1/audit",
        "/api/v1/watch",
        "/api/v1/reports",
    ] {
        assert!(doc["paths"][path].is_object(), "missing {path}");
    }
    assert!(doc["components"]["schemas"]["WeightRequest"].is_object());
    assert_eq!(call(&anon, Method::GET, "/livez", None).await.0, 200);
    let (ready, text) = call(&anon, Method::GET, "/readyz", None).await;
    assert_eq!(ready, 200, "{text}");
    // Let the probes run a few rounds, then read the metrics.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let op = client(&ctl, Some(OP));
    call(&op, Method::GET, "/api/v1/status", None).await;
    let (status, metrics) = call(&anon, Method::GET, "/metrics", None).await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap().to_string();
    for needle in [
        "meridian_table_version ",
        "meridian_table_compute_seconds_count",
        "meridian_table_encoded_bytes ",
        "meridian_subscribers_connected ",
        "meridian_probe_results_total{app=\"shop\",cluster=\"c1\",result=\"ok\",vantage=\"controller\"}",
        "meridian_probe_latency_seconds_bucket",
        "meridian_api_requests_total{route=\"/api/v1/status\",status=\"200\"} 1",
    ] {
        assert!(metrics.contains(needle), "no {needle} in\n{metrics}");
    }
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn bad_token_settings_refuse_to_start_naming_the_field() {
    let dir = temp_dir("badtokens");
    let addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let cases = [
        (
            "  tokens:\n    - { name: a, role: operator, sha256: \"xyz\" }\n",
            "controller.tokens[0].sha256",
        ),
        (
            "  tokens:\n    - { name: a, role: operator, sha256: \"00\", file: t }\n",
            "controller.tokens[0]",
        ),
        (
            "  tokens:\n    - { name: a, role: operator, file: missing.token }\n",
            "missing.token",
        ),
        (
            "  tokens:\n    - { name: a, role: operator, file: t }\n    - { name: a, role: read-only, file: t }\n",
            "controller.tokens[1].name",
        ),
    ];
    std::fs::write(dir.join("t"), "secret").unwrap();
    for (tokens, needle) in cases {
        let file = dir.join("meridian.yaml");
        std::fs::write(&file, config_yaml(addr, addr, tokens)).unwrap();
        // `meridian check` refuses what it can see in the file; the controller refuses the
        // rest (a token file that is missing) when it starts.
        let err = match meridian_config::load(&file) {
            Err(err) => err.to_string(),
            Ok(loaded) => meridian_controller::Controller::start(loaded, Default::default())
                .await
                .unwrap_err()
                .to_string(),
        };
        assert!(err.contains(needle), "{needle}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_routes_share_the_port() {
    let (b1, b2) = (Backend::start().await, Backend::start().await);
    let dir = temp_dir("extra");
    let file = dir.join("meridian.yaml");
    std::fs::write(&file, config_yaml(b1.addr, b2.addr, "")).unwrap();
    let extra = axum::Router::new()
        .route("/", axum::routing::get(|| async { "dashboard" }))
        .route(
            "/api/v1/demo/clusters",
            axum::routing::get(|| async { "[]" }),
        );
    let ctl = meridian_controller::Controller::start(
        meridian_config::load(&file).unwrap(),
        meridian_controller::ControllerOptions {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            probe: false,
            extra_routes: Some(extra),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let c = client(&ctl, None);
    assert_eq!(
        call(&c, Method::GET, "/", None).await,
        (200, "dashboard".into())
    );
    assert_eq!(
        call(&c, Method::GET, "/api/v1/demo/clusters", None).await.0,
        200
    );
    assert_eq!(call(&c, Method::GET, "/api/v1/status", None).await.0, 200);
    assert_eq!(call(&c, Method::GET, "/api/v1/nothing", None).await.0, 404);
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_reports_only_as_the_vantages_it_names() {
    let (ctl, dir, _b1, _b2) = setup("vantage-identity").await;
    let report = |vantage: &str| {
        format!(
            r#"{{"vantage":"{vantage}","observations":[{{"app":"shop","cluster":"c1","healthy":true,
            "last_ok":true,"latency_seconds":0.001,"detail":"","at_ms":{}}}]}}"#,
            meridian_subscriber::probe::now_ms()
        )
    };
    let sub = client(&ctl, Some(SUB));
    for vantage in ["edge-1", "pod-7f9c"] {
        let (status, body) = call(
            &sub,
            Method::POST,
            "/api/v1/reports",
            Some(&report(vantage)),
        )
        .await;
        assert_eq!(
            (status, &body["accepted"]),
            (200, &serde_json::json!(1)),
            "{body}"
        );
    }
    // Neither another vantage nor the token's own name (it lists its vantages), nor the
    // controller's vantage.
    for vantage in ["edge-3", "edge", "controller", "po"] {
        let (status, body) = call(
            &sub,
            Method::POST,
            "/api/v1/reports",
            Some(&report(vantage)),
        )
        .await;
        assert_eq!(status, 403, "{vantage}: {body}");
        assert_eq!(body["field"], "vantage", "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("edge-1, pod-*"),
            "{body}"
        );
    }
    // A token that lists none speaks for the vantage of its own name.
    let op = client(&ctl, Some(OP));
    let (status, body) = call(&op, Method::POST, "/api/v1/reports", Some(&report("alice"))).await;
    assert_eq!(status, 200, "{body}");
    let (_, app) = call(&op, Method::GET, "/api/v1/apps/shop", None).await;
    let mut voters: Vec<&str> = app["targets"][0]["verdict"]["votes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["vantage"].as_str().unwrap())
        .collect();
    voters.sort();
    assert_eq!(voters, ["alice", "controller", "edge-1", "pod-7f9c"]);
    let (_, metrics) = call(&op, Method::GET, "/metrics", None).await;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains(r#"meridian_reports_refused_total{reason="forbidden-vantage"} 4"#),
        "{metrics}"
    );
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// One raw HTTP/1.1 request with the given headers, as a browser or a script could send
/// it: the status.
fn raw(addr: std::net::SocketAddr, method: &str, path: &str, headers: &[&str], body: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_api_takes_writes_only_as_json_from_its_own_origin() {
    let (b1, b2) = (Backend::start().await, Backend::start().await);
    let dir = temp_dir("browser-open");
    let ctl = start_controller(&config_yaml(b1.addr, b2.addr, ""), &dir, true).await;
    let addr = ctl.addr();
    let drain = "/api/v1/clusters/c1/drain";
    let weight = "/api/v1/apps/shop/targets/c1/weight";
    let json = "Content-Type: application/json";
    let refused = tokio::task::spawn_blocking(move || {
        [
            // A cross-site form post: text/plain, and a JSON-looking body.
            raw(addr, "POST", drain, &["Content-Type: text/plain"], "{}"),
            raw(
                addr,
                "PUT",
                weight,
                &["Content-Type: text/plain"],
                r#"{"weight":0}"#,
            ),
            raw(addr, "POST", drain, &[], ""),
            raw(
                addr,
                "POST",
                drain,
                &[json, "Origin: http://evil.example"],
                "",
            ),
            raw(
                addr,
                "POST",
                drain,
                &[json, "Sec-Fetch-Site: cross-site"],
                "",
            ),
            raw(addr, "POST", drain, &[json, "Origin: null"], ""),
        ]
    })
    .await
    .unwrap();
    assert_eq!(refused, [415, 415, 415, 403, 403, 403]);
    let anon = client(&ctl, None);
    let (_, audit) = call(&anon, Method::GET, "/api/v1/audit", None).await;
    assert_eq!(audit, serde_json::json!([]), "nothing was written");
    // The dashboard's own page, and a script on the same machine, may write.
    let origin = format!("Origin: http://127.0.0.1:{}", addr.port());
    let ok = tokio::task::spawn_blocking(move || {
        [
            raw(
                addr,
                "POST",
                drain,
                &[json, &origin, "Sec-Fetch-Site: same-origin"],
                "",
            ),
            raw(addr, "POST", "/api/v1/clusters/c2/drain", &[json], ""),
        ]
    })
    .await
    .unwrap();
    assert_eq!(ok, [200, 200]);
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_beside_the_api_need_the_operator_for_writes_when_tokens_exist() {
    let (b1, b2) = (Backend::start().await, Backend::start().await);
    let dir = temp_dir("extra-operator");
    std::fs::write(dir.join("ro.token"), format!("{RO}\n")).unwrap();
    let tokens = format!(
        "  tokens:\n    - {{ name: alice, role: operator, sha256: \"{}\" }}\n    - {{ name: robot, role: read-only, file: ro.token }}\n    - {{ name: edge, role: subscriber, sha256: \"{}\" }}\n",
        sha256_hex(OP),
        sha256_hex(SUB)
    );
    let file = dir.join("meridian.yaml");
    std::fs::write(&file, config_yaml(b1.addr, b2.addr, &tokens)).unwrap();
    // Stands where the demo's fail/recover control is mounted by `meridian up --demo`.
    let extra = axum::Router::new().route(
        "/api/v1/demo/clusters/{cluster}",
        axum::routing::put(|| async { "failed" }).get(|| async { "state" }),
    );
    let ctl = meridian_controller::Controller::start(
        meridian_config::load(&file).unwrap(),
        meridian_controller::ControllerOptions {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            probe: false,
            extra_routes: Some(extra),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let demo = "/api/v1/demo/clusters/c1";
    let body = Some(r#"{"mode":"down"}"#);
    let statuses = [
        call(&client(&ctl, None), Method::PUT, demo, body).await.0,
        call(&client(&ctl, Some(RO)), Method::PUT, demo, body)
            .await
            .0,
        call(&client(&ctl, Some(SUB)), Method::PUT, demo, body)
            .await
            .0,
        call(&client(&ctl, Some(OP)), Method::PUT, demo, body)
            .await
            .0,
        call(&client(&ctl, None), Method::GET, demo, None).await.0,
    ];
    assert_eq!(statuses, [401, 403, 403, 200, 200]);
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vantages_kept_at_once_are_bounded() {
    let (b1, b2) = (Backend::start().await, Backend::start().await);
    let dir = temp_dir("vantage-bound");
    let ctl = start_controller(&config_yaml(b1.addr, b2.addr, ""), &dir, false).await;
    let c = client(&ctl, None);
    let report = |vantage: &str| {
        format!(
            r#"{{"vantage":"{vantage}","observations":[{{"app":"shop","cluster":"c1","healthy":true,
            "last_ok":true,"latency_seconds":0.001,"detail":"","at_ms":{}}}]}}"#,
            meridian_subscriber::probe::now_ms()
        )
    };
    for i in 0..256 {
        let (status, body) = call(
            &c,
            Method::POST,
            "/api/v1/reports",
            Some(&report(&format!("pod-{i}"))),
        )
        .await;
        assert_eq!(status, 200, "pod-{i}: {body}");
    }
    let (status, body) = call(
        &c,
        Method::POST,
        "/api/v1/reports",
        Some(&report("pod-256")),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["field"], "vantage");
    let (status, _) = call(&c, Method::POST, "/api/v1/reports", Some(&report("pod-0"))).await;
    assert_eq!(status, 200, "a known vantage reports on");
    let (_, metrics) = call(&c, Method::GET, "/metrics", None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains(r#"meridian_reports_refused_total{reason="too-many-vantages"} 1"#),
        "{metrics}"
    );
    assert!(!metrics.contains(r#"vantage="pod-256""#));
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The dashboard's charts: the traffic and answers subscribers report become per-target
/// series over time, with the operator's changes among the events; a bad window is refused
/// naming the parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_charts_reported_traffic_and_answers_with_events() {
    let (ctl, dir, _b1, _b2) = setup("timeline").await;
    let sub = client(&ctl, Some(SUB));
    let op = client(&ctl, Some(OP));
    let report = |requests: u64, answers: u64| {
        // Every latency of this vantage falls in the 5–10 ms bucket.
        let buckets: Vec<u64> = meridian_subscriber::report::LATENCY_BUCKETS
            .iter()
            .map(|&b| if b < 0.01 { 0 } else { requests })
            .collect();
        serde_json::json!({
            "vantage": "edge-1",
            "observations": [],
            "traffic": [{"app": "shop", "cluster": "c1", "requests": requests, "errors": 0,
                "latency_seconds_sum": 0.008 * requests as f64, "latency_count": requests,
                "latency_buckets": buckets}],
            "answers": [{"app": "shop", "cluster": "c2", "answers": answers}],
        })
        .to_string()
    };
    let (status, body) = call(&sub, Method::POST, "/api/v1/reports", Some(&report(0, 0))).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(&op, Method::POST, "/api/v1/clusters/c2/drain", Some("{}")).await;
    assert_eq!(status, 200);
    let mut requests = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let view = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        requests += 100;
        let (status, body) = call(
            &sub,
            Method::POST,
            "/api/v1/reports",
            Some(&report(requests, requests / 10)),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (status, view) = call(&op, Method::GET, "/api/v1/timeline?window_ms=60000", None).await;
        assert_eq!(status, 200, "{view}");
        let known = |cluster: &str, field: &str| {
            view["series"].as_array().unwrap().iter().any(|s| {
                s["cluster"] == cluster && s[field].as_array().unwrap().iter().any(|v| !v.is_null())
            })
        };
        if known("c1", "requests_per_second")
            && known("c1", "latency_p99_seconds")
            && known("c2", "dns_answers_per_second")
        {
            break view;
        }
        assert!(std::time::Instant::now() < deadline, "no series in {view}");
    };
    assert_eq!(view["step_ms"], 2000);
    assert_eq!(view["times_ms"].as_array().unwrap().len(), 30);
    let c1 = view["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["cluster"] == "c1")
        .unwrap();
    let last = |field: &str| {
        c1[field]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find_map(|v| v.as_f64())
            .unwrap()
    };
    // 100 requests per ~0.5 s report: about 200/s (the test's own timing is loose).
    assert!(
        (50.0..=400.0).contains(&last("requests_per_second")),
        "{c1}"
    );
    let p99 = last("latency_p99_seconds");
    assert!(
        (0.005..=0.01).contains(&p99),
        "p99 {p99} outside its bucket: {c1}"
    );
    assert_eq!(last("error_ratio"), 0.0);
    let events = view["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["kind"] == "operator"
            && e["cluster"] == "c2"
            && e["text"].as_str().unwrap().contains("alice")),
        "{events:?}"
    );
    for bad in ["window_ms=0", "window_ms=99999999999", "window_ms=ten"] {
        let (status, body) = call(&op, Method::GET, &format!("/api/v1/timeline?{bad}"), None).await;
        assert_eq!(
            (status, &body["field"]),
            (400, &serde_json::json!("window_ms")),
            "{bad}: {body}"
        );
    }
    ctl.shutdown().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
