//! Make-before-break: one pure step of moving an app's traffic and replicas together.
//!
//! The controller calls [`step`] on every reconcile of a transition (a failure, a drain, a
//! recovery or a new placement) with what it sees now, writes the scale-ups, publishes the
//! weights, writes the scale-downs, and reports the status. Nothing is remembered here: the
//! same input gives the same step.
//!
//! # Algorithm
//!
//! Let `T` be the app's request rate. A failed cluster's wanted weight is taken as 0 (traffic
//! cannot stay on a dead cluster). For each cluster, `q` is the rate the *currently published*
//! weights send it, `r` the rate the *wanted* weights would send it, and `cap` what its *ready*
//! replicas carry (`ready × rps_per_replica`; unknown when the caller does not know the rate a
//! replica carries, which is then no limit).
//!
//! 1. **Scale up first.** Every serving cluster whose wanted replicas (raised to its floor when
//!    healthy) exceed its desired replicas gets a scale-up, written now.
//! 2. **Shift only onto ready capacity.** Each live cluster gets `min(r, cap)`: its wanted share
//!    as far as its ready replicas carry it. The rest goes, in this order:
//!    1. *held where it was*: each live cluster (a draining one too) keeps up to what it has now
//!       and can carry, `min(q, cap)`, all in the same proportion;
//!    2. *into ready headroom* of the clusters with a wanted weight, in proportion to that
//!       weight (this is where a failed cluster's traffic goes, since it cannot stay there);
//!    3. capacity is short: *beyond capacity*, in proportion to the wanted weight.
//!
//!    So a cluster is only given more than its ready replicas carry when no wanted cluster has
//!    ready headroom left, and the answer depends on where traffic is only through what may be
//!    held: the end state is the same whatever the path.
//! 3. **Publish.** When nothing is held back, the wanted weights are published as they are;
//!    otherwise the shares are published as weights summing to [`WEIGHT_SCALE`].
//! 4. **Scale down last.** A cluster's scale-down (never below its floor while healthy) is
//!    written only once the currently published weights already send it no more than its wanted
//!    share, nothing is held back (for a failed cluster: it has no traffic left), and every
//!    scale-up is ready: traffic has left and its replacement carries it. It never goes below
//!    the replicas its wanted traffic needs.
//! 5. **Status.** `Converged` when traffic is at the wanted weights on ready replicas;
//!    `WaitingForCapacity` (the first cluster by name whose replicas are not ready) until the
//!    readiness timeout; `CapacityShort` with the request rate that ready replicas cannot carry
//!    after the timeout, or at once when every wanted replica is ready and still too few.
//!
//! Recovery is the same step in reverse: the returning cluster's replicas first, then its weight
//! (the controller's weight ramp adds slow start on top of the target weights given here).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::placement::{Share, apportion};
use crate::scaler::check_target;
use crate::{CapacityError, Serving, check_rate};

/// The sum of the weights published while traffic is held back.
pub const WEIGHT_SCALE: u32 = 10_000;

/// One cluster of the app, as the controller sees it now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransitionCluster {
    /// Cluster name (unique).
    pub name: String,
    /// Serving state.
    pub serving: Serving,
    /// The cluster's floor of replicas.
    pub min_replicas: u32,
    /// The weight published now.
    pub current_weight: u32,
    /// The weight wanted at the end of the transition.
    pub wanted_weight: u32,
    /// Replicas written (`spec.replicas`).
    pub desired_replicas: u32,
    /// Replicas ready (`status.readyReplicas`).
    pub ready_replicas: u32,
    /// Replicas wanted at the end (from placement).
    pub wanted_replicas: u32,
    /// Requests/s one replica there carries; `None` = unknown (no limit).
    pub rps_per_replica: Option<f64>,
}

/// Everything one step needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransitionInput {
    /// The app's clusters.
    pub clusters: Vec<TransitionCluster>,
    /// The app's total request rate, requests/s.
    pub total_rps: f64,
    /// When the transition started, UTC milliseconds.
    pub started_ms: u64,
    /// How long to wait for readiness before reporting capacity short, milliseconds.
    pub readiness_timeout_ms: u64,
    /// Now, UTC milliseconds.
    pub now_ms: u64,
}

