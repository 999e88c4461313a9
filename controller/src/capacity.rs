//! Capacity-first failover in Kubernetes mode: the loop that moves replicas with traffic.
//!
//! For each app with a `placement` naming its workload, on every reconcile of the leader:
//! which clusters serve (a failed verdict: failed; drained by an operator, or its member's
//! API server lost: being evacuated), how many replicas it wants (the scaler on the
//! proxies' request rates, or the placement's total) and where (`meridian_capacity::place`),
//! then one `meridian_capacity::transition::step`: scale-ups written at once through the
//! Deployments' scale subresource, traffic held on an evacuated cluster (a drain gate) until
//! the replicas taking it are ready, released in full then — or as far as ready replicas
//! carry once the readiness timeout has passed — and scale-downs last. Clusters with node
//! scaling get their MachineDeployment sized to their unschedulable pods.
//!
//! Every decision comes from the capacity crate, the same code the planner runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use kube::Client;
use meridian_capacity::nodes::{NodePool, NodeState, Resources, wanted_machines};
use meridian_capacity::scaler::{ScaleUpLimit, ScalerConfig, ScalerHistory, ScheduledFloor};
use meridian_capacity::{
    ClusterInput, PlacementRequest, Serving, TransitionCluster, TransitionInput, TransitionStatus,
    place, step,
};
use meridian_config::capacity::{PlacementConfig, ScalingConfig};
use meridian_config::schema::AppConfig;
use meridian_config::{ClusterConfig, Config};
use meridian_k8s::inventory::fetch_unschedulable;
use meridian_k8s::member::{MemberView, Members, Reachability};
use meridian_k8s::scale::{ScaleTarget, get_scale, set_replicas};
use meridian_routing::RoutingTable;
use serde::Serialize;
use tracing::{info, warn};

use crate::Shared;
use crate::compute::{DrainGate, DrainGates, Overrides};
use crate::verdict::Change;

/// What the loop decided for one app, served at `/api/v1/capacity`.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AppCapacity {
    /// The app.
    pub app: String,
    /// Where the transition stands.
    #[schema(value_type = Object)]
    pub status: TransitionStatus,
    /// Per cluster: serving state, replicas desired, ready and wanted, weight published.
    pub clusters: Vec<ClusterCapacity>,
    /// Why the scaler wants what it wants (traffic-driven apps).
    pub scaler: Option<String>,
}

/// One cluster of an app, as the loop sees it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ClusterCapacity {
    /// The cluster.
    pub cluster: String,
    /// `healthy`, `draining` (evacuated) or `failed`.
    #[schema(value_type = String)]
    pub serving: Serving,
    /// Replicas written.
    pub desired_replicas: u32,
    /// Replicas ready.
    pub ready_replicas: u32,
    /// Replicas the placement wants there.
    pub wanted_replicas: u32,
    /// The weight the step allows now.
    pub weight: u32,
}

/// What one app's decision asks of the world.
#[derive(Debug, Default)]
pub(crate) struct AppDecision {
    /// Replica counts to write, (cluster, replicas), scale-ups before scale-downs.
    pub(crate) writes: Vec<(String, u32)>,
    /// Drain gates of its evacuated clusters.
    pub(crate) gates: DrainGates,
    /// What to report.
    pub(crate) report: Option<AppCapacity>,
}

/// Memory of one app's transition between reconciles.
#[derive(Debug, Default)]
struct AppMemory {
    /// What the transition aims at: (cluster, serving, wanted replicas). A new aim restarts
    /// the readiness timeout.
    aim: Vec<(String, Serving, u32)>,
    started_ms: u64,
    /// When traffic was first allowed to leave its evacuated clusters.
    released_ms: Option<u64>,
    /// How far an evacuation may go once capacity was found short, per cluster.
    short_caps: BTreeMap<String, f64>,
    scaler: ScalerHistory,
}

/// The loop's state; the leader runs it after every reconcile.
#[derive(Debug, Default)]
pub(crate) struct CapacityLoop {
    apps: BTreeMap<String, AppMemory>,
    /// When each cluster's machines were last changed.
    machines_changed_ms: BTreeMap<String, u64>,
}

