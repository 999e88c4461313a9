//! The inventory of one member cluster: nodes and how many are Ready, allocatable CPU and memory
//! of the Ready nodes, what the pods that still run request, the pods the scheduler could not
//! place (for node scaling), and each app's Deployment replicas.
//!
//! [`summarize`] is pure (tested beside it); [`fetch`] reads the objects through a client.
//! Pod requests are counted as the scheduler counts them: per pod, the larger of the sum of its
//! containers and its largest init container, plus the pod's overhead.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ListParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

use crate::crd::{Inventory, WorkloadInventory, WorkloadRef};
use crate::{Error, quantity};

/// CPU in millicores and memory in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Amount {
    cpu_millis: u64,
    memory_bytes: u64,
}

impl Amount {
    fn add(self, other: Amount) -> Amount {
        Amount {
            cpu_millis: self.cpu_millis.saturating_add(other.cpu_millis),
            memory_bytes: self.memory_bytes.saturating_add(other.memory_bytes),
        }
    }

    fn max(self, other: Amount) -> Amount {
        Amount {
            cpu_millis: self.cpu_millis.max(other.cpu_millis),
            memory_bytes: self.memory_bytes.max(other.memory_bytes),
        }
    }
}

fn amount(
    resources: Option<&BTreeMap<String, Quantity>>,
    object: &str,
    field: &str,
) -> Result<Amount, Error> {
    let wrap = |key: &str, source: Error| Error::Field {
        object: object.to_string(),
        field: format!("{field}.{key}"),
        source: Box::new(source),
    };
    let mut out = Amount::default();
    if let Some(resources) = resources {
        if let Some(cpu) = resources.get("cpu") {
            out.cpu_millis = quantity::millis(&cpu.0).map_err(|e| wrap("cpu", e))?;
        }
        if let Some(memory) = resources.get("memory") {
            out.memory_bytes = quantity::units(&memory.0).map_err(|e| wrap("memory", e))?;
        }
    }
    Ok(out)
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The vendors the nodes name in `spec.providerID` (`aws:///eu-west-1a/i-0abc` → `aws`).
fn node_provider(nodes: &[Node]) -> Option<String> {
    let schemes: std::collections::BTreeSet<&str> = nodes
        .iter()
        .filter_map(|n| n.spec.as_ref()?.provider_id.as_deref())
        .filter_map(|id| id.split_once("://").map(|(scheme, _)| scheme))
        .filter(|scheme| !scheme.is_empty())
        .collect();
    (!schemes.is_empty()).then(|| schemes.into_iter().collect::<Vec<_>>().join("+"))
}

fn pod_running(pod: &Pod) -> bool {
    !matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn containers_request(
    containers: &[Container],
    object: &str,
    list: &str,
    combine: fn(Amount, Amount) -> Amount,
) -> Result<Amount, Error> {
    let mut total = Amount::default();
    for (i, c) in containers.iter().enumerate() {
        let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
        let field = format!("spec.{list}[{i}].resources.requests");
        total = combine(total, amount(requests, object, &field)?);
    }
    Ok(total)
}

fn pod_request(pod: &Pod) -> Result<Amount, Error> {
    let object = format!(
        "Pod {}/{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any()
    );
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Amount::default());
    };
    let regular = containers_request(&spec.containers, &object, "containers", Amount::add)?;
    let init = containers_request(
        spec.init_containers.as_deref().unwrap_or_default(),
        &object,
        "initContainers",
        Amount::max,
    )?;
    let overhead = amount(spec.overhead.as_ref(), &object, "spec.overhead")?;
    Ok(regular.max(init).add(overhead))
}

/// Whether the scheduler tried and failed to place the pod: phase Pending, condition
/// PodScheduled=False with reason Unschedulable. A pending pod not yet tried, or waiting for its
/// images on a node, is not: more machines would not help it.
pub fn pod_unschedulable(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    status.phase.as_deref() == Some("Pending")
        && status.conditions.as_ref().is_some_and(|c| {
            c.iter().any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
        })
}

/// A pod the scheduler could not place, and what it requests (as the scheduler counts it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnschedulablePod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Requested CPU, millicores.
    pub cpu_millis: u64,
    /// Requested memory, bytes.
    pub memory_bytes: u64,
}

