//! Placement: divide an app's total replicas over its candidate clusters.
//!
//! The rules, in the order they apply:
//!
//! 1. **Selector.** A cluster missing any label of the app's cluster selector is excluded
//!    entirely: a private app is never placed outside its labelled clusters, even when that
//!    leaves it short.
//! 2. **Serving state.** Failed and draining clusters get 0 replicas in the *target* placement,
//!    and their floors do not force replicas elsewhere (the transition decides when the replicas
//!    they still run are removed).
//! 3. **Bounds.** A cluster's ceiling is the lower of its max replicas and its capacity (unknown
//!    means unbounded); its floor is its min replicas, cut to the ceiling. Floors are honoured
//!    first, ceilings always. The placed sum is `min(total, Σ ceilings)`, raised to `Σ floors`
//!    when the floors alone exceed the total (a floor is an operator's promise).
//! 4. **Strategy** divides the rest: `weight` proportionally to the traffic weight, `capacity`
//!    proportionally to the ceiling, both with a water level `λ` such that
//!    `Σ clamp(λ·wᵢ, floorᵢ, ceilingᵢ) = sum` and then largest remainder; `cost` fills the
//!    cheapest cluster first up to its ceiling, after giving one replica to each of the `spread`
//!    cheapest clusters (default 2 when two are eligible) for resilience.
//!
//! Replicas that fit nowhere are the `shortfall`. Ties are broken by cluster name, so the result
//! is a function of the input alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{CapacityError, check_bounds, check_rate};

/// Whether a cluster takes replicas and traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Serving {
    /// Serving normally.
    Healthy,
    /// Being taken out of traffic by an operator.
    Draining,
    /// Failed (probes or the member cluster's API say so).
    Failed,
}

/// How the replicas above the floors are divided.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Proportionally to the cluster's traffic weight.
    #[default]
    Weight,
    /// Proportionally to the cluster's capacity (its ceiling).
    Capacity,
    /// Cheapest first, keeping `spread` clusters non-zero.
    Cost,
}

impl std::str::FromStr for Strategy {
    type Err = CapacityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "weight" => Ok(Self::Weight),
            "capacity" => Ok(Self::Capacity),
            "cost" => Ok(Self::Cost),
            other => Err(CapacityError::Invalid(format!(
                "placement strategy {other:?}: expected weight, capacity or cost"
            ))),
        }
    }
}

/// One candidate cluster of an app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterInput {
    /// Cluster name (unique).
    pub name: String,
    /// The cluster's labels, matched against the app's selector.
    pub labels: BTreeMap<String, String>,
    /// Serving state.
    pub serving: Serving,
    /// The app's traffic weight there.
    pub weight: u32,
    /// Most replicas of this app the cluster can carry now: the hint, or what its inventory has
    /// free (the `capacity` strategy divides by this); `None` = unknown.
    pub capacity: Option<u32>,
    /// Cost of one replica for an hour; `None` = unknown (ranked after every known cost).
    pub cost_per_replica_hour: Option<f64>,
    /// Fewest replicas there.
    pub min_replicas: u32,
    /// Most replicas there; `None` = no bound.
    pub max_replicas: Option<u32>,
}

impl ClusterInput {
    /// A healthy cluster with a weight and no bounds, labels, capacity or cost.
    pub fn new(name: impl Into<String>, weight: u32) -> Self {
        Self {
            name: name.into(),
            labels: BTreeMap::new(),
            serving: Serving::Healthy,
            weight,
            capacity: None,
            cost_per_replica_hour: None,
            min_replicas: 0,
            max_replicas: None,
        }
    }

    /// The lower of max replicas and capacity; `None` when both are unknown.
    pub fn ceiling(&self) -> Option<u32> {
        match (self.max_replicas, self.capacity) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What to place.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlacementRequest {
    /// Total replicas wanted across clusters.
    pub total: u32,
    /// How to divide them.
    pub strategy: Strategy,
    /// Only clusters with all these labels are candidates.
    pub selector: BTreeMap<String, String>,
    /// For `cost`: how many clusters to keep non-zero (default 2 when two are eligible).
    pub spread: Option<u32>,
    /// The candidate clusters.
    pub clusters: Vec<ClusterInput>,
}

/// The target placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Replicas per cluster (every input cluster, zero included).
    pub replicas: BTreeMap<String, u32>,
    /// Replicas that fit nowhere.
    pub shortfall: u32,
    /// Why each cluster got what it got.
    pub reasons: BTreeMap<String, String>,
}

impl Placement {
    /// Sum of the placed replicas.
    pub fn placed(&self) -> u64 {
        self.replicas.values().map(|&r| u64::from(r)).sum()
    }
}

/// The first selector label a cluster lacks, if any.
fn missing_label<'a>(
    selector: &'a BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> Option<(&'a String, &'a String)> {
    selector.iter().find(|(k, v)| labels.get(*k) != Some(*v))
}

