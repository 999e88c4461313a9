//! Against a real kube-apiserver, the Kubernetes side of capacity (issue 7):
//! - a Cluster API MachineDeployment (the minimal CRD in `deploy/crds/test/`) and an apps/v1
//!   Deployment scaled up and back through their scale subresources, read back through `/scale`
//!   and through a plain GET of the object; the errors for a kind not served and a missing object;
//! - a pod the test marks unschedulable through /status counts in a member's inventory (and a
//!   pending pod the scheduler has not given up on does not), and the member's client is the one
//!   the controller writes with.
//!
//! Every read and write of Meridian's runs as the identity `deploy/rbac/member.yaml` binds, so
//! the role grants exactly what the code needs; the test's own setup runs as the admin.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::{Client, Resource};
use meridian_k8s::Error;
use meridian_k8s::crd::{Inventory, WorkloadRef};
use meridian_k8s::inventory::{self, UnschedulablePod, fetch_unschedulable};
use meridian_k8s::member::{KubeconfigSource, MemberOptions, MemberTarget, MemberView, Members};
use meridian_k8s::scale::{Scale, ScaleTarget, get_scale, set_replicas};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::{ApiServer, apply_crds, apply_yaml, create_namespace, repo_path};
use tokio::sync::watch;

const MACHINE_DEPLOYMENT_CRD: &str = "deploy/crds/test/machinedeployment-minimal.yaml";

/// The identity `deploy/rbac/member.yaml` binds its ClusterRole to.
const MEMBER_USER: &str = "system:serviceaccount:kube-system:meridian-member";

/// A client with only what `deploy/rbac/member.yaml` grants the controller in a member cluster.
async fn member_role_client(server: &ApiServer, admin: &Client) -> Client {
    apply_yaml(admin, include_str!("../../deploy/rbac/member.yaml")).await;
    server.client_as(Some(MEMBER_USER)).await
}

fn machine_deployments(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cluster.x-k8s.io", "v1beta1", "MachineDeployment"),
        "machinedeployments",
    );
    Api::namespaced_with(client.clone(), namespace, &resource)
}

async fn set_status<K>(api: &Api<K>, name: &str, status: Value)
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": status })),
    )
    .await
    .unwrap_or_else(|e| panic!("setting the status of {name}: {e}"));
}

fn scale_error(error: Error) -> (Option<u16>, String) {
    match &error {
        Error::Scale { code, .. } => (*code, error.to_string()),
        other => panic!("not a scale error: {other:?}"),
    }
}

