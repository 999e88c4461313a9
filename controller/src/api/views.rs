//! What the API answers with and takes: the status views (clusters, apps, targets with
//! their verdicts and traffic), change requests and their outcomes.

use std::sync::Arc;

use axum::http::StatusCode;
use meridian_routing::{Health, RoutingTable};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiResult};
use crate::compute::{Scope, target_key};
use crate::store::AuditEntry;
use crate::verdict::Vote;
use crate::{Shared, now_ms};

pub(crate) fn current_table(shared: &Shared) -> ApiResult<Arc<RoutingTable>> {
    shared
        .publisher
        .current()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no table computed yet"))
}

/// A cluster with its drain state.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterView {
    /// Name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Provider.
    pub provider: String,
    /// Ingress endpoints.
    pub endpoints: Vec<String>,
    /// When a drain of the whole cluster began, if one is active.
    pub drain_started_at_ms: Option<u64>,
}

/// A target's verdict.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerdictView {
    /// Whether the verdict lets it serve.
    pub healthy: bool,
    /// False until a quorum of vantages that probed it decided: unknown is not up.
    #[serde(default)]
    pub known: bool,
    /// When it last changed (0: never).
    pub changed_at_ms: u64,
    /// A recovery held down until then, by flap damping.
    pub held_until_ms: Option<u64>,
    /// Every vantage's latest vote.
    pub votes: Vec<Vote>,
}

/// A target with live health, weights and verdict.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TargetView {
    /// The cluster.
    pub cluster: String,
    /// Tier.
    pub tier: u8,
    /// The configured weight.
    pub configured_weight: u32,
    /// The operator's weight, when set.
    pub weight_override: Option<u32>,
    /// The weight in the table.
    pub weight: u32,
    /// The weight selection uses (1/1000 units, after health).
    pub effective_weight: u32,
    /// Health in the table, such as `healthy`, `draining`, `slow-start`.
    pub health: String,
    /// Progress of a drain or slow start, 0 to 1.
    pub progress: Option<f64>,
    /// During a drain or slow start, the percentage of its weight the target gets now (a
    /// slow start begins at a floor, so this is not the progress).
    pub weight_percent: Option<f64>,
    /// When an active drain of this target (or its cluster) began.
    pub drain_started_at_ms: Option<u64>,
    /// The verdict and its votes.
    pub verdict: VerdictView,
    /// Live traffic from the proxies' reports; absent when no proxy reports any.
    pub traffic: Option<crate::traffic::TrafficView>,
}

/// An app with its targets.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AppView {
    /// Name.
    pub name: String,
    /// Hostnames.
    pub hostnames: Vec<String>,
    /// Policy.
    pub policy: String,
    /// `fail-open` or `fail-closed`.
    pub failure_mode: String,
    /// Targets.
    pub targets: Vec<TargetView>,
}

/// The whole picture.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusView {
    /// The published table's version.
    pub table_version: u64,
    /// When it was computed.
    pub generated_at_ms: u64,
    /// Clusters.
    pub clusters: Vec<ClusterView>,
    /// Apps.
    pub apps: Vec<AppView>,
}

pub(crate) fn status_view(shared: &Shared) -> ApiResult<StatusView> {
    let table = current_table(shared)?;
    let st = shared.state();
    let clusters = table
        .clusters()
        .iter()
        .map(|c| ClusterView {
            name: c.name.clone(),
            region: c.region.clone(),
            provider: c.provider.clone(),
            endpoints: c.endpoints.iter().map(ToString::to_string).collect(),
            drain_started_at_ms: st
                .overrides
                .drains
                .get(
                    &Scope::Cluster {
                        cluster: c.name.clone(),
                    }
                    .key(),
                )
                .copied(),
        })
        .collect();
    let now = now_ms();
    // Rates older than a few report intervals describe traffic that has stopped.
    let inputs = shared.inputs();
    let traffic_max_age_ms = (inputs.report_interval.as_millis() as u64 * 3).max(3_000);
    let apps = table
        .apps()
        .iter()
        .map(|app| (app, inputs.config.apps.iter().find(|a| a.name == app.name)))
        .map(|(app, cfg)| AppView {
            name: app.name.clone(),
            hostnames: app.hostnames.clone(),
            policy: app.policy.name().into(),
            failure_mode: match app.failure_mode {
                meridian_routing::FailureMode::FailOpen => "fail-open".into(),
                meridian_routing::FailureMode::FailClosed => "fail-closed".into(),
            },
            targets: app
                .targets
                .iter()
                .map(|t| {
                    // The table may be a moment older than a config just swapped in.
                    let configured_weight = cfg
                        .and_then(|c| c.targets.iter().find(|tc| tc.cluster == t.cluster))
                        .map_or(t.weight, |tc| tc.weight);
                    let verdict = st.verdicts.verdict(&app.name, &t.cluster);
                    let drains = [
                        Scope::Target {
                            app: app.name.clone(),
                            cluster: t.cluster.clone(),
                        }
                        .key(),
                        Scope::Cluster {
                            cluster: t.cluster.clone(),
                        }
                        .key(),
                    ];
                    TargetView {
                        cluster: t.cluster.clone(),
                        tier: t.tier,
                        configured_weight,
                        weight_override: st
                            .overrides
                            .weights
                            .get(&target_key(&app.name, &t.cluster))
                            .copied(),
                        weight: t.weight,
                        effective_weight: t.effective_weight(),
                        health: t.health.name().into(),
                        progress: match t.health {
                            Health::Draining { progress } | Health::SlowStart { progress } => {
                                Some(progress)
                            }
                            _ => None,
                        },
                        weight_percent: matches!(
                            t.health,
                            Health::Draining { .. } | Health::SlowStart { .. }
                        )
                        .then(|| t.health.weight_factor() * 100.0),
                        drain_started_at_ms: drains
                            .iter()
                            .filter_map(|k| st.overrides.drains.get(k).copied())
                            .min(),
                        traffic: st
                            .traffic
                            .target(&app.name, &t.cluster, now, traffic_max_age_ms),
                        verdict: VerdictView {
                            healthy: verdict.is_some_and(|v| v.healthy),
                            known: verdict.is_some_and(|v| v.known),
                            changed_at_ms: verdict.map_or(0, |v| v.changed_at_ms),
                            held_until_ms: verdict.and_then(|v| v.held_until_ms),
                            votes: st.verdicts.votes(&app.name, &t.cluster),
                        },
                    }
                })
                .collect(),
        })
        .collect();
    Ok(StatusView {
        table_version: table.version(),
        generated_at_ms: table.data().generated_at_ms,
        clusters,
        apps,
    })
}

/// Body of a weight change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightRequest {
    /// The new weight, 0 to 10000.
    pub weight: u32,
}

/// The outcome of a change.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChangeResponse {
    /// The audit entry that records it.
    pub audit: AuditEntry,
    /// The table version that carries it.
    pub table_version: u64,
}

/// Accepted observations of a report.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReportResponse {
    /// Observations recorded.
    pub accepted: usize,
}