/// How a target serves: a failed verdict has already moved its traffic; a drain or a lost
/// control plane means its replicas and traffic are moved elsewhere, capacity first. A
/// target no vantage has probed yet (unknown, published as not up) is no evidence of a
/// failure: its replicas stay where the placement puts them, so a start never evacuates.
/// `failed` holds the targets a quorum judged unhealthy, read from the verdicts themselves
/// (the published table can lag them by a compute, and cannot tell unknown from failed).
pub(crate) fn serving(
    app: &str,
    cluster: &str,
    overrides: &Overrides,
    view: Option<&MemberView>,
    failed: &BTreeSet<(String, String)>,
) -> Serving {
    if failed.contains(&(app.to_string(), cluster.to_string())) {
        return Serving::Failed;
    }
    let drained = overrides.drains.contains_key(&format!("cluster:{cluster}"))
        || overrides
            .drains
            .contains_key(&format!("target:{app}/{cluster}"));
    let lost = matches!(
        view.map(|v| &v.reachability),
        Some(Reachability::Unreachable { .. })
    );
    if drained || lost {
        Serving::Draining
    } else {
        Serving::Healthy
    }
}

/// The scaler the config describes.
pub(crate) fn scaler_config(
    scaling: &ScalingConfig,
) -> Result<ScalerConfig, meridian_capacity::CapacityError> {
    let mut config = ScalerConfig::new(scaling.target_rps_per_replica);
    config.min_replicas = scaling.min_replicas;
    config.max_replicas = scaling.max_replicas;
    config.scale_down_window_ms = scaling.scale_down_stabilization.as_millis() as u64;
    config.scale_up = scaling.scale_up_limit.as_ref().map(|l| ScaleUpLimit {
        factor: l.factor,
        step: l.step,
        period_ms: l.period.as_millis() as u64,
    });
    config.schedules = scaling
        .schedules
        .iter()
        .map(|s| ScheduledFloor::new(&s.cron, s.duration.as_millis() as u64, s.min_replicas))
        .collect::<Result<_, _>>()?;
    Ok(config)
}

/// The placement request for `total` replicas of `app` over its target clusters.
pub(crate) fn placement_request(
    config: &Config,
    app: &AppConfig,
    placement: &PlacementConfig,
    total: u32,
    weight_of: impl Fn(&str) -> u32,
    serving_of: impl Fn(&str) -> Serving,
) -> PlacementRequest {
    let cluster =
        |name: &str| -> Option<&ClusterConfig> { config.clusters.iter().find(|c| c.name == name) };
    PlacementRequest {
        total,
        strategy: placement.strategy.into(),
        selector: placement.cluster_selector.clone(),
        spread: placement.spread,
        clusters: app
            .targets
            .iter()
            .map(|t| {
                let c = cluster(&t.cluster);
                let capacity = c.and_then(|c| c.capacity.as_ref());
                let bounds = placement.bounds.iter().find(|b| b.cluster == t.cluster);
                ClusterInput {
                    name: t.cluster.clone(),
                    labels: c.map(|c| c.labels.clone()).unwrap_or_default(),
                    serving: serving_of(&t.cluster),
                    weight: weight_of(&t.cluster),
                    capacity: capacity.and_then(|c| c.max_replicas),
                    cost_per_replica_hour: capacity.and_then(|c| c.cost_per_replica_hour),
                    min_replicas: bounds.map_or(0, |b| b.min_replicas),
                    max_replicas: bounds.and_then(|b| b.max_replicas),
                }
            })
            .collect(),
    }
}

/// Everything one app's decision reads.
pub(crate) struct AppInputs<'a> {
    pub(crate) config: &'a Config,
    pub(crate) app: &'a AppConfig,
    pub(crate) table: Option<&'a RoutingTable>,
    pub(crate) overrides: &'a Overrides,
    pub(crate) views: &'a BTreeMap<String, MemberView>,
    /// Targets (app, cluster) a quorum judged unhealthy (not the unknown ones).
    pub(crate) failed: &'a BTreeSet<(String, String)>,
    /// The app's request rate, requests/s.
    pub(crate) total_rps: f64,
    pub(crate) now_ms: u64,
}

