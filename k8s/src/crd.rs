//! The custom resources, generated from these types (`meridian crds` prints them).
//!
//! `MeridianCluster` and `MeridianApp` live in the controller's namespace on the hub cluster.
//! Field names follow Kubernetes conventions (camelCase); everything is checked again by the
//! same rules as the config file when the controller turns resources into a config.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of Meridian's resources.
pub const GROUP: &str = "meridian.dev";

/// Most replicas any replica count may name: Kubernetes documents 150 000 pods per cluster at
/// most, so a larger count is a typo (and a Deployment's int32 holds it either way).
pub const MAX_REPLICAS: u32 = 1_000_000;
/// Most machines of a MachineDeployment: Kubernetes documents 5 000 nodes per cluster at most.
pub const MAX_MACHINES: u32 = 5_000;
/// Most allocatable CPU of one machine, millicores (10 000 cores).
pub const MAX_CPU_MILLIS_PER_MACHINE: u64 = 10_000_000;
/// Most allocatable memory of one machine, bytes (1 PiB).
pub const MAX_MEMORY_BYTES_PER_MACHINE: u64 = 1 << 50;
/// The bound of counters the controller writes into status (bytes, millicores, generations):
/// the largest integer a JSON number carries exactly (2^53 - 1).
pub const MAX_STATUS_INTEGER: i64 = (1 << 53) - 1;

/// A point on the earth, in degrees.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct GeoLocation {
    /// Latitude, -90 to 90.
    pub lat: f64,
    /// Longitude, -180 to 180.
    pub lon: f64,
}

/// Where a cluster's ingress endpoints are discovered from, in that member cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngressDiscovery {
    /// `Service` (type LoadBalancer), `Ingress` or `Gateway` (gateway.networking.k8s.io).
    pub kind: DiscoveryKind,
    /// Namespace of the object.
    pub namespace: String,
    /// Name of the object.
    pub name: String,
    /// Port of the endpoints, 1 to 65535 (default: the Service's first port, else 80).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
}

/// Kinds of objects whose status names a cluster's ingress addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DiscoveryKind {
    /// `status.loadBalancer.ingress` of a Service of type LoadBalancer.
    Service,
    /// `status.loadBalancer.ingress` of an Ingress.
    Ingress,
    /// `status.addresses` of a Gateway.
    Gateway,
}

/// A key of a Secret in the controller's namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key within the Secret (default `kubeconfig`).
    #[serde(default = "default_kubeconfig_key")]
    pub key: String,
}

fn default_kubeconfig_key() -> String {
    "kubeconfig".into()
}

/// What a cluster can carry and what it costs, for placement.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapacityHints {
    /// Most replicas of one app the cluster should run, at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_REPLICAS))]
    pub max_replicas: Option<u32>,
    /// Cost of one replica for an hour, in any currency used consistently across clusters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_replica_hour: Option<f64>,
}

/// A member cluster: where it is, how it is reached and what it can carry.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "meridian.dev",
    version = "v1alpha1",
    kind = "MeridianCluster",
    plural = "meridianclusters",
    shortname = "mcl",
    namespaced,
    status = "ClusterStatus",
    printcolumn = r#"{"name":"Region","type":"string","jsonPath":".spec.region"}"#,
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider"}"#,
    printcolumn = r#"{"name":"Reachable","type":"string","jsonPath":".status.conditions[?(@.type==\"Reachable\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterSpec {
    /// The region the cluster is in (a region of the controller's config).
    pub region: String,
    /// `aws`, `gcp`, `azure`, `onprem`, …
    pub provider: String,
    /// Where it is; defaults to its region's location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<GeoLocation>,
    /// Ingress endpoints, `address:port`; with `ingressDiscovery`, discovered ones are added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Discover ingress endpoints from an object's status in the member cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_discovery: Option<IngressDiscovery>,
    /// The Secret holding the member cluster's kubeconfig.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig_secret_ref: Option<SecretKeyRef>,
    /// Capacity and cost hints for placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<CapacityHints>,
    /// Node scaling through a Cluster API MachineDeployment in the member cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_scaling: Option<NodeScalingSpec>,
}

