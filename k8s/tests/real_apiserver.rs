//! Against a real kube-apiserver (v1.20, Debian's source build): the generated CRDs are
//! accepted, resources validate, status is written with conditions and observedGeneration,
//! and the hub RBAC grants the controller exactly what it needs.
//!
//! Ignored by a plain `cargo test` (it needs the API server binary); `scripts/test-all`
//! builds or reuses it and runs these with `--ignored`.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::{Client, ResourceExt};
use meridian_k8s::crd::*;
use meridian_k8s::status::{FIELD_MANAGER, condition, now_rfc3339, set_condition, write_status};
use support::ApiServer;

async fn apply_yaml(client: &Client, yaml: &str) {
    for doc in yaml.split("\n---").filter(|d| d.contains("kind:")) {
        let object: DynamicObject = serde_norway::from_str(doc).unwrap();
        let types = object.types.clone().unwrap();
        let (group, version) = types
            .api_version
            .split_once('/')
            .unwrap_or(("", &types.api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, &types.kind));
        let api: Api<DynamicObject> = match object.namespace() {
            Some(ns) => Api::namespaced_with(client.clone(), &ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            &object.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("applying {} {}: {e}", types.kind, object.name_any()));
    }
}

async fn install(client: &Client) {
    apply_yaml(client, &meridian_k8s::crds_yaml().unwrap()).await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in ["meridianclusters.meridian.dev", "meridianapps.meridian.dev"] {
        let mut established = false;
        for _ in 0..100 {
            let crd = crds.get(name).await.unwrap();
            established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(established, "{name} never became Established");
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "meridian"}})).unwrap();
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("creating the namespace: {e}"),
    }
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run through scripts/test-all"]
async fn crds_status_and_rbac_on_a_real_api_server() {
    let hub = ApiServer::start("hub");
    let client = hub.client().await;
    install(&client).await;

    // Resources the CRD schema accepts, and one it refuses (a required field missing).
    let clusters: Api<MeridianCluster> = Api::namespaced(client.clone(), "meridian");
    let spec = ClusterSpec {
        region: "eu".into(),
        provider: "aws".into(),
        location: Some(GeoLocation {
            lat: 53.3,
            lon: -6.3,
        }),
        endpoints: vec!["192.0.2.10:443".into()],
        ingress_discovery: None,
        kubeconfig_secret_ref: Some(SecretKeyRef {
            name: "aws-1-kubeconfig".into(),
            key: "kubeconfig".into(),
        }),
        capacity: Some(CapacityHints {
            max_replicas: Some(20),
            cost_per_replica_hour: Some(0.05),
        }),
    };
    let created = clusters
        .create(
            &PostParams::default(),
            &MeridianCluster::new("aws-1", spec.clone()),
        )
        .await
        .unwrap();
    assert_eq!(created.spec, spec);
    let raw: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "meridian",
        &ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, "v1alpha1", "MeridianCluster")),
    );
    let mut missing_region: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "meridian.dev/v1alpha1", "kind": "MeridianCluster",
        "metadata": {"name": "bad"}, "spec": {"provider": "aws"}
    }))
    .unwrap();
    missing_region.metadata.namespace = Some("meridian".into());
    let err = raw
        .create(&PostParams::default(), &missing_region)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("spec.region"), "{err}");

    // Status through /status with conditions and observedGeneration; a spec change bumps the
    // generation, and the next status says which generation it describes.
    let generation = created.metadata.generation.unwrap();
    let mut status = ClusterStatus::default();
    set_condition(
        &mut status.conditions,
        condition(
            "Reachable",
            true,
            "Connected",
            "v1.20.2",
            generation,
            &now_rfc3339(),
        ),
    );
    status.observed_generation = Some(generation);
    write_status(&clusters, "aws-1", &status).await.unwrap();
    let read = clusters.get_status("aws-1").await.unwrap();
    let got = read.status.unwrap();
    assert_eq!(got.observed_generation, Some(generation));
    assert_eq!(got.conditions[0].type_, "Reachable");
    assert_eq!(got.conditions[0].status, "True");
    let patch = serde_json::json!({"spec": {"provider": "aws-outposts"}});
    let bumped = clusters
        .patch("aws-1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(bumped.metadata.generation, Some(generation + 1));
    assert_eq!(
        bumped.status.unwrap().observed_generation,
        Some(generation),
        "status still describes the old spec"
    );

    // RBAC: the controller's service account may write status but not delete resources.
    apply_yaml(&client, include_str!("../../deploy/rbac/hub.yaml")).await;
    let controller = hub
        .client_as(Some("system:serviceaccount:meridian:meridian-controller"))
        .await;
    let as_controller: Api<MeridianCluster> = Api::namespaced(controller.clone(), "meridian");
    let listed = as_controller.list(&Default::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    set_condition(
        &mut status.conditions,
        condition(
            "Reachable",
            false,
            "Unreachable",
            "connection refused",
            generation + 1,
            &now_rfc3339(),
        ),
    );
    status.observed_generation = Some(generation + 1);
    write_status(&as_controller, "aws-1", &status)
        .await
        .unwrap();
    let err = as_controller
        .delete("aws-1", &DeleteParams::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(e) if e.code == 403),
        "{err}"
    );
    let err = as_controller
        .patch("aws-1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(e) if e.code == 403),
        "the controller must not edit specs: {err}"
    );
}
