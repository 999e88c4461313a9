//! Property tests of the capacity engine's invariants.

use std::collections::BTreeMap;

use meridian_capacity::placement::Strategy as Placing;
use meridian_capacity::scaler::{ScalerConfig, ScalerHistory};
use meridian_capacity::transition::WEIGHT_SCALE;
use meridian_capacity::{
    ClusterInput, PlacementRequest, Serving, TransitionCluster, TransitionInput, place, step,
};
use proptest::prelude::*;

fn serving() -> impl Strategy<Value = Serving> {
    prop_oneof![
        6 => Just(Serving::Healthy),
        1 => Just(Serving::Draining),
        1 => Just(Serving::Failed),
    ]
}

fn cluster(i: usize) -> impl Strategy<Value = ClusterInput> {
    (
        serving(),
        0u32..500,
        proptest::option::of(0u32..40),
        proptest::option::of(0.0f64..1.0),
        0u32..6,
        proptest::option::of(0u32..30),
        any::<bool>(),
    )
        .prop_map(
            move |(serving, weight, capacity, cost, min, max_extra, private)| {
                let mut c = ClusterInput::new(format!("c{i}"), weight);
                c.serving = serving;
                c.capacity = capacity;
                c.cost_per_replica_hour = cost;
                c.min_replicas = min;
                c.max_replicas = max_extra.map(|m| min + m);
                if private {
                    c.labels.insert("private".into(), "true".into());
                }
                c
            },
        )
}

fn clusters() -> impl Strategy<Value = Vec<ClusterInput>> {
    (1usize..6).prop_flat_map(|n| (0..n).map(cluster).collect::<Vec<_>>())
}