/// Checks a cluster list: unique names, ordered bounds, sane costs.
fn validate(clusters: &[ClusterInput]) -> Result<(), CapacityError> {
    let mut seen = std::collections::BTreeSet::new();
    for c in clusters {
        if !seen.insert(c.name.as_str()) {
            return Err(CapacityError::DuplicateCluster(c.name.clone()));
        }
        check_bounds(
            format!("cluster {:?}", c.name),
            c.min_replicas,
            c.max_replicas,
        )?;
        if let Some(cost) = c.cost_per_replica_hour {
            check_rate(format!("cluster {:?} cost per replica-hour", c.name), cost)?;
        }
    }
    Ok(())
}

/// Divides an app's replicas over its clusters (see the module doc for the rules).
pub fn place(req: &PlacementRequest) -> Result<Placement, CapacityError> {
    validate(&req.clusters)?;
    let mut replicas = BTreeMap::new();
    let mut reasons = BTreeMap::new();
    // Eligible clusters, sorted by name so that every later tie is broken by name.
    let mut eligible: Vec<&ClusterInput> = Vec::new();
    for c in &req.clusters {
        let excluded = if let Some((k, v)) = missing_label(&req.selector, &c.labels) {
            Some(format!("excluded: selector needs label {k}={v}"))
        } else {
            match c.serving {
                Serving::Failed => Some("failed: no replicas in the target placement".to_owned()),
                Serving::Draining => {
                    Some("draining: no replicas in the target placement".to_owned())
                }
                Serving::Healthy => None,
            }
        };
        match excluded {
            Some(reason) => {
                replicas.insert(c.name.clone(), 0);
                reasons.insert(c.name.clone(), reason);
            }
            None => eligible.push(c),
        }
    }
    eligible.sort_by(|a, b| a.name.cmp(&b.name));

    if req.strategy == Strategy::Capacity
        && let Some(c) = eligible.iter().find(|c| c.ceiling().is_none())
    {
        return Err(CapacityError::Invalid(format!(
            "cluster {:?}: strategy capacity needs its capacity or max replicas",
            c.name
        )));
    }

    let floors: Vec<u64> = eligible
        .iter()
        .map(|c| u64::from(c.min_replicas.min(c.ceiling().unwrap_or(u32::MAX))))
        .collect();
    let ceilings: Vec<Option<u64>> = eligible
        .iter()
        .map(|c| c.ceiling().map(u64::from))
        .collect();
    let sum_floor: u64 = floors.iter().sum();
    let sum_ceiling: Option<u64> = ceilings.iter().try_fold(0u64, |acc, c| c.map(|c| acc + c));
    let total = u64::from(req.total);
    let goal = sum_ceiling.map_or(total, |c| total.min(c)).max(sum_floor);
    let shortfall = total.saturating_sub(goal);

    let counts: Vec<u64> = match req.strategy {
        Strategy::Weight | Strategy::Capacity => {
            let shares: Vec<Share<'_>> = eligible
                .iter()
                .zip(floors.iter().zip(&ceilings))
                .map(|(c, (&lo, &hi))| Share {
                    name: &c.name,
                    weight: match req.strategy {
                        Strategy::Capacity => f64::from(c.ceiling().unwrap_or(0)),
                        _ => f64::from(c.weight),
                    },
                    lo,
                    hi,
                })
                .collect();
            apportion(goal, &shares)
        }
        Strategy::Cost => {
            let spread = req
                .spread
                .unwrap_or(2)
                .min(u32::try_from(eligible.len()).unwrap_or(u32::MAX));
            cheapest_first(goal, &eligible, &floors, &ceilings, spread)
        }
    };

    let weight_sum: u64 = eligible.iter().map(|c| u64::from(c.weight)).sum();
    for (i, c) in eligible.iter().enumerate() {
        let n = u32::try_from(counts[i]).unwrap_or(u32::MAX);
        let mut reason = match req.strategy {
            Strategy::Weight => format!("{n} by weight {} of {weight_sum}", c.weight),
            Strategy::Capacity => format!("{n} by capacity {}", c.ceiling().unwrap_or(0)),
            Strategy::Cost => match c.cost_per_replica_hour {
                Some(cost) => format!("{n} by cost {cost}/replica-hour"),
                None => format!("{n} by cost (unknown, ranked last)"),
            },
        };
        if counts[i] == floors[i] && floors[i] > 0 {
            reason.push_str(&format!(", at floor {}", floors[i]));
        }
        if Some(counts[i]) == ceilings[i] {
            reason.push_str(&format!(", at ceiling {}", counts[i]));
        }
        replicas.insert(c.name.clone(), n);
        reasons.insert(c.name.clone(), reason);
    }
    Ok(Placement {
        replicas,
        shortfall: u32::try_from(shortfall).unwrap_or(u32::MAX),
        reasons,
    })
}

