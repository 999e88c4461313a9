//! Replicas read and written through the **scale subresource** (`autoscaling/v1` Scale), the
//! same for every kind that has one: apps/v1 Deployments (an app's workload) and Cluster API
//! MachineDeployments (a member cluster's nodes).
//!
//! Writing through `/scale` rather than patching the object touches only `spec.replicas`, needs
//! only the `<resource>/scale` permission, and works for any custom resource whose CRD declares
//! the subresource, without knowing its schema.
//!
//! What this module must not do: decide how many replicas to run (that is the capacity engine's
//! job) or retry (the controller's loop does, with its own pacing).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::Scale as ApiScale;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;

use crate::Error;
use crate::crd::WorkloadRef;
use crate::member::describe_kube_error;
use crate::status::FIELD_MANAGER;

/// The API group of Cluster API.
pub const CLUSTER_API_GROUP: &str = "cluster.x-k8s.io";
/// The Cluster API version MachineDeployments are read and written in: Cluster API has served
/// v1beta1 since its 1.0 release, and still serves it beside v1beta2 in the releases that added
/// v1beta2, so one version reaches every current management cluster. The scale subresource is
/// the same `autoscaling/v1` Scale in either.
pub const CLUSTER_API_VERSION: &str = "v1beta1";

/// An object with a scale subresource.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScaleTarget {
    /// An apps/v1 Deployment.
    Deployment {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// A Cluster API MachineDeployment (cluster.x-k8s.io/v1beta1).
    MachineDeployment {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
}

impl ScaleTarget {
    /// An app's Deployment, as a placement names it.
    pub fn deployment(workload: &WorkloadRef) -> ScaleTarget {
        ScaleTarget::Deployment {
            namespace: workload.namespace.clone(),
            name: workload.name.clone(),
        }
    }

    /// A node pool's MachineDeployment, as a cluster's node scaling names it.
    pub fn machine_deployment(pool: &WorkloadRef) -> ScaleTarget {
        ScaleTarget::MachineDeployment {
            namespace: pool.namespace.clone(),
            name: pool.name.clone(),
        }
    }

    /// The kind, such as `Deployment`.
    pub fn kind(&self) -> &'static str {
        match self {
            ScaleTarget::Deployment { .. } => "Deployment",
            ScaleTarget::MachineDeployment { .. } => "MachineDeployment",
        }
    }

    /// Namespace and name.
    pub fn namespace_and_name(&self) -> (&str, &str) {
        match self {
            ScaleTarget::Deployment { namespace, name }
            | ScaleTarget::MachineDeployment { namespace, name } => (namespace, name),
        }
    }

    fn resource(&self) -> ApiResource {
        match self {
            ScaleTarget::Deployment { .. } => ApiResource::erase::<Deployment>(&()),
            ScaleTarget::MachineDeployment { .. } => ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk(CLUSTER_API_GROUP, CLUSTER_API_VERSION, "MachineDeployment"),
                "machinedeployments",
            ),
        }
    }

    fn api(&self, client: &Client) -> Api<DynamicObject> {
        let (namespace, _) = self.namespace_and_name();
        Api::namespaced_with(client.clone(), namespace, &self.resource())
    }

    /// Checks the names before any request, so an empty one is named rather than turned into
    /// a request for the collection.
    fn check(&self, action: &str) -> Result<(), Error> {
        let (namespace, name) = self.namespace_and_name();
        let missing = match (namespace.is_empty(), name.is_empty()) {
            (true, _) => "namespace",
            (_, true) => "name",
            _ => return Ok(()),
        };
        Err(self.error(action, None, format!("the {missing} is empty")))
    }

    fn error(&self, action: &str, code: Option<u16>, message: String) -> Error {
        Error::Scale {
            action: action.to_string(),
            object: self.to_string(),
            code,
            message,
        }
    }

    /// The error of a failed request, with a 404 told apart: the object missing, or its kind
    /// not served at all (Cluster API not installed in that cluster).
    fn kube_error(&self, action: &str, error: kube::Error) -> Error {
        let code = match &error {
            kube::Error::Api(status) => Some(status.code),
            _ => None,
        };
        let message = match &error {
            kube::Error::Api(status) if status.code == 404 => {
                let names_the_object = status.details.as_ref().is_some_and(|d| !d.name.is_empty());
                if names_the_object {
                    "not found".to_string()
                } else {
                    let resource = self.resource();
                    let group = if resource.group.is_empty() {
                        String::new()
                    } else {
                        format!(".{}", resource.group)
                    };
                    format!(
                        "the API server does not serve {}{group}/{} (is the kind's CRD installed?)",
                        resource.plural, resource.version
                    )
                }
            }
            other => describe_kube_error(other),
        };
        self.error(action, code, message)
    }
}

impl std::fmt::Display for ScaleTarget {
    /// `Deployment shop/web`, `MachineDeployment capi/workers`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (namespace, name) = self.namespace_and_name();
        write!(f, "{} {namespace}/{name}", self.kind())
    }
}