impl CapacityLoop {
    /// Decides for one app (pure but for this loop's memory). `None` when the app has no
    /// placement.
    pub(crate) fn decide(
        &mut self,
        inputs: &AppInputs<'_>,
    ) -> Result<Option<AppDecision>, meridian_capacity::CapacityError> {
        let app = inputs.app;
        let Some(placement) = &app.placement else {
            return Ok(None);
        };
        let memory = self.apps.entry(app.name.clone()).or_default();
        let table_app = inputs
            .table
            .and_then(|t| t.apps().iter().find(|a| a.name == app.name));
        let published = |cluster: &str| {
            table_app
                .and_then(|a| a.targets.iter().find(|t| t.cluster == cluster))
                .map(|t| {
                    (
                        t.weight,
                        (f64::from(t.effective_weight()) / 1000.0).round() as u32,
                    )
                })
        };
        let weight_of = |cluster: &str| {
            published(cluster).map_or_else(
                || {
                    app.targets
                        .iter()
                        .find(|t| t.cluster == cluster)
                        .map_or(0, |t| t.weight)
                },
                |(w, _)| w,
            )
        };
        let serving_of = |cluster: &str| {
            serving(
                &app.name,
                cluster,
                inputs.overrides,
                inputs.views.get(cluster),
                inputs.failed,
            )
        };
        let replicas = |cluster: &str| {
            inputs
                .views
                .get(cluster)
                .and_then(|v| v.inventory.as_ref())
                .and_then(|i| i.workloads.iter().find(|w| w.app == app.name))
                .map_or((0, 0), |w| {
                    (
                        u32::try_from(w.desired_replicas).unwrap_or(0),
                        u32::try_from(w.ready_replicas).unwrap_or(0),
                    )
                })
        };
        let current_total: u32 = app.targets.iter().map(|t| replicas(&t.cluster).0).sum();
        let (total, scaler) = match &app.scaling {
            Some(scaling) => {
                let decision = scaler_config(scaling)?.desired(
                    &mut memory.scaler,
                    current_total,
                    inputs.total_rps,
                    inputs.now_ms,
                )?;
                (decision.replicas, Some(decision.reason))
            }
            None => (placement.total_replicas.unwrap_or(current_total), None),
        };
        let request =
            placement_request(inputs.config, app, placement, total, weight_of, serving_of);
        let wanted = place(&request)?;
        let rps_per_replica = app.scaling.as_ref().map(|s| s.target_rps_per_replica);
        let clusters: Vec<TransitionCluster> = request
            .clusters
            .iter()
            .map(|c| {
                let (desired, ready) = replicas(&c.name);
                TransitionCluster {
                    name: c.name.clone(),
                    serving: c.serving,
                    min_replicas: c.min_replicas,
                    current_weight: published(&c.name).map_or(c.weight, |(_, now)| now),
                    wanted_weight: if c.serving == Serving::Healthy {
                        c.weight
                    } else {
                        0
                    },
                    desired_replicas: desired,
                    ready_replicas: ready,
                    wanted_replicas: wanted.replicas.get(&c.name).copied().unwrap_or(0),
                    rps_per_replica,
                }
            })
            .collect();
        let aim: Vec<(String, Serving, u32)> = clusters
            .iter()
            .map(|c| (c.name.clone(), c.serving, c.wanted_replicas))
            .collect();
        if aim != memory.aim {
            memory.aim = aim;
            memory.started_ms = inputs.now_ms;
            memory.released_ms = None;
            memory.short_caps.clear();
        }
        let result = step(&TransitionInput {
            clusters: clusters.clone(),
            total_rps: inputs.total_rps,
            started_ms: memory.started_ms,
            readiness_timeout_ms: placement.readiness_timeout.as_millis() as u64,
            now_ms: inputs.now_ms,
        })?;
        let mut decision = AppDecision::default();
        let lost = |cluster: &str| {
            matches!(
                inputs.views.get(cluster).map(|v| &v.reachability),
                Some(Reachability::Unreachable { .. }) | None
            )
        };
        for action in result.scale_ups.iter().chain(&result.scale_downs) {
            // A cluster whose API server is gone cannot be written; its replicas are
            // replaced elsewhere instead.
            if !lost(&action.cluster) {
                decision.writes.push((action.cluster.clone(), action.to));
            }
        }
        let evacuated = clusters.iter().filter(|c| c.serving == Serving::Draining);
        for c in evacuated {
            // Once released, traffic keeps leaving: the release is one-way within an aim.
            let gate = match &result.status {
                TransitionStatus::WaitingForCapacity { .. } if memory.released_ms.is_none() => {
                    DrainGate::Hold
                }
                status => {
                    let since_ms = *memory.released_ms.get_or_insert(inputs.now_ms);
                    let max_progress = match status {
                        TransitionStatus::CapacityShort { .. } => *memory
                            .short_caps
                            .entry(c.name.clone())
                            .or_insert_with(|| released_share(&clusters, &result.weights, c)),
                        _ => 1.0,
                    };
                    DrainGate::Release {
                        since_ms,
                        max_progress,
                    }
                }
            };
            decision
                .gates
                .insert((app.name.clone(), c.name.clone()), gate);
        }
        decision.report = Some(AppCapacity {
            app: app.name.clone(),
            status: result.status,
            clusters: clusters
                .iter()
                .map(|c| ClusterCapacity {
                    cluster: c.name.clone(),
                    serving: c.serving,
                    desired_replicas: c.desired_replicas,
                    ready_replicas: c.ready_replicas,
                    wanted_replicas: c.wanted_replicas,
                    weight: result.weights.get(&c.name).copied().unwrap_or(0),
                })
                .collect(),
            scaler,
        });
        Ok(Some(decision))
    }