fn strategy() -> impl Strategy<Value = Placing> {
    prop_oneof![
        Just(Placing::Weight),
        Just(Placing::Capacity),
        Just(Placing::Cost)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn placement_respects_bounds_selector_and_serving(
        mut clusters in clusters(),
        total in 0u32..200,
        strategy in strategy(),
        private in any::<bool>(),
        spread in proptest::option::of(0u32..4),
    ) {
        if strategy == Placing::Capacity {
            // The capacity strategy refuses clusters of unknown capacity (tested as a unit).
            for c in &mut clusters {
                c.capacity.get_or_insert(10);
            }
        }
        let mut selector = BTreeMap::new();
        if private {
            selector.insert("private".to_owned(), "true".to_owned());
        }
        let req = PlacementRequest { total, strategy, selector, spread, clusters: clusters.clone() };
        let p = place(&req).unwrap();
        let eligible: Vec<&ClusterInput> = clusters
            .iter()
            .filter(|c| c.serving == Serving::Healthy && (!private || c.labels.contains_key("private")))
            .collect();
        let floors: u64 = eligible.iter().map(|c| u64::from(c.min_replicas.min(c.ceiling().unwrap_or(u32::MAX)))).sum();
        let ceilings: Option<u64> = eligible.iter().map(|c| c.ceiling().map(u64::from)).sum();
        let expected = ceilings.map_or(u64::from(total), |c| c.min(u64::from(total))).max(floors);
        prop_assert_eq!(p.placed(), expected, "{:?}", p);
        prop_assert_eq!(u64::from(p.shortfall), u64::from(total).saturating_sub(expected));
        for c in &clusters {
            let n = p.replicas[&c.name];
            let is_eligible = eligible.iter().any(|e| e.name == c.name);
            if !is_eligible {
                prop_assert_eq!(n, 0, "{} is failed, draining or outside the selector", c.name);
            } else {
                if let Some(ceiling) = c.ceiling() {
                    prop_assert!(n <= ceiling, "{} over its ceiling: {:?}", c.name, p);
                }
                prop_assert!(n >= c.min_replicas.min(c.ceiling().unwrap_or(u32::MAX)), "{} under its floor", c.name);
            }
        }
        // Deterministic: the same input, the same answer, whatever the input order.
        let mut reversed = req.clone();
        reversed.clusters.reverse();
        prop_assert_eq!(place(&reversed).unwrap(), p);
    }

    #[test]
    fn stabilization_never_scales_down_inside_the_window(
        samples in proptest::collection::vec((0u64..120_000, 0.0f64..5000.0), 1..30),
        window in 1u64..300_000,
    ) {
        let mut cfg = ScalerConfig::new(100.0);
        cfg.scale_down_window_ms = window;
        let mut history = ScalerHistory::default();
        let mut now = 0;
        let mut current = 0;
        let mut seen: Vec<(u64, u32)> = Vec::new();
        for (gap, rps) in samples {
            now += gap;
            let d = cfg.desired(&mut history, current, rps, now).unwrap();
            seen.push((now, d.recommended));
            let in_window = seen.iter().filter(|(t, _)| *t + window >= now).map(|&(_, r)| r).max().unwrap();
            if d.replicas < current {
                prop_assert!(in_window < current, "scaled {} -> {} with {} recommended inside the window", current, d.replicas, in_window);
                prop_assert_eq!(d.replicas, in_window);
            }
            current = d.replicas;
        }
    }

    #[test]
    fn transition_shifts_only_onto_ready_capacity_and_keeps_floors(
        spec in proptest::collection::vec(
            (serving(), 0u32..6, 0u32..300, 0u32..300, 0u32..20, 0u32..20, 0u32..20, proptest::option::of(10.0f64..200.0)),
            1..6,
        ),
        total_rps in 0.0f64..5000.0,
        elapsed in 0u64..120_000,
    ) {
        let clusters: Vec<TransitionCluster> = spec
            .into_iter()
            .enumerate()
            .map(|(i, (serving, min, cw, ww, desired, ready, wanted, per))| TransitionCluster {
                name: format!("c{i}"),
                serving,
                min_replicas: min,
                current_weight: cw,
                wanted_weight: ww,
                desired_replicas: desired,
                ready_replicas: ready.min(desired),
                wanted_replicas: wanted,
                rps_per_replica: per,
            })
            .collect();
        let input = TransitionInput {
            clusters: clusters.clone(),
            total_rps,
            started_ms: 0,
            readiness_timeout_ms: 60_000,
            now_ms: elapsed,
        };
        let s = step(&input).unwrap();
        let tol = total_rps * 1e-6 + 1e-6;
        let cap = |c: &TransitionCluster| c.rps_per_replica.map_or(f64::INFINITY, |p| f64::from(c.ready_replicas) * p);
        let wanted_w: f64 = clusters.iter().filter(|c| c.serving != Serving::Failed).map(|c| f64::from(c.wanted_weight)).sum();
        // A cluster gets more than its ready replicas carry only when no live wanted cluster has
        // ready headroom left.
        for c in &clusters {
            if s.traffic[&c.name] > cap(c) + tol {
                for o in clusters.iter().filter(|o| o.serving != Serving::Failed && o.wanted_weight > 0) {
                    prop_assert!(s.traffic[&o.name] >= cap(o) - tol,
                        "{} over capacity while {} has headroom: {:?}", c.name, o.name, s);
                }
            }
        }
        // Nothing on a failed cluster; traffic is conserved whenever a live cluster can take it.
        let live_can_take = wanted_w > 0.0 || clusters.iter().any(|c| c.serving != Serving::Failed && c.current_weight > 0);
        let sum: f64 = s.traffic.values().sum();
        if live_can_take {
            prop_assert!((sum - total_rps).abs() <= tol * 10.0, "{} != {}", sum, total_rps);
        }
        for c in &clusters {
            if c.serving == Serving::Failed {
                prop_assert_eq!(s.weights[&c.name], 0);
                prop_assert_eq!(s.traffic[&c.name], 0.0);
            }
        }
        // The published weights say what the traffic says (to the weight scale's resolution).
        let wsum: f64 = s.weights.values().map(|&w| f64::from(w)).sum();
        if wsum > 0.0 && total_rps > 0.0 {
            for c in &clusters {
                let share = f64::from(s.weights[&c.name]) / wsum;
                let want = s.traffic[&c.name] / total_rps;
                prop_assert!((share - want).abs() <= 1.0 / f64::from(WEIGHT_SCALE) + 1e-6,
                    "{}: weight share {} vs traffic share {}", c.name, share, want);
            }
        }
        // No healthy cluster is written below its floor; ups go up, downs go down.
        for a in &s.scale_ups {
            prop_assert!(a.to > a.from);
        }
        for a in &s.scale_downs {
            prop_assert!(a.to < a.from);
            let c = clusters.iter().find(|c| c.name == a.cluster).unwrap();
            if c.serving == Serving::Healthy {
                prop_assert!(a.to >= c.min_replicas, "{} scaled below its floor: {:?}", c.name, a);
            }
        }
        // Scale-downs only once traffic has left: not while a scale-up is still to be ready.
        if !s.scale_ups.is_empty() {
            prop_assert!(s.scale_downs.is_empty(), "{:?}", s);
        }
    }
}
