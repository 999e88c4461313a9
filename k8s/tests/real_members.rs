//! Member clusters against real kube-apiservers: a hub holding the members' kubeconfigs
//! in Secrets and two members. Ingress discovery follows a LoadBalancer Service's status, the
//! inventory equals the Nodes, Pods and Deployment the test created, a killed member becomes
//! Unreachable within a bound while the other is unaffected, and a missing Secret says so.
//!
//! Ignored by a plain `cargo test`; run with
//! `cargo test -p meridian-k8s --test real_members -- --ignored` (or through `scripts/test-all`).
//! The members are always local API servers (the test creates Nodes in them and kills one);
//! the hub, which holds only the kubeconfig Secrets in a namespace of the test's own, is
//! `MERIDIAN_TEST_KUBECONFIG`'s cluster when that is set.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret, Service, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use meridian_k8s::crd::*;
use meridian_k8s::member::*;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::{ApiServer, delete_namespace, test_namespace};
use tokio::sync::watch;

async fn create<K>(api: &Api<K>, value: Value) -> K
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(value.clone()).unwrap();
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("creating {value}: {e}"))
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

async fn namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    create(&namespaces, json!({ "metadata": { "name": name } })).await;
    // No controller-manager runs, so nothing creates the default ServiceAccount pods need.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
    create(&accounts, json!({ "metadata": { "name": "default" } })).await;
}

fn container(cpu: &str, memory: &str) -> Value {
    json!({ "name": "c", "image": "example.invalid/app:1",
            "resources": { "requests": { "cpu": cpu, "memory": memory } } })
}

/// Member A: a LoadBalancer Service at 127.0.0.1, two Nodes (one Ready), three Pods (one
/// finished) and the `web` Deployment with 3 desired, 2 ready.
async fn populate_member_a(client: &Client) {
    namespace(client, "edge").await;
    namespace(client, "shop").await;
    let services: Api<Service> = Api::namespaced(client.clone(), "edge");
    create(
        &services,
        json!({ "metadata": { "name": "front" },
                "spec": { "type": "LoadBalancer", "ports": [{ "port": 8443 }] } }),
    )
    .await;
    set_status(
        &services,
        "front",
        json!({ "loadBalancer": { "ingress": [{ "ip": "127.0.0.1" }] } }),
    )
    .await;

    let nodes: Api<Node> = Api::all(client.clone());
    for (name, ready, cpu, memory) in [("n1", "True", "4", "8Gi"), ("n2", "False", "2", "4Gi")] {
        // The vendor as a cloud's node controller sets it: `spec.providerID`.
        create(
            &nodes,
            json!({ "metadata": { "name": name },
                    "spec": { "providerID": format!("gce://shop-prod/europe-west3-a/{name}") } }),
        )
        .await;
        set_status(
            &nodes,
            name,
            json!({
                "capacity": { "cpu": cpu, "memory": memory, "pods": "110" },
                "allocatable": { "cpu": cpu, "memory": memory, "pods": "110" },
                "conditions": [{ "type": "Ready", "status": ready, "reason": "Test",
                                 "message": "set by the test" }]
            }),
        )
        .await;
    }

    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let pod = |name: &str, spec: Value| {
        let mut spec = spec;
        spec["nodeName"] = json!("n1");
        spec["automountServiceAccountToken"] = json!(false);
        json!({ "metadata": { "name": name }, "spec": spec })
    };
    create(
        &pods,
        pod(
            "web-1",
            json!({ "containers": [container("250m", "128Mi"), {
                "name": "d", "image": "example.invalid/app:1",
                "resources": { "requests": { "cpu": "500m", "memory": "256Mi" } } }] }),
        ),
    )
    .await;
    create(
        &pods,
        pod(
            "web-2",
            json!({ "initContainers": [{
                        "name": "init", "image": "example.invalid/app:1",
                        "resources": { "requests": { "cpu": "1", "memory": "64Mi" } } }],
                    "containers": [container("200m", "512Mi")] }),
        ),
    )
    .await;
    create(
        &pods,
        pod(
            "batch-done",
            json!({ "containers": [container("8", "16Gi")] }),
        ),
    )
    .await;
    set_status(&pods, "batch-done", json!({ "phase": "Succeeded" })).await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "shop");
    create(
        &deployments,
        json!({ "metadata": { "name": "web" },
                "spec": { "replicas": 3, "selector": { "matchLabels": { "app": "web" } },
                          "template": { "metadata": { "labels": { "app": "web" } },
                                        "spec": { "containers": [container("250m", "128Mi")] } } } }),
    )
    .await;
    set_status(
        &deployments,
        "web",
        json!({ "replicas": 3, "readyReplicas": 2, "availableReplicas": 2 }),
    )
    .await;
}

