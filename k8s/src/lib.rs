//! Meridian's Kubernetes side, used only by the controller: the custom resources generated
//! from Rust types, and (as it grows) member-cluster clients, ingress discovery, inventory,
//! leader election, and replicas written through scale subresources.
//!
//! What it must not do: be a dependency of the proxy, the DNS server or the routing crate.
//! The data plane reads routing tables; it never talks to Kubernetes.

pub mod convert;
pub mod crd;
pub mod discovery;
pub mod inventory;
pub mod lease;
pub mod member;
pub mod quantity;
pub mod scale;
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
    /// Leader-election options that cannot work, such as a renew deadline not shorter than
    /// the lease duration.
    #[error("leader election options: {0}")]
    LeaseOptions(String),
    /// A resource quantity (`250m`, `1Gi`, …) that does not parse.
    #[error("bad quantity {text:?}: {reason}")]
    Quantity {
        /// The text as given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A field of an object read from a member cluster is unusable.
    #[error("{object} {field}: {source}")]
    Field {
        /// The object, such as `Pod shop/web-1`.
        object: String,
        /// The field, such as `spec.containers[0].resources.requests.cpu`.
        field: String,
        /// What is wrong with it.
        source: Box<Error>,
    },
    /// A scale subresource (Deployment, MachineDeployment) that could not be read or written.
    #[error("{action} {object}: {message}")]
    Scale {
        /// What Meridian was doing, such as `reading the scale of`.
        action: String,
        /// The object, such as `MachineDeployment capi/workers`.
        object: String,
        /// The HTTP status when the API server answered with an error, such as 404 or 409.
        code: Option<u16>,
        /// What went wrong.
        message: String,
    },
}
