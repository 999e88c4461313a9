//! Property tests of selection: weights honoured, unhealthy targets avoided, tiers respected,
//! affinity stable under weight changes.

use std::net::{IpAddr, SocketAddr};

use meridian_routing::{
    App, Client, Cluster, FailureMode, Health, Location, NoTarget, Pick, Policy, Region,
    RoutingTable, TableData, Target, TargetSet,
};
use proptest::prelude::*;

fn health_strategy() -> impl Strategy<Value = Health> {
    prop_oneof![
        4 => Just(Health::Healthy),
        2 => Just(Health::Unhealthy),
        1 => (0.0..=1.0f64).prop_map(|progress| Health::Draining { progress }),
        1 => (0.0..=1.0f64).prop_map(|progress| Health::SlowStart { progress }),
    ]
}

fn target_strategy() -> impl Strategy<Value = (u32, u8, Health)> {
    (0u32..=1000, 0u8..3, health_strategy())
}

fn build(policy: Policy, failure_mode: FailureMode, targets: &[(u32, u8, Health)]) -> RoutingTable {
    let clusters = (0..targets.len())
        .map(|i| Cluster {
            name: format!("c{i}"),
            region: if i % 2 == 0 { "eu".into() } else { "us".into() },
            provider: "test".into(),
            location: if i % 2 == 0 {
                Location {
                    lat: 50.0,
                    lon: 8.0 + i as f64,
                }
            } else {
                Location {
                    lat: 39.0,
                    lon: -77.0 - i as f64,
                }
            },
            endpoints: vec![SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16))],
        })
        .collect();
    RoutingTable::new(TableData {
        version: 1,
        generated_at_ms: 0,
        regions: vec![
            Region {
                name: "eu".into(),
                location: Location {
                    lat: 50.0,
                    lon: 8.0,
                },
            },
            Region {
                name: "us".into(),
                location: Location {
                    lat: 39.0,
                    lon: -77.0,
                },
            },
        ],
        clusters,
        apps: vec![App {
            name: "app".into(),
            hostnames: vec!["app.example.com".into()],
            policy,
            failure_mode,
            dns_ttl: 30,
            geo_preferences: vec![],
            targets: targets
                .iter()
                .enumerate()
                .map(|(i, (weight, tier, health))| Target {
                    cluster: format!("c{i}"),
                    weight: *weight,
                    tier: *tier,
                    health: *health,
                })
                .collect(),
        }],
        geo: Default::default(),
        rtt: vec![],
    })
    .unwrap()
}

fn client(table: &RoutingTable, region: Option<&str>) -> Client {
    Client {
        addr: IpAddr::from([192, 0, 2, 1]),
        region: region.and_then(|r| table.region_id(r)),
    }
}

