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

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

/// The CustomResourceDefinitions of every Meridian resource, as the API server gets them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = [crd::MeridianCluster::crd(), crd::MeridianApp::crd()];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                integer_formats(schema);
            }
        }
    }
    crds.into()
}

/// The CustomResourceDefinitions of every Meridian resource, as one multi-document YAML text:
/// what `meridian crds` prints and `deploy/crds/meridian.dev.yaml` holds.
pub fn crds_yaml() -> Result<String, serde_norway::Error> {
    let mut out = String::new();
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&crd)?);
    }
    Ok(out)
}

/// schemars gives Rust's unsigned integers the formats `uint8` … `uint64`, which the API server
/// does not know: it warns on every install and ignores them. Each becomes `int32` or `int64`,
/// whichever holds its maximum, and a field without an explicit maximum gets its type's
/// (`uint64`'s is capped at 2^53 - 1, what a JSON number carries exactly).
fn integer_formats(schema: &mut JSONSchemaProps) {
    let type_max = match schema.format.as_deref() {
        Some("uint8") => Some(f64::from(u8::MAX)),
        Some("uint16") => Some(f64::from(u16::MAX)),
        Some("uint32") => Some(f64::from(u32::MAX)),
        Some("uint64") => Some(crd::MAX_STATUS_INTEGER as f64),
        Some("int32") => Some(f64::from(i32::MAX)),
        Some("int64") => Some(crd::MAX_STATUS_INTEGER as f64),
        _ => None,
    };
    if let Some(type_max) = type_max {
        let max = schema.maximum.map_or(type_max, |m| m.min(type_max));
        schema.maximum = Some(max);
        schema.format = Some(
            if max <= f64::from(i32::MAX) {
                "int32"
            } else {
                "int64"
            }
            .into(),
        );
    }
    let children = schema
        .properties
        .iter_mut()
        .flat_map(|p| p.values_mut())
        .chain(schema.items.iter_mut().flat_map(|items| match items {
            JSONSchemaPropsOrArray::Schema(s) => std::slice::from_mut(s.as_mut()),
            JSONSchemaPropsOrArray::Schemas(s) => s.as_mut_slice(),
        }))
        .chain(
            schema
                .additional_properties
                .iter_mut()
                .filter_map(|a| match a {
                    JSONSchemaPropsOrBool::Schema(s) => Some(s.as_mut()),
                    JSONSchemaPropsOrBool::Bool(_) => None,
                }),
        )
        .chain(schema.any_of.iter_mut().flatten())
        .chain(schema.one_of.iter_mut().flatten())
        .chain(schema.all_of.iter_mut().flatten());
    for child in children {
        integer_formats(child);
    }
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
