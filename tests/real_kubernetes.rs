//! Kubernetes mode end to end, against real kube-apiservers (a hub and two members) and two
//! real `meridian controller --kubernetes --leader-elect` processes:
//!
//! - resources on the hub become the routing table, and each gets status with conditions
//!   and `observedGeneration` (written by the leader only);
//! - a cluster's ingress endpoint is discovered from a Service whose status the test sets
//!   through `/status`, and follows when it changes;
//! - the member's inventory (version, nodes, CPU, memory, the app's replicas) is read back
//!   through the API and the status;
//! - a member API server killed mid-run becomes `Reachable=False` and a history entry;
//! - one leader through a real Lease; the follower mirrors its table versions and forwards
//!   writes; kill -9 the leader and the other takes over within the lease duration and
//!   writes status.
//!
//! Ignored by a plain `cargo test`; `scripts/test-all` runs it with `--ignored`.

mod kube_support;
#[path = "../k8s/tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use http::Method;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube_support::*;
use meridian_k8s::crd::{MeridianApp, MeridianCluster};
use meridian_subscriber::http::ControllerClient;
use serde_json::json;
use support::{ApiServer, delete_namespace, install_crds, test_namespace};

/// The Lease timing the controllers run with: short, so the test is quick.
const LEASE: Duration = Duration::from_secs(3);

