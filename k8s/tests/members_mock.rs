//! Member clusters against kube's mock API server pattern: ingress discovery from Service,
//! Ingress and Gateway replies, the inventory from node, pod and Deployment replies, and a
//! member that answers 500 or refuses connections becoming unreachable with a message naming why.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use meridian_k8s::crd::*;
use meridian_k8s::discovery::discover;
use meridian_k8s::member::*;
use serde_json::{Value, json};

type Routes = fn(&str, &str) -> (StatusCode, Value);

/// A mock client whose API server answers by path (and query) through `routes`; the returned
/// list records every request as `path?query`.
fn mock_client(routes: Routes) -> (Client, Arc<Mutex<Vec<String>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            assert_eq!(request.method(), http::Method::GET, "members only read");
            let path = request.uri().path().to_string();
            let query = request.uri().query().unwrap_or_default().to_string();
            log.lock().unwrap().push(format!("{path}?{query}"));
            let (status, body) = routes(&path, &query);
            send.send_response(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        }
    });
    (Client::new(service, "default"), seen)
}

fn not_found(path: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("{path} not found"), "reason": "NotFound", "code": 404 }),
    )
}

fn discovery(kind: DiscoveryKind) -> IngressDiscovery {
    IngressDiscovery {
        kind,
        namespace: "edge".into(),
        name: "front".into(),
        port: None,
    }
}

#[tokio::test]
async fn discovers_a_load_balancer_service() {
    let (client, seen) = mock_client(|path, _| match path {
        "/api/v1/namespaces/edge/services/front" => (
            StatusCode::OK,
            json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": { "name": "front", "namespace": "edge" },
                "spec": { "type": "LoadBalancer", "ports": [{ "port": 8443 }] },
                "status": { "loadBalancer": { "ingress": [
                    { "ip": "127.0.0.3" }, { "ip": "127.0.0.2" }, { "ip": "127.0.0.3" }
                ] } }
            }),
        ),
        other => not_found(other),
    });
    let found = discover(&client, &discovery(DiscoveryKind::Service)).await;
    assert_eq!(
        found.unwrap(),
        vec![
            "127.0.0.2:8443".parse().unwrap(),
            "127.0.0.3:8443".parse().unwrap()
        ],
        "sorted and deduplicated"
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn discovers_an_ingress_and_names_a_missing_object() {
    let (client, _) = mock_client(|path, _| match path {
        "/apis/networking.k8s.io/v1/namespaces/edge/ingresses/front" => (
            StatusCode::OK,
            json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                "metadata": { "name": "front", "namespace": "edge" },
                "spec": { "tls": [{ "hosts": ["shop.example.com"] }] },
                "status": { "loadBalancer": { "ingress": [{ "hostname": "localhost" }] } }
            }),
        ),
        other => not_found(other),
    });
    let found = discover(&client, &discovery(DiscoveryKind::Ingress))
        .await
        .unwrap();
    assert!(!found.is_empty());
    assert!(
        found
            .iter()
            .all(|a| a.ip().is_loopback() && a.port() == 443),
        "{found:?}"
    );
    let missing = discover(&client, &discovery(DiscoveryKind::Service)).await;
    assert_eq!(missing.unwrap_err(), "Service edge/front not found");
}

#[tokio::test]
async fn discovers_a_gateway_falling_back_to_v1beta1() {
    let (client, seen) = mock_client(|path, _| match path {
        "/apis/gateway.networking.k8s.io/v1beta1/namespaces/edge/gateways/front" => (
            StatusCode::OK,
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "Gateway",
                "metadata": { "name": "front", "namespace": "edge" },
                "spec": { "gatewayClassName": "x", "listeners": [
                    { "name": "http", "port": 8080, "protocol": "HTTP" }
                ] },
                "status": { "addresses": [{ "type": "IPAddress", "value": "127.0.0.9" }] }
            }),
        ),
        other => not_found(other),
    });
    let found = discover(&client, &discovery(DiscoveryKind::Gateway)).await;
    assert_eq!(found.unwrap(), vec!["127.0.0.9:8080".parse().unwrap()]);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "/apis/gateway.networking.k8s.io/v1/namespaces/edge/gateways/front?",
            "/apis/gateway.networking.k8s.io/v1beta1/namespaces/edge/gateways/front?"
        ]
    );
}

