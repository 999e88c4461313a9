//! Against a real kube-apiserver (see `support`; v1.36 in CI): the generated CRDs are
//! accepted, resources validate, status is written with conditions and observedGeneration,
//! and the hub RBAC grants the controller exactly what it needs.
//!
//! Ignored by a plain `cargo test` (it needs the API server binary); `scripts/test-all`
//! builds or reuses it and runs these with `--ignored`.

mod support;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use meridian_k8s::crd::*;
use meridian_k8s::status::{condition, now_rfc3339, set_condition, write_status};
use support::{ApiServer, apply_yaml, install};

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
        node_scaling: None,
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
            "connected",
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
