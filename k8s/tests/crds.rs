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