    /// Runs the loop once: decides for every app with a placement, writes replicas, sets the
    /// drain gates, sizes node pools, and records what changed.
    pub(crate) async fn run(
        &mut self,
        shared: &Arc<Shared>,
        members: &Members,
        views: &BTreeMap<String, MemberView>,
    ) {
        let inputs = shared.inputs();
        let config = &inputs.config;
        let table = shared.publisher.current();
        let now_ms = crate::now_ms();
        let mut rates: BTreeMap<String, f64> = BTreeMap::new();
        if let Some(table) = &table {
            for ((app, _), rps) in shared.traffic_rates(table, now_ms) {
                *rates.entry(app).or_default() += rps;
            }
        }
        let (overrides, failed) = {
            let state = shared.state();
            let failed: BTreeSet<(String, String)> = state
                .verdicts
                .iter()
                .filter(|(_, _, v)| v.known && !v.healthy)
                .map(|(app, cluster, _)| (app.to_string(), cluster.to_string()))
                .collect();
            (state.overrides.clone(), failed)
        };
        let mut gates = DrainGates::new();
        let mut reports = Vec::new();
        for app in &config.apps {
            let decided = self.decide(&AppInputs {
                config,
                app,
                table: table.as_deref(),
                overrides: &overrides,
                views,
                failed: &failed,
                total_rps: rates.get(&app.name).copied().unwrap_or(0.0),
                now_ms,
            });
            let decision = match decided {
                Ok(Some(d)) => d,
                Ok(None) => continue,
                Err(err) => {
                    warn!(app = %app.name, error = %err, "cannot decide the app's capacity");
                    continue;
                }
            };
            let workload = app.placement.as_ref().and_then(|p| p.workload.as_ref());
            if let Some(workload) = workload {
                for (cluster, replicas) in &decision.writes {
                    let target = ScaleTarget::Deployment {
                        namespace: workload.namespace.clone(),
                        name: workload.name.clone(),
                    };
                    let write =
                        write_replicas(members.client(cluster), cluster, &target, *replicas);
                    if crate::leadership::fenced(shared, "replicas", write)
                        .await
                        .is_none()
                    {
                        return;
                    }
                }
            }
            gates.extend(decision.gates);
            if let Some(report) = decision.report {
                self.record(shared, &report, now_ms);
                reports.push(report);
            }
        }
        self.apps
            .retain(|name, _| config.apps.iter().any(|a| a.name == *name));
        let changed = {
            let mut st = shared.state();
            let changed = st.drain_gates != gates;
            st.drain_gates = gates;
            changed
        };
        if changed {
            shared.wake();
        }
        *shared.capacity.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(reports);
        for cluster in &config.clusters {
            self.size_nodes(shared, members, views, cluster, now_ms)
                .await;
        }
    }

