//! Target selection: given a table, an app and a client, which target serves, and why.
//!
//! Shared by the proxy (one pick per request, more on retry) and the DNS server (up to N
//! picks per answer). [`RoutingTable::select`] does not allocate: candidate sets are 64-bit
//! masks over an app's targets and every per-target fact it reads was precomputed when the
//! table was built.
//!
//! Two ways to draw among weighted targets:
//! - [`Pick::Spread`] takes a counter. Its golden-ratio sequence (frac(n·φ)) lands in the
//!   cumulative-weight intervals with low discrepancy, so any run of consecutive picks is
//!   split almost exactly by weight: smooth, as nginx's smooth weighted round-robin.
//! - [`Pick::Affinity`] takes a key hash (a session cookie, a client address). Weighted
//!   rendezvous hashing keeps a key on its target when other targets' weights change, and
//!   moves only the share a changed weight calls for: stable.

use std::net::IpAddr;

use serde::Serialize;

use crate::app::{FailureMode, Policy};
use crate::health::Health;
use crate::table::{AppId, RegionId, RoutingTable, TargetIndex};

/// Who is asking: the client's address and, when the caller's geo data knows it, its region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client {
    /// The client's address (for DNS: the ECS subnet's address, else the resolver's).
    pub addr: IpAddr,
    /// The client's region in this table, from [`RoutingTable::resolve_region`].
    pub region: Option<RegionId>,
}

/// How to draw among weighted candidates; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// A counter, incremented per pick by the caller: smooth weighted shares.
    Spread(u64),
    /// A hash of an affinity key: the same key keeps its target.
    Affinity(u64),
}

/// A set of an app's targets, by position in [`crate::App::targets`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TargetSet(pub u64);

impl TargetSet {
    /// The empty set.
    pub const EMPTY: TargetSet = TargetSet(0);

    /// The set of the first `n` targets.
    pub fn first(n: usize) -> Self {
        TargetSet(if n >= 64 { u64::MAX } else { (1u64 << n) - 1 })
    }

    /// Adds target `i`.
    pub fn insert(&mut self, i: usize) {
        self.0 |= 1 << i;
    }

    /// True when target `i` is in the set.
    pub fn contains(&self, i: usize) -> bool {
        i < 64 && self.0 & (1 << i) != 0
    }

    /// The number of targets in the set.
    pub fn len(&self) -> usize {
        self.0.count_ones() as usize
    }

    /// True when no target is in the set.
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    fn iter(self) -> impl Iterator<Item = usize> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            (bits != 0).then(|| {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                i
            })
        })
    }

    fn filter(self, mut keep: impl FnMut(usize) -> bool) -> TargetSet {
        let mut out = TargetSet::EMPTY;
        for i in self.iter() {
            if keep(i) {
                out.insert(i);
            }
        }
        out
    }
}

/// Why a target was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "rule", rename_all = "kebab-case")]
pub enum Reason {
    /// Drawn by weight among all candidates.
    Weighted,
    /// Drawn by weight within the lowest tier that has a candidate.
    Tier {
        /// The tier used.
        tier: u8,
    },
    /// Drawn by weight among the clusters the app prefers for the client's region.
    Preferred {
        /// The client's region.
        #[serde(skip)]
        region: RegionId,
    },
    /// The candidate nearest to the client's region (weighted among equally near ones).
    Nearest {
        /// The client's region.
        #[serde(skip)]
        region: RegionId,
        /// Great-circle distance from the region to the chosen cluster.
        distance_km: f32,
    },
    /// The candidate with the lowest measured round-trip time from the client's region.
    LowestRtt {
        /// The client's region.
        #[serde(skip)]
        region: RegionId,
        /// The measured round-trip time.
        rtt_ms: f32,
    },
    /// The policy needs the client's region, which is unknown: drawn by weight.
    UnknownRegion,
}

/// The outcome of a selection.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    /// The chosen target, by position in [`crate::App::targets`].
    pub target: usize,
    /// Which rule chose it.
    pub reason: Reason,
    /// True when no target was serving and the app's fail-open rule made every target a
    /// candidate.
    pub fail_open: bool,
    /// True when the answer depends on where the client is (geo and latency policies), so a
    /// DNS answer must carry the ECS scope of the client's network.
    pub location_dependent: bool,
}

/// Why no target could be chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoTarget {
    /// No target is serving and the app fails closed.
    #[error("no target is serving and the app fails closed")]
    FailClosed,
    /// Every candidate is in the caller's exclusion set (already tried or ejected).
    #[error("every candidate target was excluded")]
    AllExcluded,
}

/// Weights below are in effective units (1/1000 of a configured weight).
const RTT_TIE_MS: f32 = 0.5;
const DISTANCE_TIE_KM: f32 = 1.0;