fn member_routes(path: &str, query: &str) -> (StatusCode, Value) {
    match path {
        "/version" => (
            StatusCode::OK,
            json!({ "major": "1", "minor": "20", "gitVersion": "v1.20.2", "gitCommit": "",
                    "gitTreeState": "", "buildDate": "", "goVersion": "go1.15",
                    "compiler": "gc", "platform": "linux/amd64" }),
        ),
        "/api/v1/nodes" => (
            StatusCode::OK,
            json!({ "apiVersion": "v1", "kind": "NodeList", "metadata": {}, "items": [
                { "metadata": { "name": "n1" }, "status": {
                    "allocatable": { "cpu": "4", "memory": "8Gi" },
                    "conditions": [{ "type": "Ready", "status": "True" }] } },
                { "metadata": { "name": "n2" }, "status": {
                    "allocatable": { "cpu": "2", "memory": "4Gi" },
                    "conditions": [{ "type": "Ready", "status": "Unknown" }] } }
            ] }),
        ),
        "/api/v1/pods" => {
            // Paged: the first reply hands a continue token, the second finishes.
            let page = if query.contains("continue=page-2") {
                json!([{ "metadata": { "name": "b", "namespace": "shop" },
                         "spec": { "containers": [{ "name": "c", "resources": {
                             "requests": { "cpu": "1500m", "memory": "1Gi" } } }] },
                         "status": { "phase": "Pending", "conditions": [
                             { "type": "PodScheduled", "status": "False",
                               "reason": "Unschedulable",
                               "message": "0/2 nodes are available: 1 Insufficient cpu." }
                         ] } }])
            } else {
                json!([{ "metadata": { "name": "a", "namespace": "shop" },
                         "spec": { "containers": [{ "name": "c", "resources": {
                             "requests": { "cpu": "250m", "memory": "128Mi" } } }] },
                         "status": { "phase": "Running" } }])
            };
            let continue_ = if query.contains("continue=") {
                ""
            } else {
                "page-2"
            };
            (
                StatusCode::OK,
                json!({ "apiVersion": "v1", "kind": "PodList",
                        "metadata": { "continue": continue_ }, "items": page }),
            )
        }
        "/apis/apps/v1/namespaces/shop/deployments/web" => (
            StatusCode::OK,
            json!({ "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": { "name": "web", "namespace": "shop" },
                    "spec": { "replicas": 4, "selector": {}, "template": {} },
                    "status": { "replicas": 4, "readyReplicas": 3 } }),
        ),
        other => not_found(other),
    }
}

fn target(workloads: &[(&str, &str)]) -> MemberTarget {
    MemberTarget {
        cluster: "aws-1".into(),
        kubeconfig: KubeconfigSource::File("unused".into()),
        discovery: None,
        workloads: workloads
            .iter()
            .map(|(app, name)| {
                (
                    (*app).to_string(),
                    WorkloadRef {
                        namespace: "shop".into(),
                        name: (*name).into(),
                    },
                )
            })
            .collect(),
    }
}

#[tokio::test]
async fn inventory_from_nodes_pods_and_deployments() {
    let (client, seen) = mock_client(member_routes);
    let target = target(&[("shop", "web"), ("blog", "missing")]);
    let observation = observe(&client, &target, &MemberOptions::default())
        .await
        .unwrap();
    assert_eq!(observation.version, "v1.20.2");
    assert_eq!(observation.discovered, None);
    assert_eq!(
        observation.inventory.unwrap(),
        Inventory {
            kubernetes_version: "v1.20.2".into(),
            node_provider: None,
            nodes: 2,
            nodes_ready: 1,
            allocatable_cpu_millis: 4000,
            allocatable_memory_bytes: 8 << 30,
            requested_cpu_millis: 1750,
            requested_memory_bytes: (1 << 30) + (128 << 20),
            unschedulable_pods: 1,
            unschedulable_cpu_millis: 1500,
            unschedulable_memory_bytes: 1 << 30,
            workloads: vec![
                WorkloadInventory {
                    app: "shop".into(),
                    desired_replicas: 4,
                    ready_replicas: 3
                },
                WorkloadInventory {
                    app: "blog".into(),
                    desired_replicas: 0,
                    ready_replicas: 0
                },
            ],
        }
    );
    let seen = seen.lock().unwrap().clone();
    let pods: Vec<&String> = seen
        .iter()
        .filter(|s| s.starts_with("/api/v1/pods"))
        .collect();
    assert_eq!(pods.len(), 2, "both pages read: {seen:?}");
    assert!(
        pods[0].contains("fieldSelector=status.phase%21%3DSucceeded%2Cstatus.phase%21%3DFailed"),
        "finished pods filtered by the server: {}",
        pods[0]
    );
}

#[tokio::test]
async fn server_error_makes_the_member_unreachable() {
    let (client, _) = mock_client(|_, _| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "etcdserver: request timed out", "reason": "InternalError",
                    "code": 500 }),
        )
    });
    let message = observe(&client, &target(&[]), &MemberOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        message,
        "GET /version: HTTP 500 InternalError: etcdserver: request timed out"
    );
}

