//! The dry-run planner's inputs from the controller's state (served as `GET /api/v1/plan`).
//!
//! "What if cluster X fails, is drained, or a peak of N× arrives": the answer is computed by
//! `meridian_capacity::plan`, the same pure code the capacity loop acts by, from what the
//! controller sees now:
//!
//! - **weights**: the published table's effective weights (1/1000 units, after health, drains
//!   and slow starts), so a scenario starts from what clients get now;
//! - **traffic**: the request rates the proxies report per target (the rates `/api/v1/status`
//!   shows);
//! - **replicas now**: the member clusters' inventory (Kubernetes mode) when it is known, else
//!   what placement would run for the current traffic (the planner's own `now` scenario);
//! - **capacity and cost**: the clusters' `capacity` hints and labels; an app's `placement`
//!   and `scaling` (scheduled floors open now raise its minimum).
//!
//! An app with neither `scaling.target_rps_per_replica` nor `placement.total_replicas` is
//! planned for weights and traffic only (`replicasKnown: false`). Machines are not planned
//! here: the config does not say what one replica requests, so `nodes` stays empty.

use std::collections::BTreeMap;

use meridian_capacity::nodes::Resources;
use meridian_capacity::planner::{PlanApp, PlanCluster};
use meridian_capacity::{CapacityError, PlanInput, Serving, Strategy};
use meridian_config::Config;
use meridian_routing::{Health, RoutingTable};

use crate::error::Error;
use crate::{Shared, now_ms};

/// The planner's types, for the API's clients (the `meridian plan` command).
pub use meridian_capacity::planner::AppPlan;
pub use meridian_capacity::{Plan, Scenario, TransitionStatus};

/// Request rates or replicas per target, keyed by (app, cluster).
pub type PerTarget<T> = BTreeMap<(String, String), T>;

/// Parses a scenario as the API and the CLI write it: `now`, `fail:CLUSTER`, `drain:CLUSTER`
/// or `peak:FACTOR` (a finite factor ≥ 0, such as `3` or `1.5`).
pub fn parse_scenario(text: &str) -> Result<Scenario, Error> {
    let expected = "expected now, fail:CLUSTER, drain:CLUSTER or peak:FACTOR";
    let (kind, arg) = match text.split_once(':') {
        Some((kind, arg)) => (kind, Some(arg)),
        None => (text, None),
    };
    let parsed = match (kind, arg) {
        ("now", None) => Ok(Scenario::Now),
        ("fail" | "drain", Some(cluster)) if !cluster.is_empty() => {
            let cluster = cluster.to_owned();
            Ok(if kind == "fail" {
                Scenario::Fail { cluster }
            } else {
                Scenario::Drain { cluster }
            })
        }
        ("fail" | "drain", _) => Err(format!("{text:?} names no cluster; {expected}")),
        ("peak", Some(factor)) => match factor.parse::<f64>() {
            Ok(f) if f.is_finite() && f >= 0.0 => Ok(Scenario::Peak { factor: f }),
            _ => Err(format!(
                "{factor:?} is not a peak factor (a finite number >= 0, such as 3 or 1.5)"
            )),
        },
        _ => Err(format!("{text:?} is not a scenario; {expected}")),
    };
    parsed.map_err(Error::Scenario)
}

/// The query form of a scenario, the inverse of [`parse_scenario`].
pub fn scenario_text(scenario: &Scenario) -> String {
    match scenario {
        Scenario::Now => "now".to_owned(),
        Scenario::Fail { cluster } => format!("fail:{cluster}"),
        Scenario::Drain { cluster } => format!("drain:{cluster}"),
        Scenario::Peak { factor } => format!("peak:{factor}"),
    }
}

