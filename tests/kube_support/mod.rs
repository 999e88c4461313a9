//! Shared by the end-to-end Kubernetes suites: a `meridian controller --kubernetes` process
//! against a hub API server, and small helpers to poll its API and set objects' status.

#![allow(
    dead_code,
    reason = "each test binary uses a part of the support module"
)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::Method;
use kube::api::{Api, Patch, PatchParams, PostParams};
use meridian_subscriber::http::ControllerClient;
use serde_json::{Value, json};

use crate::support::ApiServer;

/// A controller process, killed when dropped.
pub struct Replica {
    pub child: Child,
    pub url: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `meridian controller --kubernetes` against the hub's namespace `ns`, with short lease
/// timings and member polls, plus `extra` arguments.
pub fn start_replica(
    config: &Path,
    hub: &ApiServer,
    ns: &str,
    data: &Path,
    extra: &[&str],
) -> Replica {
    let mut child = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["controller", "--kubernetes", "-c"])
        .arg(config)
        .arg("--kubeconfig")
        .arg(&hub.kubeconfig)
        .args(["--namespace", ns, "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args([
            "--lease-duration",
            "3s",
            "--lease-renew-deadline",
            "2s",
            "--lease-retry-period",
            "500ms",
            "--member-poll-interval",
            "300ms",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn meridian controller");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("controller listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Replica { child, url }
}

pub async fn get(url: &str, path: &str) -> Value {
    try_get(url, path)
        .await
        .unwrap_or_else(|| panic!("GET {url}{path} failed"))
}

/// `None` while the controller answers with an error (no table yet, for example).
pub async fn try_get(url: &str, path: &str) -> Option<Value> {
    let client = ControllerClient::new(url, None).unwrap();
    let (_, body) = client.call(Method::GET, path, None).await.ok()?;
    serde_json::from_slice(&body).ok()
}

/// Polls `check` every 100 ms until it gives `Some`, or panics naming `what` after `limit`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return (v, start.elapsed());
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn condition<'a>(status: &'a Value, type_: &str) -> Option<&'a Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

pub async fn status_of<K>(api: &Api<K>, name: &str) -> Value
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + serde::Serialize,
{
    let object = api.get(name).await.unwrap();
    let mut value = serde_json::to_value(&object).unwrap();
    value["status"].take()
}

pub async fn create<K>(api: &Api<K>, object: Value) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + serde::Serialize,
{
    let object: K = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &object).await.unwrap()
}

pub async fn set_status<K>(api: &Api<K>, name: &str, status: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": status })),
    )
    .await
    .unwrap();
}

/// Each member's kubeconfig in a Secret `<name>-kubeconfig` in the hub's namespace `ns`, as
/// an operator stores it for `kubeconfigSecretRef`.
pub async fn kubeconfig_secrets(hub: &kube::Client, ns: &str, members: &[(&str, &ApiServer)]) {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(hub.clone(), ns);
    for (name, member) in members {
        let text = std::fs::read_to_string(&member.kubeconfig).unwrap();
        create(
            &secrets,
            json!({"metadata": {"name": format!("{name}-kubeconfig")},
                   "stringData": {"kubeconfig": text}}),
        )
        .await;
    }
}

/// A Ready stand-in Node with `cpu` and `memory` allocatable (no kubelet runs: the test sets
/// its status as one would), and the default service account Pods need (no
/// controller-manager creates it).
pub async fn stand_in_node(member: &kube::Client, cpu: &str, memory: &str) {
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(member.clone(), "default");
    create(&accounts, json!({"metadata": {"name": "default"}})).await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(member.clone());
    create(&nodes, json!({"metadata": {"name": "node-1"}})).await;
    set_status(
        &nodes,
        "node-1",
        json!({"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
               "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
               "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                               "message": "ready", "lastHeartbeatTime": "2026-11-28T00:00:00Z",
                               "lastTransitionTime": "2026-11-28T00:00:00Z"}]}),
    )
    .await;
}