async fn kubeconfig_secret(hub: &Client, ns: &str, name: &str, server: &ApiServer) {
    let text = std::fs::read(&server.kubeconfig).unwrap();
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), ns);
    let mut secret: Secret =
        serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    secret.data = Some(BTreeMap::from([(
        "kubeconfig".to_string(),
        ByteString(text),
    )]));
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

fn secret_target(cluster: &str, secret: &str) -> MemberTarget {
    MemberTarget {
        cluster: cluster.into(),
        kubeconfig: KubeconfigSource::Secret(SecretKeyRef {
            name: secret.into(),
            key: "kubeconfig".into(),
        }),
        discovery: None,
        workloads: vec![],
    }
}

type Views = BTreeMap<String, MemberView>;

/// Waits until `done` holds, at most `limit`; the panic shows the last views.
async fn wait_for(
    views: &mut watch::Receiver<Views>,
    limit: Duration,
    what: &str,
    done: impl Fn(&Views) -> bool,
) -> Views {
    let result = tokio::time::timeout(limit, views.wait_for(|v| done(v)))
        .await
        .map(|r| r.map(|v| v.clone()));
    match result {
        Ok(Ok(v)) => v,
        _ => panic!("{what} within {limit:?}; views: {:#?}", views.borrow()),
    }
}