impl RoutingTable {
    /// Chooses a target of `app` for `client`, never one in `exclude`.
    ///
    /// Candidates are the serving targets (healthy, slow start, or draining with weight
    /// left). When none is serving at all, a fail-open app uses every target and a
    /// fail-closed app gets [`NoTarget::FailClosed`]. The policy then narrows the candidates
    /// and a weighted draw by `pick` picks one.
    pub fn select(
        &self,
        app: AppId,
        client: &Client,
        pick: Pick,
        exclude: TargetSet,
    ) -> Result<Choice, NoTarget> {
        let index = &self.apps_index[app.0 as usize];
        let targets = &index.targets[..];
        let data = self.app(app);
        let all = TargetSet::first(targets.len());
        let serving = all.filter(|i| targets[i].effective_weight > 0);
        let (candidates, fail_open) = if !serving.is_empty() {
            (TargetSet(serving.0 & !exclude.0), false)
        } else if data.failure_mode == FailureMode::FailOpen {
            (TargetSet(all.0 & !exclude.0), true)
        } else {
            return Err(NoTarget::FailClosed);
        };
        if candidates.is_empty() {
            return Err(NoTarget::AllExcluded);
        }
        let weight = |t: &TargetIndex| {
            if fail_open {
                t.configured_weight.max(1) * 1000
            } else {
                t.effective_weight
            }
        };
        let draw = |set: TargetSet| weighted_draw(targets, set, pick, weight);
        let (target, reason) = match (data.policy, client.region) {
            (Policy::Weighted, _) => (draw(candidates), Reason::Weighted),
            (Policy::Failover, _) => {
                let tier = candidates
                    .iter()
                    .map(|i| targets[i].tier)
                    .min()
                    .unwrap_or(0);
                (
                    draw(candidates.filter(|i| targets[i].tier == tier)),
                    Reason::Tier { tier },
                )
            }
            (Policy::Geo | Policy::Latency, None) => (draw(candidates), Reason::UnknownRegion),
            (Policy::Geo, Some(region)) => {
                let preferred = index
                    .geo_preferred
                    .get(region.0 as usize)
                    .copied()
                    .unwrap_or(0);
                let preferred = TargetSet(candidates.0 & preferred);
                if preferred.is_empty() {
                    self.nearest(targets, candidates, region, &draw)
                } else {
                    (draw(preferred), Reason::Preferred { region })
                }
            }
            (Policy::Latency, Some(region)) => {
                let best = candidates
                    .iter()
                    .filter_map(|i| self.rtt_ms(region, targets[i].cluster))
                    .min_by(f32::total_cmp);
                match best {
                    Some(best) => {
                        let fastest = candidates.filter(|i| {
                            self.rtt_ms(region, targets[i].cluster)
                                .is_some_and(|rtt| rtt <= best + RTT_TIE_MS)
                        });
                        let target = draw(fastest);
                        let rtt_ms = self.rtt_ms(region, targets[target].cluster).unwrap_or(best);
                        (target, Reason::LowestRtt { region, rtt_ms })
                    }
                    // Nothing measured yet from this region: distance is the best estimate.
                    None => self.nearest(targets, candidates, region, &draw),
                }
            }
        };
        Ok(Choice {
            target,
            reason,
            fail_open,
            location_dependent: matches!(data.policy, Policy::Geo | Policy::Latency),
        })
    }

    fn nearest(
        &self,
        targets: &[TargetIndex],
        candidates: TargetSet,
        region: RegionId,
        draw: &impl Fn(TargetSet) -> usize,
    ) -> (usize, Reason) {
        let distance = |i: usize| self.distance_km(region, targets[i].cluster);
        let best = candidates
            .iter()
            .map(distance)
            .min_by(f32::total_cmp)
            .unwrap_or(0.0);
        let target = draw(candidates.filter(|i| distance(i) <= best + DISTANCE_TIE_KM));
        (
            target,
            Reason::Nearest {
                region,
                distance_km: distance(target),
            },
        )
    }
}

