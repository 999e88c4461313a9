//! Verdicts: the quorum of vantage observations for each target, with flap damping.
//!
//! Pure state transitions: the caller brings the time. A target changes state only when a
//! quorum of the vantages that reported recently agree: a strict majority of them, and at
//! least two whenever two or more vantages probe the target, so one vantage that loses its
//! network never moves traffic. A target that keeps changing state is held down: once it
//! has changed `flap_threshold` times within `flap_window`, a recovery waits `hold_down`,
//! doubled for each further change, up to `hold_down_max`. Failing is never delayed.

use std::collections::{BTreeMap, VecDeque};

use meridian_subscriber::probe::Observation;
use serde::{Deserialize, Serialize};

/// The tunables of quorum and flap damping, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerdictOptions {
    /// A vantage's vote counts for this long after its observation.
    pub vantage_ttl_ms: u64,
    /// Window of flap counting.
    pub flap_window_ms: u64,
    /// Changes within the window from which recoveries are held down.
    pub flap_threshold: u32,
    /// First hold-down.
    pub hold_down_ms: u64,
    /// Longest hold-down.
    pub hold_down_max_ms: u64,
}

impl VerdictOptions {
    /// How long a vote is kept (shown, and raising the quorum) after its observation.
    pub fn forget_after_ms(&self) -> u64 {
        self.vantage_ttl_ms.saturating_mul(FORGET_AFTER_TTLS)
    }

    /// The options of a config's controller section.
    pub fn from_config(c: &meridian_config::controller::ControllerConfig) -> Self {
        Self {
            vantage_ttl_ms: c.vantage_ttl.as_millis() as u64,
            flap_window_ms: c.flap_window.as_millis() as u64,
            flap_threshold: c.flap_threshold,
            hold_down_ms: c.hold_down.as_millis() as u64,
            hold_down_max_ms: c.hold_down_max.as_millis() as u64,
        }
    }
}

/// One vantage's latest vote on one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Vote {
    /// The vantage.
    pub vantage: String,
    /// Healthy by the vantage's rise/fall.
    pub healthy: bool,
    /// Whether its latest check passed.
    pub last_ok: bool,
    /// Best latency of its latest round, seconds.
    pub latency_seconds: f64,
    /// What it saw.
    pub detail: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// Whether this vantage has ever seen the target pass. A vote of "healthy" counts only
    /// then: a vantage that has not seen it answer has no evidence that it is up.
    #[serde(default)]
    pub seen_ok: bool,
}

impl Vote {
    /// Whether the vote says "up" with evidence.
    fn passing(&self) -> bool {
        self.healthy && self.seen_ok
    }
}

/// The verdict on one target; the default is unknown.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdict {
    /// Whether the target may serve: false while unknown.
    pub healthy: bool,
    /// Whether a quorum ever decided (or a restart seeded it from the last table). Until
    /// then the target is unknown, and unknown is not up.
    pub known: bool,
    /// Whether the last change was a recovery from unhealthy (a first verdict is not).
    recovered: bool,
    /// When the verdict last changed (0: never, the initial state).
    pub changed_at_ms: u64,
    /// While set and in the future, a recovery is being held down until then.
    pub held_until_ms: Option<u64>,
    /// How long the current hold-down lasts (for the history's words, which carry no
    /// timestamps: readers see times in their own zone).
    hold_ms: u64,
    /// Times of recent changes, for flap damping.
    changes: VecDeque<u64>,
}

/// `ms` in words: "750 ms", "30 s", "2 min 30 s".
fn fmt_duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{} s", ms / 1_000),
        _ if ms % 60_000 < 1_000 => format!("{} min", ms / 60_000),
        _ => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1_000),
    }
}

/// A verdict change, as the failover history records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Change {
    /// The app.
    pub app: String,
    /// The cluster.
    pub cluster: String,
    /// The new verdict.
    pub healthy: bool,
    /// When.
    pub at_ms: u64,
    /// Why, in words.
    pub cause: String,
    /// The votes that counted.
    pub votes: Vec<Vote>,
}

#[derive(Clone, Debug, Default)]
struct TargetState {
    votes: BTreeMap<String, Vote>,
    verdict: Verdict,
}

/// Every target's votes and verdict. Keys are `(app, cluster)`.
#[derive(Clone, Debug, Default)]
pub struct Verdicts {
    /// app → cluster → state: nested so lookups by `&str` need no allocation.
    targets: BTreeMap<String, BTreeMap<String, TargetState>>,
    /// A vantage counted as known even before its first vote: the controller's own, so a
    /// subscriber reporting before the controller's first probe round is not alone.
    own: Option<String>,
    /// A vantage whose votes are shown but not counted (the controller's own, when
    /// `controller.own_probe_votes` is off).
    silent: Option<String>,
}