    /// Metrics, and a history entry when an app's transition changes state.
    fn record(&self, shared: &Shared, report: &AppCapacity, now_ms: u64) {
        let metrics = &shared.metrics;
        let missing = match &report.status {
            TransitionStatus::CapacityShort { missing_rps, .. } => *missing_rps,
            _ => 0.0,
        };
        metrics
            .capacity_missing_rps
            .with_label_values(&[report.app.as_str()])
            .set(missing);
        for c in &report.clusters {
            metrics
                .capacity_wanted_replicas
                .with_label_values(&[report.app.as_str(), c.cluster.as_str()])
                .set(i64::from(c.wanted_replicas));
        }
        let before = shared
            .capacity
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|r| r.app == report.app)
            .map(|r| std::mem::discriminant(&r.status));
        if before == Some(std::mem::discriminant(&report.status)) {
            return;
        }
        let (healthy, cause) = match &report.status {
            TransitionStatus::Converged => (
                true,
                "capacity: converged, traffic on ready replicas".to_string(),
            ),
            TransitionStatus::WaitingForCapacity {
                cluster,
                ready,
                wanted,
            } => (
                true,
                format!(
                    "capacity: traffic held until {cluster} has {wanted} ready replicas ({ready} now)"
                ),
            ),
            TransitionStatus::CapacityShort {
                missing_rps,
                reason,
            } => (
                false,
                format!("capacity short by {missing_rps:.1} req/s: {reason}"),
            ),
        };
        if before.is_none() && matches!(report.status, TransitionStatus::Converged) {
            return;
        }
        info!(app = %report.app, %cause, "capacity");
        let change = Change {
            app: report.app.clone(),
            cluster: crate::store::MEMBER_EVENT_APP.into(),
            healthy,
            at_ms: now_ms,
            cause,
            votes: Vec::new(),
        };
        if let Err(err) = shared.store.append_history(&[change]) {
            warn!(error = %err, "could not record the capacity change in the history");
        }
    }

    /// Sizes a cluster's MachineDeployment to its unschedulable pods, within bounds.
    async fn size_nodes(
        &mut self,
        shared: &Shared,
        members: &Members,
        views: &BTreeMap<String, MemberView>,
        cluster: &ClusterConfig,
        now_ms: u64,
    ) {
        let Some(scaling) = cluster
            .capacity
            .as_ref()
            .and_then(|c| c.node_scaling.as_ref())
        else {
            return;
        };
        let (Some(client), Some(inventory)) = (
            members.client(&cluster.name),
            views.get(&cluster.name).and_then(|v| v.inventory.as_ref()),
        ) else {
            tracing::debug!(cluster = %cluster.name, "node scaling waits for the member's client and inventory");
            return;
        };
        let target = ScaleTarget::MachineDeployment {
            namespace: scaling.machine_deployment.namespace.clone(),
            name: scaling.machine_deployment.name.clone(),
        };
        let (machines, provisioned) = match get_scale(&client, &target).await {
            Ok(scale) => (scale.desired, scale.current),
            Err(err) => {
                warn!(cluster = %cluster.name, error = %err, "cannot read the machines");
                return;
            }
        };
        let pool = NodePool {
            per_machine: Resources::new(
                scaling.cpu_millis_per_machine,
                scaling.memory_bytes_per_machine,
            ),
            min_machines: scaling.min_machines,
            max_machines: scaling.max_machines,
            cool_down_ms: scaling.cool_down.as_millis() as u64,
            scale_down_utilisation: scaling.scale_down_utilisation,
        };
        // Pod by pod: one too big for any machine is set aside, not sized for.
        let unschedulable = if inventory.unschedulable_pods > 0 {
            match fetch_unschedulable(&client).await {
                Ok(pods) => pods
                    .iter()
                    .map(|p| Resources::new(p.cpu_millis, p.memory_bytes))
                    .collect(),
                Err(err) => {
                    warn!(cluster = %cluster.name, error = %err, "cannot list the unschedulable pods");
                    return;
                }
            }
        } else {
            Vec::new()
        };
        let state = NodeState {
            machines,
            unschedulable,
            // What runs on the machines: the inventory's requests count pending pods too.
            requested: Resources::new(
                inventory
                    .requested_cpu_millis
                    .saturating_sub(inventory.unschedulable_cpu_millis),
                inventory
                    .requested_memory_bytes
                    .saturating_sub(inventory.unschedulable_memory_bytes),
            ),
            last_scale_ms: self.machines_changed_ms.get(&cluster.name).copied(),
            now_ms,
        };
        let decision = match wanted_machines(&pool, &state) {
            Ok(d) => d,
            Err(err) => {
                warn!(cluster = %cluster.name, error = %err, "cannot size the machines");
                return;
            }
        };
        if decision.machines == machines {
            return;
        }
        if decision.machines > machines && provisioned < machines {
            // Machines asked for are still joining: the pending pods may fit on them, so
            // no more are added until they are there (one step at a time, not a stampede).
            tracing::debug!(cluster = %cluster.name, machines, provisioned, "machines still joining");
            return;
        }
        info!(cluster = %cluster.name, from = machines, to = decision.machines, reason = %decision.reason, "node scaling");
        let write = set_replicas(&client, &target, decision.machines);
        let Some(written) = crate::leadership::fenced(shared, "machines", write).await else {
            return;
        };
        match written {
            Ok(()) => {
                self.machines_changed_ms
                    .insert(cluster.name.clone(), now_ms);
                let change = Change {
                    app: crate::store::MEMBER_EVENT_APP.into(),
                    cluster: cluster.name.clone(),
                    healthy: true,
                    at_ms: now_ms,
                    cause: format!(
                        "node scaling: {machines} → {} machines ({})",
                        decision.machines, decision.reason
                    ),
                    votes: Vec::new(),
                };
                if let Err(err) = shared.store.append_history(&[change]) {
                    warn!(error = %err, "could not record node scaling in the history");
                }
            }
            Err(err) => warn!(cluster = %cluster.name, error = %err, "cannot scale the machines"),
        }
    }
}