/// `spec.replicas` as a plain GET of the object shows it.
async fn object_replicas(api: &Api<DynamicObject>, name: &str) -> i64 {
    let object = api.get(name).await.unwrap();
    object.data["spec"]["replicas"].as_i64().unwrap()
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run through scripts/test-all"]
async fn machine_deployment_scaled_up_and_back_through_its_scale_subresource() {
    let started = Instant::now();
    let server = ApiServer::start_local("scale-md");
    let admin = server.client().await;
    eprintln!("API server up in {:?}", started.elapsed());
    create_namespace(&admin, "capi").await;
    let client = member_role_client(&server, &admin).await;
    let workers = ScaleTarget::MachineDeployment {
        namespace: "capi".into(),
        name: "workers".into(),
    };

    // Before the CRD is installed: the kind is not served, and the error says so.
    assert_eq!(
        scale_error(get_scale(&client, &workers).await.unwrap_err()),
        (
            Some(404),
            "reading the scale of MachineDeployment capi/workers: the API server does not serve \
             machinedeployments.cluster.x-k8s.io/v1beta1 (is the kind's CRD installed?)"
                .into()
        )
    );

    let crd = std::fs::read_to_string(repo_path(MACHINE_DEPLOYMENT_CRD)).unwrap();
    apply_crds(&admin, &crd).await;
    let api = machine_deployments(&admin, "capi");

    // The CRD is served now; the object does not exist yet.
    assert_eq!(
        scale_error(set_replicas(&client, &workers, 2).await.unwrap_err()),
        (
            Some(404),
            "writing 2 replicas to the scale of MachineDeployment capi/workers: not found".into()
        )
    );

    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "MachineDeployment",
        "metadata": { "name": "workers", "namespace": "capi" },
        "spec": { "clusterName": "member-a", "replicas": 2,
                  "selector": { "matchLabels": { "pool": "workers" } },
                  "template": { "spec": { "bootstrap": { "dataSecretName": "x" } } } }
    }))
    .unwrap();
    api.create(&PostParams::default(), &object).await.unwrap();
    // No Cluster API controller runs: the test plays it, reporting 2 machines.
    set_status(
        &api,
        "workers",
        json!({ "replicas": 2, "readyReplicas": 2, "selector": "pool=workers" }),
    )
    .await;
    assert_eq!(
        get_scale(&client, &workers).await.unwrap(),
        Scale {
            desired: 2,
            current: 2
        }
    );

    let timed = Instant::now();
    set_replicas(&client, &workers, 5).await.unwrap();
    eprintln!(
        "set_replicas (MachineDeployment) took {:?}",
        timed.elapsed()
    );
    assert_eq!(
        get_scale(&client, &workers).await.unwrap(),
        Scale {
            desired: 5,
            current: 2
        },
        "desired raised; the machines are not there yet"
    );
    assert_eq!(object_replicas(&api, "workers").await, 5);
    // The field manager is not checked here: 1.20 records no managedFields entry for a write
    // through /scale (only the object's own writers appear); scale_mock checks the request.
    // The rest of the spec is untouched by a write through /scale.
    let after = api.get("workers").await.unwrap();
    assert_eq!(after.data["spec"]["clusterName"], "member-a");
    assert_eq!(
        after.data["spec"]["template"]["spec"]["bootstrap"]["dataSecretName"],
        "x"
    );

    set_status(
        &api,
        "workers",
        json!({ "replicas": 5, "readyReplicas": 5 }),
    )
    .await;
    set_replicas(&client, &workers, 2).await.unwrap();
    assert_eq!(
        get_scale(&client, &workers).await.unwrap(),
        Scale {
            desired: 2,
            current: 5
        }
    );
    assert_eq!(object_replicas(&api, "workers").await, 2);

    // Another MachineDeployment, not created: named in the error.
    let absent = ScaleTarget::MachineDeployment {
        namespace: "capi".into(),
        name: "absent".into(),
    };
    assert_eq!(
        scale_error(get_scale(&client, &absent).await.unwrap_err()),
        (
            Some(404),
            "reading the scale of MachineDeployment capi/absent: not found".into()
        )
    );
    eprintln!("MachineDeployment test took {:?}", started.elapsed());
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run through scripts/test-all"]
async fn deployment_scaled_up_and_back_through_its_scale_subresource() {
    let started = Instant::now();
    let server = ApiServer::start_local("scale-deploy");
    let admin = server.client().await;
    create_namespace(&admin, "shop").await;
    let client = member_role_client(&server, &admin).await;
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "shop");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "web" },
        "spec": { "replicas": 3, "selector": { "matchLabels": { "app": "web" } },
                  "template": { "metadata": { "labels": { "app": "web" } },
                                "spec": { "containers": [{ "name": "c",
                                    "image": "example.invalid/app:1" }] } } }
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    set_status(
        &deployments,
        "web",
        json!({ "replicas": 3, "readyReplicas": 3 }),
    )
    .await;
    let web = ScaleTarget::Deployment {
        namespace: "shop".into(),
        name: "web".into(),
    };
    assert_eq!(
        get_scale(&client, &web).await.unwrap(),
        Scale {
            desired: 3,
            current: 3
        }
    );
    let raw: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        "shop",
        &ApiResource::erase::<Deployment>(&()),
    );
    for (replicas, current) in [(7, 3), (3, 3), (0, 3)] {
        set_replicas(&client, &web, replicas).await.unwrap();
        assert_eq!(
            get_scale(&client, &web).await.unwrap(),
            Scale {
                desired: replicas,
                current
            }
        );
        assert_eq!(object_replicas(&raw, "web").await, i64::from(replicas));
    }
    // Why /scale: the member role may not patch the Deployment itself.
    let as_member: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    let direct = as_member
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "replicas": 1 } })),
        )
        .await;
    match direct {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("the member role patched a Deployment directly: {other:?}"),
    }

    let missing = ScaleTarget::Deployment {
        namespace: "shop".into(),
        name: "missing".into(),
    };
    assert_eq!(
        scale_error(get_scale(&client, &missing).await.unwrap_err()),
        (
            Some(404),
            "reading the scale of Deployment shop/missing: not found".into()
        )
    );
    eprintln!("Deployment test took {:?}", started.elapsed());
}

