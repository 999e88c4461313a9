//! The dry-run planner: "what if cluster X fails, is drained, or a peak of N× arrives".
//!
//! It is composed from the rules the controller acts by, and holds no rule of its own:
//!
//! 1. the weights after the scenario: [`transition::without_cluster`] for a failure or a drain
//!    (the cluster's traffic moves to the others in proportion to their weights);
//! 2. the traffic per cluster those weights send: [`transition::traffic_shares`];
//! 3. the replicas that traffic needs: [`scaler::replicas_for_rps`] per cluster, summed and held
//!    within the app's min and max, then divided by the app's placement ([`placement::place`])
//!    with the scenario's serving states;
//! 4. what the controller would publish once those replicas are ready: one
//!    [`transition::step`] from the current weights, with every placed replica ready — its
//!    weights, traffic and status (capacity short, and by how many requests/s);
//! 5. machines: [`nodes::machines_for`] of the placed replicas' requests per cluster;
//! 6. cost per hour before (current replicas) and after (placed replicas).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::nodes::{Resources, machines_for};
use crate::placement::{ClusterInput, PlacementRequest, Serving, Strategy, place};
use crate::scaler::{check_target, replicas_for_rps};
use crate::transition::{
    TransitionCluster, TransitionInput, TransitionStatus, step, traffic_shares, without_cluster,
};
use crate::{CapacityError, check_bounds, check_rate};

/// What to plan for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Scenario {
    /// Nothing changes: the plan for the current traffic.
    Now,
    /// The cluster fails.
    Fail {
        /// The cluster.
        cluster: String,
    },
    /// The cluster is drained.
    Drain {
        /// The cluster.
        cluster: String,
    },
    /// Every app's traffic grows by a factor.
    Peak {
        /// The factor, such as 3.0.
        factor: f64,
    },
}

/// A member cluster as the planner sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanCluster {
    /// Cluster name.
    pub name: String,
    /// Its labels (the MeridianCluster's metadata labels).
    pub labels: BTreeMap<String, String>,
    /// Serving state now.
    pub serving: Serving,
    /// Most replicas of one app it can carry; `None` = unknown.
    pub capacity: Option<u32>,
    /// Cost of one replica-hour; `None` = unknown (counted as 0 and listed).
    pub cost_per_replica_hour: Option<f64>,
    /// Its node pool, when node scaling is configured.
    pub nodes: Option<NodeSizing>,
}

/// A cluster's node pool.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeSizing {
    /// Allocatable resources of one machine.
    pub per_machine: Resources,
    /// Machines now.
    pub machines: u32,
    /// Most machines.
    pub max_machines: u32,
}

/// An app as the planner sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanApp {
    /// App name.
    pub name: String,
    /// Current weight per cluster (its targets).
    pub weights: BTreeMap<String, u32>,
    /// Its total request rate now, requests/s.
    pub total_rps: f64,
    /// Requests/s one replica carries; `None` when traffic does not size the app (no scaling
    /// spec): its replicas are then `total_replicas`, and they limit no traffic.
    pub target_rps_per_replica: Option<f64>,
    /// Replicas in all when traffic does not size the app (the placement's `totalReplicas`);
    /// ignored with a target. With neither, the app's replicas are unknown: it is planned for
    /// weights and traffic only.
    #[serde(default)]
    pub total_replicas: Option<u32>,
    /// Fewest replicas in all (the scaling spec's `minReplicas`).
    pub min_replicas: u32,
    /// Most replicas in all; `None` = no bound.
    pub max_replicas: Option<u32>,
    /// Placement strategy.
    pub strategy: Strategy,
    /// Cluster selector.
    pub selector: BTreeMap<String, String>,
    /// Spread for the cost strategy.
    pub spread: Option<u32>,
    /// Per-cluster `(min, max)` replicas.
    pub bounds: BTreeMap<String, (u32, Option<u32>)>,
    /// Replicas per cluster now.
    pub replicas: BTreeMap<String, u32>,
    /// Requests of one replica, for node sizing.
    pub per_replica: Resources,
}

/// The planner's input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanInput {
    /// The member clusters.
    pub clusters: Vec<PlanCluster>,
    /// The apps.
    pub apps: Vec<PlanApp>,
    /// What to plan for.
    pub scenario: Scenario,
}