/// `cost`: one replica to each of the `spread` cheapest clusters, then cheapest first.
fn cheapest_first(
    goal: u64,
    eligible: &[&ClusterInput],
    floors: &[u64],
    ceilings: &[Option<u64>],
    spread: u32,
) -> Vec<u64> {
    let mut order: Vec<usize> = (0..eligible.len()).collect();
    // Unknown cost ranks after every known cost; equal costs rank by name (eligible is sorted).
    order.sort_by(|&a, &b| {
        let key = |i: usize| eligible[i].cost_per_replica_hour.unwrap_or(f64::INFINITY);
        key(a).total_cmp(&key(b)).then(a.cmp(&b))
    });
    let mut counts = floors.to_vec();
    let mut left = goal - floors.iter().sum::<u64>();
    let room = |i: usize, counts: &[u64]| ceilings[i].is_none_or(|c| counts[i] < c);
    for &i in order
        .iter()
        .filter(|&&i| ceilings[i] != Some(0))
        .take(spread as usize)
    {
        if left == 0 {
            break;
        }
        if counts[i] == 0 && room(i, &counts) {
            counts[i] = 1;
            left -= 1;
        }
    }
    for &i in &order {
        let add = ceilings[i].map_or(left, |c| left.min(c - counts[i]));
        counts[i] += add;
        left -= add;
    }
    counts
}

/// One item to apportion: a weight and integer bounds (`hi: None` = unbounded).
#[derive(Clone, Debug)]
pub(crate) struct Share<'a> {
    pub name: &'a str,
    pub weight: f64,
    pub lo: u64,
    pub hi: Option<u64>,
}