/// A replica count to write to one cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScaleAction {
    /// The cluster.
    pub cluster: String,
    /// Replicas written now.
    pub from: u32,
    /// Replicas to write.
    pub to: u32,
}

/// Where a transition stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum TransitionStatus {
    /// Traffic is at the wanted weights, carried by ready replicas.
    Converged,
    /// Waiting for a cluster's replicas to become ready.
    WaitingForCapacity {
        /// The first cluster (by name) not ready yet.
        cluster: String,
        /// Its ready replicas.
        ready: u32,
        /// The replicas it should have.
        wanted: u32,
    },
    /// Ready replicas cannot carry the wanted traffic and waiting will not fix it.
    CapacityShort {
        /// Requests/s of the wanted traffic that no ready replica carries.
        missing_rps: f64,
        /// Why, in words.
        reason: String,
    },
}

/// The actions of one step, in the order to carry them out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransitionStep {
    /// (a) Scale-ups to write now.
    pub scale_ups: Vec<ScaleAction>,
    /// (b) The weights that may be published now (every cluster).
    pub weights: BTreeMap<String, u32>,
    /// (c) Scale-downs to write after the weights are published.
    pub scale_downs: Vec<ScaleAction>,
    /// Where the transition stands.
    pub status: TransitionStatus,
    /// The request rate the published weights send each cluster.
    pub traffic: BTreeMap<String, f64>,
}

/// The weights after `cluster` fails or is drained: its weight goes to 0, so its traffic moves
/// to the others in proportion to their weights. The planner and the controller share this rule.
pub fn without_cluster(
    weights: &BTreeMap<String, u32>,
    cluster: &str,
) -> Result<BTreeMap<String, u32>, CapacityError> {
    if !weights.contains_key(cluster) {
        return Err(CapacityError::UnknownCluster(cluster.to_owned()));
    }
    let mut w = weights.clone();
    w.insert(cluster.to_owned(), 0);
    Ok(w)
}

/// The request rate per cluster that `weights` send out of `total_rps`.
pub fn traffic_shares(weights: &BTreeMap<String, u32>, total_rps: f64) -> BTreeMap<String, f64> {
    let sum: f64 = weights.values().map(|&w| f64::from(w)).sum();
    weights
        .iter()
        .map(|(k, &w)| {
            let share = if sum > 0.0 {
                total_rps * f64::from(w) / sum
            } else {
                0.0
            };
            (k.clone(), share)
        })
        .collect()
}

/// Adds up to `rest` to `p`, in proportion to `weight`, each item at most its `room`
/// (water-filling: an item that fills up passes its part on to the others).
fn fill(p: &mut [f64], rest: &mut f64, weight: &[f64], room: &[f64], eps: f64) {
    let mut used = vec![0.0; p.len()];
    for _ in 0..=p.len() {
        if *rest <= eps {
            break;
        }
        let open: Vec<usize> = (0..p.len())
            .filter(|&i| weight[i] > 0.0 && room[i] - used[i] > eps)
            .collect();
        let ws: f64 = open.iter().map(|&i| weight[i]).sum();
        if ws <= 0.0 {
            break;
        }
        let mut given = 0.0;
        for &i in &open {
            let add = (*rest * weight[i] / ws).min(room[i] - used[i]);
            p[i] += add;
            used[i] += add;
            given += add;
        }
        *rest -= given;
    }
}

/// The replicas a cluster should end with: its wanted count, raised to its floor while healthy.
fn goal(c: &TransitionCluster) -> u32 {
    match c.serving {
        Serving::Healthy => c.wanted_replicas.max(c.min_replicas),
        Serving::Draining | Serving::Failed => c.wanted_replicas,
    }
}

