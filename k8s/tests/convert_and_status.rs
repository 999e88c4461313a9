//! Resources → config (the same rules as a file; one bad resource never blocks the others),
//! and status writes through the API, verified against kube's mock API server pattern.

use http::{Request, Response};
use kube::Client;
use kube::api::Api;
use kube::client::Body;
use meridian_k8s::convert::to_config;
use meridian_k8s::crd::*;
use meridian_k8s::status::{condition, write_status};

fn base() -> meridian_config::Config {
    let text = "regions: [{ name: eu, location: { lat: 50, lon: 8 } }]\nclusters: []\napps: []\n";
    meridian_config::parse(text, std::path::Path::new("base.yaml"))
        .unwrap()
        .config
}

fn cluster(name: &str, endpoint: &str) -> MeridianCluster {
    let mut c = MeridianCluster::new(
        name,
        ClusterSpec {
            region: "eu".into(),
            provider: "aws".into(),
            location: None,
            endpoints: vec![endpoint.into()],
            ingress_discovery: None,
            kubeconfig_secret_ref: None,
            capacity: None,
            node_scaling: None,
        },
    );
    c.metadata.namespace = Some("meridian".into());
    c.metadata.generation = Some(3);
    c
}

fn app(name: &str, host: &str, clusters: &[&str]) -> MeridianApp {
    MeridianApp::new(
        name,
        AppSpec {
            hostnames: vec![host.into()],
            policy: None,
            failure_mode: FailureModeSpec::FailOpen,
            dns_ttl: None,
            probe: Some(ProbeSpec {
                kind: "http".into(),
                path: Some("/healthz".into()),
                host: None,
                expect_status: vec![],
                interval: Some("2s".into()),
                timeout: None,
                rise: None,
                fall: None,
            }),
            drain_period: None,
            slow_start: None,
            targets: clusters
                .iter()
                .map(|c| TargetSpec {
                    cluster: (*c).into(),
                    weight: None,
                    tier: None,
                })
                .collect(),
            placement: None,
            scaling: None,
        },
    )
}

#[test]
fn resources_become_a_valid_config() {
    let (verdicts, result) = to_config(
        &base(),
        &[
            cluster("aws-1", "192.0.2.1:443"),
            cluster("gcp-1", "192.0.2.2:443"),
        ],
        &[app("shop", "shop.example.com", &["aws-1", "gcp-1"])],
    );
    let loaded = result.unwrap();
    assert!(verdicts.apps["shop"].is_empty() && verdicts.clusters["aws-1"].is_empty());
    let config = &loaded.config;
    assert_eq!(config.clusters.len(), 2);
    assert_eq!(config.apps[0].probe.as_deref(), Some("app:shop"));
    let probe = config.probe_for(&config.apps[0]);
    assert_eq!(
        (probe.path.as_str(), probe.interval.as_secs()),
        ("/healthz", 2)
    );
    meridian_routing::RoutingTable::new(config.base_table(1, 0)).unwrap();
}

#[test]
fn bad_resources_get_verdicts_naming_the_field() {
    let (verdicts, result) = to_config(
        &base(),
        &[
            cluster("aws-1", "192.0.2.1:443"),
            cluster("broken", "not-an-address"),
        ],
        &[
            app("shop", "shop.example.com", &["aws-1", "mars-1"]),
            app("ok", "ok.example.com", &["aws-1"]),
        ],
    );
    assert_eq!(
        verdicts.clusters["broken"],
        vec!["endpoints[0]: \"not-an-address\" is not an endpoint address:port"]
    );
    assert_eq!(
        verdicts.apps["shop"],
        vec!["targets[1].cluster: unknown cluster \"mars-1\""]
    );
    assert!(verdicts.apps["ok"].is_empty());
    assert!(result.is_err());
}