/// Draws one target of `set` (non-empty) in proportion to `weight`.
fn weighted_draw(
    targets: &[TargetIndex],
    set: TargetSet,
    pick: Pick,
    weight: impl Fn(&TargetIndex) -> u32,
) -> usize {
    match pick {
        Pick::Spread(counter) => {
            let total: u64 = set.iter().map(|i| u64::from(weight(&targets[i]))).sum();
            if total == 0 {
                return set.iter().next().unwrap_or(0);
            }
            // frac(n·φ) scaled to [0, total): a low-discrepancy walk over the intervals.
            let frac = counter.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut point = ((u128::from(frac) * u128::from(total)) >> 64) as u64;
            let mut last = 0;
            for i in set.iter() {
                let w = u64::from(weight(&targets[i]));
                if point < w {
                    return i;
                }
                point -= w;
                last = i;
            }
            last
        }
        Pick::Affinity(key) => {
            // Weighted rendezvous: score = w / -ln(u), u uniform in (0, 1) from (key, target).
            let mut best = (f64::NEG_INFINITY, set.iter().next().unwrap_or(0));
            for i in set.iter() {
                let w = f64::from(weight(&targets[i]));
                if w <= 0.0 {
                    continue;
                }
                let hash = mix64(key ^ targets[i].stable_id);
                let unit = ((hash >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                let score = w / -unit.ln();
                if score > best.0 {
                    best = (score, i);
                }
            }
            best.1
        }
    }
}

/// splitmix64's finaliser: a cheap, well-mixed 64-bit hash.
fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One target as [`RoutingTable::explain`] reports it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetView {
    /// The target's cluster.
    pub cluster: String,
    /// The cluster's region.
    pub region: String,
    /// Failover tier.
    pub tier: u8,
    /// Configured weight.
    pub weight: u32,
    /// Weight after health (drain, slow start), in 1/1000 units.
    pub effective_weight: u32,
    /// Health.
    pub health: Health,
    /// Whether it was a candidate (serving, or everything under fail-open).
    pub candidate: bool,
    /// Whether it was chosen.
    pub chosen: bool,
}

/// A selection with everything that went into it, for operators and the `explain` API.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Explanation {
    /// The table version the decision was made on.
    pub table_version: u64,
    /// The app.
    pub app: String,
    /// Its policy.
    pub policy: Policy,
    /// The client's address.
    pub client: IpAddr,
    /// The client's region, when known.
    pub client_region: Option<String>,
    /// The chosen target's cluster, if any.
    pub chosen: Option<String>,
    /// The rule that chose it.
    pub reason: Option<Reason>,
    /// Whether the fail-open rule applied.
    pub fail_open: bool,
    /// Why nothing was chosen, if so.
    pub no_target: Option<NoTarget>,
    /// Every target of the app.
    pub targets: Vec<TargetView>,
    /// One sentence saying what happened.
    pub summary: String,
}

impl RoutingTable {
    /// Selects as [`RoutingTable::select`] does (no exclusions) and says why, in data and words.
    pub fn explain(&self, app: AppId, client: &Client, pick: Pick) -> Explanation {
        let data = self.app(app);
        let result = self.select(app, client, pick, TargetSet::EMPTY);
        let fail_open = matches!(
            result,
            Ok(Choice {
                fail_open: true,
                ..
            })
        );
        let targets = data
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| TargetView {
                cluster: t.cluster.clone(),
                region: self.target_cluster(app, i).region.clone(),
                tier: t.tier,
                weight: t.weight,
                effective_weight: t.effective_weight(),
                health: t.health,
                candidate: fail_open || t.effective_weight() > 0,
                chosen: matches!(result, Ok(c) if c.target == i),
            })
            .collect();
        let client_region = client.region.map(|r| self.region(r).name.clone());
        let summary = match &result {
            Ok(choice) => {
                let cluster = &data.targets[choice.target].cluster;
                let why = match choice.reason {
                    Reason::Weighted => "drawn by weight among the serving targets".to_string(),
                    Reason::Tier { tier } => format!("drawn by weight in tier {tier}, the lowest tier with a serving target"),
                    Reason::Preferred { region } => {
                        format!("a cluster the app prefers for clients in region {}", self.region(region).name)
                    }
                    Reason::Nearest { region, distance_km } => format!(
                        "the nearest serving cluster to region {} ({distance_km:.0} km)",
                        self.region(region).name
                    ),
                    Reason::LowestRtt { region, rtt_ms } => format!(
                        "the lowest measured round-trip time from region {} ({rtt_ms:.1} ms)",
                        self.region(region).name
                    ),
                    Reason::UnknownRegion => {
                        "the client's region is unknown, so drawn by weight among the serving targets".to_string()
                    }
                };
                let open = if choice.fail_open {
                    "; no target is serving, so the app fails open to all"
                } else {
                    ""
                };
                format!("{} → cluster {cluster}: {why}{open}", data.name)
            }
            Err(NoTarget::FailClosed) => {
                format!(
                    "{}: no target is serving and the app fails closed, so no target is given",
                    data.name
                )
            }
            Err(NoTarget::AllExcluded) => format!("{}: every candidate was excluded", data.name),
        };
        Explanation {
            table_version: self.version(),
            app: data.name.clone(),
            policy: data.policy,
            client: client.addr,
            client_region,
            chosen: result.ok().map(|c| data.targets[c.target].cluster.clone()),
            reason: result.ok().map(|c| c.reason),
            fail_open,
            no_target: result.err(),
            targets,
            summary,
        }
    }
}