fn policy_strategy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::Weighted),
        Just(Policy::Failover),
        Just(Policy::Geo),
        Just(Policy::Latency)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Over many spread draws, each target's share is its effective weight's share.
    #[test]
    fn spread_honours_weights(weights in prop::collection::vec(1u32..=1000, 1..8)) {
        let targets: Vec<_> = weights.iter().map(|w| (*w, 0, Health::Healthy)).collect();
        let table = build(Policy::Weighted, FailureMode::FailClosed, &targets);
        let app = table.app_for_host("app.example.com").unwrap();
        let draws = 20_000u64;
        let mut counts = vec![0u64; weights.len()];
        for n in 0..draws {
            let choice = table.select(app, &client(&table, None), Pick::Spread(n), TargetSet::EMPTY).unwrap();
            counts[choice.target] += 1;
        }
        let total: u32 = weights.iter().sum();
        for (i, w) in weights.iter().enumerate() {
            let expected = draws as f64 * f64::from(*w) / f64::from(total);
            // Low-discrepancy draws land within a fraction of a percent of the draws.
            prop_assert!((counts[i] as f64 - expected).abs() <= draws as f64 * 0.005 + 2.0,
                "target {i}: {} draws, expected {expected:.0}", counts[i]);
        }
    }

    /// Affinity draws over random keys also honour weights (statistically).
    #[test]
    fn affinity_honours_weights(weights in prop::collection::vec(1u32..=1000, 2..6), seed in any::<u64>()) {
        let targets: Vec<_> = weights.iter().map(|w| (*w, 0, Health::Healthy)).collect();
        let table = build(Policy::Weighted, FailureMode::FailClosed, &targets);
        let app = table.app_for_host("app.example.com").unwrap();
        let draws = 20_000u64;
        let mut counts = vec![0u64; weights.len()];
        let mut key = seed;
        for _ in 0..draws {
            key = key.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let choice = table.select(app, &client(&table, None), Pick::Affinity(key), TargetSet::EMPTY).unwrap();
            counts[choice.target] += 1;
        }
        let total: u32 = weights.iter().sum();
        for (i, w) in weights.iter().enumerate() {
            let share = f64::from(*w) / f64::from(total);
            let expected = draws as f64 * share;
            // Five standard deviations of a binomial count.
            let tolerance = 5.0 * (draws as f64 * share * (1.0 - share)).sqrt() + 5.0;
            prop_assert!((counts[i] as f64 - expected).abs() <= tolerance,
                "target {i}: {} draws, expected {expected:.0} ± {tolerance:.0}", counts[i]);
        }
    }

    /// Whatever the policy, a non-serving target is never chosen while a serving one exists,
    /// and a fail-closed app with nothing serving gets no target.
    #[test]
    fn never_unhealthy_while_healthy_exists(
        policy in policy_strategy(),
        fail_open in any::<bool>(),
        targets in prop::collection::vec(target_strategy(), 1..10),
        region in prop_oneof![Just(None), Just(Some("eu")), Just(Some("us"))],
        draws in prop::collection::vec(any::<u64>(), 20),
    ) {
        let mode = if fail_open { FailureMode::FailOpen } else { FailureMode::FailClosed };
        let table = build(policy, mode, &targets);
        let app = table.app_for_host("app.example.com").unwrap();
        let serving: Vec<bool> = table.app(app).targets.iter().map(|t| t.effective_weight() > 0).collect();
        let any_serving = serving.iter().any(|s| *s);
        for draw in draws {
            for pick in [Pick::Spread(draw), Pick::Affinity(draw)] {
                let result = table.select(app, &client(&table, region), pick, TargetSet::EMPTY);
                match result {
                    Ok(choice) => {
                        prop_assert_eq!(choice.fail_open, !any_serving);
                        if any_serving { prop_assert!(serving[choice.target]); } else { prop_assert!(fail_open); }
                    }
                    Err(NoTarget::FailClosed) => prop_assert!(!any_serving && !fail_open),
                    Err(NoTarget::AllExcluded) => prop_assert!(false, "nothing was excluded"),
                }
            }
        }
    }

    /// The failover policy only picks from the lowest tier that has a serving target.
    #[test]
    fn tier_order_is_respected(
        targets in prop::collection::vec(target_strategy(), 1..10),
        draws in prop::collection::vec(any::<u64>(), 20),
    ) {
        let table = build(Policy::Failover, FailureMode::FailClosed, &targets);
        let app = table.app_for_host("app.example.com").unwrap();
        let app_targets = &table.app(app).targets;
        let best_tier = app_targets.iter().filter(|t| t.effective_weight() > 0).map(|t| t.tier).min();
        for draw in draws {
            match (table.select(app, &client(&table, None), Pick::Spread(draw), TargetSet::EMPTY), best_tier) {
                (Ok(choice), Some(tier)) => prop_assert_eq!(app_targets[choice.target].tier, tier),
                (Err(NoTarget::FailClosed), None) => {}
                (other, tier) => prop_assert!(false, "{other:?} with best tier {tier:?}"),
            }
        }
    }

    /// Excluding chosen targets one by one yields each candidate exactly once, then AllExcluded.
    #[test]
    fn exclusion_walks_every_candidate(targets in prop::collection::vec(target_strategy(), 1..10), draw in any::<u64>()) {
        let table = build(Policy::Weighted, FailureMode::FailOpen, &targets);
        let app = table.app_for_host("app.example.com").unwrap();
        let any_serving = table.app(app).targets.iter().any(|t| t.effective_weight() > 0);
        let candidates = table.app(app).targets.iter().filter(|t| !any_serving || t.effective_weight() > 0).count();
        let mut tried = TargetSet::EMPTY;
        for _ in 0..candidates {
            let choice = table.select(app, &client(&table, None), Pick::Affinity(draw), tried).unwrap();
            prop_assert!(!tried.contains(choice.target));
            tried.insert(choice.target);
        }
        prop_assert_eq!(table.select(app, &client(&table, None), Pick::Affinity(draw), tried), Err(NoTarget::AllExcluded));
    }

    /// Raising one target's weight only moves keys onto that target (weighted rendezvous).
    #[test]
    fn affinity_is_stable_under_weight_changes(
        weights in prop::collection::vec(1u32..=1000, 2..8),
        changed in any::<prop::sample::Index>(),
        raise in 1u32..=1000,
    ) {
        let targets: Vec<_> = weights.iter().map(|w| (*w, 0, Health::Healthy)).collect();
        let before = build(Policy::Weighted, FailureMode::FailClosed, &targets);
        let mut raised = targets.clone();
        let changed = changed.index(raised.len());
        raised[changed].0 = (raised[changed].0 + raise).min(10_000);
        let after = build(Policy::Weighted, FailureMode::FailClosed, &raised);
        let app = before.app_for_host("app.example.com").unwrap();
        for key in 0..500u64 {
            let key = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let a = before.select(app, &client(&before, None), Pick::Affinity(key), TargetSet::EMPTY).unwrap().target;
            let b = after.select(app, &client(&after, None), Pick::Affinity(key), TargetSet::EMPTY).unwrap().target;
            prop_assert!(a == b || b == changed, "key {key} moved from {a} to {b}, not to the raised target {changed}");
        }
    }
}