/// The plan for one app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppPlan {
    /// App name.
    pub app: String,
    /// The weights now (the input's), to compare with `weights`.
    pub weights_before: BTreeMap<String, u32>,
    /// Requests/s each cluster receives now, at the current weights and traffic.
    pub traffic_rps_before: BTreeMap<String, f64>,
    /// Replicas per cluster now (the input's).
    pub replicas_before: BTreeMap<String, u32>,
    /// The weights the controller would publish once the placed replicas are ready.
    pub weights: BTreeMap<String, u32>,
    /// Requests/s each cluster would receive.
    pub traffic_rps: BTreeMap<String, f64>,
    /// Replicas per cluster.
    pub replicas: BTreeMap<String, u32>,
    /// Replicas the traffic needs that fit nowhere.
    pub replica_shortfall: u32,
    /// Requests/s no ready replica would carry.
    pub missing_rps: f64,
    /// The transition's status with every placed replica ready.
    pub status: TransitionStatus,
    /// Placement's reason per cluster.
    pub reasons: BTreeMap<String, String>,
    /// False when the app has neither a target of requests/s per replica nor a total of
    /// replicas: `replicas` is empty, and only weights and traffic are planned.
    pub replicas_known: bool,
}

/// Machines per cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePlan {
    /// Machines now.
    pub machines_now: u32,
    /// Machines the placed replicas need.
    pub machines_needed: u32,
    /// The pool's ceiling.
    pub max_machines: u32,
}

/// The answer to a what-if.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The scenario planned.
    pub scenario: Scenario,
    /// Per app.
    pub apps: Vec<AppPlan>,
    /// Per cluster with a node pool.
    pub nodes: BTreeMap<String, NodePlan>,
    /// Whether replicas, traffic and machines all fit.
    pub sufficient: bool,
    /// Cost per hour of the current replicas.
    pub cost_per_hour_before: f64,
    /// Cost per hour of the planned replicas.
    pub cost_per_hour_after: f64,
    /// Clusters whose cost is unknown (counted as 0).
    pub unknown_cost: Vec<String>,
    /// Per cluster, over every app whose replicas are known: replicas and cost per hour
    /// now and as planned.
    pub clusters: BTreeMap<String, ClusterPlan>,
}

/// One cluster's replicas and cost, now and as planned.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterPlan {
    /// Replicas now.
    pub replicas_before: u64,
    /// Replicas as planned.
    pub replicas_after: u64,
    /// Cost per hour now; `None` when the cluster's cost is unknown.
    pub cost_per_hour_before: Option<f64>,
    /// Cost per hour as planned; `None` when the cluster's cost is unknown.
    pub cost_per_hour_after: Option<f64>,
}