/// Waits (at most 20 s) for member-a's inventory to satisfy `done`.
async fn wait_for_inventory(
    views: &mut watch::Receiver<BTreeMap<String, MemberView>>,
    what: &str,
    done: impl Fn(&Inventory) -> bool,
) -> Inventory {
    let found = tokio::time::timeout(
        Duration::from_secs(20),
        views.wait_for(|v| {
            v.get("member-a")
                .and_then(|m| m.inventory.as_ref())
                .is_some_and(&done)
        }),
    )
    .await
    .map(|r| r.map(|v| v["member-a"].inventory.clone()));
    match found {
        Ok(Ok(Some(inventory))) => inventory,
        _ => panic!("{what} within 20 s; views: {:?}", views.borrow()),
    }
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run through scripts/test-all"]
async fn unschedulable_pods_count_in_the_member_inventory() {
    let started = Instant::now();
    let server = ApiServer::start_local("scale-pods");
    let admin = server.client().await;
    create_namespace(&admin, "shop").await;
    let client = member_role_client(&server, &admin).await;
    // No controller-manager runs, so nothing creates the default ServiceAccount pods need.
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "shop");
    let account: ServiceAccount =
        serde_json::from_value(json!({ "metadata": { "name": "default" } })).unwrap();
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();

    let pods: Api<Pod> = Api::namespaced(admin.clone(), "shop");
    for name in ["stuck", "waiting"] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": { "name": name },
            "spec": { "automountServiceAccountToken": false, "containers": [{
                "name": "c", "image": "example.invalid/app:1",
                "resources": { "requests": { "cpu": "1500m", "memory": "3Gi" } } }] }
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    // The test plays the scheduler: it gave up on "stuck"; "waiting" it has not tried yet.
    set_status(
        &pods,
        "stuck",
        json!({ "phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient cpu." }] }),
    )
    .await;
    set_status(&pods, "waiting", json!({ "phase": "Pending" })).await;

    assert_eq!(
        fetch_unschedulable(&client).await.unwrap(),
        vec![UnschedulablePod {
            namespace: "shop".into(),
            name: "stuck".into(),
            cpu_millis: 1500,
            memory_bytes: 3 << 30,
        }]
    );

    // The whole inventory as the member role reads it.
    let web = WorkloadRef {
        namespace: "shop".into(),
        name: "web".into(),
    };
    let version = admin.apiserver_version().await.unwrap().git_version;
    let read = inventory::fetch(&client, version, &[("shop".into(), web)])
        .await
        .unwrap();
    assert_eq!(
        (read.unschedulable_pods, read.unschedulable_cpu_millis),
        (1, 1500)
    );

    // Through the member machinery, as the controller sees it.
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
    assert!(members.client("member-a").is_none(), "not followed yet");
    members.set_targets(vec![MemberTarget {
        cluster: "member-a".into(),
        kubeconfig: KubeconfigSource::File(server.kubeconfig.clone()),
        discovery: None,
        workloads: vec![],
    }]);
    let inventory = wait_for_inventory(&mut views, "the unschedulable pod counted", |i| {
        i.unschedulable_pods > 0
    })
    .await;
    assert_eq!(
        (
            inventory.unschedulable_pods,
            inventory.unschedulable_cpu_millis,
            inventory.unschedulable_memory_bytes
        ),
        (1, 1500, 3 << 30)
    );
    assert_eq!(
        (
            inventory.requested_cpu_millis,
            inventory.requested_memory_bytes
        ),
        (3000, 6 << 30),
        "both pending pods are in the requested totals"
    );
    eprintln!(
        "unschedulable pod in the inventory after {:?}",
        started.elapsed()
    );

    // The member's own client reaches the same API server: it sees the stuck pod too.
    let member_client = members
        .client("member-a")
        .expect("a reachable member's client");
    assert_eq!(fetch_unschedulable(&member_client).await.unwrap().len(), 1);

    // Scheduled after all (a node came): it no longer counts.
    set_status(
        &pods,
        "stuck",
        json!({ "phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "True" }] }),
    )
    .await;
    wait_for_inventory(&mut views, "the scheduled pod no longer counted", |i| {
        i.unschedulable_pods == 0
    })
    .await;
    assert!(fetch_unschedulable(&client).await.unwrap().is_empty());

    members.set_targets(vec![]);
    assert!(members.client("member-a").is_none(), "no longer followed");
}