/// Divides `total` over `items` proportionally to their weights within their bounds, in whole
/// units: a water level `λ` with `Σ clamp(λ·wᵢ, loᵢ, hiᵢ) = total` (bisection), then largest
/// remainder, ties by name. Zero-weight items get their floor, unless the weighted items cannot
/// take the rest, in which case it is divided equally over the zero-weight ones.
///
/// The caller guarantees `Σ lo ≤ total ≤ Σ hi`.
pub(crate) fn apportion(total: u64, items: &[Share<'_>]) -> Vec<u64> {
    let hi = |s: &Share<'_>| s.hi.map_or(f64::INFINITY, |h| h as f64);
    let weighted_room: f64 = items
        .iter()
        .map(|s| if s.weight > 0.0 { hi(s) } else { s.lo as f64 })
        .sum();
    // When the weighted items cannot absorb the total, the zero-weight ones share the rest
    // equally: weights become 1 for them and the weighted ones are pinned at their ceiling.
    let weights: Vec<f64> = if weighted_room < total as f64 {
        items
            .iter()
            .map(|s| if s.weight > 0.0 { f64::INFINITY } else { 1.0 })
            .collect()
    } else {
        items.iter().map(|s| s.weight).collect()
    };
    let level = |lambda: f64| -> Vec<f64> {
        items
            .iter()
            .zip(&weights)
            .map(|(s, &w)| {
                let x = if w == 0.0 { 0.0 } else { lambda * w };
                x.clamp(s.lo as f64, hi(s))
            })
            .collect()
    };
    let (mut low, mut high) = (0.0_f64, 1.0_f64);
    while level(high).iter().sum::<f64>() < total as f64 && high < 1e300 {
        high *= 2.0;
    }
    for _ in 0..200 {
        let mid = (low + high) / 2.0;
        if level(mid).iter().sum::<f64>() < total as f64 {
            low = mid;
        } else {
            high = mid;
        }
    }
    let ideal = level(high);
    let mut counts: Vec<u64> = items
        .iter()
        .zip(&ideal)
        .map(|(s, &x)| {
            let x = if x.is_finite() { x } else { total as f64 };
            let f = (x + 1e-9).floor() as u64;
            f.clamp(s.lo, s.hi.unwrap_or(u64::MAX))
        })
        .collect();
    // Largest remainder; the loop also repairs any float residue in either direction.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| {
        // Fractions are compared to a millionth so that bisection residue never beats the
        // name order on what is really a tie.
        let frac = |i: usize| ((ideal[i] - ideal[i].floor()) * 1e6).round() as i64;
        frac(b)
            .cmp(&frac(a))
            .then_with(|| items[a].name.cmp(items[b].name))
    });
    loop {
        let sum: u64 = counts.iter().sum();
        if sum == total {
            break;
        }
        let mut moved = false;
        for &i in &order {
            let sum: u64 = counts.iter().sum();
            if sum < total && items[i].hi.is_none_or(|h| counts[i] < h) {
                counts[i] += 1;
                moved = true;
            } else if sum > total && counts[i] > items[i].lo {
                counts[i] -= 1;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(total: u32, strategy: Strategy, clusters: Vec<ClusterInput>) -> PlacementRequest {
        PlacementRequest {
            total,
            strategy,
            selector: BTreeMap::new(),
            spread: None,
            clusters,
        }
    }

    fn get(p: &Placement, name: &str) -> u32 {
        p.replicas[name]
    }

    #[test]
    fn weight_divides_proportionally_with_largest_remainder() {
        let p = place(&req(
            10,
            Strategy::Weight,
            vec![
                ClusterInput::new("a", 1),
                ClusterInput::new("b", 1),
                ClusterInput::new("c", 1),
            ],
        ))
        .unwrap();
        // 3.33 each: the extra replica goes to the first name on the tie.
        assert_eq!((get(&p, "a"), get(&p, "b"), get(&p, "c")), (4, 3, 3));
        assert_eq!(p.shortfall, 0);
        let p = place(&req(
            10,
            Strategy::Weight,
            vec![ClusterInput::new("a", 300), ClusterInput::new("b", 100)],
        ))
        .unwrap();
        assert_eq!(
            (get(&p, "a"), get(&p, "b")),
            (8, 2),
            "7.5/2.5 is a tie, broken by name: {p:?}"
        );
    }

    #[test]
    fn ceilings_are_always_honoured_and_the_rest_moves_on() {
        let mut a = ClusterInput::new("a", 100);
        a.max_replicas = Some(2);
        let mut b = ClusterInput::new("b", 100);
        b.capacity = Some(5);
        let p = place(&req(
            10,
            Strategy::Weight,
            vec![a, b.clone(), ClusterInput::new("c", 100)],
        ))
        .unwrap();
        assert_eq!((get(&p, "a"), get(&p, "b"), get(&p, "c")), (2, 4, 4));
        assert!(p.reasons["a"].contains("at ceiling 2"), "{:?}", p.reasons);
        // Nowhere to go: the rest is the shortfall.
        let mut a = ClusterInput::new("a", 100);
        a.max_replicas = Some(2);
        let p = place(&req(10, Strategy::Weight, vec![a, b])).unwrap();
        assert_eq!((get(&p, "a"), get(&p, "b"), p.shortfall), (2, 5, 3));
    }

    #[test]
    fn floors_come_first_even_for_a_zero_weight() {
        let mut a = ClusterInput::new("a", 0);
        a.min_replicas = 3;
        let p = place(&req(
            4,
            Strategy::Weight,
            vec![a.clone(), ClusterInput::new("b", 100)],
        ))
        .unwrap();
        assert_eq!((get(&p, "a"), get(&p, "b")), (3, 1));
        // Floors above the total are still honoured: a floor is a promise.
        let mut b = ClusterInput::new("b", 100);
        b.min_replicas = 2;
        let p = place(&req(4, Strategy::Weight, vec![a, b])).unwrap();
        assert_eq!((get(&p, "a"), get(&p, "b"), p.shortfall), (3, 2, 0));
    }

    #[test]
    fn failed_and_draining_get_zero_and_their_floors_do_not_move() {
        let mut a = ClusterInput::new("a", 100);
        a.serving = Serving::Failed;
        a.min_replicas = 5;
        let mut b = ClusterInput::new("b", 100);
        b.serving = Serving::Draining;
        let p = place(&req(
            6,
            Strategy::Weight,
            vec![a, b, ClusterInput::new("c", 100)],
        ))
        .unwrap();
        assert_eq!((get(&p, "a"), get(&p, "b"), get(&p, "c")), (0, 0, 6));
        assert!(p.reasons["a"].starts_with("failed"));
        assert!(p.reasons["b"].starts_with("draining"));
    }

    #[test]
    fn selector_excludes_even_when_short() {
        let mut private = ClusterInput::new("onprem", 100);
        private
            .labels
            .insert("meridian.dev/private".into(), "true".into());
        private.max_replicas = Some(3);
        let mut r = req(
            8,
            Strategy::Weight,
            vec![private, ClusterInput::new("aws", 100)],
        );
        r.selector
            .insert("meridian.dev/private".into(), "true".into());
        let p = place(&r).unwrap();
        assert_eq!((get(&p, "onprem"), get(&p, "aws"), p.shortfall), (3, 0, 5));
        assert!(
            p.reasons["aws"].contains("meridian.dev/private=true"),
            "{:?}",
            p.reasons
        );
    }

    #[test]
    fn capacity_divides_by_ceiling_and_needs_one() {
        let mut a = ClusterInput::new("a", 1);
        a.capacity = Some(30);
        let mut b = ClusterInput::new("b", 1000);
        b.capacity = Some(10);
        let p = place(&req(8, Strategy::Capacity, vec![a.clone(), b])).unwrap();
        assert_eq!((get(&p, "a"), get(&p, "b")), (6, 2));
        let err = place(&req(
            8,
            Strategy::Capacity,
            vec![a, ClusterInput::new("c", 1)],
        ))
        .unwrap_err();
        assert!(
            err.to_string().contains("\"c\": strategy capacity needs"),
            "{err}"
        );
    }

    #[test]
    fn cost_fills_cheapest_first_but_keeps_spread() {
        let mk = |name: &str, cost: Option<f64>, max: Option<u32>| {
            let mut c = ClusterInput::new(name, 100);
            c.cost_per_replica_hour = cost;
            c.max_replicas = max;
            c
        };
        let clusters = vec![
            mk("aws", Some(0.05), None),
            mk("gcp", Some(0.04), Some(4)),
            mk("onprem", Some(0.01), Some(3)),
            mk("azure", None, None),
        ];
        let p = place(&req(10, Strategy::Cost, clusters.clone())).unwrap();
        assert_eq!(
            (
                get(&p, "onprem"),
                get(&p, "gcp"),
                get(&p, "aws"),
                get(&p, "azure")
            ),
            (3, 4, 3, 0)
        );
        // With a total of 2, spread 2 still keeps two clusters non-zero.
        let p = place(&req(2, Strategy::Cost, clusters.clone())).unwrap();
        assert_eq!((get(&p, "onprem"), get(&p, "gcp")), (1, 1));
        // Spread 3 with an unbounded cheapest: the next two keep one each.
        let mut r = req(10, Strategy::Cost, clusters);
        r.spread = Some(3);
        r.clusters[2].max_replicas = None;
        let p = place(&r).unwrap();
        assert_eq!(
            (
                get(&p, "onprem"),
                get(&p, "gcp"),
                get(&p, "aws"),
                get(&p, "azure")
            ),
            (8, 1, 1, 0)
        );
        // Spread 1: all on the cheapest.
        let p = place(&PlacementRequest {
            spread: Some(1),
            ..r
        })
        .unwrap();
        assert_eq!(get(&p, "onprem"), 10);
    }

    #[test]
    fn bad_input_is_named() {
        let mut a = ClusterInput::new("a", 1);
        a.min_replicas = 5;
        a.max_replicas = Some(2);
        let err = place(&req(1, Strategy::Weight, vec![a])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cluster \"a\": min replicas 5 is above max replicas 2"
        );
        let err = place(&req(
            1,
            Strategy::Weight,
            vec![ClusterInput::new("a", 1), ClusterInput::new("a", 2)],
        ))
        .unwrap_err();
        assert_eq!(err, CapacityError::DuplicateCluster("a".into()));
        let mut a = ClusterInput::new("a", 1);
        a.cost_per_replica_hour = Some(f64::NAN);
        let err = place(&req(1, Strategy::Cost, vec![a])).unwrap_err();
        assert!(
            err.to_string()
                .contains("cost per replica-hour must be a finite number"),
            "{err}"
        );
        assert!(
            "cheap"
                .parse::<Strategy>()
                .unwrap_err()
                .to_string()
                .contains("\"cheap\"")
        );
    }

    #[test]
    fn zero_weights_take_the_rest_only_when_needed() {
        let mut a = ClusterInput::new("a", 100);
        a.max_replicas = Some(2);
        let p = place(&req(
            6,
            Strategy::Weight,
            vec![a, ClusterInput::new("b", 0), ClusterInput::new("c", 0)],
        ))
        .unwrap();
        assert_eq!((get(&p, "a"), get(&p, "b"), get(&p, "c")), (2, 2, 2));
    }
}