fn reachable(view: Option<&MemberView>) -> bool {
    view.is_some_and(|v| matches!(v.reachability, Reachability::Reachable { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kube-apiserver: run through scripts/test-all"]
async fn members_discovery_inventory_and_a_lost_member() {
    let started = Instant::now();
    let hub_server = ApiServer::start("members-hub");
    let a_server = ApiServer::start_local("member-a");
    let mut b_server = ApiServer::start_local("member-b");
    let hub = hub_server.client().await;
    let a = a_server.client().await;
    let version = a.apiserver_version().await.unwrap().git_version;
    eprintln!("three API servers up in {:?}", started.elapsed());

    let ns = test_namespace(&hub, "t-members").await;
    let ns = ns.as_str();
    let _cleanup = hub_server.cleanup_on_panic(&[ns]);
    kubeconfig_secret(&hub, ns, "member-a", &a_server).await;
    kubeconfig_secret(&hub, ns, "member-b", &b_server).await;
    let secrets: Api<Secret> = Api::namespaced(hub.clone(), ns);
    for (name, key, text) in [
        ("member-d", "config", "apiVersion: v1\nkind: Config\n"),
        ("member-e", "kubeconfig", "clusters: [unclosed"),
    ] {
        let mut secret: Secret =
            serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
        secret.data = Some(BTreeMap::from([(key.to_string(), ByteString(text.into()))]));
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }
    populate_member_a(&a).await;

    let members = Members::start(
        Some(hub.clone()),
        ns.into(),
        MemberOptions {
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(2),
            poll_interval: Duration::from_millis(300),
            max_backoff: Duration::from_secs(2),
        },
    );
    let mut views = members.subscribe();
    let mut member_a = secret_target("member-a", "member-a");
    member_a.discovery = Some(IngressDiscovery {
        kind: DiscoveryKind::Service,
        namespace: "edge".into(),
        name: "front".into(),
        port: None,
    });
    member_a.workloads = vec![
        (
            "shop".into(),
            WorkloadRef {
                namespace: "shop".into(),
                name: "web".into(),
            },
        ),
        (
            "blog".into(),
            WorkloadRef {
                namespace: "shop".into(),
                name: "blog".into(),
            },
        ),
    ];
    members.set_targets(vec![
        member_a,
        secret_target("member-b", "member-b"),
        secret_target("member-c", "member-c-missing"),
        secret_target("member-d", "member-d"),
        secret_target("member-e", "member-e"),
    ]);

    let first = Instant::now();
    let seen = wait_for(
        &mut views,
        Duration::from_secs(10),
        "members observed",
        |v| {
            reachable(v.get("member-a"))
                && v["member-a"].inventory.is_some()
                && reachable(v.get("member-b"))
                && ["member-c", "member-d", "member-e"].iter().all(|m| {
                    v.get(*m)
                        .is_some_and(|c| matches!(c.reachability, Reachability::Unreachable { .. }))
                })
        },
    )
    .await;
    eprintln!("all members observed in {:?}", first.elapsed());
    let view_a = &seen["member-a"];
    assert_eq!(
        view_a.reachability,
        Reachability::Reachable {
            version: version.clone()
        }
    );
    assert_eq!(
        view_a.discovered,
        Some(Ok(vec!["127.0.0.1:8443".parse().unwrap()]))
    );
    assert_eq!(
        view_a.inventory,
        Some(Inventory {
            kubernetes_version: version.clone(),
            node_provider: Some("gce".into()),
            nodes: 2,
            nodes_ready: 1,
            allocatable_cpu_millis: 4000,
            allocatable_memory_bytes: 8 << 30,
            // web-1: 250m + 500m; web-2: max(200m, init 1) = 1000m; batch-done has finished.
            requested_cpu_millis: 1750,
            // web-1: 128Mi + 256Mi; web-2: max(512Mi, init 64Mi).
            requested_memory_bytes: (384 + 512) << 20,
            // No scheduler runs, so no pod carries an Unschedulable condition here.
            unschedulable_pods: 0,
            unschedulable_cpu_millis: 0,
            unschedulable_memory_bytes: 0,
            workloads: vec![
                WorkloadInventory {
                    app: "shop".into(),
                    desired_replicas: 3,
                    ready_replicas: 2
                },
                WorkloadInventory {
                    app: "blog".into(),
                    desired_replicas: 0,
                    ready_replicas: 0
                },
            ],
        })
    );
    assert_eq!(seen["member-b"].discovered, None);
    assert_eq!(seen["member-b"].inventory.as_ref().unwrap().nodes, 0);
    match &seen["member-c"].reachability {
        Reachability::Unreachable { message, .. } => assert_eq!(
            message,
            &format!("kubeconfig Secret {ns}/member-c-missing not found")
        ),
        other => panic!("member-c: {other:?}"),
    }
    let message = |cluster: &str| match &seen[cluster].reachability {
        Reachability::Unreachable { message, .. } => message.clone(),
        other => panic!("{cluster}: {other:?}"),
    };
    assert_eq!(
        message("member-d"),
        format!("kubeconfig Secret {ns}/member-d has no key \"kubeconfig\"")
    );
    let bad = message("member-e");
    assert!(
        bad.starts_with(&format!(
            "kubeconfig Secret {ns}/member-e key \"kubeconfig\": "
        )),
        "{bad}"
    );

    // The load balancer's status changes: the view follows.
    let services: Api<Service> = Api::namespaced(a.clone(), "edge");
    set_status(
        &services,
        "front",
        json!({ "loadBalancer": { "ingress": [{ "ip": "127.0.0.2" }, { "ip": "127.0.0.1" }] } }),
    )
    .await;
    wait_for(&mut views, Duration::from_secs(5), "the new address", |v| {
        v["member-a"].discovered
            == Some(Ok(vec![
                "127.0.0.1:8443".parse().unwrap(),
                "127.0.0.2:8443".parse().unwrap(),
            ]))
    })
    .await;
    // Emptied (a load balancer being replaced): the view says so.
    set_status(
        &services,
        "front",
        json!({ "loadBalancer": { "ingress": null } }),
    )
    .await;
    wait_for(&mut views, Duration::from_secs(5), "no address", |v| {
        v["member-a"].discovered
            == Some(Err(
                "Service edge/front has no load-balancer address yet".into()
            ))
    })
    .await;

    // Member B is lost: Unreachable within the bound; A keeps being refreshed.
    b_server.kill();
    let killed = Instant::now();
    let a_before = views.borrow()["member-a"].observed_ms;
    let seen = wait_for(
        &mut views,
        Duration::from_secs(10),
        "member-b unreachable",
        |v| matches!(v["member-b"].reachability, Reachability::Unreachable { .. }),
    )
    .await;
    let detected = killed.elapsed();
    eprintln!(
        "member-b unreachable after {detected:?}: {:?}",
        seen["member-b"].reachability
    );
    assert!(detected < Duration::from_secs(10));
    assert!(
        seen["member-b"].inventory.is_some(),
        "the last inventory is kept while unreachable"
    );
    wait_for(
        &mut views,
        Duration::from_secs(5),
        "member-a refreshed",
        |v| reachable(v.get("member-a")) && v["member-a"].observed_ms > a_before,
    )
    .await;
    // Removing a member drops its view; the others stay.
    members.set_targets(vec![secret_target("member-b", "member-b")]);
    wait_for(
        &mut views,
        Duration::from_secs(5),
        "only member-b left",
        |v| v.keys().eq(["member-b"]),
    )
    .await;
    drop(members);
    delete_namespace(&hub, ns).await;
    eprintln!("real_members took {:?}", started.elapsed());
}
