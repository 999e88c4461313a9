//! Against a real kube-apiserver: the capacity fields of the CRDs (issue 7) — node
//! scaling on a cluster, spread, scale-up limit and cron schedules on an app — are in the
//! structural schema, so the API server keeps them (it prunes fields the schema lacks) and
//! refuses a schedule without its required fields.

mod support;

use kube::api::{Api, DynamicObject, PostParams};
use kube::discovery::ApiResource;
use meridian_k8s::crd::*;
use support::{
    ApiServer, apply_yaml, delete_namespace, in_namespace, install_crds, test_namespace,
};

const RESOURCES: &str = r#"
apiVersion: meridian.dev/v1alpha1
kind: MeridianCluster
metadata:
  name: onprem-1
  namespace: meridian
  labels:
    meridian.dev/private: "true"
spec:
  region: eu
  provider: onprem
  capacity:
    maxReplicas: 40
    costPerReplicaHour: 0.01
  nodeScaling:
    machineDeployment:
      namespace: capi
      name: workers
    minMachines: 2
    maxMachines: 8
    cpuMillisPerMachine: 4000
    memoryBytesPerMachine: 17179869184
    coolDown: 10m
    scaleDownUtilisation: 0.5
---
apiVersion: meridian.dev/v1alpha1
kind: MeridianApp
metadata:
  name: shop
  namespace: meridian
spec:
  hostnames: ["shop.example.com"]
  failureMode: fail-open
  targets:
  - cluster: onprem-1
  placement:
    workload: {namespace: shop, name: web}
    totalReplicas: 12
    strategy: cost
    spread: 3
    clusterSelector:
      meridian.dev/private: "true"
  scaling:
    targetRequestsPerSecondPerReplica: 100
    minReplicas: 2
    maxReplicas: 60
    scaleDownStabilization: 5m
    scaleUpLimit: {factor: 2, step: 4, period: 1m}
    schedules:
    - {cron: "0 9 * * *", duration: 2h, minReplicas: 10}
"#;

#[tokio::test]
#[ignore = "needs a kube-apiserver: run through scripts/test-all"]
async fn capacity_fields_survive_a_real_api_server() {
    let hub = ApiServer::start("capacity");
    let client = hub.client().await;
    install_crds(&client).await;
    let ns = test_namespace(&client, "t-capacity").await;
    let ns = ns.as_str();
    let _cleanup = hub.cleanup_on_panic(&[ns]);
    apply_yaml(&client, &in_namespace(RESOURCES, ns)).await;

    let clusters: Api<MeridianCluster> = Api::namespaced(client.clone(), ns);
    let cluster = clusters.get("onprem-1").await.unwrap();
    let nodes = cluster.spec.node_scaling.expect("nodeScaling was pruned");
    assert_eq!(nodes.machine_deployment.name, "workers");
    assert_eq!((nodes.min_machines, nodes.max_machines), (2, 8));
    assert_eq!(nodes.cpu_millis_per_machine, 4000);
    assert_eq!(nodes.memory_bytes_per_machine, 16 << 30);
    assert_eq!(nodes.cool_down.as_deref(), Some("10m"));
    assert_eq!(nodes.scale_down_utilisation, Some(0.5));

    let apps: Api<MeridianApp> = Api::namespaced(client.clone(), ns);
    let app = apps.get("shop").await.unwrap();
    assert_eq!(app.spec.placement.as_ref().unwrap().spread, Some(3));
    let scaling = app.spec.scaling.clone().unwrap();
    let limit = scaling.scale_up_limit.expect("scaleUpLimit was pruned");
    assert_eq!(
        (limit.factor, limit.step, limit.period.as_deref()),
        (Some(2.0), Some(4), Some("1m"))
    );
    assert_eq!(
        scaling.schedules,
        vec![ScheduleSpec {
            cron: "0 9 * * *".into(),
            duration: "2h".into(),
            min_replicas: 10,
        }]
    );

    // A schedule without its duration is refused by the schema, with the field named.
    let mut bad = serde_json::to_value(&app).unwrap();
    bad["metadata"] = serde_json::json!({"name": "shop-bad", "namespace": ns});
    bad["spec"]["scaling"]["schedules"] =
        serde_json::json!([{"cron": "0 9 * * *", "minReplicas": 10}]);
    let bad: DynamicObject = serde_json::from_value(bad).unwrap();
    let raw: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<MeridianApp>(&()));
    match raw.create(&PostParams::default(), &bad).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{e:?}");
            assert!(e.message.contains("duration"), "{}", e.message);
        }
        other => panic!("a schedule without duration was accepted: {other:?}"),
    }
    delete_namespace(&client, ns).await;
}