#[test]
fn a_cluster_waiting_for_its_address_does_not_block_its_apps() {
    let mut waiting = cluster("aws-1", "192.0.2.1:443");
    waiting.spec.endpoints.clear();
    waiting.spec.ingress_discovery = Some(IngressDiscovery {
        kind: DiscoveryKind::Service,
        namespace: "edge".into(),
        name: "ingress".into(),
        port: None,
    });
    let (verdicts, result) = to_config(
        &base(),
        &[waiting, cluster("gcp-1", "192.0.2.2:443")],
        &[
            app("shop", "shop.example.com", &["aws-1", "gcp-1"]),
            app("solo", "solo.example.com", &["aws-1"]),
        ],
    );
    assert_eq!(
        verdicts.clusters["aws-1"],
        vec!["no ingress endpoint yet: none in spec.endpoints and none discovered"]
    );
    assert!(verdicts.apps["shop"].is_empty());
    assert_eq!(verdicts.skipped_targets["shop"], vec!["aws-1"]);
    assert_eq!(
        verdicts.apps["solo"],
        vec!["no target can serve yet: cluster(s) aws-1 not accepted"]
    );
    let config = result.unwrap().config;
    assert_eq!(config.apps.len(), 1);
    assert_eq!(config.apps[0].targets.len(), 1);
    assert_eq!(config.apps[0].targets[0].cluster, "gcp-1");
}

#[test]
fn bad_capacity_fields_are_named_and_block_only_their_app() {
    let mut bad_strategy = app("shop", "shop.example.com", &["aws-1"]);
    bad_strategy.spec.placement = Some(
        serde_json::from_value(serde_json::json!({
            "workload": {"namespace": "default", "name": "shop"},
            "strategy": "cheapest"
        }))
        .unwrap(),
    );
    let mut bad_timeout = app("cart", "cart.example.com", &["aws-1"]);
    bad_timeout.spec.placement = Some(
        serde_json::from_value(serde_json::json!({
            "workload": {"namespace": "default", "name": "cart"},
            "readinessTimeout": "soon"
        }))
        .unwrap(),
    );
    let mut bad_drain = app("maps", "maps.example.com", &["aws-1"]);
    bad_drain.spec.drain_period = Some("-5s".into());
    let (verdicts, result) = to_config(
        &base(),
        &[cluster("aws-1", "192.0.2.1:443")],
        &[
            bad_strategy,
            bad_timeout,
            bad_drain,
            app("ok", "ok.example.com", &["aws-1"]),
        ],
    );
    assert_eq!(
        verdicts.apps["shop"],
        vec!["placement.strategy: \"cheapest\" is not one of weight, capacity, cost"]
    );
    assert!(
        verdicts.apps["cart"][0]
            .starts_with("placement.readinessTimeout: \"soon\" is not a duration"),
        "{:?}",
        verdicts.apps["cart"]
    );
    assert!(
        verdicts.apps["maps"][0].starts_with("drainPeriod: \"-5s\" is not a duration"),
        "{:?}",
        verdicts.apps["maps"]
    );
    assert!(verdicts.apps["ok"].is_empty());
    let config = result.unwrap().config;
    assert_eq!(config.apps.len(), 1, "only the good app is served");
}

#[tokio::test]
async fn status_is_written_through_the_status_subresource() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "meridian");
    let api: Api<MeridianCluster> = Api::namespaced(client, "meridian");
    let object = cluster("aws-1", "192.0.2.1:443");
    let generation = object.metadata.generation.unwrap();
    let status = ClusterStatus {
        conditions: vec![condition(
            "Reachable",
            false,
            "Unreachable",
            "connection refused",
            generation,
            "2026-11-28T10:00:00Z",
        )],
        observed_generation: Some(generation),
        ..Default::default()
    };
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("a request");
        assert_eq!(request.method(), http::Method::PATCH);
        assert_eq!(
            request.uri().path(),
            "/apis/meridian.dev/v1alpha1/namespaces/meridian/meridianclusters/aws-1/status"
        );
        assert!(
            request
                .uri()
                .query()
                .unwrap_or_default()
                .contains("fieldManager=meridian-controller")
        );
        assert_eq!(
            request.headers()["content-type"],
            "application/merge-patch+json"
        );
        let body = request.into_body().collect_bytes().await.unwrap();
        let patch: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let written = &patch["status"]["conditions"][0];
        assert_eq!(written["type"], "Reachable");
        assert_eq!(written["status"], "False");
        assert_eq!(written["observedGeneration"], 3);
        assert_eq!(patch["status"]["observedGeneration"], 3);
        let mut reply = cluster("aws-1", "192.0.2.1:443");
        reply.status = serde_json::from_value(patch["status"].clone()).unwrap();
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap(),
        );
    });
    write_status(&api, "aws-1", &status).await.unwrap();
    server.await.unwrap();
}
