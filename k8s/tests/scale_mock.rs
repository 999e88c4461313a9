//! The scale subresource against kube's mock API server pattern: the exact URLs, methods,
//! content types and bodies of reading and writing the replicas of a Deployment and of a Cluster
//! API MachineDeployment, and errors that name the object (a missing object and a kind the
//! server does not serve are told apart).

use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use meridian_k8s::Error;
use meridian_k8s::scale::{Scale, ScaleTarget, get_scale, set_replicas};
use serde_json::{Value, json};

/// One request as the server saw it.
#[derive(Debug, PartialEq)]
struct Seen {
    method: String,
    path_and_query: String,
    content_type: Option<String>,
    body: Option<Value>,
}

/// A mock client whose API server answers by method and path through `routes`, recording
/// every request.
fn mock_client(
    routes: impl Fn(&str, &str, Option<&Value>) -> (StatusCode, Value) + Send + 'static,
) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let body: Option<Value> = if bytes.is_empty() {
                None
            } else {
                Some(serde_json::from_slice(&bytes).unwrap())
            };
            let path_and_query = parts.uri.path_and_query().unwrap().to_string();
            let (status, reply) = routes(parts.method.as_str(), parts.uri.path(), body.as_ref());
            log.lock().unwrap().push(Seen {
                method: parts.method.to_string(),
                path_and_query,
                content_type: parts
                    .headers
                    .get("content-type")
                    .map(|v| v.to_str().unwrap().to_string()),
                body,
            });
            send.send_response(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
    });
    (Client::new(service, "default"), seen)
}

/// An autoscaling/v1 Scale as the API server returns it.
fn scale(namespace: &str, name: &str, desired: i64, current: i64) -> Value {
    json!({
        "apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": { "name": name, "namespace": namespace, "resourceVersion": "7" },
        "spec": { "replicas": desired },
        "status": { "replicas": current, "selector": "app=web" }
    })
}

fn status(code: u16, reason: &str, message: &str, details: Value) -> (StatusCode, Value) {
    (
        StatusCode::from_u16(code).unwrap(),
        json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "details": details, "code": code }),
    )
}

const DEPLOYMENT_SCALE: &str = "/apis/apps/v1/namespaces/shop/deployments/web/scale";
const MACHINE_DEPLOYMENT_SCALE: &str =
    "/apis/cluster.x-k8s.io/v1beta1/namespaces/capi/machinedeployments/workers/scale";

/// Reads (3 desired, 2 current) and merge-patches (echoing the requested replicas as desired)
/// the scale subresource at `path`, and checks the exact requests.
async fn reads_and_writes(target: ScaleTarget, path: &'static str) {
    let (namespace, name) = target.namespace_and_name();
    let (namespace, name) = (namespace.to_string(), name.to_string());
    let (client, seen) = mock_client(move |method, requested, body| {
        if requested != path {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource",
                json!({}),
            );
        }
        let replicas = match method {
            "GET" => 3,
            "PATCH" => body.unwrap()["spec"]["replicas"].as_i64().unwrap(),
            other => panic!("unexpected {other}"),
        };
        (StatusCode::OK, scale(&namespace, &name, replicas, 2))
    });
    assert_eq!(
        get_scale(&client, &target).await.unwrap(),
        Scale {
            desired: 3,
            current: 2
        }
    );
    set_replicas(&client, &target, 5).await.unwrap();
    set_replicas(&client, &target, 0).await.unwrap();
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    let patch = |replicas: u32| Seen {
        method: "PATCH".into(),
        path_and_query: format!("{path}?&fieldManager=meridian-controller"),
        content_type: Some("application/merge-patch+json".into()),
        body: Some(json!({ "spec": { "replicas": replicas } })),
    };
    assert_eq!(
        seen,
        vec![
            Seen {
                method: "GET".into(),
                path_and_query: path.into(),
                content_type: None,
                body: None,
            },
            patch(5),
            patch(0),
        ]
    );
}

