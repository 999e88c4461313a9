//! Apps and their targets: what is served, from which clusters, by which policy.

use serde::{Deserialize, Serialize};

use crate::health::Health;

/// The largest weight a target may be given. Weights are relative within an app.
pub const MAX_WEIGHT: u32 = 10_000;

/// The most targets one app may have: selection tracks tried targets in a 64-bit set.
pub const MAX_TARGETS_PER_APP: usize = 64;

/// How an app's traffic is steered among its serving targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// In proportion to the targets' weights.
    #[default]
    Weighted,
    /// The lowest tier with a serving target, weighted within that tier.
    Failover,
    /// The clusters preferred for the client's region, else the nearest serving cluster.
    Geo,
    /// The serving cluster with the lowest measured round-trip time from the client's region.
    Latency,
}

impl Policy {
    /// The policy's name as written in config and on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Weighted => "weighted",
            Policy::Failover => "failover",
            Policy::Geo => "geo",
            Policy::Latency => "latency",
        }
    }
}

/// What happens when no target of an app is serving. Always explicit in config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureMode {
    /// Use every target as if healthy: a probe outage must not take the app down.
    FailOpen,
    /// Give no target: DNS gives its fixed answer, the proxy answers 503.
    FailClosed,
}

/// One app in one cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// The cluster, by name.
    pub cluster: String,
    /// Relative weight, 0 to [`MAX_WEIGHT`]; 0 takes the target out of weighted picks.
    pub weight: u32,
    /// Failover tier, 0 for primary; lower tiers are used first by the `failover` policy.
    #[serde(default)]
    pub tier: u8,
    /// Current health, as the controller last computed it.
    #[serde(default)]
    pub health: Health,
}

impl Target {
    /// The weight selection uses: the configured weight scaled by the health's factor,
    /// in 1/1000 steps so a ramp moves smoothly even for small weights.
    pub fn effective_weight(&self) -> u32 {
        (f64::from(self.weight) * 1000.0 * self.health.weight_factor()).round() as u32
    }
}

/// For the `geo` policy: the clusters that serve clients of one region first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoPreference {
    /// The clients' region.
    pub region: String,
    /// Clusters (each a target of the app) that serve that region, weighted among themselves.
    pub clusters: Vec<String>,
}

/// An application served under one or more hostnames by several clusters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    /// Unique app name.
    pub name: String,
    /// Lower-case hostnames, exact (`shop.example.com`) or wildcard (`*.shop.example.com`).
    pub hostnames: Vec<String>,
    /// How traffic is steered.
    #[serde(default)]
    pub policy: Policy,
    /// What happens when no target is serving.
    pub failure_mode: FailureMode,
    /// TTL of DNS answers for the app's hostnames, in seconds.
    pub dns_ttl: u32,
    /// Per-region preferences of the `geo` policy. Always written: the binary wire format
    /// is not self-describing, so no field may be left out.
    #[serde(default)]
    pub geo_preferences: Vec<GeoPreference>,
    /// The app in each of its clusters.
    pub targets: Vec<Target>,
}