/// The unschedulable pods among `pods`, sorted by namespace and name. A quantity that does not
/// parse is an error naming the object and field.
pub fn unschedulable_pods(pods: &[Pod]) -> Result<Vec<UnschedulablePod>, Error> {
    let mut out = Vec::new();
    for pod in pods.iter().filter(|p| pod_unschedulable(p)) {
        let request = pod_request(pod)?;
        out.push(UnschedulablePod {
            namespace: pod.namespace().unwrap_or_default(),
            name: pod.name_any(),
            cpu_millis: request.cpu_millis,
            memory_bytes: request.memory_bytes,
        });
    }
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(out)
}

/// Reads a member cluster's unschedulable pods, each with its requests: what node scaling sizes
/// machines by (the inventory carries only their count and sums, to keep the status small).
/// Only pending pods not bound to a node are listed; [`pod_unschedulable`] picks among them.
pub async fn fetch_unschedulable(client: &Client) -> Result<Vec<UnschedulablePod>, Error> {
    let pods: Api<Pod> = Api::all(client.clone());
    let pending = ListParams::default().fields("status.phase=Pending,spec.nodeName=");
    let pods = list_all(&pods, pending)
        .await
        .map_err(|e| kube_error("listing pending pods", e))?;
    unschedulable_pods(&pods)
}

/// The inventory from listed objects. A quantity that does not parse is an error naming the
/// object and field (the API server validates them, so this means a broken member).
pub fn summarize(
    kubernetes_version: String,
    nodes: &[Node],
    pods: &[Pod],
    workloads: Vec<WorkloadInventory>,
) -> Result<Inventory, Error> {
    let mut allocatable = Amount::default();
    let mut nodes_ready = 0u32;
    for node in nodes.iter().filter(|n| node_ready(n)) {
        nodes_ready += 1;
        let object = format!("Node {}", node.name_any());
        let resources = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
        allocatable = allocatable.add(amount(resources, &object, "status.allocatable")?);
    }
    let mut requested = Amount::default();
    for pod in pods.iter().filter(|p| pod_running(p)) {
        requested = requested.add(pod_request(pod)?);
    }
    let unschedulable = unschedulable_pods(pods)?;
    let stuck = unschedulable.iter().fold(Amount::default(), |total, pod| {
        total.add(Amount {
            cpu_millis: pod.cpu_millis,
            memory_bytes: pod.memory_bytes,
        })
    });
    Ok(Inventory {
        kubernetes_version,
        node_provider: node_provider(nodes),
        nodes: u32::try_from(nodes.len()).unwrap_or(u32::MAX),
        nodes_ready,
        allocatable_cpu_millis: allocatable.cpu_millis,
        allocatable_memory_bytes: allocatable.memory_bytes,
        requested_cpu_millis: requested.cpu_millis,
        requested_memory_bytes: requested.memory_bytes,
        unschedulable_pods: u32::try_from(unschedulable.len()).unwrap_or(u32::MAX),
        unschedulable_cpu_millis: stuck.cpu_millis,
        unschedulable_memory_bytes: stuck.memory_bytes,
        workloads,
    })
}

/// One app's replicas from its Deployment; a missing Deployment is 0 desired, 0 ready.
pub fn workload(app: &str, deployment: Option<&Deployment>) -> WorkloadInventory {
    WorkloadInventory {
        app: app.to_string(),
        desired_replicas: deployment
            .and_then(|d| d.spec.as_ref())
            .map_or(0, |s| s.replicas.unwrap_or(1)),
        ready_replicas: deployment
            .and_then(|d| d.status.as_ref())
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0),
    }
}

/// Lists every object of a kind in pages, so a large cluster is never one huge reply.
async fn list_all<K>(api: &Api<K>, params: ListParams) -> Result<Vec<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut params = params.limit(500);
    loop {
        let page = api.list(&params).await?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(out),
        }
    }
}

fn kube_error(action: &str, source: kube::Error) -> Error {
    Error::Kube {
        action: action.to_string(),
        source,
    }
}

