//! The Helm chart (deploy/helm/meridian) against a real kube-apiserver: rendered with
//! scripts/helm's stand-in for `helm template` with defaults, two controller replicas,
//! DaemonSets and the ServiceMonitor on, every rendered object is created in its own namespace
//! with `fieldValidation=Strict` (an unknown or duplicate field is refused, naming it) and must
//! draw no `Warning:` header (a deprecated API warns). On a server without strict field
//! validation (before 1.25; 1.20 drops unknown fields silently) every object must instead come
//! back with every field it was sent, since a dropped field is how a typo shows there. The
//! ServiceMonitor is checked against a minimal CRD of ours (the fields the chart uses, with the
//! Prometheus Operator's types), not the operator's full schema. Also: leader-election arguments appear
//! exactly when they should, the chart's RBAC equals deploy/rbac/hub.yaml and works for the
//! controller's ServiceAccount, the chart's CRDs are the generated ones, and the ConfigMap's
//! config passes the same validation as `meridian check`.
//!
//! Ignored by a plain `cargo test` (it needs the API server binary); run it with
//! `cargo test -p meridian-k8s --test real_chart -- --ignored`.

mod support;

use std::path::Path;
use std::process::Command;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;
use kube::{Client, Resource};
use serde_json::{Value, json};
use support::{
    ApiServer, apply_crds, delete_namespaces, helm_renderer, minor_version, repo_path,
    send_keeping_warnings,
};

/// The rendered chart's documents, as JSON values.
fn render(helm: &Path, namespace: &str, args: &[&str]) -> Vec<Value> {
    let out = Command::new(helm)
        .args(["template", "rel"])
        .arg(repo_path("deploy/helm/meridian"))
        .args(["--namespace", namespace])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rendering with {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_docs(&String::from_utf8(out.stdout).unwrap())
}

fn yaml_docs(text: &str) -> Vec<Value> {
    text.split("\n---")
        .map(|doc| doc.trim_start_matches("---"))
        .filter(|doc| doc.lines().any(|l| l.starts_with("kind:")))
        .map(|doc| serde_norway::from_str(doc).unwrap_or_else(|e| panic!("{e}:\n{doc}")))
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn controller_args(docs: &[Value]) -> Vec<String> {
    let deployment = of_kind(docs, "Deployment")
        .into_iter()
        .find(|d| d["metadata"]["name"] == "rel-meridian-controller")
        .expect("the controller Deployment");
    serde_json::from_value(deployment["spec"]["template"]["spec"]["containers"][0]["args"].clone())
        .unwrap()
}

/// Where `sent` is not contained in `got`: every field sent must come back with its value.
fn not_contained(sent: &Value, got: &Value, path: &str, out: &mut Vec<String>) {
    match (sent, got) {
        (Value::Object(s), Value::Object(g)) => {
            for (key, value) in s {
                match g.get(key) {
                    Some(got) => not_contained(value, got, &format!("{path}.{key}"), out),
                    // An empty map or list sent may come back absent.
                    None if value == &json!({}) || value == &json!([]) => {}
                    None => out.push(format!("{path}.{key}: dropped by the API server")),
                }
            }
        }
        (Value::Array(s), Value::Array(g)) if s.len() == g.len() => {
            for (i, (s, g)) in s.iter().zip(g).enumerate() {
                not_contained(s, g, &format!("{path}[{i}]"), out);
            }
        }
        (Value::Number(s), Value::Number(g)) if s.as_f64() == g.as_f64() => {}
        (s, g) if s == g => {}
        (s, g) => out.push(format!("{path}: sent {s}, got {g}")),
    }
}

/// The part of the Prometheus Operator's ServiceMonitor schema the chart uses, with its types;
/// anything else is pruned, which the containment check then reports.
const SERVICE_MONITOR: &str = "servicemonitors.monitoring.coreos.com";
const SERVICE_MONITOR_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: { kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor }
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [selector, endpoints]
              properties:
                selector:
                  type: object
                  properties:
                    matchLabels: { type: object, additionalProperties: { type: string } }
                namespaceSelector:
                  type: object
                  properties:
                    any: { type: boolean }
                    matchNames: { type: array, items: { type: string } }
                endpoints:
                  type: array
                  items:
                    type: object
                    properties:
                      port: { type: string }
                      path: { type: string }
                      interval: { type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$' }
"#;

fn resource_of(doc: &Value) -> ApiResource {
    let api_version = doc["apiVersion"].as_str().unwrap();
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, doc["kind"].as_str().unwrap());
    ApiResource::from_gvk(&gvk)
}

fn api_for(client: &Client, namespace: &str, doc: &Value) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &resource_of(doc))
}

