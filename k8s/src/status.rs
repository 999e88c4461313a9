//! Status with conditions, as the Kubernetes API conventions define them: a condition's
//! `lastTransitionTime` moves only when its status changes, and `observedGeneration` says
//! which spec the status describes.

use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::crd::Condition;

/// The field manager Meridian writes with (server-side apply and patches).
pub const FIELD_MANAGER: &str = "meridian-controller";

/// A condition for `generation`, stamped `now` (RFC 3339).
pub fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: i64,
    now: &str,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message: message.into(),
        last_transition_time: now.to_string(),
        observed_generation: generation,
    }
}

/// Sets `new` in `conditions`, keeping the old transition time when the status is unchanged.
/// Returns true when anything changed.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            let changed = *old != new;
            *old = new;
            changed
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// Writes `status` to the resource's status subresource (a merge patch, so fields other
/// writers own are kept).
pub async fn write_status<K, S>(api: &Api<K>, name: &str, status: &S) -> Result<(), Error>
where
    K: kube::Resource + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch = serde_json::json!({ "status": status });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
    .map_err(|source| Error::Kube {
        action: format!("writing the status of {name}"),
        source,
    })
}

/// Now, as Kubernetes writes times.
pub fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut conditions = Vec::new();
        assert!(set_condition(
            &mut conditions,
            condition("Reachable", true, "Connected", "ok", 1, "t1")
        ));
        assert!(!set_condition(
            &mut conditions,
            condition("Reachable", true, "Connected", "ok", 1, "t2")
        ));
        assert_eq!(conditions[0].last_transition_time, "t1");
        // Same status, new generation: the condition changes, the transition time does not.
        assert!(set_condition(
            &mut conditions,
            condition("Reachable", true, "Connected", "ok", 2, "t3")
        ));
        assert_eq!(
            (
                conditions[0].observed_generation,
                conditions[0].last_transition_time.as_str()
            ),
            (2, "t1")
        );
        assert!(set_condition(
            &mut conditions,
            condition("Reachable", false, "Unreachable", "refused", 2, "t4")
        ));
        assert_eq!(
            (
                conditions[0].status.as_str(),
                conditions[0].last_transition_time.as_str()
            ),
            ("False", "t4")
        );
        assert_eq!(conditions.len(), 1);
    }
}