/// What a scale subresource says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    /// The replicas asked for (`spec.replicas`).
    pub desired: u32,
    /// The replicas that exist (`status.replicas`): pods created for a Deployment, machines for
    /// a MachineDeployment. Not readiness: a Deployment's ready replicas are in the inventory.
    pub current: u32,
}

fn from_api(target: &ScaleTarget, action: &str, scale: &ApiScale) -> Result<Scale, Error> {
    let count = |value: i32, field: &str| {
        u32::try_from(value).map_err(|_| {
            target.error(
                action,
                None,
                format!("{field} is negative ({value}) in the server's reply"),
            )
        })
    };
    // A missing spec.replicas is how the server says 0 for a custom resource without the field.
    let desired = scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let current = scale.status.as_ref().map_or(0, |s| s.replicas);
    Ok(Scale {
        desired: count(desired, "spec.replicas")?,
        current: count(current, "status.replicas")?,
    })
}

/// Reads the scale subresource of `target`. Errors name the object.
pub async fn get_scale(client: &Client, target: &ScaleTarget) -> Result<Scale, Error> {
    const ACTION: &str = "reading the scale of";
    target.check(ACTION)?;
    let (_, name) = target.namespace_and_name();
    let scale = target
        .api(client)
        .get_scale(name)
        .await
        .map_err(|e| target.kube_error(ACTION, e))?;
    from_api(target, ACTION, &scale)
}

/// Sets `spec.replicas` of `target` through its scale subresource: a JSON merge patch written
/// by the field manager `meridian-controller`. Errors name the object.
pub async fn set_replicas(
    client: &Client,
    target: &ScaleTarget,
    replicas: u32,
) -> Result<(), Error> {
    let action = format!("writing {replicas} replicas to the scale of");
    target.check(&action)?;
    let replicas = i32::try_from(replicas).map_err(|_| {
        target.error(
            &action,
            None,
            format!(
                "{replicas} replicas is more than Kubernetes accepts ({})",
                i32::MAX
            ),
        )
    })?;
    let (_, name) = target.namespace_and_name();
    let patch = serde_json::json!({ "spec": { "replicas": replicas } });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    target
        .api(client)
        .patch_scale(name, &params, &Patch::Merge(&patch))
        .await
        .map_err(|e| target.kube_error(&action, e))?;
    tracing::info!(object = %target, replicas, "replicas written through the scale subresource");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_scale(value: serde_json::Value) -> ApiScale {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn reads_desired_and_current() {
        let target = ScaleTarget::MachineDeployment {
            namespace: "capi".into(),
            name: "workers".into(),
        };
        let scale = api_scale(serde_json::json!({
            "spec": { "replicas": 5 }, "status": { "replicas": 3 }
        }));
        assert_eq!(
            from_api(&target, "reading", &scale).unwrap(),
            Scale {
                desired: 5,
                current: 3
            }
        );
        let empty = api_scale(serde_json::json!({ "spec": {}, "status": { "replicas": 0 } }));
        assert_eq!(
            from_api(&target, "reading", &empty).unwrap(),
            Scale {
                desired: 0,
                current: 0
            }
        );
    }

    #[test]
    fn targets_from_the_resources_references() {
        let pool = WorkloadRef {
            namespace: "capi".into(),
            name: "workers".into(),
        };
        assert_eq!(
            ScaleTarget::machine_deployment(&pool).to_string(),
            "MachineDeployment capi/workers"
        );
        assert_eq!(
            ScaleTarget::deployment(&pool),
            ScaleTarget::Deployment {
                namespace: "capi".into(),
                name: "workers".into()
            }
        );
    }

    #[test]
    fn a_negative_count_names_object_and_field() {
        let target = ScaleTarget::Deployment {
            namespace: "shop".into(),
            name: "web".into(),
        };
        let scale = api_scale(serde_json::json!({
            "spec": { "replicas": 2 }, "status": { "replicas": -1 }
        }));
        assert_eq!(
            from_api(&target, "reading the scale of", &scale)
                .unwrap_err()
                .to_string(),
            "reading the scale of Deployment shop/web: status.replicas is negative (-1) in the server's reply"
        );
    }

    #[test]
    fn empty_names_are_refused_before_any_request() {
        let no_name = ScaleTarget::MachineDeployment {
            namespace: "capi".into(),
            name: String::new(),
        };
        assert_eq!(
            no_name
                .check("reading the scale of")
                .unwrap_err()
                .to_string(),
            "reading the scale of MachineDeployment capi/: the name is empty"
        );
        let no_namespace = ScaleTarget::Deployment {
            namespace: String::new(),
            name: "web".into(),
        };
        assert!(
            no_namespace
                .check("x")
                .unwrap_err()
                .to_string()
                .ends_with("the namespace is empty")
        );
    }
}