/// Node scaling of a member cluster: the replicas of a Cluster API MachineDeployment there,
/// raised when pods stay unschedulable and lowered after a cool-down when utilisation allows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeScalingSpec {
    /// The MachineDeployment (cluster.x-k8s.io), by namespace and name.
    pub machine_deployment: WorkloadRef,
    /// Fewest machines.
    #[serde(default)]
    #[schemars(range(max = MAX_MACHINES))]
    pub min_machines: u32,
    /// Most machines, at least 1.
    #[schemars(range(min = 1, max = MAX_MACHINES))]
    pub max_machines: u32,
    /// Allocatable CPU of one machine, millicores.
    #[schemars(range(min = 1, max = MAX_CPU_MILLIS_PER_MACHINE))]
    pub cpu_millis_per_machine: u64,
    /// Allocatable memory of one machine, bytes.
    #[schemars(range(min = 1, max = MAX_MEMORY_BYTES_PER_MACHINE))]
    pub memory_bytes_per_machine: u64,
    /// Time after a scale before scaling down, such as `10m` (default 10m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cool_down: Option<String>,
    /// Scale down only while utilisation on one machine fewer stays below this, 0 to 1
    /// (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_utilisation: Option<f64>,
}

/// A condition, as Kubernetes API conventions define it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Reachable`, `Accepted`, …
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// When the status last changed (RFC 3339).
    pub last_transition_time: String,
    /// The generation the condition was computed for.
    #[schemars(range(min = 0, max = MAX_STATUS_INTEGER))]
    pub observed_generation: i64,
}

/// What the controller knows of a member cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    /// Conditions: `Reachable`, `EndpointsDiscovered`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The generation last acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_STATUS_INTEGER))]
    pub observed_generation: Option<i64>,
    /// Endpoints found by ingress discovery.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub discovered_endpoints: Vec<String>,
    /// The member cluster's inventory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<Inventory>,
}

/// One member cluster seen through its API server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// Kubernetes version, such as `v1.20.2`.
    pub kubernetes_version: String,
    /// The vendor the nodes name: the scheme of their `spec.providerID` (`aws`, `gce`,
    /// `azure`, …), several joined by `+`; none when no node names one (bare metal, most
    /// on-premises clusters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_provider: Option<String>,
    /// Nodes, and how many are Ready.
    pub nodes: u32,
    /// Ready nodes.
    pub nodes_ready: u32,
    /// Allocatable CPU over all nodes, millicores.
    pub allocatable_cpu_millis: u64,
    /// Allocatable memory over all nodes, bytes.
    pub allocatable_memory_bytes: u64,
    /// CPU requested by pods, millicores.
    pub requested_cpu_millis: u64,
    /// Memory requested by pods, bytes.
    pub requested_memory_bytes: u64,
    /// Pods the scheduler could not place: phase Pending with condition PodScheduled=False,
    /// reason Unschedulable. Their requests are part of the requested totals above too.
    #[serde(default)]
    pub unschedulable_pods: u32,
    /// CPU requested by the unschedulable pods, millicores.
    #[serde(default)]
    pub unschedulable_cpu_millis: u64,
    /// Memory requested by the unschedulable pods, bytes.
    #[serde(default)]
    pub unschedulable_memory_bytes: u64,
    /// Each app's workload there.
    #[serde(default)]
    pub workloads: Vec<WorkloadInventory>,
}

/// An app's workload in one member cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadInventory {
    /// The app.
    pub app: String,
    /// Desired replicas (`spec.replicas`).
    #[schemars(range(min = 0))]
    pub desired_replicas: i32,
    /// Ready replicas (`status.readyReplicas`).
    #[schemars(range(min = 0))]
    pub ready_replicas: i32,
}

/// How an app's traffic is steered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PolicySpec {
    /// By weight.
    #[default]
    Weighted,
    /// Ordered tiers.
    Failover,
    /// Client region, then distance.
    Geo,
    /// Measured round-trip time.
    Latency,
}

/// What happens when no target is serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FailureModeSpec {
    /// Use every target.
    FailOpen,
    /// Give no target.
    FailClosed,
}

/// One app in one cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TargetSpec {
    /// The MeridianCluster's name.
    pub cluster: String,
    /// Relative weight, 0 to 10000 (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 10_000))]
    pub weight: Option<u32>,
    /// Failover tier, 0 = primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<u8>,
}