/// How much of an evacuated cluster's traffic the published weights already take away,
/// 0.0 to 1.0: the drain may go that far and no further while capacity is short.
fn released_share(
    clusters: &[TransitionCluster],
    published: &BTreeMap<String, u32>,
    cluster: &TransitionCluster,
) -> f64 {
    let share = |w: u32, total: u32| {
        if total == 0 {
            0.0
        } else {
            f64::from(w) / f64::from(total)
        }
    };
    let now = share(
        cluster.current_weight,
        clusters.iter().map(|c| c.current_weight).sum(),
    );
    if now <= 0.0 {
        return 1.0;
    }
    let after = share(
        published.get(&cluster.name).copied().unwrap_or(0),
        published.values().sum(),
    );
    (1.0 - after / now).clamp(0.0, 1.0)
}

async fn write_replicas(
    client: Option<Client>,
    cluster: &str,
    target: &ScaleTarget,
    replicas: u32,
) {
    let Some(client) = client else {
        warn!(%cluster, "no client for the member cluster; replicas not written");
        return;
    };
    match set_replicas(&client, target, replicas).await {
        Ok(()) => info!(%cluster, replicas, workload = ?target, "replicas written"),
        Err(err) => warn!(%cluster, error = %err, "cannot write replicas"),
    }
}

