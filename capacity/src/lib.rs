//! The capacity engine: how many replicas an app runs where, when traffic may move onto them,
//! and how many machines carry them.
//!
//! It owns the rules of capacity-first failover (issue 7) as pure functions: the controller and
//! the dry-run planner call the same code, so the plan and the action never disagree. Callers
//! pass in state and the current time as UTC milliseconds (`now_ms`); this crate answers with
//! decisions.
//!
//! What it must not do: any I/O (no sockets, files, clocks, threads or tokio), and know anything
//! of Kubernetes, HTTP or DNS. Writing replicas, reading readiness and publishing weights are the
//! controller's job.
//!
//! # Layout
//!
//! - [`placement`]: divide an app's replicas over its clusters (by weight, capacity or cost),
//!   within bounds and cluster selectors.
//! - [`transition`]: make-before-break: which scale-ups to write, which weights may be published
//!   now, and whether the app has converged, waits for capacity or is short of it.
//! - [`scaler`]: traffic-driven replicas per cluster, with a scale-down stabilization window, a
//!   scale-up rate limit and scheduled (cron) floors.
//! - [`nodes`]: machine count of a Cluster API MachineDeployment from unschedulable pods and
//!   utilisation.
//! - [`planner`]: "what if cluster X fails / is drained / a peak of N× arrives", composed from the
//!   modules above.

#![warn(missing_docs)]

mod error;
pub mod nodes;
pub mod placement;
pub mod planner;
pub mod scaler;
pub mod transition;

pub use error::CapacityError;
pub use placement::{ClusterInput, Placement, PlacementRequest, Serving, Strategy, place};
pub use planner::{Plan, PlanInput, Scenario, plan};
pub use transition::{
    ScaleAction, TransitionCluster, TransitionInput, TransitionStatus, TransitionStep, step,
};

/// Checks that a rate (requests/s, a factor, a threshold) is a finite number ≥ 0.
pub(crate) fn check_rate(what: impl Into<String>, value: f64) -> Result<f64, CapacityError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(CapacityError::BadNumber {
            what: what.into(),
            value,
        })
    }
}

/// Checks that a bound pair is ordered.
pub(crate) fn check_bounds(
    what: impl Into<String>,
    min: u32,
    max: Option<u32>,
) -> Result<(), CapacityError> {
    match max {
        Some(max) if min > max => Err(CapacityError::MinAboveMax {
            what: what.into(),
            min,
            max,
        }),
        _ => Ok(()),
    }
}