#[test]
fn geo_prefers_nearest_and_falls_back() {
    let targets = [(100, 0, Health::Healthy), (100, 0, Health::Healthy)];
    let table = build(Policy::Geo, FailureMode::FailClosed, &targets);
    let app = table.app_for_host("app.example.com").unwrap();
    let eu = table
        .select(
            app,
            &client(&table, Some("eu")),
            Pick::Spread(1),
            TargetSet::EMPTY,
        )
        .unwrap();
    assert_eq!(table.app(app).targets[eu.target].cluster, "c0");
    assert!(eu.location_dependent);
    let us = table
        .select(
            app,
            &client(&table, Some("us")),
            Pick::Spread(1),
            TargetSet::EMPTY,
        )
        .unwrap();
    assert_eq!(table.app(app).targets[us.target].cluster, "c1");
    // The eu cluster down: eu clients go to the nearest serving one.
    let down = build(
        Policy::Geo,
        FailureMode::FailClosed,
        &[(100, 0, Health::Unhealthy), (100, 0, Health::Healthy)],
    );
    let eu = down
        .select(
            app,
            &client(&down, Some("eu")),
            Pick::Spread(1),
            TargetSet::EMPTY,
        )
        .unwrap();
    assert_eq!(down.app(app).targets[eu.target].cluster, "c1");
    let explanation = down.explain(app, &client(&down, Some("eu")), Pick::Spread(1));
    assert_eq!(explanation.chosen.as_deref(), Some("c1"));
    assert!(
        explanation
            .summary
            .contains("nearest serving cluster to region eu"),
        "{}",
        explanation.summary
    );
}

#[test]
fn drain_ramps_share_down() {
    let share = |progress: f64| {
        let table = build(
            Policy::Weighted,
            FailureMode::FailClosed,
            &[
                (100, 0, Health::Draining { progress }),
                (100, 0, Health::Healthy),
            ],
        );
        let app = table.app_for_host("app.example.com").unwrap();
        let hits = (0..10_000u64)
            .filter(|n| {
                table
                    .select(
                        app,
                        &client(&table, None),
                        Pick::Spread(*n),
                        TargetSet::EMPTY,
                    )
                    .unwrap()
                    .target
                    == 0
            })
            .count();
        hits as f64 / 10_000.0
    };
    assert!((share(0.0) - 0.5).abs() < 0.01);
    assert!((share(0.5) - 1.0 / 3.0).abs() < 0.01);
    assert_eq!(share(1.0), 0.0);
}