#[cfg(test)]
mod tests {
    use meridian_k8s::crd::{Inventory, WorkloadInventory};

    use super::*;

    const CONFIG: &str = r#"
regions:
  - { name: eu, location: { lat: 50.0, lon: 8.0 } }
  - { name: us, location: { lat: 39.0, lon: -77.0 } }
clusters:
  - { name: a, region: eu, provider: aws, endpoints: ["127.0.0.1:1"], labels: { compliance: pci } }
  - { name: b, region: us, provider: gcp, endpoints: ["127.0.0.1:2"] }
apps:
  - name: shop
    hostnames: [shop.test]
    failure_mode: fail-open
    placement: { workload: { namespace: default, name: shop }, total_replicas: 4, readiness_timeout: 60s }
    targets: [{ cluster: a }, { cluster: b }]
  - name: ledger
    hostnames: [ledger.test]
    failure_mode: fail-open
    placement: { total_replicas: 3, cluster_selector: { compliance: pci } }
    targets: [{ cluster: a }, { cluster: b }]
"#;

    fn config() -> Config {
        meridian_config::parse(CONFIG, std::path::Path::new("test.yaml"))
            .unwrap()
            .config
    }

    #[test]
    fn only_a_judged_failure_is_a_failed_cluster() {
        let overrides = Overrides::default();
        let failed: BTreeSet<(String, String)> = [("shop".to_string(), "b".to_string())].into();
        let of = |cluster: &str| serving("shop", cluster, &overrides, None, &failed);
        assert_eq!(
            of("a"),
            Serving::Healthy,
            "unknown or healthy: replicas stay"
        );
        assert_eq!(of("b"), Serving::Failed);
        let lost = view("a", false, "shop", 2, 2);
        assert_eq!(
            serving("shop", "a", &overrides, Some(&lost), &failed),
            Serving::Draining
        );
    }

    fn view(cluster: &str, reachable: bool, app: &str, desired: i32, ready: i32) -> MemberView {
        MemberView {
            cluster: cluster.into(),
            reachability: if reachable {
                Reachability::Reachable {
                    version: "v1.20.2".into(),
                }
            } else {
                Reachability::Unreachable {
                    message: "connection refused".into(),
                    since_ms: 1,
                }
            },
            discovered: None,
            inventory: Some(Inventory {
                workloads: vec![WorkloadInventory {
                    app: app.into(),
                    desired_replicas: desired,
                    ready_replicas: ready,
                }],
                ..Inventory::default()
            }),
            observed_ms: 1,
        }
    }

    fn decide(
        memory: &mut CapacityLoop,
        config: &Config,
        app: usize,
        views: &[MemberView],
        now_ms: u64,
    ) -> AppDecision {
        let views: BTreeMap<String, MemberView> = views
            .iter()
            .map(|v| (v.cluster.clone(), v.clone()))
            .collect();
        memory
            .decide(&AppInputs {
                config,
                app: &config.apps[app],
                table: None,
                overrides: &Overrides::default(),
                views: &views,
                failed: &BTreeSet::new(),
                total_rps: 0.0,
                now_ms,
            })
            .unwrap()
            .unwrap()
    }

    fn gate(d: &AppDecision, app: &str, cluster: &str) -> Option<DrainGate> {
        d.gates
            .get(&(app.to_string(), cluster.to_string()))
            .copied()
    }