#[tokio::test]
async fn inventory_failure_is_reported_beside_a_reachable_member() {
    let (client, _) = mock_client(|path, query| match path {
        "/api/v1/nodes" => (
            StatusCode::FORBIDDEN,
            json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "nodes is forbidden", "reason": "Forbidden", "code": 403 }),
        ),
        other => member_routes(other, query),
    });
    let observation = observe(&client, &target(&[]), &MemberOptions::default())
        .await
        .unwrap();
    assert_eq!(observation.version, "v1.20.2");
    assert_eq!(
        observation.inventory.unwrap_err(),
        "listing nodes: HTTP 403 Forbidden: nodes is forbidden"
    );
}

/// A kubeconfig whose server is a loopback port nothing listens on.
fn refused_kubeconfig(dir: &std::path::Path) -> std::path::PathBuf {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: c, cluster: {{server: \"http://127.0.0.1:{port}\"}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\n\
             contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\ncurrent-context: c\n"
        ),
    )
    .unwrap();
    path
}

async fn wait_for(
    views: &mut tokio::sync::watch::Receiver<BTreeMap<String, MemberView>>,
    what: &str,
    done: impl Fn(&BTreeMap<String, MemberView>) -> bool,
) -> BTreeMap<String, MemberView> {
    let result = tokio::time::timeout(Duration::from_secs(10), views.wait_for(|v| done(v)))
        .await
        .map(|r| r.map(|v| v.clone()));
    match result {
        Ok(Ok(v)) => v,
        _ => panic!("{what} within 10 s; views: {:?}", views.borrow()),
    }
}

#[tokio::test]
async fn refused_connection_and_missing_secret_hub_are_unreachable() {
    let dir = std::env::temp_dir().join(format!("meridian-members-mock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = refused_kubeconfig(&dir);
    let members = Members::start(
        None,
        "meridian".into(),
        MemberOptions {
            poll_interval: Duration::from_millis(200),
            max_backoff: Duration::from_millis(400),
            ..MemberOptions::default()
        },
    );
    let mut views = members.subscribe();
    let file_target = MemberTarget {
        cluster: "refused".into(),
        kubeconfig: KubeconfigSource::File(kubeconfig),
        discovery: None,
        workloads: vec![],
    };
    let secret_target = MemberTarget {
        cluster: "secret".into(),
        kubeconfig: KubeconfigSource::Secret(SecretKeyRef {
            name: "member-secret".into(),
            key: "kubeconfig".into(),
        }),
        discovery: None,
        workloads: vec![],
    };
    members.set_targets(vec![file_target.clone(), secret_target.clone()]);
    let seen = wait_for(&mut views, "both unreachable", |v| {
        v.values()
            .all(|m| matches!(m.reachability, Reachability::Unreachable { .. }))
            && v.len() == 2
    })
    .await;
    let message = |cluster: &str| match &seen[cluster].reachability {
        Reachability::Unreachable { message, .. } => message.clone(),
        other => panic!("{other:?}"),
    };
    let refused = message("refused");
    assert!(
        refused.starts_with("GET /version: ")
            && refused.to_lowercase().contains("connection refused"),
        "{refused}"
    );
    assert!(message("secret").contains("Secret meridian/member-secret cannot be read"));
    // An unreachable member has no client to write with.
    assert!(members.client("refused").is_none());
    assert!(members.client("secret").is_none());
    assert!(members.client("not-followed").is_none());
    // Unchanged targets leave the tasks alone; a removed one takes its view with it.
    members.set_targets(vec![file_target.clone(), secret_target]);
    members.set_targets(vec![file_target]);
    wait_for(&mut views, "the removed member's view dropped", |v| {
        v.keys().eq(["refused"])
    })
    .await;
    // Dropping Members stops every task: the last sender goes with them and the channel closes.
    drop(members);
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while views.changed().await.is_ok() {}
    })
    .await;
    assert!(closed.is_ok(), "tasks still running after drop");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_silent_server_times_out() {
    // Accepts connections and never answers: a hung API server or a black-holed network.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let dir = std::env::temp_dir().join(format!("meridian-members-silent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: c, cluster: {{server: \"http://127.0.0.1:{port}\"}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\n\
             contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\ncurrent-context: c\n"
        ),
    )
    .unwrap();
    let options = MemberOptions {
        connect_timeout: Duration::from_millis(200),
        read_timeout: Duration::from_millis(300),
        poll_interval: Duration::from_millis(200),
        max_backoff: Duration::from_millis(400),
    };
    let started = std::time::Instant::now();
    let client = member_client(&KubeconfigSource::File(path), None, "meridian", &options)
        .await
        .unwrap();
    let message = observe(&client, &target(&[]), &options).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by the timeouts"
    );
    assert!(
        message.starts_with("GET /version: ") && message.to_lowercase().contains("timed out")
            || message.contains("no answer within"),
        "{message}"
    );
    holder.abort();
    std::fs::remove_dir_all(&dir).unwrap();
}