/// Plans a scenario (see the module doc).
pub fn plan(input: &PlanInput) -> Result<Plan, CapacityError> {
    let by_name: BTreeMap<&str, &PlanCluster> = input
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    if by_name.len() != input.clusters.len() {
        let mut seen = std::collections::BTreeSet::new();
        let dup = input
            .clusters
            .iter()
            .find(|c| !seen.insert(&c.name))
            .map(|c| c.name.clone());
        return Err(CapacityError::DuplicateCluster(dup.unwrap_or_default()));
    }
    let (changed, peak) = match &input.scenario {
        Scenario::Now => (None, 1.0),
        Scenario::Fail { cluster } => (Some((cluster.as_str(), Serving::Failed)), 1.0),
        Scenario::Drain { cluster } => (Some((cluster.as_str(), Serving::Draining)), 1.0),
        Scenario::Peak { factor } => (None, check_rate("peak factor", *factor)?),
    };
    if let Some((name, _)) = changed
        && !by_name.contains_key(name)
    {
        return Err(CapacityError::UnknownCluster(name.to_owned()));
    }
    let serving = |c: &PlanCluster| match changed {
        Some((name, s)) if name == c.name => s,
        _ => c.serving,
    };

    let mut apps = Vec::new();
    let mut demand: BTreeMap<String, Resources> = BTreeMap::new();
    let mut unknown_cost = std::collections::BTreeSet::new();
    let (mut before, mut after) = (0.0, 0.0);
    let mut per_cluster: BTreeMap<String, ClusterPlan> = BTreeMap::new();
    for app in &input.apps {
        let what = format!("app {:?}", app.name);
        if let Some(target) = app.target_rps_per_replica {
            check_target(&what, target)?;
        }
        check_rate(format!("{what} requests/s"), app.total_rps)?;
        check_bounds(what.clone(), app.min_replicas, app.max_replicas)?;
        for (cluster, (min, max)) in &app.bounds {
            check_bounds(format!("{what} cluster {cluster:?}"), *min, *max)?;
        }
        let mut clusters = Vec::new();
        for name in app.weights.keys() {
            let c = by_name
                .get(name.as_str())
                .ok_or_else(|| CapacityError::UnknownCluster(name.clone()))?;
            clusters.push(*c);
        }
        // 1–2: weights and traffic after the scenario.
        let mut wanted = app.weights.clone();
        for c in &clusters {
            if serving(c) != Serving::Healthy {
                wanted = without_cluster(&wanted, &c.name)?;
            }
        }
        let total = app.total_rps * peak;
        let shares = traffic_shares(&wanted, total);
        // 3: replicas for that traffic (or the fixed total), divided by the app's placement.
        let needed = match (app.target_rps_per_replica, app.total_replicas) {
            (Some(target), _) => {
                let mut needed: u64 = 0;
                for rps in shares.values() {
                    needed += u64::from(replicas_for_rps(*rps, target)?);
                }
                Some(u32::try_from(needed).unwrap_or(u32::MAX))
            }
            (None, fixed) => fixed,
        };
        let Some(needed) = needed else {
            apps.push(unsized_plan(app, &clusters, &serving, &wanted, total)?);
            continue;
        };
        let needed = needed.max(app.min_replicas);
        let needed = app.max_replicas.map_or(needed, |m| needed.min(m));
        let placement = place(&PlacementRequest {
            total: needed,
            strategy: app.strategy,
            selector: app.selector.clone(),
            spread: app.spread,
            clusters: clusters
                .iter()
                .map(|c| {
                    let (min, max) = app.bounds.get(&c.name).copied().unwrap_or((0, None));
                    ClusterInput {
                        name: c.name.clone(),
                        labels: c.labels.clone(),
                        serving: serving(c),
                        weight: wanted[&c.name],
                        capacity: c.capacity,
                        cost_per_replica_hour: c.cost_per_replica_hour,
                        min_replicas: min,
                        max_replicas: max,
                    }
                })
                .collect(),
        })?;
        // 4: what the controller publishes once every placed replica is ready.
        let s = step(&TransitionInput {
            clusters: clusters
                .iter()
                .map(|c| {
                    let placed = placement.replicas[&c.name];
                    // A draining cluster still runs its replicas while traffic is held there.
                    let running = match serving(c) {
                        Serving::Draining => app.replicas.get(&c.name).copied().unwrap_or(0),
                        _ => placed,
                    };
                    TransitionCluster {
                        name: c.name.clone(),
                        serving: serving(c),
                        min_replicas: 0,
                        current_weight: app.weights[&c.name],
                        wanted_weight: wanted[&c.name],
                        desired_replicas: running,
                        ready_replicas: running,
                        wanted_replicas: placed,
                        rps_per_replica: app.target_rps_per_replica,
                    }
                })
                .collect(),
            total_rps: total,
            started_ms: 0,
            readiness_timeout_ms: 0,
            now_ms: 0,
        })?;
        let missing_rps = match &s.status {
            TransitionStatus::CapacityShort { missing_rps, .. } => *missing_rps,
            _ => 0.0,
        };
        // The replicas the controller ends with: the placement, except that a scale-down the
        // transition holds back (traffic still held there) keeps the current count.
        let mut replicas = placement.replicas.clone();
        for c in &clusters {
            let now = app.replicas.get(&c.name).copied().unwrap_or(0);
            if serving(c) == Serving::Draining && s.traffic[&c.name] > 1e-6 {
                replicas.insert(c.name.clone(), now.max(replicas[&c.name]));
            }
        }
        // 5–6: machines and cost.
        for c in &clusters {
            let placed = u64::from(replicas[&c.name]);
            let d = demand.entry(c.name.clone()).or_default();
            d.cpu_millis += placed * app.per_replica.cpu_millis;
            d.memory_bytes += placed * app.per_replica.memory_bytes;
            let now = app.replicas.get(&c.name).copied().unwrap_or(0);
            let cluster = per_cluster.entry(c.name.clone()).or_default();
            cluster.replicas_before += u64::from(now);
            cluster.replicas_after += placed;
            match c.cost_per_replica_hour {
                Some(cost) => {
                    before += f64::from(now) * cost;
                    after += placed as f64 * cost;
                    cluster.cost_per_hour_before =
                        Some(cluster.cost_per_hour_before.unwrap_or(0.0) + f64::from(now) * cost);
                    cluster.cost_per_hour_after =
                        Some(cluster.cost_per_hour_after.unwrap_or(0.0) + placed as f64 * cost);
                }
                None => {
                    unknown_cost.insert(c.name.clone());
                }
            }
        }
        apps.push(AppPlan {
            app: app.name.clone(),
            weights_before: app.weights.clone(),
            traffic_rps_before: traffic_shares(&app.weights, app.total_rps),
            replicas_before: app.replicas.clone(),
            weights: s.weights,
            traffic_rps: s.traffic,
            replicas,
            replica_shortfall: placement.shortfall,
            missing_rps,
            status: s.status,
            reasons: placement.reasons,
            replicas_known: true,
        });
    }

    let mut nodes = BTreeMap::new();
    for c in &input.clusters {
        if let Some(pool) = &c.nodes {
            let d = demand.get(&c.name).copied().unwrap_or_default();
            nodes.insert(
                c.name.clone(),
                NodePlan {
                    machines_now: pool.machines,
                    machines_needed: machines_for(d, pool.per_machine)?,
                    max_machines: pool.max_machines,
                },
            );
        }
    }
    let sufficient = apps
        .iter()
        .all(|a| a.replica_shortfall == 0 && a.missing_rps <= 1e-6)
        && nodes.values().all(|n| n.machines_needed <= n.max_machines);
    Ok(Plan {
        scenario: input.scenario.clone(),
        apps,
        nodes,
        sufficient,
        cost_per_hour_before: before,
        cost_per_hour_after: after,
        unknown_cost: unknown_cost.into_iter().collect(),
        clusters: per_cluster,
    })
}