/// A cluster's serving state as the table shows it: draining when every target on it drains,
/// failed when every target on it is unhealthy.
fn serving(table: &RoutingTable, cluster: &str) -> Serving {
    let healths: Vec<&Health> = table
        .apps()
        .iter()
        .flat_map(|a| a.targets.iter())
        .filter(|t| t.cluster == cluster)
        .map(|t| &t.health)
        .collect();
    if healths.is_empty() {
        Serving::Healthy
    } else if healths.iter().all(|h| matches!(h, Health::Unhealthy)) {
        Serving::Failed
    } else if healths.iter().all(|h| matches!(h, Health::Draining { .. })) {
        Serving::Draining
    } else {
        Serving::Healthy
    }
}

/// The planner's input from the controller's state (see the module doc). `traffic_rps` is the
/// request rate per target; `replicas` the replicas per target now when the member clusters'
/// inventory knows them; `now_ms` decides which scheduled floors are open.
pub fn plan_input(
    config: &Config,
    table: &RoutingTable,
    traffic_rps: &PerTarget<f64>,
    replicas: Option<&PerTarget<u32>>,
    scenario: Scenario,
    now_ms: u64,
) -> Result<PlanInput, CapacityError> {
    let clusters: Vec<PlanCluster> = config
        .clusters
        .iter()
        .map(|c| PlanCluster {
            name: c.name.clone(),
            labels: c.labels.clone(),
            serving: serving(table, &c.name),
            capacity: c.capacity.as_ref().and_then(|c| c.max_replicas),
            cost_per_replica_hour: c.capacity.as_ref().and_then(|c| c.cost_per_replica_hour),
            nodes: None,
        })
        .collect();
    let mut apps = Vec::new();
    for app in table.apps() {
        let cfg = config.apps.iter().find(|a| a.name == app.name);
        let placement = cfg.and_then(|c| c.placement.as_ref());
        let scaling = cfg.and_then(|c| c.scaling.as_ref());
        let weights: BTreeMap<String, u32> = app
            .targets
            .iter()
            .map(|t| (t.cluster.clone(), t.effective_weight()))
            .collect();
        // A fold from +0.0: the sum of no rates is 0, not the -0.0 `Sum` gives.
        let total_rps = app
            .targets
            .iter()
            .filter_map(|t| traffic_rps.get(&(app.name.clone(), t.cluster.clone())))
            .fold(0.0, |sum, rps| sum + rps);
        // The floor now: the minimum, raised by scheduled floors open at this moment.
        let min_replicas = match scaling {
            Some(s) => crate::capacity::scaler_config(s)?.floor_at(now_ms),
            None => 0,
        };
        let mut plan_app = PlanApp {
            name: app.name.clone(),
            weights,
            total_rps,
            target_rps_per_replica: scaling.map(|s| s.target_rps_per_replica),
            total_replicas: placement.and_then(|p| p.total_replicas),
            min_replicas,
            max_replicas: scaling.and_then(|s| s.max_replicas),
            strategy: placement.map_or(Strategy::Weight, |p| p.strategy.into()),
            selector: placement
                .map(|p| p.cluster_selector.clone())
                .unwrap_or_default(),
            spread: placement.and_then(|p| p.spread),
            bounds: placement
                .map(|p| {
                    p.bounds
                        .iter()
                        .map(|b| (b.cluster.clone(), (b.min_replicas, b.max_replicas)))
                        .collect()
                })
                .unwrap_or_default(),
            replicas: BTreeMap::new(),
            per_replica: Resources::default(),
        };
        plan_app.replicas = match replicas {
            Some(known) => app
                .targets
                .iter()
                .filter_map(|t| {
                    known
                        .get(&(app.name.clone(), t.cluster.clone()))
                        .map(|r| (t.cluster.clone(), *r))
                })
                .collect(),
            // Not observed: what placement runs for the current traffic, by the same planner.
            None if plan_app.target_rps_per_replica.is_some()
                || plan_app.total_replicas.is_some() =>
            {
                let now = meridian_capacity::plan(&PlanInput {
                    clusters: clusters.clone(),
                    apps: vec![plan_app.clone()],
                    scenario: Scenario::Now,
                })?;
                now.apps
                    .into_iter()
                    .next()
                    .map(|a| a.replicas)
                    .unwrap_or_default()
            }
            None => BTreeMap::new(),
        };
        apps.push(plan_app);
    }
    Ok(PlanInput {
        clusters,
        apps,
        scenario,
    })
}