/// Votes older than this many TTLs are forgotten: the vantage is gone, and must not keep
/// raising the quorum.
const FORGET_AFTER_TTLS: u64 = 10;

impl Verdicts {
    /// Verdicts for these targets, all unknown.
    pub fn new<'a>(targets: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut map: BTreeMap<String, BTreeMap<String, TargetState>> = BTreeMap::new();
        for (a, c) in targets {
            map.entry(a.to_string())
                .or_default()
                .insert(c.to_string(), TargetState::default());
        }
        Self {
            targets: map,
            own: None,
            silent: None,
        }
    }

    /// Counts `vantage` as known from the start (see [`Verdicts`]).
    pub fn with_own_vantage(mut self, vantage: &str) -> Self {
        self.own = Some(vantage.to_string());
        self
    }

    /// Records `vantage`'s votes for display without counting them in any quorum.
    pub fn with_silent_vantage(mut self, vantage: &str) -> Self {
        self.silent = Some(vantage.to_string());
        self
    }

    /// Changes the set of targets: existing ones keep their votes and verdict, new ones
    /// start unknown, removed ones are forgotten (the config changed). Returns the new ones.
    pub fn retarget<'a>(
        &mut self,
        targets: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Vec<(String, String)> {
        let mut old = std::mem::take(&mut self.targets);
        let mut added = Vec::new();
        for (a, c) in targets {
            let state = match old.get_mut(a).and_then(|clusters| clusters.remove(c)) {
                Some(state) => state,
                None => {
                    added.push((a.to_string(), c.to_string()));
                    TargetState::default()
                }
            };
            self.targets
                .entry(a.to_string())
                .or_default()
                .insert(c.to_string(), state);
        }
        added
    }

    /// Starts a target known, as the last published table had it (after a restart): a
    /// restart neither sends traffic to a target before probes confirm it nor takes it from
    /// one the quorum had found healthy.
    pub fn seed(&mut self, app: &str, cluster: &str, healthy: bool, now_ms: u64) {
        if let Some(t) = self.get_mut(app, cluster) {
            t.verdict.healthy = healthy;
            t.verdict.known = true;
            if !healthy {
                t.verdict.changed_at_ms = now_ms;
            }
        }
    }

    fn get(&self, app: &str, cluster: &str) -> Option<&TargetState> {
        self.targets.get(app)?.get(cluster)
    }

    fn get_mut(&mut self, app: &str, cluster: &str) -> Option<&mut TargetState> {
        self.targets.get_mut(app)?.get_mut(cluster)
    }

    /// Records a vantage's observation; `false` when the target is unknown.
    pub fn record(&mut self, vantage: &str, obs: &Observation) -> bool {
        let Some(t) = self.get_mut(&obs.app, &obs.cluster) else {
            return false;
        };
        let seen_ok = obs.last_ok || t.votes.get(vantage).is_some_and(|v| v.seen_ok);
        t.votes.insert(
            vantage.to_string(),
            Vote {
                vantage: vantage.to_string(),
                healthy: obs.healthy,
                last_ok: obs.last_ok,
                latency_seconds: obs.latency_seconds,
                detail: obs.detail.clone(),
                at_ms: obs.at_ms,
                seen_ok,
            },
        );
        true
    }

    /// Forgets a vantage's votes on every target.
    pub fn forget(&mut self, vantage: &str) {
        for clusters in self.targets.values_mut() {
            for t in clusters.values_mut() {
                t.votes.remove(vantage);
            }
        }
    }

    /// The verdict on a target.
    pub fn verdict(&self, app: &str, cluster: &str) -> Option<&Verdict> {
        self.get(app, cluster).map(|t| &t.verdict)
    }

    /// A target's votes, by vantage.
    pub fn votes(&self, app: &str, cluster: &str) -> Vec<Vote> {
        self.get(app, cluster)
            .map(|t| t.votes.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every target's verdict, as (app, cluster, verdict).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &Verdict)> {
        self.targets.iter().flat_map(|(app, clusters)| {
            clusters
                .iter()
                .map(move |(cluster, t)| (app.as_str(), cluster.as_str(), &t.verdict))
        })
    }

    /// What compute needs of the verdicts: the targets that are unhealthy (or unknown) or
    /// have recovered.
    pub fn inputs(&self) -> crate::compute::VerdictInputs {
        let mut inputs = crate::compute::VerdictInputs::default();
        for (app, cluster, v) in self.iter() {
            let recovered = v.healthy && v.recovered;
            if !v.healthy || recovered {
                inputs.insert(
                    app,
                    cluster,
                    crate::compute::HealthInput {
                        healthy: v.healthy,
                        recovered_at_ms: recovered.then_some(v.changed_at_ms),
                    },
                );
            }
        }
        inputs
    }

    /// Applies quorum and flap damping at `now_ms`; returns the changes.
    pub fn evaluate(&mut self, now_ms: u64, opts: &VerdictOptions) -> Vec<Change> {
        let mut changes = Vec::new();
        let own = self.own.as_deref();
        for (app, cluster, t) in self.targets.iter_mut().flat_map(|(app, clusters)| {
            clusters
                .iter_mut()
                .map(move |(cluster, t)| (app, cluster, t))
        }) {
            let forget = opts.forget_after_ms();
            t.votes
                .retain(|_, v| now_ms.saturating_sub(v.at_ms) <= forget);
            let silent = self.silent.as_deref();
            let counted = |v: &&Vote| Some(v.vantage.as_str()) != silent;
            let known = t.votes.values().filter(counted).count()
                + usize::from(own.is_some_and(|o| !t.votes.contains_key(o)));
            // Only votes with evidence count: "healthy" from a vantage that never saw the
            // target pass is no vote at all.
            let fresh: Vec<&Vote> = t
                .votes
                .values()
                .filter(counted)
                .filter(|v| now_ms.saturating_sub(v.at_ms) <= opts.vantage_ttl_ms)
                .filter(|v| v.passing() || !v.healthy)
                .collect();
            let n = fresh.len();
            if n == 0 {
                continue;
            }
            let needed = if known >= 2 { (n / 2 + 1).max(2) } else { 1 };
            let failing = fresh.iter().filter(|v| !v.healthy).count();
            let passing = n - failing;
            if !t.verdict.known {
                // The first verdict: not a change of state, so neither a flap nor a
                // recovery; only a failure is worth a line in the history.
                let v = &mut t.verdict;
                let (healthy, count) = if failing >= needed {
                    (false, failing)
                } else if passing >= needed {
                    (true, passing)
                } else {
                    continue;
                };
                v.known = true;
                v.healthy = healthy;
                v.changed_at_ms = now_ms;
                if !healthy {
                    changes.push(Change {
                        app: app.clone(),
                        cluster: cluster.clone(),
                        healthy,
                        at_ms: now_ms,
                        cause: format!(
                            "first verdict: {count} of {n} vantages report it failing (quorum {needed})"
                        ),
                        votes: fresh.into_iter().cloned().collect(),
                    });
                }
                continue;
            }
            let v = &mut t.verdict;
            while v
                .changes
                .front()
                .is_some_and(|at| now_ms.saturating_sub(*at) > opts.flap_window_ms)
            {
                v.changes.pop_front();
            }
            let new_state = if v.healthy && failing >= needed {
                v.held_until_ms = None;
                Some((
                    false,
                    format!("{failing} of {n} vantages report it failing (quorum {needed})"),
                ))
            } else if !v.healthy && passing >= needed {
                let recent = v.changes.len() as u32;
                if recent >= opts.flap_threshold {
                    match v.held_until_ms {
                        None => {
                            let doublings = (recent - opts.flap_threshold).min(20);
                            let hold = opts
                                .hold_down_ms
                                .saturating_mul(1 << doublings)
                                .min(opts.hold_down_max_ms);
                            v.held_until_ms = Some(now_ms + hold);
                            v.hold_ms = hold;
                            None
                        }
                        Some(until) if now_ms < until => None,
                        Some(_) => Some((
                            true,
                            format!(
                                "{passing} of {n} vantages report it passing (quorum {needed}); \
                                 recovery held down for {} after {recent} changes (flap damping)",
                                fmt_duration(v.hold_ms)
                            ),
                        )),
                    }
                } else {
                    Some((
                        true,
                        format!("{passing} of {n} vantages report it passing (quorum {needed})"),
                    ))
                }
            } else {
                if !v.healthy && passing < needed {
                    // The recovery did not hold through the hold-down: start over.
                    v.held_until_ms = None;
                }
                None
            };
            if let Some((healthy, cause)) = new_state {
                v.recovered = healthy;
                v.healthy = healthy;
                v.changed_at_ms = now_ms;
                v.held_until_ms = None;
                v.changes.push_back(now_ms);
                changes.push(Change {
                    app: app.clone(),
                    cluster: cluster.clone(),
                    healthy,
                    at_ms: now_ms,
                    cause,
                    votes: fresh.into_iter().cloned().collect(),
                });
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: VerdictOptions = VerdictOptions {
        vantage_ttl_ms: 1000,
        flap_window_ms: 60_000,
        flap_threshold: 2,
        hold_down_ms: 1000,
        hold_down_max_ms: 3000,
    };

    fn obs(healthy: bool, at_ms: u64) -> Observation {
        Observation {
            app: "shop".into(),
            cluster: "c1".into(),
            healthy,
            last_ok: healthy,
            latency_seconds: 0.001,
            detail: String::new(),
            at_ms,
        }
    }

    fn healthy(v: &Verdicts) -> bool {
        v.verdict("shop", "c1").unwrap().healthy
    }

    /// shop/c1, known healthy (as a restart seeds it from the last table).
    fn known_healthy() -> Verdicts {
        let mut v = Verdicts::new([("shop", "c1")]);
        v.seed("shop", "c1", true, 0);
        v
    }

    #[test]
    fn a_target_is_unknown_and_not_up_until_a_vantage_that_probed_it_votes() {
        let mut v = Verdicts::new([("shop", "c1")]).with_own_vantage("controller");
        let unknown = |v: &Verdicts| {
            let verdict = v.verdict("shop", "c1").unwrap();
            !verdict.known && !verdict.healthy && !v.inputs().get("shop", "c1").healthy
        };
        assert!(unknown(&v), "published as not up");
        // Two vantages that started before their first check say "healthy" with no
        // evidence (a rise/fall that starts up): that is no vote, however many they are.
        let no_evidence = Observation {
            last_ok: false,
            ..obs(true, 100)
        };
        v.record("edge-a", &no_evidence);
        v.record("edge-b", &no_evidence);
        v.record("controller", &obs(false, 100));
        assert!(v.evaluate(100, &OPTS).is_empty());
        assert!(unknown(&v));
        // Once they have seen it fail too, the first verdict is down, in the history.
        v.record("edge-a", &obs(false, 200));
        let changes = v.evaluate(200, &OPTS);
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(changes[0].cause.starts_with("first verdict"));
        assert!(v.verdict("shop", "c1").unwrap().known && !healthy(&v));

        // A first verdict of up is not a recovery: no slow start, no flap counted.
        let mut v = Verdicts::new([("shop", "c1")]);
        v.record("controller", &obs(true, 100));
        assert!(v.evaluate(100, &OPTS).is_empty());
        assert!(healthy(&v));
        assert_eq!(v.inputs().get("shop", "c1").recovered_at_ms, None);
        // A vote of "healthy" keeps counting once the vantage has seen it pass.
        v.record("controller", &no_evidence);
        assert!(v.votes("shop", "c1")[0].seen_ok);
    }

    #[test]
    fn retarget_keeps_known_verdicts_and_forgets_removed_targets() {
        let mut v = Verdicts::new([("shop", "c1"), ("shop", "c2")]);
        v.seed("shop", "c1", false, 5);
        let added = v.retarget([("shop", "c1"), ("shop", "c3")]);
        assert_eq!(added, [("shop".to_string(), "c3".to_string())]);
        assert!(!healthy(&v), "c1 keeps its verdict");
        let c3 = v.verdict("shop", "c3").unwrap();
        assert!(!c3.known && !c3.healthy, "a new target starts unknown");
        assert!(
            v.verdict("shop", "c2").is_none(),
            "a removed target is forgotten"
        );
        assert!(!v.record(
            "a",
            &Observation {
                cluster: "c2".into(),
                ..obs(true, 1)
            }
        ));
    }

    #[test]
    fn one_vantage_alone_moves_nothing_when_others_probe() {
        let mut v = known_healthy();
        v.record("a", &obs(false, 100));
        v.record("b", &obs(true, 100));
        v.record("c", &obs(true, 100));
        assert!(v.evaluate(200, &OPTS).is_empty());
        assert!(healthy(&v));
        // A second vantage seeing failures makes a majority of three.
        v.record("b", &obs(false, 300));
        let changes = v.evaluate(400, &OPTS);
        assert_eq!(changes.len(), 1);
        assert!(!changes[0].healthy);
        assert_eq!(changes[0].votes.len(), 3);
        assert!(changes[0].cause.contains("2 of 3"), "{}", changes[0].cause);
    }

    #[test]
    fn two_vantages_need_both_and_stale_votes_do_not_count() {
        let mut v = known_healthy();
        v.record("a", &obs(false, 100));
        v.record("b", &obs(true, 100));
        assert!(v.evaluate(200, &OPTS).is_empty());
        // b goes silent: a alone is the only fresh vote, and still cannot move traffic.
        v.record("a", &obs(false, 1500));
        assert!(v.evaluate(1600, &OPTS).is_empty());
        assert!(healthy(&v));
        v.record("b", &obs(false, 1700));
        assert_eq!(v.evaluate(1700, &OPTS).len(), 1);
        assert!(!healthy(&v));
    }

    #[test]
    fn the_own_vantage_counts_before_its_first_vote() {
        let mut v = known_healthy().with_own_vantage("controller");
        v.record("edge", &obs(false, 100));
        assert!(v.evaluate(100, &OPTS).is_empty());
        v.record("controller", &obs(false, 150));
        assert_eq!(v.evaluate(150, &OPTS).len(), 1);
    }

    #[test]
    fn the_own_vantage_votes_only_when_configured_to() {
        // Three subscribers, two of which see the target fail; the controller still
        // reaches it. Voting, it makes the quorum 3 of 4; silent, 2 of 3 decide.
        let run = |v: Verdicts| {
            let mut v = v;
            v.seed("shop", "c1", true, 0);
            v.record("controller", &obs(true, 100));
            v.record("edge-a", &obs(false, 100));
            v.record("edge-b", &obs(false, 100));
            v.record("edge-c", &obs(true, 100));
            v.evaluate(100, &OPTS)
        };
        let voting = Verdicts::new([("shop", "c1")]).with_own_vantage("controller");
        assert!(run(voting).is_empty());
        let silent = Verdicts::new([("shop", "c1")]).with_silent_vantage("controller");
        let changes = run(silent);
        assert_eq!(changes.len(), 1);
        assert!(changes[0].cause.contains("2 of 3"), "{}", changes[0].cause);
    }

    #[test]
    fn a_single_vantage_decides_when_it_is_the_only_one() {
        let mut v = known_healthy();
        v.record("controller", &obs(false, 100));
        assert_eq!(v.evaluate(100, &OPTS).len(), 1);
        v.record("controller", &obs(true, 200));
        let c = v.evaluate(200, &OPTS);
        assert!(c[0].healthy);
        assert_eq!(v.verdict("shop", "c1").unwrap().changed_at_ms, 200);
    }

    #[test]
    fn flapping_is_held_down_with_growing_hold() {
        let mut v = known_healthy();
        let mut t = 0;
        let step = |v: &mut Verdicts, ok: bool, at: u64| {
            v.record("controller", &obs(ok, at));
            v.evaluate(at, &OPTS)
        };
        t += 100;
        assert_eq!(step(&mut v, false, t).len(), 1); // change 1
        t += 100;
        assert_eq!(step(&mut v, true, t).len(), 1); // change 2
        t += 100;
        assert_eq!(step(&mut v, false, t).len(), 1); // change 3: down at once
        t += 100;
        // 3 changes ≥ threshold 2: recovery held for 1000 ms × 2^(3-2) = 2000 ms.
        assert!(step(&mut v, true, t).is_empty());
        let until = v.verdict("shop", "c1").unwrap().held_until_ms.unwrap();
        assert_eq!(until, t + 2000);
        assert!(step(&mut v, true, t + 1999).is_empty());
        assert!(!healthy(&v));
        let c = step(&mut v, true, t + 2000);
        assert_eq!(c.len(), 1);
        assert!(
            c[0].cause
                .ends_with("recovery held down for 2 s after 3 changes (flap damping)"),
            "{}",
            c[0].cause
        );
        assert!(healthy(&v));
    }

    #[test]
    fn durations_in_words() {
        assert_eq!(fmt_duration(750), "750 ms");
        assert_eq!(fmt_duration(30_000), "30 s");
        assert_eq!(fmt_duration(120_000), "2 min");
        assert_eq!(fmt_duration(150_000), "2 min 30 s");
    }

    #[test]
    fn failing_during_hold_restarts_it() {
        let mut v = known_healthy();
        for (i, ok) in [false, true, false].into_iter().enumerate() {
            v.record("controller", &obs(ok, i as u64 * 10));
            v.evaluate(i as u64 * 10, &OPTS);
        }
        v.record("controller", &obs(true, 100));
        v.evaluate(100, &OPTS);
        assert!(v.verdict("shop", "c1").unwrap().held_until_ms.is_some());
        v.record("controller", &obs(false, 200));
        v.evaluate(200, &OPTS);
        assert_eq!(v.verdict("shop", "c1").unwrap().held_until_ms, None);
    }
}