#[tokio::test]
async fn reads_and_writes_the_scale_of_a_deployment() {
    let target = ScaleTarget::Deployment {
        namespace: "shop".into(),
        name: "web".into(),
    };
    reads_and_writes(target, DEPLOYMENT_SCALE).await;
}

#[tokio::test]
async fn reads_and_writes_the_scale_of_a_machine_deployment() {
    let target = ScaleTarget::MachineDeployment {
        namespace: "capi".into(),
        name: "workers".into(),
    };
    reads_and_writes(target, MACHINE_DEPLOYMENT_SCALE).await;
}

fn scale_error(error: Error) -> (Option<u16>, String) {
    match &error {
        Error::Scale { code, .. } => (*code, error.to_string()),
        other => panic!("not a scale error: {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_object_is_named() {
    let (client, _) = mock_client(|_, _, _| {
        status(
            404,
            "NotFound",
            "machinedeployments.cluster.x-k8s.io \"workers\" not found",
            json!({ "name": "workers", "group": "cluster.x-k8s.io", "kind": "machinedeployments" }),
        )
    });
    let target = ScaleTarget::MachineDeployment {
        namespace: "capi".into(),
        name: "workers".into(),
    };
    assert_eq!(
        scale_error(get_scale(&client, &target).await.unwrap_err()),
        (
            Some(404),
            "reading the scale of MachineDeployment capi/workers: not found".into()
        )
    );
    assert_eq!(
        scale_error(set_replicas(&client, &target, 4).await.unwrap_err()),
        (
            Some(404),
            "writing 4 replicas to the scale of MachineDeployment capi/workers: not found".into()
        )
    );
}

#[tokio::test]
async fn a_kind_the_server_does_not_serve_is_named() {
    // What an API server without Cluster API's CRDs answers: a 404 naming no object.
    let (client, _) = mock_client(|_, _, _| {
        status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            json!({}),
        )
    });
    let target = ScaleTarget::MachineDeployment {
        namespace: "capi".into(),
        name: "workers".into(),
    };
    assert_eq!(
        scale_error(get_scale(&client, &target).await.unwrap_err()),
        (
            Some(404),
            "reading the scale of MachineDeployment capi/workers: the API server does not serve \
             machinedeployments.cluster.x-k8s.io/v1beta1 (is the kind's CRD installed?)"
                .into()
        )
    );
}

#[tokio::test]
async fn a_refused_write_says_why() {
    let (client, _) = mock_client(|_, _, _| {
        status(
            403,
            "Forbidden",
            "deployments.apps \"web\" is forbidden: User \"meridian\" cannot patch resource \
             \"deployments/scale\" in API group \"apps\" in the namespace \"shop\"",
            json!({ "name": "web", "group": "apps", "kind": "deployments" }),
        )
    });
    let target = ScaleTarget::Deployment {
        namespace: "shop".into(),
        name: "web".into(),
    };
    let (code, message) = scale_error(set_replicas(&client, &target, 2).await.unwrap_err());
    assert_eq!(code, Some(403));
    assert!(
        message.starts_with(
            "writing 2 replicas to the scale of Deployment shop/web: HTTP 403 Forbidden: "
        ) && message.contains("cannot patch resource \"deployments/scale\""),
        "{message}"
    );
}

#[tokio::test]
async fn bad_input_is_refused_before_any_request() {
    let (client, seen) = mock_client(|_, _, _| panic!("no request expected"));
    let target = ScaleTarget::Deployment {
        namespace: "shop".into(),
        name: "web".into(),
    };
    assert_eq!(
        scale_error(set_replicas(&client, &target, u32::MAX).await.unwrap_err()),
        (
            None,
            "writing 4294967295 replicas to the scale of Deployment shop/web: \
             4294967295 replicas is more than Kubernetes accepts (2147483647)"
                .into()
        )
    );
    let unnamed = ScaleTarget::MachineDeployment {
        namespace: "capi".into(),
        name: String::new(),
    };
    assert_eq!(
        scale_error(get_scale(&client, &unnamed).await.unwrap_err()),
        (
            None,
            "reading the scale of MachineDeployment capi/: the name is empty".into()
        )
    );
    assert!(seen.lock().unwrap().is_empty());
}