    #[test]
    fn a_lost_member_is_replaced_before_its_traffic_moves() {
        let config = config();
        let mut memory = CapacityLoop::default();
        let steady = decide(
            &mut memory,
            &config,
            0,
            &[view("a", true, "shop", 2, 2), view("b", true, "shop", 2, 2)],
            1_000,
        );
        assert!(steady.writes.is_empty() && steady.gates.is_empty());
        // B's API server is lost: A is raised to 4 first, B's traffic held.
        let lost = [
            view("a", true, "shop", 2, 2),
            view("b", false, "shop", 2, 2),
        ];
        let first = decide(&mut memory, &config, 0, &lost, 2_000);
        assert_eq!(
            first.writes,
            [("a".to_string(), 4)],
            "nothing is written to B"
        );
        assert_eq!(gate(&first, "shop", "b"), Some(DrainGate::Hold));
        // Written, not ready yet: still held, nothing new to write.
        let raised = [
            view("a", true, "shop", 4, 3),
            view("b", false, "shop", 2, 2),
        ];
        let waiting = decide(&mut memory, &config, 0, &raised, 3_000);
        assert!(waiting.writes.is_empty());
        assert_eq!(gate(&waiting, "shop", "b"), Some(DrainGate::Hold));
        // Ready: traffic may leave B from now on, all of it, and stays released.
        let ready = [
            view("a", true, "shop", 4, 4),
            view("b", false, "shop", 2, 2),
        ];
        let released = decide(&mut memory, &config, 0, &ready, 4_000);
        let go = DrainGate::Release {
            since_ms: 4_000,
            max_progress: 1.0,
        };
        assert_eq!(gate(&released, "shop", "b"), Some(go));
        let later = decide(&mut memory, &config, 0, &raised, 5_000);
        assert_eq!(gate(&later, "shop", "b"), Some(go), "a release is one-way");
    }

    #[test]
    fn capacity_short_after_the_timeout_releases_as_far_as_ready_replicas_carry() {
        let mut config = config();
        config.apps[0].scaling = Some(ScalingConfig {
            target_rps_per_replica: 10.0,
            min_replicas: 0,
            max_replicas: Some(4),
            scale_down_stabilization: std::time::Duration::from_secs(300),
            scale_up_limit: None,
            schedules: Vec::new(),
        });
        let mut memory = CapacityLoop::default();
        // A was raised to 4 but only 3 become ready (30 of the 40 req/s).
        let views: BTreeMap<String, MemberView> = [
            view("a", true, "shop", 4, 3),
            view("b", false, "shop", 2, 2),
        ]
        .into_iter()
        .map(|v| (v.cluster.clone(), v))
        .collect();
        let mut run = |now_ms| {
            memory
                .decide(&AppInputs {
                    config: &config,
                    app: &config.apps[0],
                    table: None,
                    overrides: &Overrides::default(),
                    views: &views,
                    failed: &BTreeSet::new(),
                    total_rps: 40.0,
                    now_ms,
                })
                .unwrap()
                .unwrap()
        };
        let before = run(1_000);
        assert_eq!(gate(&before, "shop", "b"), Some(DrainGate::Hold));
        // After the 60 s timeout, what A's ready replicas carry may move: 10 of B's
        // 20 req/s, half of it, and no more.
        let after = run(62_000);
        let Some(DrainGate::Release { max_progress, .. }) = gate(&after, "shop", "b") else {
            panic!("not released: {:?}", after.gates)
        };
        assert!((max_progress - 0.5).abs() < 0.01, "{max_progress}");
        assert!(matches!(
            after.report.unwrap().status,
            TransitionStatus::CapacityShort { .. }
        ));
    }

    #[test]
    fn a_private_app_is_placed_only_in_its_labelled_clusters() {
        let config = config();
        let mut memory = CapacityLoop::default();
        let d = decide(
            &mut memory,
            &config,
            1,
            &[
                view("a", true, "ledger", 0, 0),
                view("b", true, "ledger", 0, 0),
            ],
            1_000,
        );
        assert_eq!(d.writes, [("a".to_string(), 3)]);
        let report = d.report.unwrap();
        let b = report.clusters.iter().find(|c| c.cluster == "b").unwrap();
        assert_eq!(b.wanted_replicas, 0);
        // Even with its only cluster lost, it never moves to B.
        let d = decide(
            &mut memory,
            &config,
            1,
            &[
                view("a", false, "ledger", 3, 3),
                view("b", true, "ledger", 0, 0),
            ],
            2_000,
        );
        assert!(d.writes.iter().all(|(c, _)| c != "b"), "{:?}", d.writes);
    }
}