/// Reads a member cluster's inventory: nodes, pods that still run, and each app's Deployment.
pub async fn fetch(
    client: &Client,
    kubernetes_version: String,
    workloads: &[(String, WorkloadRef)],
) -> Result<Inventory, Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let nodes = list_all(&nodes, ListParams::default())
        .await
        .map_err(|e| kube_error("listing nodes", e))?;
    let pods: Api<Pod> = Api::all(client.clone());
    // The server filters finished pods out; `summarize` checks the phase again all the same.
    let running = ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed");
    let pods = list_all(&pods, running)
        .await
        .map_err(|e| kube_error("listing pods", e))?;
    let mut found = Vec::with_capacity(workloads.len());
    for (app, reference) in workloads {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &reference.namespace);
        let deployment = api.get_opt(&reference.name).await.map_err(|e| {
            kube_error(
                &format!(
                    "reading Deployment {}/{}",
                    reference.namespace, reference.name
                ),
                e,
            )
        })?;
        if deployment.is_none() {
            // Every poll: debug, not info, or a missing Deployment floods the log.
            tracing::debug!(
                app,
                namespace = reference.namespace,
                name = reference.name,
                "the app's Deployment does not exist in this member cluster"
            );
        }
        found.push(workload(app, deployment.as_ref()));
    }
    summarize(kubernetes_version, &nodes, &pods, found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, ready: &str, cpu: &str, memory: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": { "name": name },
            // Two nodes name their cloud, one (as on bare metal) does not.
            "spec": if name == "c" { json!({}) } else { json!({ "providerID": format!("aws:///eu-west-1a/i-{name}") }) },
            "status": {
                "allocatable": { "cpu": cpu, "memory": memory, "pods": "110" },
                "conditions": [{ "type": "Ready", "status": ready }]
            }
        }))
        .unwrap()
    }

    fn pod(name: &str, phase: &str, spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "shop" },
            "spec": spec,
            "status": { "phase": phase }
        }))
        .unwrap()
    }

    fn requests(cpu: &str, memory: &str) -> serde_json::Value {
        json!({ "name": "c", "resources": { "requests": { "cpu": cpu, "memory": memory } } })
    }

    #[test]
    fn node_provider_is_the_provider_id_scheme_of_every_node_that_names_one() {
        let mut nodes = vec![node("a", "True", "1", "1Gi"), node("c", "True", "1", "1Gi")];
        assert_eq!(node_provider(&nodes).as_deref(), Some("aws"));
        nodes[1].spec.get_or_insert_default().provider_id = Some("gce://p/europe-west3-a/n".into());
        assert_eq!(node_provider(&nodes).as_deref(), Some("aws+gce"));
        assert_eq!(node_provider(&nodes[..0]), None);
        nodes[0].spec.get_or_insert_default().provider_id = Some("kind-node".into());
        assert_eq!(node_provider(&nodes).as_deref(), Some("gce"));
    }

    #[test]
    fn counts_ready_nodes_and_running_pods_as_the_scheduler_does() {
        let nodes = [
            node("a", "True", "4", "8Gi"),
            node("b", "True", "3500m", "4Gi"),
            node("c", "False", "16", "64Gi"),
        ];
        let pods = [
            // Two containers: 250m + 500m, 128Mi + 256Mi; a smaller init container.
            pod(
                "web",
                "Running",
                json!({
                    "containers": [requests("250m", "128Mi"), requests("500m", "256Mi")],
                    "initContainers": [requests("100m", "1Gi")]
                }),
            ),
            // The init container is the larger for CPU: max(1, 2) = 2 cores.
            pod(
                "init-heavy",
                "Pending",
                json!({
                    "containers": [requests("1", "1Mi")],
                    "initContainers": [requests("2", "1Mi"), requests("500m", "1Mi")],
                    "overhead": { "cpu": "10m" }
                }),
            ),
            pod(
                "done",
                "Succeeded",
                json!({ "containers": [requests("8", "8Gi")] }),
            ),
            pod(
                "failed",
                "Failed",
                json!({ "containers": [requests("8", "8Gi")] }),
            ),
            pod(
                "no-requests",
                "Running",
                json!({ "containers": [{ "name": "c" }] }),
            ),
        ];
        let workloads = vec![workload("shop", None)];
        let inventory = summarize("v1.20.2".into(), &nodes, &pods, workloads).unwrap();
        assert_eq!(
            inventory,
            Inventory {
                kubernetes_version: "v1.20.2".into(),
                node_provider: Some("aws".into()),
                nodes: 3,
                nodes_ready: 2,
                allocatable_cpu_millis: 7500,
                allocatable_memory_bytes: 12 << 30,
                requested_cpu_millis: 750 + 2010,
                // web: max(384Mi, 1Gi) = 1Gi; init-heavy: max(1Mi, 1Mi) = 1Mi.
                requested_memory_bytes: (1 << 30) + (1 << 20),
                // "init-heavy" is Pending but the scheduler has not given up on it.
                unschedulable_pods: 0,
                unschedulable_cpu_millis: 0,
                unschedulable_memory_bytes: 0,
                workloads: vec![WorkloadInventory {
                    app: "shop".into(),
                    desired_replicas: 0,
                    ready_replicas: 0
                }],
            }
        );
    }

    fn stuck_pod(name: &str, phase: &str, condition: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": name, "namespace": "shop" },
            "spec": { "containers": [requests("1500m", "2Gi")], "overhead": { "memory": "1Mi" } },
            "status": { "phase": phase, "conditions": [condition] }
        }))
        .unwrap()
    }

    #[test]
    fn counts_only_pods_the_scheduler_gave_up_on() {
        let unschedulable = json!({ "type": "PodScheduled", "status": "False",
                                    "reason": "Unschedulable",
                                    "message": "0/2 nodes are available: 2 Insufficient cpu." });
        let pods = [
            stuck_pod("b-stuck", "Pending", unschedulable.clone()),
            stuck_pod("a-stuck", "Pending", unschedulable.clone()),
            // Scheduled, waiting for its images: more machines would not help.
            stuck_pod(
                "pulling",
                "Pending",
                json!({ "type": "PodScheduled", "status": "True" }),
            ),
            // Another reason, such as a scheduling gate or a failed bind.
            stuck_pod(
                "other-reason",
                "Pending",
                json!({ "type": "PodScheduled", "status": "False", "reason": "SchedulerError" }),
            ),
            // A stale condition on a pod that has since finished.
            stuck_pod("done", "Failed", unschedulable),
            pod(
                "never-tried",
                "Pending",
                json!({ "containers": [requests("1", "1Gi")] }),
            ),
        ];
        let stuck = unschedulable_pods(&pods).unwrap();
        let one = |name: &str| UnschedulablePod {
            namespace: "shop".into(),
            name: name.into(),
            cpu_millis: 1500,
            memory_bytes: (2 << 30) + (1 << 20),
        };
        assert_eq!(
            stuck,
            vec![one("a-stuck"), one("b-stuck")],
            "sorted by name"
        );
        let inventory = summarize("v1.20.2".into(), &[], &pods, vec![]).unwrap();
        assert_eq!(
            (
                inventory.unschedulable_pods,
                inventory.unschedulable_cpu_millis,
                inventory.unschedulable_memory_bytes
            ),
            (2, 3000, 2 * ((2 << 30) + (1 << 20)))
        );
    }

    #[test]
    fn a_bad_quantity_in_an_unschedulable_pod_names_it() {
        let mut stuck = stuck_pod(
            "web",
            "Pending",
            json!({ "type": "PodScheduled", "status": "False", "reason": "Unschedulable" }),
        );
        stuck.spec.as_mut().unwrap().containers[0]
            .resources
            .as_mut()
            .unwrap()
            .requests
            .as_mut()
            .unwrap()
            .insert("cpu".into(), Quantity("lots".into()));
        assert!(
            unschedulable_pods(&[stuck])
                .unwrap_err()
                .to_string()
                .starts_with(
                    "Pod shop/web spec.containers[0].resources.requests.cpu: bad quantity \"lots\""
                )
        );
    }

    #[test]
    fn deployment_replicas() {
        let d: Deployment = serde_json::from_value(json!({
            "spec": { "replicas": 5, "selector": {}, "template": {} },
            "status": { "readyReplicas": 3 }
        }))
        .unwrap();
        let w = workload("shop", Some(&d));
        assert_eq!((w.desired_replicas, w.ready_replicas), (5, 3));
        let fresh: Deployment = serde_json::from_value(json!({
            "spec": { "replicas": 2, "selector": {}, "template": {} }
        }))
        .unwrap();
        assert_eq!(workload("shop", Some(&fresh)).ready_replicas, 0);
    }

    #[test]
    fn a_bad_quantity_names_object_and_field() {
        let pods = [pod(
            "web",
            "Running",
            json!({ "containers": [requests("250m", "12Q")] }),
        )];
        let message = summarize("v1.20.2".into(), &[], &pods, vec![])
            .unwrap_err()
            .to_string();
        assert_eq!(
            message,
            "Pod shop/web spec.containers[0].resources.requests.memory: bad quantity \"12Q\": unknown suffix \"Q\""
        );
    }
}