/// The health check of an app's targets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// `http`, `https` or `tcp`.
    pub kind: String,
    /// HTTP path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Host header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Healthy status codes, 100 to 599.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(range(min = 100, max = 599)))]
    pub expect_status: Vec<u16>,
    /// Interval, such as `1s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Timeout, such as `500ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Successes to turn healthy, 1 to 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub rise: Option<u32>,
    /// Failures to turn unhealthy, 1 to 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub fall: Option<u32>,
}

/// The workload an app runs as in each member cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// The Deployment, by namespace and name, in every member cluster.
    pub workload: WorkloadRef,
    /// Total replicas across clusters, divided by the strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_REPLICAS))]
    pub total_replicas: Option<u32>,
    /// `weight`, `capacity` or `cost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Only clusters with all these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cluster_selector: BTreeMap<String, String>,
    /// Per-cluster floors and ceilings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bounds: Vec<ClusterBounds>,
    /// For `cost`: clusters kept non-zero for resilience (default 2 when two are eligible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub spread: Option<u32>,
    /// How long traffic waits for new replicas to become ready before it moves as far as
    /// the ready ones carry, such as `5m` (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_timeout: Option<String>,
}

/// A Deployment, by namespace and name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkloadRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// Replica bounds in one cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterBounds {
    /// The cluster.
    pub cluster: String,
    /// Fewest replicas there.
    #[serde(default)]
    #[schemars(range(max = MAX_REPLICAS))]
    pub min_replicas: u32,
    /// Most replicas there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_REPLICAS))]
    pub max_replicas: Option<u32>,
}

/// Traffic-driven scaling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingSpec {
    /// Requests per second one replica should carry.
    pub target_requests_per_second_per_replica: f64,
    /// Fewest replicas in all.
    #[serde(default)]
    #[schemars(range(max = MAX_REPLICAS))]
    pub min_replicas: u32,
    /// Most replicas in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_REPLICAS))]
    pub max_replicas: Option<u32>,
    /// How long a lower replica count must persist before scaling down, such as `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down_stabilization: Option<String>,
    /// How fast replicas may be added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up_limit: Option<ScaleUpLimitSpec>,
    /// Replica floors during recurring windows, such as a sale at 09:00.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleSpec>,
}

/// The scale-up rate limit: at most `factor` times or `step` more replicas per period,
/// whichever allows more.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleUpLimitSpec {
    /// Growth factor per period, such as 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// Replicas added per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = MAX_REPLICAS))]
    pub step: Option<u32>,
    /// The period, such as `1m` (default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
}

/// A replica floor while a recurring window is open.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// When each window opens: a cron expression in UTC, such as `0 9 * * *`.
    pub cron: String,
    /// How long each window lasts, such as `2h`.
    pub duration: String,
    /// Fewest replicas in all while the window is open.
    #[schemars(range(max = MAX_REPLICAS))]
    pub min_replicas: u32,
}

/// An app served from several clusters.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "meridian.dev",
    version = "v1alpha1",
    kind = "MeridianApp",
    plural = "meridianapps",
    shortname = "mapp",
    namespaced,
    status = "AppStatus",
    printcolumn = r#"{"name":"Hostnames","type":"string","jsonPath":".spec.hostnames"}"#,
    printcolumn = r#"{"name":"Policy","type":"string","jsonPath":".spec.policy"}"#,
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AppSpec {
    /// Hostnames, exact or `*.` wildcard.
    pub hostnames: Vec<String>,
    /// Steering policy (default `weighted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicySpec>,
    /// `fail-open` or `fail-closed`: required, so the choice is never an accident.
    pub failure_mode: FailureModeSpec,
    /// TTL of DNS answers, seconds (default 30); at most 2^31 - 1 (RFC 2181).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 2_147_483_647))]
    pub dns_ttl: Option<u32>,
    /// Health check; a TCP connect when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeSpec>,
    /// How long a drain ramps a target's weight down, such as `30s` (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_period: Option<String>,
    /// How long a recovered target ramps back up, such as `30s` (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_start: Option<String>,
    /// The app in each of its clusters.
    pub targets: Vec<TargetSpec>,
    /// Where its replicas run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementSpec>,
    /// How its replicas follow traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingSpec>,
}

/// What the controller did with an app.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    /// Conditions: `Accepted` (the spec passed validation), `Ready`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The generation last acted upon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = MAX_STATUS_INTEGER))]
    pub observed_generation: Option<i64>,
}
