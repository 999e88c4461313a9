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
use meridian_k8s::status::{FIELD_MANAGER, condition, now_rfc3339, set_condition, write_status};
use support::{
    ApiServer, apply_yaml, delete_namespace, in_namespace, install_crds, minor_version,
    send_keeping_warnings, test_namespace,
};

#[tokio::test]
#[ignore = "needs a kube-apiserver: run through scripts/test-all"]
async fn crds_status_and_rbac_on_a_real_api_server() {
    let hub = ApiServer::start("hub");
    let client = hub.client().await;
    install_crds(&client).await;
    let ns = test_namespace(&client, "t-apiserver").await;
    let ns = ns.as_str();
    let _cleanup = hub.cleanup_on_panic(&[ns]);

    // Resources the CRD schema accepts, and one it refuses (a required field missing).
    let clusters: Api<MeridianCluster> = Api::namespaced(client.clone(), ns);
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
        ns,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, "v1alpha1", "MeridianCluster")),
    );
    let mut missing_region: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "meridian.dev/v1alpha1", "kind": "MeridianCluster",
        "metadata": {"name": "bad"}, "spec": {"provider": "aws"}
    }))
    .unwrap();
    missing_region.metadata.namespace = Some(ns.into());
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
    apply_yaml(
        &client,
        &in_namespace(include_str!("../../deploy/rbac/hub.yaml"), ns),
    )
    .await;
    let controller = hub
        .client_as(Some(&format!(
            "system:serviceaccount:{ns}:meridian-controller"
        )))
        .await;
    let as_controller: Api<MeridianCluster> = Api::namespaced(controller.clone(), ns);
    let listed = as_controller.list(&Default::default()).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|c| c.metadata.name.as_deref())
            .collect::<Vec<_>>(),
        [Some("aws-1")]
    );
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
    delete_namespace(&client, ns).await;
}

/// A CRD with one integer field in schemars' old format, `uint16`: what every Meridian CRD
/// carried before its integers were given known formats. Sent only as a dry run.
fn uint16_crd() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "formatprobes.meridian.dev"},
        "spec": {"group": "meridian.dev", "scope": "Namespaced",
                 "names": {"kind": "FormatProbe", "listKind": "FormatProbeList",
                           "plural": "formatprobes", "singular": "formatprobe"},
                 "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                     "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                         "spec": {"type": "object", "properties": {"port": {
                             "type": "integer", "format": "uint16",
                             "minimum": 0, "maximum": 65535}}}}}}}]}
    })
}

fn crd_apply(name: &str, crd: &impl serde::Serialize, dry_run: bool) -> http::Request<Vec<u8>> {
    let params = PatchParams {
        dry_run,
        ..PatchParams::apply(FIELD_MANAGER).force()
    };
    kube::core::Request::new("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
        .patch(name, &params, &Patch::Apply(crd))
        .unwrap()
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run through scripts/test-all"]
async fn crds_install_without_warnings_and_their_integer_bounds_hold() {
    let hub = ApiServer::start("crd-bounds");
    let client = hub.client().await;
    let minor = minor_version(&client).await;

    // Installed (server-side apply, as `kubectl apply --server-side` or Helm would), each CRD
    // draws no warning, and again on an upgrade (the same apply a second time).
    for round in ["install", "upgrade"] {
        for crd in meridian_k8s::crds() {
            let name = crd.metadata.name.clone().unwrap();
            let answer = send_keeping_warnings(&client, crd_apply(&name, &crd, false)).await;
            assert!(
                answer.status.is_success(),
                "{round} of {name}: {}",
                answer.body
            );
            assert!(
                answer.warnings.is_empty(),
                "{round} of {name} drew warnings: {:?}",
                answer.warnings
            );
        }
    }
    // The check can fail: the same kind of field in schemars' old format draws the warning
    // (from 1.34, the first version that warns about unknown formats).
    let control = send_keeping_warnings(
        &client,
        crd_apply("formatprobes.meridian.dev", &uint16_crd(), true),
    )
    .await;
    assert!(control.status.is_success(), "{}", control.body);
    if minor >= 34 {
        assert!(
            control.warnings.iter().any(|w| w.contains("uint16")),
            "no warning for format uint16 on 1.{minor}: {:?}",
            control.warnings
        );
    }
    install_crds(&client).await;
    let ns = test_namespace(&client, "t-crd-bounds").await;
    let ns = ns.as_str();
    let _cleanup = hub.cleanup_on_panic(&[ns]);

    // Out of range: refused by the API server itself, with the field and the bound named.
    // Dry runs, so nothing is left behind whatever the answer.
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let clusters: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::erase::<MeridianCluster>(&()),
    );
    let apps: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<MeridianApp>(&()));
    let cluster = |spec: serde_json::Value| -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "meridian.dev/v1alpha1", "kind": "MeridianCluster",
            "metadata": {"name": "bounds", "namespace": ns},
            "spec": spec
        }))
        .unwrap()
    };
    let app = |placement: serde_json::Value| -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "meridian.dev/v1alpha1", "kind": "MeridianApp",
            "metadata": {"name": "bounds", "namespace": ns},
            "spec": {"hostnames": ["bounds.example.com"], "failureMode": "fail-open",
                     "targets": [{"cluster": "bounds"}], "placement": placement}
        }))
        .unwrap()
    };
    let port = |port: i64| {
        cluster(serde_json::json!({"region": "eu", "provider": "aws",
            "ingressDiscovery": {"kind": "Service", "namespace": "edge", "name": "front",
                                 "port": port}}))
    };
    let max_replicas = |n: i64| {
        cluster(serde_json::json!({"region": "eu", "provider": "aws",
                                   "capacity": {"maxReplicas": n}}))
    };
    let total_replicas = |n: i64| {
        app(
            serde_json::json!({"workload": {"namespace": "shop", "name": "web"},
                               "totalReplicas": n}),
        )
    };
    let refused = [
        (
            &clusters,
            port(65536),
            "spec.ingressDiscovery.port",
            "65535",
        ),
        (&clusters, port(0), "spec.ingressDiscovery.port", "1"),
        (
            &clusters,
            max_replicas(1_000_001),
            "spec.capacity.maxReplicas",
            "1000000",
        ),
        (
            &apps,
            total_replicas(-1),
            "spec.placement.totalReplicas",
            "0",
        ),
        (
            &apps,
            total_replicas(1_000_001),
            "spec.placement.totalReplicas",
            "1000000",
        ),
    ];
    for (api, object, field, bound) in refused {
        match api.create(&dry_run, &object).await {
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 422, "{field}: {e:?}");
                assert!(
                    e.message.contains(field) && e.message.contains(bound),
                    "{field}: {}",
                    e.message
                );
            }
            other => panic!("{field} out of range was accepted: {other:?}"),
        }
    }
    // The bounds themselves are accepted.
    for (api, object) in [
        (&clusters, port(65535)),
        (&clusters, port(1)),
        (&clusters, max_replicas(1_000_000)),
        (&apps, total_replicas(0)),
        (&apps, total_replicas(1_000_000)),
    ] {
        api.create(&dry_run, &object)
            .await
            .unwrap_or_else(|e| panic!("{:?} refused: {e}", object.data["spec"]));
    }
    delete_namespace(&client, ns).await;
}