/// Creates `doc` in `namespace` with `fieldValidation=Strict` (a dry run if asked): the
/// created object, or the API server's refusal; any `Warning:` header fails.
async fn create_strict(
    client: &Client,
    namespace: &str,
    doc: &Value,
    dry_run: bool,
) -> Result<Value, String> {
    let url = DynamicObject::url_path(&resource_of(doc), Some(namespace));
    let params = PostParams {
        dry_run,
        ..PostParams::default()
    };
    let mut request = kube::core::Request::new(url)
        .create(&params, serde_json::to_vec(doc).unwrap())
        .unwrap();
    let uri = request.uri().to_string();
    let separator = if uri.contains('?') { '&' } else { '?' };
    *request.uri_mut() = format!("{uri}{separator}fieldValidation=Strict")
        .parse()
        .unwrap();
    let answer = send_keeping_warnings(client, request).await;
    assert!(
        answer.warnings.is_empty(),
        "{} {}: warnings {:?}",
        doc["kind"],
        doc["metadata"]["name"],
        answer.warnings
    );
    if answer.status.is_success() {
        Ok(answer.body)
    } else {
        Err(answer.body["message"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run through scripts/test-all"]
async fn chart_renders_objects_a_real_api_server_accepts() {
    let helm = helm_renderer();
    // (namespace, values, leader election expected, DaemonSets, ServiceMonitors)
    let variants: [(&str, &[&str], bool, usize, usize); 5] = [
        ("chart-default", &[], false, 0, 0),
        ("chart-ha", &["--set", "controller.replicas=2"], true, 0, 0),
        (
            "chart-forced",
            &["--set", "controller.leaderElect=true"],
            true,
            0,
            0,
        ),
        (
            "chart-daemonsets",
            &[
                "--set",
                "proxy.kind=DaemonSet",
                "--set",
                "dns.kind=DaemonSet",
                "--set",
                "dns.service.type=ClusterIP",
                "--set",
                "auth.subscriberTokenSecret=meridian-subscriber",
            ],
            false,
            2,
            0,
        ),
        (
            "chart-monitoring",
            &["--set", "serviceMonitor.enabled=true"],
            false,
            0,
            3,
        ),
    ];
    // Namespaces of this run's own, so a shared hub (MERIDIAN_TEST_KUBECONFIG) never mixes runs.
    let pid = std::process::id();
    let ns_of = |base: &str| format!("{base}-{pid}");
    let rendered: Vec<(String, Vec<Value>)> = variants
        .iter()
        .map(|(base, args, ..)| (ns_of(base), render(&helm, &ns_of(base), args)))
        .collect();

    // What the rendering must say, before any server is involved.
    let hub = yaml_docs(&std::fs::read_to_string(repo_path("deploy/rbac/hub.yaml")).unwrap());
    let hub_rules = &of_kind(&hub, "Role")[0]["rules"];
    for ((ns, _, leader, daemonsets, monitors), (_, docs)) in variants.iter().zip(&rendered) {
        let args = controller_args(docs);
        let at = args.iter().position(|a| a == "--leader-elect");
        assert_eq!(at.is_some(), *leader, "{ns}: controller args {args:?}");
        if let Some(at) = at {
            assert_eq!(
                args[at + 1..at + 3],
                // Replicas reach each other by name over mutual TLS (the peers Service).
                [
                    "--advertise-url",
                    "https://$(POD_NAME).rel-meridian-controller-peers.$(POD_NAMESPACE).svc:8090"
                ],
                "{ns}"
            );
        }
        for flag in ["--kubernetes", "--namespace", "--data-dir"] {
            assert!(args.iter().any(|a| a == flag), "{ns}: {flag} in {args:?}");
        }
        assert_eq!(of_kind(docs, "DaemonSet").len(), *daemonsets, "{ns}");
        assert_eq!(of_kind(docs, "Deployment").len(), 3 - daemonsets, "{ns}");
        assert_eq!(of_kind(docs, "ServiceMonitor").len(), *monitors, "{ns}");
        let role = of_kind(docs, "Role");
        assert_eq!(
            &role[0]["rules"], hub_rules,
            "{ns}: the chart's Role differs from deploy/rbac/hub.yaml"
        );
        let config_map = of_kind(docs, "ConfigMap")[0];
        let config = config_map["data"]["config.yaml"].as_str().unwrap();
        if let Err(err) = meridian_config::parse(config, Path::new("ConfigMap config.yaml")) {
            panic!("{ns}: {}\n{config}", err.diagnostics().join("\n"));
        }
    }
    let chart_crds =
        std::fs::read_to_string(repo_path("deploy/helm/meridian/crds/meridian.dev.yaml")).unwrap();
    assert_eq!(
        chart_crds.trim(),
        meridian_k8s::crds_yaml().unwrap().trim(),
        "the chart's crds/ copy differs from the generated CRDs"
    );

    let server = ApiServer::start("chart");
    let client = server.client().await;
    // Strict field validation is on by default from 1.25 (GA in 1.27).
    let strict = minor_version(&client).await >= 25;
    apply_crds(&client, &chart_crds).await;
    // The minimal ServiceMonitor CRD only where there is none: a real hub's Prometheus
    // Operator CRD is never replaced (nor deleted at the end).
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let own_service_monitor_crd = crds.get_opt(SERVICE_MONITOR).await.unwrap().is_none();
    if own_service_monitor_crd {
        apply_crds(&client, SERVICE_MONITOR_CRD).await;
    }
    let namespaces: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "Namespace")),
    );
    let names: Vec<&str> = rendered.iter().map(|(ns, _)| ns.as_str()).collect();
    let _cleanup = server.cleanup_on_panic(&names);
    for (ns, docs) in &rendered {
        let namespace: DynamicObject = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .unwrap();
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
        for doc in docs {
            let what = format!("{ns}: {} {}", doc["kind"], doc["metadata"]["name"]);
            if strict {
                create_strict(&client, ns, doc, false)
                    .await
                    .unwrap_or_else(|e| panic!("creating {what}: {e}"));
                continue;
            }
            let object: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
            let created = api_for(&client, ns, doc)
                .create(&PostParams::default(), &object)
                .await
                .unwrap_or_else(|e| panic!("creating {what}: {e}"));
            let mut problems = Vec::new();
            not_contained(
                doc,
                &serde_json::to_value(&created).unwrap(),
                "",
                &mut problems,
            );
            assert!(problems.is_empty(), "{what}: {problems:#?}");
        }
    }
    if strict {
        // Strict validation does catch a typo: the controller Deployment with one field
        // misspelt, and a ServiceMonitor endpoint with a field the minimal CRD lacks.
        let (ns, docs) = &rendered[0];
        let mut typo = of_kind(docs, "Deployment")[0].clone();
        typo["metadata"]["name"] = json!("typo");
        typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = json!("Always");
        let refused = create_strict(&client, ns, &typo, true).await.unwrap_err();
        assert!(refused.contains("imagePullPolcy"), "{refused}");
        let (ns, docs) = rendered
            .iter()
            .find(|(ns, _)| *ns == ns_of("chart-monitoring"))
            .unwrap();
        let mut typo = of_kind(docs, "ServiceMonitor")[0].clone();
        typo["metadata"]["name"] = json!("typo");
        typo["spec"]["endpoints"][0]["scrapeTimeot"] = json!("5s");
        let refused = create_strict(&client, ns, &typo, true).await.unwrap_err();
        assert!(refused.contains("scrapeTimeot"), "{refused}");
    }

    // The chart's RBAC works for the controller's ServiceAccount: its resources and the Lease
    // in its namespace, and nothing in another.
    let (ha, default) = (ns_of("chart-ha"), ns_of("chart-default"));
    let sa = client_as_sa(&server, &ha).await;
    let crd_docs = yaml_docs(&chart_crds);
    let cluster_crd = crd_docs
        .iter()
        .find(|crd| crd["spec"]["names"]["kind"] == "MeridianCluster")
        .expect("the MeridianCluster CRD");
    let version = cluster_crd["spec"]["versions"][0]["name"].as_str().unwrap();
    let clusters: Api<DynamicObject> = Api::namespaced_with(
        sa.clone(),
        &ha,
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "meridian.dev",
            version,
            "MeridianCluster",
        )),
    );
    clusters
        .list(&Default::default())
        .await
        .expect("the controller may list MeridianClusters in its namespace");
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "meridian-controller"},
        "spec": {"holderIdentity": "rel-meridian-controller-0", "leaseDurationSeconds": 15}
    });
    api_for(&sa, &ha, &lease)
        .create(
            &PostParams::default(),
            &serde_json::from_value(lease.clone()).unwrap(),
        )
        .await
        .expect("the controller may take the Lease meridian-controller");
    let secrets_elsewhere = api_for(
        &sa,
        &default,
        &json!({"apiVersion": "v1", "kind": "Secret"}),
    );
    match secrets_elsewhere.list(&Default::default()).await {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        other => panic!("Secrets in another namespace must be forbidden, got {other:?}"),
    }

    delete_namespaces(&client, &names).await;
    if own_service_monitor_crd {
        crds.delete(SERVICE_MONITOR, &Default::default())
            .await
            .unwrap();
    }
}

async fn client_as_sa(server: &ApiServer, namespace: &str) -> Client {
    server
        .client_as(Some(&format!(
            "system:serviceaccount:{namespace}:rel-meridian-controller"
        )))
        .await
}