/// The plan of an app whose replicas are unknown: the weights the controller publishes (no
/// replica limits them) and the traffic they send.
fn unsized_plan(
    app: &PlanApp,
    clusters: &[&PlanCluster],
    serving: &dyn Fn(&PlanCluster) -> Serving,
    wanted: &BTreeMap<String, u32>,
    total: f64,
) -> Result<AppPlan, CapacityError> {
    let s = step(&TransitionInput {
        clusters: clusters
            .iter()
            .map(|c| TransitionCluster {
                name: c.name.clone(),
                serving: serving(c),
                min_replicas: 0,
                current_weight: app.weights[&c.name],
                wanted_weight: wanted[&c.name],
                desired_replicas: 0,
                ready_replicas: 0,
                wanted_replicas: 0,
                rps_per_replica: None,
            })
            .collect(),
        total_rps: total,
        started_ms: 0,
        readiness_timeout_ms: 0,
        now_ms: 0,
    })?;
    Ok(AppPlan {
        app: app.name.clone(),
        weights_before: app.weights.clone(),
        traffic_rps_before: traffic_shares(&app.weights, app.total_rps),
        replicas_before: app.replicas.clone(),
        weights: s.weights,
        traffic_rps: s.traffic,
        replicas: BTreeMap::new(),
        replica_shortfall: 0,
        missing_rps: 0.0,
        status: s.status,
        reasons: clusters
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    "replicas unknown: the app has no placement total or scaling target".to_owned(),
                )
            })
            .collect(),
        replicas_known: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1 << 30;

    /// Three clusters like the demo's, one app at 3000 req/s on 10 replicas each.
    fn input(scenario: Scenario) -> PlanInput {
        let cluster = |name: &str, cost: Option<f64>, capacity: Option<u32>| PlanCluster {
            name: name.into(),
            labels: BTreeMap::new(),
            serving: Serving::Healthy,
            capacity,
            cost_per_replica_hour: cost,
            nodes: Some(NodeSizing {
                per_machine: Resources::new(4000, 16 * GI),
                machines: 3,
                max_machines: 5,
            }),
        };
        let names = ["aws-eu", "gcp-us", "onprem"];
        PlanInput {
            clusters: vec![
                cluster("aws-eu", Some(0.05), Some(20)),
                cluster("gcp-us", Some(0.04), Some(12)),
                cluster("onprem", None, Some(20)),
            ],
            apps: vec![PlanApp {
                name: "shop".into(),
                weights: names.iter().map(|n| (n.to_string(), 100)).collect(),
                total_rps: 3000.0,
                target_rps_per_replica: Some(100.0),
                total_replicas: None,
                min_replicas: 3,
                max_replicas: None,
                strategy: Strategy::Weight,
                selector: BTreeMap::new(),
                spread: None,
                bounds: BTreeMap::new(),
                replicas: names.iter().map(|n| (n.to_string(), 10)).collect(),
                per_replica: Resources::new(1000, 2 * GI),
            }],
            scenario,
        }
    }

    #[test]
    fn now_is_the_steady_state() {
        let p = plan(&input(Scenario::Now)).unwrap();
        let a = &p.apps[0];
        assert_eq!(a.status, TransitionStatus::Converged);
        assert_eq!(
            a.replicas.values().copied().collect::<Vec<_>>(),
            vec![10, 10, 10]
        );
        assert_eq!(
            a.weights.values().copied().collect::<Vec<_>>(),
            vec![100, 100, 100]
        );
        assert!(p.sufficient);
        assert!((p.cost_per_hour_before - 0.9).abs() < 1e-9);
        assert!((p.cost_per_hour_after - 0.9).abs() < 1e-9);
        assert_eq!(p.unknown_cost, vec!["onprem".to_owned()]);
        // Per cluster: the same totals, and unknown cost stays unknown rather than 0.
        let known: f64 = p
            .clusters
            .values()
            .filter_map(|c| c.cost_per_hour_after)
            .sum();
        assert!((known - p.cost_per_hour_after).abs() < 1e-9);
        assert_eq!(p.clusters["onprem"].cost_per_hour_after, None);
        assert_eq!(p.clusters["onprem"].replicas_after, 10);
        assert_eq!(p.clusters["aws-eu"].replicas_before, 10);
        // 10 replicas of 1 core on 4-core machines: 3 machines.
        assert_eq!(p.nodes["aws-eu"].machines_needed, 3);
    }

    #[test]
    fn failure_within_capacity() {
        let mut i = input(Scenario::Fail {
            cluster: "aws-eu".into(),
        });
        i.clusters[1].capacity = Some(20);
        let p = plan(&i).unwrap();
        let a = &p.apps[0];
        assert_eq!(a.weights["aws-eu"], 0);
        assert_eq!(
            (
                a.replicas["gcp-us"],
                a.replicas["onprem"],
                a.replicas["aws-eu"]
            ),
            (15, 15, 0)
        );
        assert!((a.traffic_rps["gcp-us"] - 1500.0).abs() < 1e-6);
        assert_eq!(a.status, TransitionStatus::Converged);
        // 15 cores on 4-core machines: 4 machines, within the pool's 5.
        assert_eq!(p.nodes["gcp-us"].machines_needed, 4);
        assert!(p.sufficient);
        assert!(
            (p.cost_per_hour_after - 0.6).abs() < 1e-9,
            "{}",
            p.cost_per_hour_after
        );
    }

    #[test]
    fn failure_beyond_capacity_is_short_and_says_by_how_much() {
        let p = plan(&input(Scenario::Fail {
            cluster: "aws-eu".into(),
        }))
        .unwrap();
        let a = &p.apps[0];
        // gcp-us carries at most 12 replicas: 3 more go to onprem by placement, but traffic
        // follows weights, so gcp-us is 300 req/s short.
        assert_eq!((a.replicas["gcp-us"], a.replicas["onprem"]), (12, 18));
        assert_eq!(a.replica_shortfall, 0);
        assert!((a.missing_rps - 300.0).abs() < 1e-6, "{}", a.missing_rps);
        assert!(matches!(a.status, TransitionStatus::CapacityShort { .. }));
        assert!(!p.sufficient);
        // onprem needs 18 cores: 5 machines, at its ceiling.
        assert_eq!(p.nodes["onprem"].machines_needed, 5);
    }

    #[test]
    fn peak_and_drain() {
        // An app's max bounds the replicas, and the traffic beyond them is missing.
        let mut i = input(Scenario::Peak { factor: 2.0 });
        i.apps[0].max_replicas = Some(30);
        let p = plan(&i).unwrap();
        assert_eq!(p.apps[0].replicas.values().sum::<u32>(), 30);
        assert!(
            (p.apps[0].missing_rps - 3000.0).abs() < 1e-6,
            "{}",
            p.apps[0].missing_rps
        );
        // No traffic: the app's min still holds.
        let mut i = input(Scenario::Peak { factor: 0.0 });
        i.apps[0].strategy = Strategy::Cost;
        let p = plan(&i).unwrap();
        assert_eq!(p.apps[0].replicas.values().sum::<u32>(), 3);
        assert!(p.sufficient);
        let p = plan(&input(Scenario::Peak { factor: 2.0 })).unwrap();
        let a = &p.apps[0];
        assert_eq!(a.replicas["aws-eu"], 20);
        assert_eq!(a.replicas["gcp-us"], 12);
        assert_eq!(a.replica_shortfall, 8, "{a:?}");
        assert!(!p.sufficient);
        // gcp-us can take only 1200 of its 1500: placement puts its other 3 replicas on aws-eu,
        // but a drain holds traffic where it was, so onprem keeps 300 req/s and its replicas.
        let p = plan(&input(Scenario::Drain {
            cluster: "onprem".into(),
        }))
        .unwrap();
        let a = &p.apps[0];
        assert_eq!(
            (
                a.replicas["onprem"],
                a.replicas["gcp-us"],
                a.replicas["aws-eu"]
            ),
            (10, 12, 18)
        );
        assert!(
            (a.traffic_rps["onprem"] - 300.0).abs() < 1e-6,
            "{:?}",
            a.traffic_rps
        );
        assert!((a.missing_rps - 300.0).abs() < 1e-6);
        // With room on gcp-us, onprem is emptied.
        let mut i = input(Scenario::Drain {
            cluster: "onprem".into(),
        });
        i.clusters[1].capacity = Some(20);
        let p = plan(&i).unwrap();
        assert_eq!(p.apps[0].replicas["onprem"], 0);
        assert_eq!(p.apps[0].weights["onprem"], 0);
        assert!(p.sufficient);
    }

    #[test]
    fn a_private_app_stays_on_its_clusters() {
        let mut i = input(Scenario::Fail {
            cluster: "onprem".into(),
        });
        i.clusters[2].labels.insert("private".into(), "true".into());
        i.apps[0].selector.insert("private".into(), "true".into());
        let p = plan(&i).unwrap();
        let a = &p.apps[0];
        assert_eq!(
            (
                a.replicas["aws-eu"],
                a.replicas["gcp-us"],
                a.replicas["onprem"]
            ),
            (0, 0, 0)
        );
        assert_eq!(a.replica_shortfall, 30);
        assert!(!p.sufficient);
    }

    #[test]
    fn bad_input_is_named() {
        let e = plan(&input(Scenario::Fail {
            cluster: "nowhere".into(),
        }))
        .unwrap_err();
        assert_eq!(e, CapacityError::UnknownCluster("nowhere".into()));
        let e = plan(&input(Scenario::Peak { factor: -2.0 })).unwrap_err();
        assert_eq!(
            e.to_string(),
            "peak factor must be a finite number >= 0, got -2"
        );
        let mut i = input(Scenario::Now);
        i.apps[0].target_rps_per_replica = Some(0.0);
        assert!(
            plan(&i)
                .unwrap_err()
                .to_string()
                .starts_with("app \"shop\": target requests/s")
        );
        let mut i = input(Scenario::Now);
        i.apps[0].max_replicas = Some(2);
        assert_eq!(
            plan(&i).unwrap_err().to_string(),
            "app \"shop\": min replicas 3 is above max replicas 2"
        );
        let mut i = input(Scenario::Now);
        i.apps[0].bounds.insert("gcp-us".into(), (5, Some(1)));
        assert!(
            plan(&i)
                .unwrap_err()
                .to_string()
                .contains("cluster \"gcp-us\": min replicas 5")
        );
    }

    #[test]
    fn without_a_target_replicas_are_fixed_or_unknown() {
        // A fixed total: placed over the clusters left, limiting no traffic.
        let mut i = input(Scenario::Drain {
            cluster: "onprem".into(),
        });
        i.apps[0].target_rps_per_replica = None;
        i.apps[0].total_replicas = Some(12);
        i.apps[0].min_replicas = 0;
        let p = plan(&i).unwrap();
        let a = &p.apps[0];
        assert!(a.replicas_known);
        assert_eq!(a.weights_before["onprem"], 100);
        assert_eq!(a.replicas_before["onprem"], 10);
        assert!((a.traffic_rps_before["onprem"] - 1000.0).abs() < 1e-6);
        assert_eq!(
            (
                a.replicas["aws-eu"],
                a.replicas["gcp-us"],
                a.replicas["onprem"]
            ),
            (6, 6, 0)
        );
        assert_eq!(a.weights["onprem"], 0);
        assert!((a.traffic_rps["gcp-us"] - 1500.0).abs() < 1e-6);
        assert_eq!(a.status, TransitionStatus::Converged);
        assert!(p.sufficient);
        // Neither: weights and traffic only, and the plan says the replicas are unknown.
        i.apps[0].total_replicas = None;
        let p = plan(&i).unwrap();
        let a = &p.apps[0];
        assert!(!a.replicas_known);
        assert!(a.replicas.is_empty());
        assert_eq!(a.weights["onprem"], 0);
        assert_eq!(a.weights["aws-eu"], 100);
        assert!((a.traffic_rps["aws-eu"] - 1500.0).abs() < 1e-6);
        assert!(a.reasons["aws-eu"].starts_with("replicas unknown"));
        assert!((p.cost_per_hour_after - 0.0).abs() < 1e-9);
    }

    #[test]
    fn plan_serialises() {
        let mut i = input(Scenario::Drain {
            cluster: "onprem".into(),
        });
        i.clusters[1].capacity = Some(20);
        let p = plan(&i).unwrap();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["scenario"]["kind"], "drain");
        assert_eq!(v["apps"][0]["status"]["state"], "converged");
        assert_eq!(v["nodes"]["aws-eu"]["machinesNeeded"], 4);
    }

    /// The controller's loop, played with the same functions: every step writes the scale-ups,
    /// the replicas become ready, the weights are published. It must end where the plan said.
    #[test]
    fn the_controller_ends_where_the_plan_said() {
        for scenario in [
            Scenario::Fail {
                cluster: "aws-eu".into(),
            },
            Scenario::Drain {
                cluster: "gcp-us".into(),
            },
            Scenario::Fail {
                cluster: "onprem".into(),
            },
            Scenario::Drain {
                cluster: "onprem".into(),
            },
        ] {
            let i = input(scenario.clone());
            let p = plan(&i).unwrap();
            let a = &p.apps[0];
            let app = &i.apps[0];
            let mut state: Vec<TransitionCluster> = i
                .clusters
                .iter()
                .map(|c| {
                    let down = match &scenario {
                        Scenario::Fail { cluster } if *cluster == c.name => Some(Serving::Failed),
                        Scenario::Drain { cluster } if *cluster == c.name => {
                            Some(Serving::Draining)
                        }
                        _ => None,
                    };
                    TransitionCluster {
                        name: c.name.clone(),
                        serving: down.unwrap_or(Serving::Healthy),
                        min_replicas: 0,
                        current_weight: app.weights[&c.name],
                        wanted_weight: if down.is_some() {
                            0
                        } else {
                            app.weights[&c.name]
                        },
                        desired_replicas: app.replicas[&c.name],
                        ready_replicas: app.replicas[&c.name],
                        wanted_replicas: a.replicas[&c.name],
                        rps_per_replica: app.target_rps_per_replica,
                    }
                })
                .collect();
            let mut last = None;
            for round in 0..10 {
                let s = step(&TransitionInput {
                    clusters: state.clone(),
                    total_rps: app.total_rps,
                    started_ms: 0,
                    readiness_timeout_ms: 60_000,
                    now_ms: round * 1000,
                })
                .unwrap();
                for c in &mut state {
                    if let Some(up) = s.scale_ups.iter().find(|u| u.cluster == c.name) {
                        c.desired_replicas = up.to;
                    }
                    if let Some(down) = s.scale_downs.iter().find(|u| u.cluster == c.name) {
                        c.desired_replicas = down.to;
                    }
                    c.current_weight = s.weights[&c.name];
                    // The member cluster brings the written replicas up by the next round.
                    c.ready_replicas = c.desired_replicas;
                }
                last = Some(s);
            }
            let last = last.unwrap();
            assert_eq!(last.weights, a.weights, "{scenario:?}");
            for c in &state {
                assert_eq!(
                    c.desired_replicas, a.replicas[&c.name],
                    "{scenario:?} {}",
                    c.name
                );
                assert!(
                    (last.traffic[&c.name] - a.traffic_rps[&c.name]).abs() < 1.0,
                    "{scenario:?}"
                );
            }
            assert_eq!(last.status, a.status, "{scenario:?}");
        }
    }
}