fn validate(input: &TransitionInput) -> Result<(), CapacityError> {
    check_rate("total requests/s", input.total_rps)?;
    let mut seen = BTreeSet::new();
    for c in &input.clusters {
        if !seen.insert(c.name.as_str()) {
            return Err(CapacityError::DuplicateCluster(c.name.clone()));
        }
        if let Some(r) = c.rps_per_replica {
            check_target(&format!("cluster {:?}", c.name), r)?;
        }
    }
    Ok(())
}

/// One make-before-break step (see the module doc).
pub fn step(input: &TransitionInput) -> Result<TransitionStep, CapacityError> {
    validate(input)?;
    let cs = &input.clusters;
    let t = input.total_rps;
    let eps = t * 1e-9 + 1e-9;
    let alive: Vec<bool> = cs.iter().map(|c| c.serving != Serving::Failed).collect();
    let wanted: Vec<f64> = cs
        .iter()
        .zip(&alive)
        .map(|(c, &a)| if a { f64::from(c.wanted_weight) } else { 0.0 })
        .collect();
    let w_sum: f64 = wanted.iter().sum();
    let c_sum: f64 = cs.iter().map(|c| f64::from(c.current_weight)).sum();
    let r: Vec<f64> = wanted
        .iter()
        .map(|&w| if w_sum > 0.0 { t * w / w_sum } else { 0.0 })
        .collect();
    // Nothing published yet: there is no traffic to protect, so the wanted shares are "current".
    let q: Vec<f64> = if c_sum > 0.0 {
        cs.iter()
            .map(|c| t * f64::from(c.current_weight) / c_sum)
            .collect()
    } else {
        r.clone()
    };
    let cap: Vec<f64> = cs
        .iter()
        .map(|c| {
            c.rps_per_replica
                .map_or(f64::INFINITY, |per| f64::from(c.ready_replicas) * per)
        })
        .collect();

    // (a) Scale-ups.
    let scale_ups: Vec<ScaleAction> = cs
        .iter()
        .zip(&alive)
        .filter(|(c, a)| **a && goal(c) > c.desired_replicas)
        .map(|(c, _)| ScaleAction {
            cluster: c.name.clone(),
            from: c.desired_replicas,
            to: goal(c),
        })
        .collect();

    // (b) Shares. Each live cluster first gets its wanted share as far as its ready replicas
    // carry it; what is left over is placed in three passes, each into a kind of room.
    let n = cs.len();
    let mut p: Vec<f64> = (0..n)
        .map(|i| if alive[i] { r[i].min(cap[i]) } else { 0.0 })
        .collect();
    let mut rest = (t - p.iter().sum::<f64>()).max(0.0);
    // 1. Held where it was: a live cluster keeps traffic it has now and can carry.
    let hold_room: Vec<f64> = (0..n)
        .map(|i| {
            if alive[i] {
                (q[i].min(cap[i]) - p[i]).max(0.0)
            } else {
                0.0
            }
        })
        .collect();
    fill(&mut p, &mut rest, &hold_room, &hold_room, eps);
    // 2. Ready headroom of the clusters that are wanted, by wanted weight (a failed cluster's
    //    traffic, or traffic that cannot stay on an overloaded cluster).
    let headroom: Vec<f64> = (0..n)
        .map(|i| {
            if alive[i] && wanted[i] > 0.0 {
                cap[i] - p[i]
            } else {
                0.0
            }
        })
        .collect();
    fill(&mut p, &mut rest, &wanted, &headroom, eps);
    // 3. Capacity is short: beyond capacity, by wanted weight (by current weight when nothing
    //    live is wanted), since traffic cannot be refused here.
    let spread_w: Vec<f64> = if w_sum > 0.0 {
        wanted.clone()
    } else {
        cs.iter()
            .zip(&alive)
            .map(|(c, &a)| if a { f64::from(c.current_weight) } else { 0.0 })
            .collect()
    };
    let unbounded = vec![f64::INFINITY; n];
    fill(&mut p, &mut rest, &spread_w, &unbounded, eps);

    let holding = (0..n).any(|i| (p[i] - r[i]).abs() > eps);
    let weights: BTreeMap<String, u32> = if !holding {
        cs.iter()
            .zip(&wanted)
            .map(|(c, &w)| (c.name.clone(), w as u32))
            .collect()
    } else {
        let shares: Vec<Share<'_>> = cs
            .iter()
            .zip(&p)
            .map(|(c, &x)| Share {
                name: &c.name,
                weight: x,
                lo: 0,
                hi: None,
            })
            .collect();
        let scale = if p.iter().sum::<f64>() > 0.0 {
            u64::from(WEIGHT_SCALE)
        } else {
            0
        };
        cs.iter()
            .zip(apportion(scale, &shares))
            .map(|(c, w)| (c.name.clone(), w as u32))
            .collect()
    };

    // Readiness: the first live cluster (by name) whose ready replicas are short of its goal.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| cs[a].name.cmp(&cs[b].name));
    let pending = order
        .iter()
        .copied()
        .find(|&i| alive[i] && cs[i].ready_replicas < goal(&cs[i]));

    // (c) Scale-downs, once traffic has left and its replacement is ready.
    // A failed cluster's copy may go as soon as its traffic has gone and its replacement is
    // ready, even while capacity is short elsewhere: it carries nothing.
    let scale_downs: Vec<ScaleAction> = if pending.is_some() {
        Vec::new()
    } else {
        cs.iter()
            .enumerate()
            .filter(|&(i, _)| !holding || (!alive[i] && q[i] <= eps))
            .filter_map(|(i, c)| {
                // Never below what the wanted traffic needs there, so a scale-down cannot make
                // a shortage worse.
                let needed = c
                    .rps_per_replica
                    .map_or(0.0, |per| (r[i] / per - 1e-9).ceil());
                let to = goal(c).max(needed.min(f64::from(u32::MAX)) as u32);
                (to < c.desired_replicas && q[i] <= r[i] + eps).then(|| ScaleAction {
                    cluster: c.name.clone(),
                    from: c.desired_replicas,
                    to,
                })
            })
            .collect()
    };

    let missing_rps: f64 = if w_sum <= 0.0 {
        t
    } else {
        (0..n)
            .filter(|&i| alive[i])
            .map(|i| (r[i] - cap[i]).max(0.0))
            .sum()
    };
    let timed_out = input.now_ms.saturating_sub(input.started_ms) >= input.readiness_timeout_ms;
    let status = if w_sum <= 0.0 && t > 0.0 {
        TransitionStatus::CapacityShort {
            missing_rps: t,
            reason: "no serving cluster has a weight".to_owned(),
        }
    } else if missing_rps > eps || holding {
        match pending {
            Some(i) if !timed_out => TransitionStatus::WaitingForCapacity {
                cluster: cs[i].name.clone(),
                ready: cs[i].ready_replicas,
                wanted: goal(&cs[i]),
            },
            Some(i) => TransitionStatus::CapacityShort {
                missing_rps,
                reason: format!(
                    "cluster {} has {} of {} replicas ready after the {} s readiness timeout",
                    cs[i].name,
                    cs[i].ready_replicas,
                    goal(&cs[i]),
                    input.readiness_timeout_ms / 1000
                ),
            },
            None => {
                let i = order
                    .iter()
                    .copied()
                    .find(|&i| alive[i] && r[i] > cap[i] + eps)
                    .unwrap_or(order[0]);
                TransitionStatus::CapacityShort {
                    missing_rps,
                    reason: format!(
                        "cluster {}: its {} wanted replicas carry {:.1} of the {:.1} req/s it should take",
                        cs[i].name,
                        goal(&cs[i]),
                        cap[i],
                        r[i]
                    ),
                }
            }
        }
    } else if let Some(i) = pending {
        TransitionStatus::WaitingForCapacity {
            cluster: cs[i].name.clone(),
            ready: cs[i].ready_replicas,
            wanted: goal(&cs[i]),
        }
    } else {
        TransitionStatus::Converged
    };

    let traffic = cs
        .iter()
        .zip(&p)
        .map(|(c, &x)| (c.name.clone(), x))
        .collect();
    Ok(TransitionStep {
        scale_ups,
        weights,
        scale_downs,
        status,
        traffic,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: u64 = 60_000;

    /// Three clusters of 10 replicas at 100 req/s each, 3000 req/s in all: each full.
    fn three() -> TransitionInput {
        let c = |name: &str| TransitionCluster {
            name: name.into(),
            serving: Serving::Healthy,
            min_replicas: 0,
            current_weight: 100,
            wanted_weight: 100,
            desired_replicas: 10,
            ready_replicas: 10,
            wanted_replicas: 10,
            rps_per_replica: Some(100.0),
        };
        TransitionInput {
            clusters: vec![c("a"), c("b"), c("c")],
            total_rps: 3000.0,
            started_ms: 1_000,
            readiness_timeout_ms: TIMEOUT,
            now_ms: 1_000,
        }
    }

    fn set(input: &mut TransitionInput, name: &str, f: impl FnOnce(&mut TransitionCluster)) {
        f(input.clusters.iter_mut().find(|c| c.name == name).unwrap());
    }

    fn weights(s: &TransitionStep) -> Vec<u32> {
        s.weights.values().copied().collect()
    }

    fn up(cluster: &str, from: u32, to: u32) -> ScaleAction {
        ScaleAction {
            cluster: cluster.into(),
            from,
            to,
        }
    }

    #[test]
    fn steady_state_is_converged_and_does_nothing() {
        let s = step(&three()).unwrap();
        assert_eq!(s.status, TransitionStatus::Converged);
        assert!(s.scale_ups.is_empty() && s.scale_downs.is_empty());
        assert_eq!(weights(&s), vec![100, 100, 100]);
    }

    #[test]
    fn drain_scales_up_first_and_holds_traffic_until_ready() {
        let mut i = three();
        set(&mut i, "c", |c| {
            c.serving = Serving::Draining;
            c.wanted_weight = 0;
            c.wanted_replicas = 0;
        });
        for n in ["a", "b"] {
            set(&mut i, n, |c| c.wanted_replicas = 15);
        }
        let s = step(&i).unwrap();
        assert_eq!(s.scale_ups, vec![up("a", 10, 15), up("b", 10, 15)]);
        // Nothing is ready yet: c keeps its traffic.
        assert_eq!(weights(&s), vec![3334, 3333, 3333]);
        assert!(s.scale_downs.is_empty(), "c still carries traffic");
        assert_eq!(
            s.status,
            TransitionStatus::WaitingForCapacity {
                cluster: "a".into(),
                ready: 10,
                wanted: 15
            }
        );

        // a fully ready, b partly: shift what they carry, c keeps the rest.
        for n in ["a", "b"] {
            set(&mut i, n, |c| c.desired_replicas = 15);
        }
        set(&mut i, "a", |c| c.ready_replicas = 15);
        set(&mut i, "b", |c| c.ready_replicas = 12);
        i.now_ms += 10_000;
        let s = step(&i).unwrap();
        assert!(s.scale_ups.is_empty());
        assert_eq!(weights(&s), vec![5000, 4000, 1000]);
        assert_eq!(
            s.status,
            TransitionStatus::WaitingForCapacity {
                cluster: "b".into(),
                ready: 12,
                wanted: 15
            }
        );

        // After the timeout the same weights, reported as short.
        i.now_ms = i.started_ms + TIMEOUT;
        let s = step(&i).unwrap();
        assert_eq!(weights(&s), vec![5000, 4000, 1000]);
        match &s.status {
            TransitionStatus::CapacityShort {
                missing_rps,
                reason,
            } => {
                assert!((missing_rps - 300.0).abs() < 1e-6, "{missing_rps}");
                assert!(
                    reason.contains("cluster b has 12 of 15 replicas ready"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }

        // All ready: the wanted weights, but c keeps its replicas until its traffic has left.
        set(&mut i, "b", |c| c.ready_replicas = 15);
        let s = step(&i).unwrap();
        assert_eq!(weights(&s), vec![100, 100, 0]);
        assert!(
            s.scale_downs.is_empty(),
            "the published weights still send traffic to c"
        );
        assert_eq!(s.status, TransitionStatus::Converged);
        // Once those weights are live, c is scaled down.
        for c in &mut i.clusters {
            c.current_weight = s.weights[&c.name];
        }
        let s = step(&i).unwrap();
        assert_eq!(s.scale_downs, vec![up("c", 10, 0)]);
        assert_eq!(s.status, TransitionStatus::Converged);
    }

    #[test]
    fn failure_moves_traffic_at_once_but_waits_for_capacity() {
        let mut i = three();
        set(&mut i, "c", |c| {
            c.serving = Serving::Failed;
            c.wanted_replicas = 0;
        });
        for n in ["a", "b"] {
            set(&mut i, n, |c| c.wanted_replicas = 15);
        }
        let s = step(&i).unwrap();
        assert_eq!(s.scale_ups, vec![up("a", 10, 15), up("b", 10, 15)]);
        // Traffic cannot stay on a dead cluster: it spreads by weight even beyond capacity.
        assert_eq!(weights(&s), vec![100, 100, 0]);
        assert_eq!(s.traffic["a"], 1500.0);
        assert!(s.scale_downs.is_empty());
        assert!(
            matches!(s.status, TransitionStatus::WaitingForCapacity { ref cluster, .. } if cluster == "a")
        );
    }

    #[test]
    fn a_failed_clusters_traffic_fills_headroom_first() {
        let mut i = three();
        set(&mut i, "c", |c| c.serving = Serving::Failed);
        // a has room for 500 more, b for none; a is wanted at weight 100, b at 300.
        // b is wanted at weight 300 (2250 req/s) but its ready replicas carry 1000; a, wanted
        // at 100 (750 req/s), has ready replicas for 2000.
        set(&mut i, "a", |c| c.ready_replicas = 20);
        set(&mut i, "b", |c| c.wanted_weight = 300);
        let s = step(&i).unwrap();
        // b keeps its 1000; a keeps the 1000 it had and takes c's 1000 into its headroom.
        assert!((s.traffic["b"] - 1000.0).abs() < 1e-6, "{:?}", s.traffic);
        assert!((s.traffic["a"] - 2000.0).abs() < 1e-6, "{:?}", s.traffic);
        assert_eq!(s.traffic["c"], 0.0);
        assert_eq!(s.weights["c"], 0);
        // With room for only 500 on a, the last 500 spread by wanted weight beyond capacity.
        set(&mut i, "a", |c| c.ready_replicas = 15);
        let s = step(&i).unwrap();
        assert!((s.traffic["a"] - 1625.0).abs() < 1e-6, "{:?}", s.traffic);
        assert!((s.traffic["b"] - 1375.0).abs() < 1e-6, "{:?}", s.traffic);
    }

    #[test]
    fn a_healthy_cluster_is_never_scaled_below_its_floor() {
        let mut i = three();
        set(&mut i, "a", |c| {
            c.serving = Serving::Failed;
            c.wanted_replicas = 0;
            c.current_weight = 0;
        });
        // Placement asked b for fewer replicas than its floor.
        set(&mut i, "b", |c| {
            c.min_replicas = 8;
            c.wanted_replicas = 4;
        });
        // b and c now carry 1500 req/s each with 10 replicas: b's scale-down would make the
        // shortage worse, so only the failed copy goes.
        let s = step(&i).unwrap();
        assert_eq!(
            s.scale_downs,
            vec![up("a", 10, 0)],
            "the failed copy goes, b stays"
        );
        // With less traffic b may go down, to its floor and no further.
        i.total_rps = 600.0;
        let s = step(&i).unwrap();
        assert_eq!(s.scale_downs, vec![up("a", 10, 0), up("b", 10, 8)]);
        // A floor above the current count is a scale-up.
        set(&mut i, "b", |c| c.min_replicas = 12);
        let s = step(&i).unwrap();
        assert_eq!(s.scale_ups, vec![up("b", 10, 12)]);
    }

    #[test]
    fn recovery_puts_replicas_back_before_weight() {
        let mut i = three();
        set(&mut i, "c", |c| {
            c.current_weight = 0;
            c.desired_replicas = 0;
            c.ready_replicas = 0;
        });
        for n in ["a", "b"] {
            set(&mut i, n, |c| {
                c.desired_replicas = 15;
                c.ready_replicas = 15;
            });
        }
        let s = step(&i).unwrap();
        assert_eq!(s.scale_ups, vec![up("c", 0, 10)]);
        assert_eq!(s.weights["c"], 0, "no ready replica there yet");
        assert!(
            s.scale_downs.is_empty(),
            "a and b keep their replicas while they carry c's share"
        );
        set(&mut i, "c", |c| {
            c.desired_replicas = 10;
            c.ready_replicas = 5;
        });
        let s = step(&i).unwrap();
        assert!((s.traffic["c"] - 500.0).abs() < 1e-6, "{:?}", s.traffic);
        set(&mut i, "c", |c| c.ready_replicas = 10);
        let s = step(&i).unwrap();
        assert_eq!(weights(&s), vec![100, 100, 100]);
    }

    #[test]
    fn unknown_capacity_is_no_limit() {
        let mut i = three();
        set(&mut i, "c", |c| {
            c.serving = Serving::Draining;
            c.wanted_weight = 0;
        });
        for c in &mut i.clusters {
            c.rps_per_replica = None;
        }
        let s = step(&i).unwrap();
        assert_eq!(weights(&s), vec![100, 100, 0]);
    }

    #[test]
    fn short_at_once_when_all_wanted_replicas_are_ready_and_too_few() {
        let mut i = three();
        set(&mut i, "c", |c| {
            c.serving = Serving::Draining;
            c.wanted_weight = 0;
            c.wanted_replicas = 0;
        });
        for n in ["a", "b"] {
            set(&mut i, n, |c| {
                c.wanted_replicas = 12;
                c.desired_replicas = 12;
                c.ready_replicas = 12;
            });
        }
        let s = step(&i).unwrap();
        match &s.status {
            TransitionStatus::CapacityShort {
                missing_rps,
                reason,
            } => {
                assert!((missing_rps - 600.0).abs() < 1e-6);
                assert!(
                    reason.contains("cluster a: its 12 wanted replicas carry 1200.0"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(weights(&s), vec![4000, 4000, 2000]);
    }

    #[test]
    fn no_serving_cluster_is_short_by_everything() {
        let mut i = three();
        for c in &mut i.clusters {
            c.serving = Serving::Failed;
        }
        let s = step(&i).unwrap();
        assert_eq!(weights(&s), vec![0, 0, 0]);
        assert!(
            matches!(s.status, TransitionStatus::CapacityShort { missing_rps, .. } if missing_rps == 3000.0)
        );
    }

    #[test]
    fn bad_input_is_named() {
        let mut i = three();
        i.total_rps = f64::NAN;
        assert!(
            step(&i)
                .unwrap_err()
                .to_string()
                .starts_with("total requests/s must be a finite number")
        );
        let mut i = three();
        i.clusters[1].rps_per_replica = Some(0.0);
        assert_eq!(
            step(&i).unwrap_err().to_string(),
            "cluster \"b\": target requests/s per replica must be a finite number > 0, got 0"
        );
        let mut i = three();
        i.clusters[1].name = "a".into();
        assert_eq!(
            step(&i).unwrap_err(),
            CapacityError::DuplicateCluster("a".into())
        );
        let w: BTreeMap<String, u32> = [("a".to_owned(), 1)].into();
        assert_eq!(
            without_cluster(&w, "x").unwrap_err(),
            CapacityError::UnknownCluster("x".into())
        );
    }
}
