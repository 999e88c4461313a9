//! Capacity: what a cluster can carry and costs, and where an app's replicas run and how they
//! follow traffic. The same fields as the Kubernetes resources (`meridian-k8s` converts them
//! here), so the planner and the capacity loop read one shape in either mode.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a cluster can carry and what it costs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterCapacity {
    /// Most replicas of one app the cluster should run.
    #[serde(default)]
    pub max_replicas: Option<u32>,
    /// Cost of one replica for an hour, in any currency used consistently.
    #[serde(default)]
    pub cost_per_replica_hour: Option<f64>,
    /// Node scaling through a Cluster API MachineDeployment.
    #[serde(default)]
    pub node_scaling: Option<NodeScalingConfig>,
}

/// An object in a member cluster, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Node scaling of one cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeScalingConfig {
    /// The MachineDeployment (cluster.x-k8s.io) whose replicas are the cluster's machines.
    pub machine_deployment: ObjectRef,
    /// Fewest machines.
    pub min_machines: u32,
    /// Most machines.
    pub max_machines: u32,
    /// Allocatable CPU of one machine, millicores.
    pub cpu_millis_per_machine: u64,
    /// Allocatable memory of one machine, bytes.
    pub memory_bytes_per_machine: u64,
    /// Wait after a change before removing a machine.
    #[serde(default = "default_cool_down", with = "humantime_serde")]
    pub cool_down: Duration,
    /// Remove a machine only while requests stay below this share of what remains.
    #[serde(default = "default_scale_down_utilisation")]
    pub scale_down_utilisation: f64,
}

fn default_cool_down() -> Duration {
    Duration::from_secs(600)
}

fn default_scale_down_utilisation() -> f64 {
    0.5
}

/// How an app's replicas are divided over its clusters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlacementStrategy {
    /// In proportion to the traffic weights.
    #[default]
    Weight,
    /// In proportion to free capacity.
    Capacity,
    /// Cheapest first, within the spread.
    Cost,
}

/// Where an app's replicas run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementConfig {
    /// The Deployment, by namespace and name, in every member cluster (Kubernetes mode).
    #[serde(default)]
    pub workload: Option<ObjectRef>,
    /// Total replicas across clusters (without `scaling`; with it, traffic decides). Unset
    /// and without scaling: the replicas running now are kept in total and divided again.
    #[serde(default)]
    pub total_replicas: Option<u32>,
    /// How replicas are divided.
    #[serde(default)]
    pub strategy: PlacementStrategy,
    /// Only clusters with all these labels (a regulated app stays in its labelled clusters).
    #[serde(default)]
    pub cluster_selector: BTreeMap<String, String>,
    /// Per-cluster floors and ceilings.
    #[serde(default)]
    pub bounds: Vec<ClusterBounds>,
    /// Clusters kept non-empty by the `cost` strategy, for resilience.
    #[serde(default)]
    pub spread: Option<u32>,
    /// How long traffic waits for new replicas to become ready before moving anyway (as much
    /// as the ready ones carry).
    #[serde(default = "default_readiness_timeout", with = "humantime_serde")]
    pub readiness_timeout: Duration,
}

fn default_readiness_timeout() -> Duration {
    Duration::from_secs(300)
}

/// Replica bounds in one cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterBounds {
    /// The cluster.
    pub cluster: String,
    /// Fewest replicas there.
    #[serde(default)]
    pub min_replicas: u32,
    /// Most replicas there.
    #[serde(default)]
    pub max_replicas: Option<u32>,
}

/// Traffic-driven scaling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingConfig {
    /// Requests per second one replica should carry.
    pub target_rps_per_replica: f64,
    /// Fewest replicas in all.
    #[serde(default)]
    pub min_replicas: u32,
    /// Most replicas in all.
    #[serde(default)]
    pub max_replicas: Option<u32>,
    /// How long a lower recommendation must persist before scaling down.
    #[serde(default = "default_stabilization", with = "humantime_serde")]
    pub scale_down_stabilization: Duration,
    /// How fast replicas may grow.
    #[serde(default)]
    pub scale_up_limit: Option<ScaleUpLimitConfig>,
    /// Scheduled floors, such as a sale starting at 09:00.
    #[serde(default)]
    pub schedules: Vec<ScheduleConfig>,
}

fn default_stabilization() -> Duration {
    Duration::from_secs(300)
}

/// At most ×factor or +step replicas per period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleUpLimitConfig {
    /// Growth factor per period.
    #[serde(default)]
    pub factor: Option<f64>,
    /// Replicas added per period.
    #[serde(default)]
    pub step: Option<u32>,
    /// The period.
    #[serde(default = "default_scale_up_period", with = "humantime_serde")]
    pub period: Duration,
}

fn default_scale_up_period() -> Duration {
    Duration::from_secs(60)
}

/// A floor of replicas during a cron window (UTC).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Cron expression of the window's start, such as `0 9 * * *`.
    pub cron: String,
    /// How long the window lasts.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// The floor during the window.
    pub min_replicas: u32,
}

impl From<PlacementStrategy> for meridian_capacity::Strategy {
    fn from(s: PlacementStrategy) -> Self {
        match s {
            PlacementStrategy::Weight => Self::Weight,
            PlacementStrategy::Capacity => Self::Capacity,
            PlacementStrategy::Cost => Self::Cost,
        }
    }
}