/// The controller's inputs now: rates per target and, in Kubernetes mode, replicas per target.
pub(crate) fn observed(
    shared: &Shared,
    table: &RoutingTable,
) -> (PerTarget<f64>, Option<PerTarget<u32>>) {
    let traffic = shared.traffic_rates(table, now_ms());
    let members = shared
        .members
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let replicas: PerTarget<u32> = members
        .values()
        .filter_map(|m| m.inventory.as_ref().map(|i| (&m.cluster, i)))
        .flat_map(|(cluster, inv)| {
            inv.workloads.iter().map(move |w| {
                (
                    (w.app.clone(), cluster.clone()),
                    u32::try_from(w.desired_replicas).unwrap_or(0),
                )
            })
        })
        .collect();
    (traffic, (!replicas.is_empty()).then_some(replicas))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn scenarios_parse_and_print_back() {
        for text in ["now", "fail:aws-eu", "drain:gcp-us", "peak:3", "peak:1.5"] {
            let s = parse_scenario(text).unwrap();
            assert_eq!(scenario_text(&s), text);
        }
        assert_eq!(
            parse_scenario("peak:0").unwrap(),
            Scenario::Peak { factor: 0.0 }
        );
    }

    #[test]
    fn bad_scenarios_are_named() {
        for (text, message) in [
            ("", r#""" is not a scenario; expected now"#),
            ("later", r#""later" is not a scenario"#),
            ("now:x", r#""now:x" is not a scenario"#),
            ("fail", r#""fail" names no cluster"#),
            ("drain:", r#""drain:" names no cluster"#),
            ("peak:-2", r#""-2" is not a peak factor"#),
            ("peak:NaN", r#""NaN" is not a peak factor"#),
            ("peak:inf", r#""inf" is not a peak factor"#),
            ("peak:lots", r#""lots" is not a peak factor"#),
        ] {
            let err = parse_scenario(text).unwrap_err().to_string();
            assert!(err.starts_with(message), "{text:?}: {err}");
        }
    }

    const CONFIG: &str = r#"
regions:
  - { name: eu, location: { lat: 50.1, lon: 8.7 } }
clusters:
  - name: a
    region: eu
    provider: aws
    endpoints: ["127.0.0.1:9001"]
    capacity: { max_replicas: 40, cost_per_replica_hour: 0.10 }
  - name: b
    region: eu
    provider: gcp
    endpoints: ["127.0.0.2:9001"]
    labels: { compliance: pci }
    capacity: { max_replicas: 40, cost_per_replica_hour: 0.05 }
apps:
  - name: shop
    hostnames: [shop.example.com]
    failure_mode: fail-open
    targets:
      - { cluster: a, weight: 100 }
      - { cluster: b, weight: 300 }
    placement: { strategy: weight }
    scaling:
      target_rps_per_replica: 10
      min_replicas: 2
      schedules:
        - { cron: "0 9 * * *", duration: 1h, min_replicas: 50 }
  - name: docs
    hostnames: [docs.example.com]
    failure_mode: fail-open
    targets:
      - { cluster: a, weight: 1 }
      - { cluster: b, weight: 1 }
"#;

    fn setup() -> (Config, RoutingTable, PerTarget<f64>) {
        let loaded = meridian_config::parse(CONFIG, Path::new("plan-test.yaml")).unwrap();
        let table = RoutingTable::new(loaded.config.base_table(1, 0)).unwrap();
        let rates = [
            (("shop", "a"), 100.0),
            (("shop", "b"), 300.0),
            (("docs", "a"), 5.0),
            (("docs", "b"), 5.0),
        ]
        .into_iter()
        .map(|((a, c), r)| ((a.to_owned(), c.to_owned()), r))
        .collect();
        (loaded.config, table, rates)
    }

    /// 2026-11-28 12:00 UTC: no 09:00 window open.
    const NOON: u64 = 1_795_867_200_000;

    #[test]
    fn inputs_come_from_table_traffic_and_config() {
        let (config, table, rates) = setup();
        let input = plan_input(&config, &table, &rates, None, Scenario::Now, NOON).unwrap();
        let b = input.clusters.iter().find(|c| c.name == "b").unwrap();
        assert_eq!(b.labels["compliance"], "pci");
        assert_eq!(
            (b.capacity, b.cost_per_replica_hour),
            (Some(40), Some(0.05))
        );
        let shop = input.apps.iter().find(|a| a.name == "shop").unwrap();
        // Effective weights: 1/1000 units.
        assert_eq!(shop.weights["b"], 300_000);
        assert_eq!(shop.total_rps, 400.0);
        assert_eq!(shop.min_replicas, 2);
        // Replicas not observed: placement for the current traffic, 10 + 30.
        assert_eq!(shop.replicas["a"], 10);
        assert_eq!(shop.replicas["b"], 30);
        let docs = input.apps.iter().find(|a| a.name == "docs").unwrap();
        assert_eq!(docs.target_rps_per_replica, None);
        // No rate for an app: +0, which prints as 0 (not -0).
        let none =
            plan_input(&config, &table, &BTreeMap::new(), None, Scenario::Now, NOON).unwrap();
        assert_eq!(format!("{:.1}", none.apps[0].total_rps), "0.0");
        assert!(docs.replicas.is_empty());
        // Observed replicas win over the estimate.
        let observed: PerTarget<u32> = [(("shop".to_owned(), "a".to_owned()), 7)].into();
        let input = plan_input(
            &config,
            &table,
            &rates,
            Some(&observed),
            Scenario::Now,
            NOON,
        )
        .unwrap();
        let shop = input.apps.iter().find(|a| a.name == "shop").unwrap();
        assert_eq!(shop.replicas, [("a".to_owned(), 7)].into());
        // At 09:30 the scheduled floor of 50 is open.
        let input = plan_input(
            &config,
            &table,
            &rates,
            None,
            Scenario::Now,
            NOON - 150 * 60_000,
        )
        .unwrap();
        assert_eq!(
            input.apps[0].min_replicas.max(input.apps[1].min_replicas),
            50
        );
    }

    #[test]
    fn drain_plan_moves_traffic_replicas_and_cost() {
        let (config, table, rates) = setup();
        let input = plan_input(
            &config,
            &table,
            &rates,
            None,
            Scenario::Drain {
                cluster: "b".into(),
            },
            NOON,
        )
        .unwrap();
        let plan = meridian_capacity::plan(&input).unwrap();
        let shop = plan.apps.iter().find(|a| a.app == "shop").unwrap();
        assert_eq!(shop.weights["b"], 0);
        assert_eq!(shop.weights["a"], 100_000);
        assert!((shop.traffic_rps["a"] - 400.0).abs() < 1e-6);
        assert_eq!(shop.replicas["a"], 40);
        assert_eq!(shop.replicas["b"], 0);
        assert!(plan.sufficient);
        // 10 × 0.10 + 30 × 0.05 before; 40 × 0.10 after.
        assert!((plan.cost_per_hour_before - 2.5).abs() < 1e-9);
        assert!((plan.cost_per_hour_after - 4.0).abs() < 1e-9);
        let docs = plan.apps.iter().find(|a| a.app == "docs").unwrap();
        assert!(!docs.replicas_known);
        assert!((docs.traffic_rps["a"] - 10.0).abs() < 1e-6);
    }
}
