//! Meridian's Kubernetes side, used only by the controller: the custom resources generated
//! from Rust types, and (as it grows) member-cluster clients, ingress discovery, inventory and
//! leader election.
//!
//! What it must not do: be a dependency of the proxy, the DNS server or the routing crate.
//! The data plane reads routing tables; it never talks to Kubernetes.

pub mod convert;
pub mod crd;
pub mod status;

use kube::CustomResourceExt;

/// The CustomResourceDefinitions of every Meridian resource, as one multi-document YAML text:
/// what `meridian crds` prints and `deploy/crds/meridian.dev.yaml` holds.
pub fn crds_yaml() -> Result<String, serde_norway::Error> {
    let mut out = String::new();
    for crd in [crd::MeridianCluster::crd(), crd::MeridianApp::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&crd)?);
    }
    Ok(out)
}
/// The error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to a Kubernetes API server failed.
    #[error("{action}: {source}")]
    Kube {
        /// What Meridian was doing.
        action: String,
        /// The client's error.
        source: kube::Error,
    },
}