/// A stand-in ingress: accepts TCP connections (the apps probe with a TCP connect).
fn ingress() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// Objects in member A: the ingress Service (status set as a cloud would), a Ready node
/// with allocatable resources, a Pod with requests on it, and the app's Deployment.
async fn populate_member(member: &kube::Client, ingress_port: u16) {
    stand_in_node(member, "4", "8Gi").await;
    let services: Api<Service> = Api::namespaced(member.clone(), "default");
    create(
        &services,
        json!({"metadata": {"name": "ingress"}, "spec": {"type": "LoadBalancer",
               "ports": [{"port": ingress_port, "protocol": "TCP"}]}}),
    )
    .await;
    set_status(
        &services,
        "ingress",
        json!({"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}),
    )
    .await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(member.clone(), "default");
    create(
        &pods,
        json!({"metadata": {"name": "shop-1"}, "spec": {"nodeName": "node-1",
            "automountServiceAccountToken": false, "containers": [
            {"name": "app", "image": "shop:1",
             "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}}]}}),
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(member.clone(), "default");
    create(
        &deployments,
        json!({"metadata": {"name": "shop"}, "spec": {"replicas": 3,
               "selector": {"matchLabels": {"app": "shop"}},
               "template": {"metadata": {"labels": {"app": "shop"}},
                            "spec": {"containers": [{"name": "app", "image": "shop:1"}]}}}}),
    )
    .await;
    set_status(
        &deployments,
        "shop",
        json!({"replicas": 3, "readyReplicas": 2, "availableReplicas": 2}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kube-apiserver: run through scripts/test-all"]
async fn kubernetes_mode_with_members_discovery_inventory_and_leader_election() {
    let hub = ApiServer::start("e2e-hub");
    let member_a = ApiServer::start_local("e2e-member-a");
    let mut member_b = ApiServer::start_local("e2e-member-b");
    let hub_client = hub.client().await;
    install_crds(&hub_client).await;
    let ns = test_namespace(&hub_client, "t-e2e").await;
    let ns = ns.as_str();
    let _cleanup = hub.cleanup_on_panic(&[ns]);
    // Whatever version the member runs (v1.36 in CI): the inventory must report that one.
    let member_version = member_a
        .client()
        .await
        .apiserver_version()
        .await
        .unwrap()
        .git_version;

    let (_ingress_a, port_a) = ingress();
    let (_ingress_a2, port_a2) = ingress();
    let (_ingress_b, port_b) = ingress();
    populate_member(&member_a.client().await, port_a).await;

    kubeconfig_secrets(
        &hub_client,
        ns,
        &[("member-a", &member_a), ("member-b", &member_b)],
    )
    .await;
    let clusters: Api<MeridianCluster> = Api::namespaced(hub_client.clone(), ns);
    create(
        &clusters,
        json!({"apiVersion": "meridian.dev/v1alpha1", "kind": "MeridianCluster",
               "metadata": {"name": "member-a"},
               "spec": {"region": "eu", "provider": "aws",
                        "kubeconfigSecretRef": {"name": "member-a-kubeconfig"},
                        "ingressDiscovery": {"kind": "Service", "namespace": "default",
                                             "name": "ingress"}}}),
    )
    .await;
    create(
        &clusters,
        json!({"apiVersion": "meridian.dev/v1alpha1", "kind": "MeridianCluster",
               "metadata": {"name": "member-b"},
               "spec": {"region": "us", "provider": "gcp",
                        "endpoints": [format!("127.0.0.1:{port_b}")],
                        "kubeconfigSecretRef": {"name": "member-b-kubeconfig"}}}),
    )
    .await;
    let apps: Api<MeridianApp> = Api::namespaced(hub_client.clone(), ns);
    create(
        &apps,
        json!({"apiVersion": "meridian.dev/v1alpha1", "kind": "MeridianApp",
               "metadata": {"name": "shop"},
               "spec": {"hostnames": ["shop.example.com"], "failureMode": "fail-open",
                        "probe": {"kind": "tcp", "interval": "300ms", "timeout": "200ms"},
                        "targets": [{"cluster": "member-a"}, {"cluster": "member-b"}],
                        "placement": {"workload": {"namespace": "default", "name": "shop"}}}}),
    )
    .await;

    let dir = std::env::temp_dir().join(format!("meridian-e2e-kube-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("base.yaml");
    std::fs::write(
        &config,
        "regions:\n  - { name: eu, location: { lat: 50.1, lon: 8.7 } }\n  \
         - { name: us, location: { lat: 39.0, lon: -77.5 } }\nclusters: []\napps: []\n",
    )
    .unwrap();
    let first = start_replica(&config, &hub, ns, &dir.join("one"), &["--leader-elect"]);
    let second = start_replica(&config, &hub, ns, &dir.join("two"), &["--leader-elect"]);

    // One leader, and both replicas agree on who it is.
    let ((leader, follower), took) = eventually("a leader elected", LEASE * 3, || async {
        let one = get(&first.url, "/api/v1/leader").await;
        let two = get(&second.url, "/api/v1/leader").await;
        match (one["is_leader"].as_bool()?, two["is_leader"].as_bool()?) {
            (true, false) if two["leader"] == one["identity"] => Some((&first, &second)),
            (false, true) if one["leader"] == two["identity"] => Some((&second, &first)),
            (true, true) => panic!("two leaders at once"),
            _ => None,
        }
    })
    .await;
    eprintln!("leader elected after {took:?}: {}", leader.url);
    let lease: Api<Lease> = Api::namespaced(hub_client.clone(), ns);
    let holder = lease
        .get("meridian-controller")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(holder.holder_identity.as_deref(), Some(leader.url.as_str()));

    // The discovered endpoint is in the leader's table, and the follower serves the same
    // version (it mirrors, it does not compute).
    let endpoint_a = format!("127.0.0.1:{port_a}");
    let (version, took) = eventually(
        "the discovered endpoint in the table",
        Duration::from_secs(15),
        || async {
            let table = try_get(&leader.url, "/api/v1/table").await?;
            let clusters = table["table"]["clusters"].as_array()?.clone();
            let a = clusters.iter().find(|c| c["name"] == "member-a")?;
            (a["endpoints"][0] == endpoint_a.as_str())
                .then(|| table["table"]["version"].as_u64())?
        },
    )
    .await;
    eprintln!("discovered endpoint in table v{version} after {took:?}");
    eventually(
        "the follower mirrors the leader's version",
        Duration::from_secs(10),
        || async {
            let mirrored = try_get(&follower.url, "/api/v1/table").await?;
            (mirrored["table"]["version"].as_u64()? >= version).then_some(())
        },
    )
    .await;

    // Status written by the leader: conditions with observedGeneration, discovered
    // endpoints and inventory.
    let generation = clusters
        .get("member-a")
        .await
        .unwrap()
        .metadata
        .generation
        .unwrap();
    let (status, took) = eventually("member-a's status", Duration::from_secs(15), || async {
        let status = status_of(&clusters, "member-a").await;
        let ready = condition(&status, "Reachable")?["status"] == "True"
            && condition(&status, "Accepted")?["status"] == "True"
            && condition(&status, "EndpointsDiscovered")?["status"] == "True"
            && status["inventory"]["workloads"][0]["readyReplicas"] == 2;
        ready.then_some(status)
    })
    .await;
    eprintln!("member-a status complete after {took:?}");
    assert_eq!(status["observedGeneration"], generation);
    assert_eq!(
        condition(&status, "Accepted").unwrap()["observedGeneration"],
        generation
    );
    assert_eq!(status["discoveredEndpoints"], json!([endpoint_a]));
    let inventory = &status["inventory"];
    assert_eq!(inventory["nodes"], 1);
    assert_eq!(inventory["nodesReady"], 1);
    assert_eq!(inventory["allocatableCpuMillis"], 4000);
    assert_eq!(inventory["allocatableMemoryBytes"], 8u64 << 30);
    assert_eq!(inventory["requestedCpuMillis"], 250);
    assert_eq!(inventory["requestedMemoryBytes"], 256u64 << 20);
    assert_eq!(
        inventory["workloads"],
        json!([{"app": "shop", "desiredReplicas": 3, "readyReplicas": 2}])
    );
    assert_eq!(inventory["kubernetesVersion"], member_version.as_str());
    let app_status = status_of(&apps, "shop").await;
    assert_eq!(
        condition(&app_status, "Accepted").unwrap()["status"],
        "True"
    );

    // The same inventory through the API and the metrics, on either replica.
    eventually(
        "the inventory through the follower's API",
        Duration::from_secs(10),
        || async {
            let members = try_get(&follower.url, "/api/v1/inventory").await?;
            let a = members
                .as_array()?
                .iter()
                .find(|m| m["cluster"] == "member-a")?
                .clone();
            (a["inventory"]["workloads"][0]["desiredReplicas"] == 3
                && a["reachability"]["Reachable"]["version"] == member_version.as_str())
            .then_some(())
        },
    )
    .await;
    let metrics = ControllerClient::new(&leader.url, None)
        .unwrap()
        .call(Method::GET, "/metrics", None)
        .await
        .unwrap()
        .1;
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains(
            r#"meridian_workload_replicas{app="shop",cluster="member-a",kind="ready"} 2"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("meridian_controller_leader 1"));

    // The Service's status changes (the cloud gave a new address): discovery follows.
    let services: Api<Service> = Api::namespaced(member_a.client().await, "default");
    services
        .patch(
            "ingress",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"ports": [{"port": port_a2, "protocol": "TCP"}]}})),
        )
        .await
        .unwrap();
    let endpoint_a2 = format!("127.0.0.1:{port_a2}");
    let (_, took) = eventually(
        "the new endpoint discovered",
        Duration::from_secs(15),
        || async {
            let status = status_of(&clusters, "member-a").await;
            (status["discoveredEndpoints"] == json!([endpoint_a2])).then_some(())
        },
    )
    .await;
    eprintln!("new ingress address followed after {took:?}");

    // A write on the follower is forwarded to the leader, and mirrored back.
    let drained = ControllerClient::new(&follower.url, None)
        .unwrap()
        .call(Method::POST, "/api/v1/clusters/member-b/drain", None)
        .await
        .expect("a drain through the follower");
    assert_eq!(drained.0, 200);
    eventually(
        "the follower mirrors the drain",
        Duration::from_secs(10),
        || async {
            let overrides = get(&follower.url, "/api/v1/overrides").await;
            overrides["drains"]
                .as_object()?
                .contains_key("cluster:member-b")
                .then_some(())
        },
    )
    .await;

    // Member B's API server dies: a condition and a history entry, nothing deleted.
    member_b.kill();
    let (_, took) = eventually("member-b unreachable", Duration::from_secs(20), || async {
        let status = status_of(&clusters, "member-b").await;
        (condition(&status, "Reachable")?["status"] == "False").then_some(())
    })
    .await;
    eprintln!("member-b unreachable in its status {took:?} after the kill");
    let history = get(&leader.url, "/api/v1/history").await;
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["cluster"] == "member-b"
                && h["cause"]
                    .as_str()
                    .unwrap()
                    .contains("member API server unreachable")),
        "{history}"
    );
    assert!(clusters.get("member-b").await.is_ok(), "nothing is deleted");

    // Kill -9 the leader: the follower takes over within the lease duration (plus one retry
    // period to notice) and writes status from then on.
    let leader_url = leader.url.clone();
    let (leader, follower) = if std::ptr::eq(leader, &first) {
        (first, second)
    } else {
        (second, first)
    };
    let mut leader = leader;
    let killed_at = Instant::now();
    leader.child.kill().unwrap();
    leader.child.wait().unwrap();
    let (_, took) = eventually("the follower takes over", LEASE * 3, || async {
        let l = try_get(&follower.url, "/api/v1/leader").await?;
        (l["is_leader"] == true).then_some(())
    })
    .await;
    let took = took.max(killed_at.elapsed());
    eprintln!("takeover {took:?} after kill -9 of {leader_url} (lease {LEASE:?})");
    assert!(
        took <= LEASE + Duration::from_millis(1500),
        "takeover took {took:?}, lease duration {LEASE:?}"
    );
    let holder = lease
        .get("meridian-controller")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(
        holder.holder_identity.as_deref(),
        Some(follower.url.as_str())
    );
    apps.patch(
        "shop",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"dnsTtl": 60}})),
    )
    .await
    .unwrap();
    let generation = apps.get("shop").await.unwrap().metadata.generation.unwrap();
    eventually(
        "the new leader writes status",
        Duration::from_secs(15),
        || async {
            let status = status_of(&apps, "shop").await;
            (status["observedGeneration"] == generation).then_some(())
        },
    )
    .await;
    drop(leader);
    drop(follower);
    delete_namespace(&hub_client, ns).await;
    let _ = std::fs::remove_dir_all(&dir);
}
