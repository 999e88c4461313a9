//! The committed CRD YAML must be what the code generates. Regenerate with
//! `meridian crds > deploy/crds/meridian.dev.yaml` (or run this test with UPDATE_CRDS=1).

use std::path::Path;

#[test]
fn committed_crds_match_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds/meridian.dev.yaml");
    let generated = meridian_k8s::crds_yaml().unwrap();
    if std::env::var_os("UPDATE_CRDS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "deploy/crds/meridian.dev.yaml is stale: regenerate it with `meridian crds > deploy/crds/meridian.dev.yaml`"
    );
}

#[test]
fn crds_have_status_subresources_and_printer_columns() {
    let yaml = meridian_k8s::crds_yaml().unwrap();
    for doc in yaml.split("---\n").filter(|d| !d.trim().is_empty()) {
        let crd: serde_json::Value = serde_norway::from_str(doc).unwrap();
        let version = &crd["spec"]["versions"][0];
        assert_eq!(crd["spec"]["group"], "meridian.dev");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        assert!(
            version["subresources"]["status"].is_object(),
            "{}",
            crd["metadata"]["name"]
        );
        assert!(
            version["additionalPrinterColumns"]
                .as_array()
                .is_some_and(|c| c.len() >= 3)
        );
        // No CEL rules (x-kubernetes-validations): 1.20, which a clone without ../shared
        // tests against, refuses them.
        assert!(!doc.contains("x-kubernetes-validations"));
    }
}

/// Every schema node under `node`, with its path.
fn walk<'a>(
    node: &'a serde_json::Value,
    path: String,
    out: &mut Vec<(String, &'a serde_json::Value)>,
) {
    out.push((path.clone(), node));
    if let Some(properties) = node["properties"].as_object() {
        for (name, child) in properties {
            walk(child, format!("{path}.{name}"), out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if node[key].is_object() {
            walk(&node[key], format!("{path}[]"), out);
        }
    }
}

fn schema_nodes(yaml: &str) -> Vec<(String, serde_json::Value)> {
    let mut nodes = Vec::new();
    for doc in yaml.split("---\n").filter(|d| !d.trim().is_empty()) {
        let crd: serde_json::Value = serde_norway::from_str(doc).unwrap();
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap().to_string();
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut found = Vec::new();
        walk(schema, kind, &mut found);
        nodes.extend(found.into_iter().map(|(p, n)| (p, n.clone())));
    }
    nodes
}

#[test]
fn every_integer_has_a_known_format_and_both_bounds() {
    let nodes = schema_nodes(&meridian_k8s::crds_yaml().unwrap());
    let mut integers = 0;
    for (path, node) in &nodes {
        // Only formats the API server knows for the type: anything else draws a warning on
        // every install and is ignored, so it bounds nothing.
        match (node["type"].as_str(), node["format"].as_str()) {
            (_, None) | (Some("integer"), Some("int32" | "int64")) => {}
            (Some("number"), Some("double" | "float")) => {}
            (t, Some(f)) => panic!("{path}: format {f:?} on type {t:?}"),
        }
        if node["type"] == "integer" {
            integers += 1;
            let (min, max) = (node["minimum"].as_f64(), node["maximum"].as_f64());
            assert!(
                min.is_some() && max.is_some(),
                "{path}: bounds {min:?}..{max:?}"
            );
            let limit = if node["format"] == "int32" {
                f64::from(i32::MAX)
            } else {
                2f64.powi(53)
            };
            assert!(
                max.unwrap() <= limit,
                "{path}: maximum {max:?} beyond its format"
            );
        }
    }
    assert!(integers >= 29, "only {integers} integer fields found");
}

#[test]
fn ports_and_replica_counts_have_their_real_bounds() {
    let nodes = schema_nodes(&meridian_k8s::crds_yaml().unwrap());
    let bounds = |path: &str| {
        let node = &nodes
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("no {path}"))
            .1;
        (
            node["minimum"].as_f64().unwrap(),
            node["maximum"].as_f64().unwrap(),
        )
    };
    let max_replicas = f64::from(meridian_k8s::crd::MAX_REPLICAS);
    for (path, want) in [
        ("MeridianCluster.spec.ingressDiscovery.port", (1.0, 65535.0)),
        (
            "MeridianCluster.spec.capacity.maxReplicas",
            (1.0, max_replicas),
        ),
        (
            "MeridianCluster.spec.nodeScaling.maxMachines",
            (1.0, 5000.0),
        ),
        (
            "MeridianApp.spec.placement.totalReplicas",
            (0.0, max_replicas),
        ),
        (
            "MeridianApp.spec.placement.bounds[].minReplicas",
            (0.0, max_replicas),
        ),
        ("MeridianApp.spec.scaling.maxReplicas", (0.0, max_replicas)),
        (
            "MeridianApp.spec.scaling.schedules[].minReplicas",
            (0.0, max_replicas),
        ),
        ("MeridianApp.spec.probe.expectStatus[]", (100.0, 599.0)),
        ("MeridianApp.spec.targets[].weight", (0.0, 10000.0)),
        (
            "MeridianCluster.status.inventory.workloads[].readyReplicas",
            (0.0, f64::from(i32::MAX)),
        ),
    ] {
        assert_eq!(bounds(path), want, "{path}");
    }
}
