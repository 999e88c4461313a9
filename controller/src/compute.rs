//! Compute: (config, overrides, verdicts, traffic stats, now) → routing table data.
//!
//! A pure function: no I/O, no clock; the same inputs give the same table. Ramps (drain and
//! slow start) are quantised to [`RAMP_STEPS`] steps so that a ramp yields a bounded number
//! of table versions instead of one per tick.

use std::collections::{BTreeMap, HashMap};

use meridian_config::Config;
use meridian_routing::{Health, Problem, RoutingTable, RttSample, TableData};
use serde::{Deserialize, Serialize};

/// Ramps move in steps of 1/RAMP_STEPS.
pub const RAMP_STEPS: f64 = 20.0;

/// The key of a target in override maps: `app/cluster` (names never contain `/`).
pub fn target_key(app: &str, cluster: &str) -> String {
    format!("{app}/{cluster}")
}

/// What a drain or undrain applies to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Scope {
    /// Every target in a cluster.
    Cluster {
        /// The cluster.
        cluster: String,
    },
    /// One app in one cluster.
    Target {
        /// The app.
        app: String,
        /// The cluster.
        cluster: String,
    },
}

impl Scope {
    /// The key in override maps: `cluster:NAME` or `target:APP/CLUSTER`.
    pub fn key(&self) -> String {
        match self {
            Scope::Cluster { cluster } => format!("cluster:{cluster}"),
            Scope::Target { app, cluster } => format!("target:{}", target_key(app, cluster)),
        }
    }
}

/// Operator overrides: what the API changed on top of the config. Durable.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Weight per target (`app/cluster`), replacing the configured weight.
    #[serde(default)]
    pub weights: BTreeMap<String, u32>,
    /// Active drains by scope key, with when each began (ms since the Unix epoch).
    #[serde(default)]
    pub drains: BTreeMap<String, u64>,
    /// Recent undrains by scope key, with when each happened: the start of a slow start.
    #[serde(default)]
    pub undrains: BTreeMap<String, u64>,
}

/// What compute needs of a target's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthInput {
    /// Whether the verdict lets it serve.
    pub healthy: bool,
    /// When it last recovered (became healthy after being unhealthy), if ever.
    pub recovered_at_ms: Option<u64>,
}

impl Default for HealthInput {
    fn default() -> Self {
        Self {
            healthy: true,
            recovered_at_ms: None,
        }
    }
}

/// Traffic statistics: measured round-trip times from client regions to clusters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TrafficStats {
    /// Round-trip time per (region, cluster), milliseconds.
    pub rtt_ms: BTreeMap<(String, String), f64>,
}

/// What capacity-first failover allows of a target's drain (the capacity loop sets it for
/// apps with a placement; other targets have none and drain as the operator asked).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DrainGate {
    /// The replicas that will take its traffic are not ready: it keeps its full weight, even
    /// while drained (shown as a drain at 0 %).
    Hold,
    /// Its traffic may leave from `since_ms` on (drained by an operator or not: its cluster is
    /// being evacuated), but only `max_progress` of the way when capacity elsewhere is short.
    Release {
        /// When the ramp starts.
        since_ms: u64,
        /// How far it may go, 0.0 to 1.0.
        max_progress: f64,
    },
}

/// Drain gates by (app, cluster).
pub type DrainGates = BTreeMap<(String, String), DrainGate>;

fn quantise(progress: f64) -> f64 {
    ((progress.clamp(0.0, 1.0) * RAMP_STEPS).floor() / RAMP_STEPS).clamp(0.0, 1.0)
}

fn ramp(now_ms: u64, start_ms: u64, period_ms: u64) -> f64 {
    if period_ms == 0 {
        return 1.0;
    }
    now_ms.saturating_sub(start_ms) as f64 / period_ms as f64
}

/// The verdicts that differ from "healthy and never recovered", by app and then cluster;
/// a target that is absent is healthy. Kept sparse so compute touches only what differs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VerdictInputs(HashMap<String, HashMap<String, HealthInput>>);

impl VerdictInputs {
    /// Sets a target's input.
    pub fn insert(&mut self, app: &str, cluster: &str, input: HealthInput) {
        self.0
            .entry(app.to_string())
            .or_default()
            .insert(cluster.to_string(), input);
    }

    /// A target's input.
    pub fn get(&self, app: &str, cluster: &str) -> HealthInput {
        self.0
            .get(app)
            .and_then(|m| m.get(cluster))
            .copied()
            .unwrap_or_default()
    }
}

/// Per-app overrides of targets, by cluster.
#[derive(Default)]
struct AppOverrides<'a> {
    weights: HashMap<&'a str, u32>,
    drains: HashMap<&'a str, u64>,
    undrains: HashMap<&'a str, u64>,
}

/// Overrides parsed for lookup by app, then cluster, without allocating per target: most
/// apps have none, and cost one lookup each.
struct Lookup<'a> {
    apps: HashMap<&'a str, AppOverrides<'a>>,
    /// Per cluster: (drain start, undrain time).
    clusters: HashMap<&'a str, (Option<u64>, Option<u64>)>,
}

impl<'a> Lookup<'a> {
    fn new(o: &'a Overrides) -> Self {
        let mut apps: HashMap<&str, AppOverrides<'_>> = HashMap::new();
        let mut clusters: HashMap<&str, (Option<u64>, Option<u64>)> = HashMap::new();
        for (key, w) in &o.weights {
            if let Some((app, cluster)) = key.split_once('/') {
                apps.entry(app).or_default().weights.insert(cluster, *w);
            }
        }
        for (drain, map) in [(true, &o.drains), (false, &o.undrains)] {
            for (key, at) in map {
                if let Some(cluster) = key.strip_prefix("cluster:") {
                    let entry = clusters.entry(cluster).or_default();
                    if drain {
                        entry.0 = Some(*at);
                    } else {
                        entry.1 = Some(*at);
                    }
                } else if let Some((app, cluster)) =
                    key.strip_prefix("target:").and_then(|t| t.split_once('/'))
                {
                    let entry = apps.entry(app).or_default();
                    let target = if drain {
                        &mut entry.drains
                    } else {
                        &mut entry.undrains
                    };
                    target.insert(cluster, *at);
                }
            }
        }
        Self { apps, clusters }
    }
}

/// The health a target gets: the verdict first (an unhealthy target never serves), then a
/// drain (ramping down over the app's drain period), then a slow start after a recovery or
/// an undrain (ramping up over the app's slow start), else healthy.
fn target_health(
    target: (Option<u64>, Option<u64>),
    cluster: (Option<u64>, Option<u64>),
    periods: (u64, u64),
    verdict: HealthInput,
    gate: Option<DrainGate>,
    now_ms: u64,
) -> Health {
    let (drain_ms, slow_start_ms) = periods;
    if !verdict.healthy {
        return Health::Unhealthy;
    }
    let drain_start = [target.0, cluster.0].into_iter().flatten().min();
    match (gate, drain_start) {
        (Some(DrainGate::Hold), Some(_)) => return Health::Draining { progress: 0.0 },
        (
            Some(DrainGate::Release {
                since_ms,
                max_progress,
            }),
            start,
        ) => {
            let start = start.map_or(since_ms, |s| s.max(since_ms));
            return Health::Draining {
                progress: quantise(ramp(now_ms, start, drain_ms).min(max_progress)),
            };
        }
        (_, Some(start)) => {
            return Health::Draining {
                progress: quantise(ramp(now_ms, start, drain_ms)),
            };
        }
        (_, None) => {}
    }
    let ramp_start = [target.1, cluster.1, verdict.recovered_at_ms]
        .into_iter()
        .flatten()
        .max();
    if let Some(start) = ramp_start {
        let progress = ramp(now_ms, start, slow_start_ms);
        if progress < 1.0 {
            return Health::SlowStart {
                progress: quantise(progress),
            };
        }
    }
    Health::Healthy
}

/// Computes the table data for `now_ms`. Its version is a placeholder (1); [`next_table`]
/// numbers it.
pub fn compute(
    config: &Config,
    overrides: &Overrides,
    verdicts: &VerdictInputs,
    stats: &TrafficStats,
    gates: &DrainGates,
    now_ms: u64,
) -> TableData {
    let lookup = Lookup::new(overrides);
    let none = AppOverrides::default();
    let no_verdicts = HashMap::new();
    let mut data = config.base_table(1, now_ms);
    for (app, app_config) in data.apps.iter_mut().zip(&config.apps) {
        let periods = (
            app_config.drain_period.as_millis() as u64,
            app_config.slow_start.as_millis() as u64,
        );
        let app_overrides = lookup.apps.get(app.name.as_str()).unwrap_or(&none);
        let app_verdicts = verdicts.0.get(&app.name).unwrap_or(&no_verdicts);
        let plain = lookup.clusters.is_empty()
            && app_verdicts.is_empty()
            && std::ptr::eq(app_overrides, &none)
            && gates.is_empty();
        if plain {
            // Healthy at configured weights, as the base table already says.
            continue;
        }
        for target in &mut app.targets {
            let cluster = target.cluster.as_str();
            if let Some(weight) = app_overrides.weights.get(cluster) {
                target.weight = *weight;
            }
            let own = (
                app_overrides.drains.get(cluster).copied(),
                app_overrides.undrains.get(cluster).copied(),
            );
            let whole = lookup.clusters.get(cluster).copied().unwrap_or_default();
            let verdict = app_verdicts.get(cluster).copied().unwrap_or_default();
            let gate = if gates.is_empty() {
                None
            } else {
                gates.get(&(app.name.clone(), cluster.to_string())).copied()
            };
            target.health = target_health(own, whole, periods, verdict, gate, now_ms);
        }
    }
    data.rtt = stats
        .rtt_ms
        .iter()
        .filter(|((region, cluster), rtt)| {
            // A sample that is not a duration is left out rather than failing the table.
            rtt.is_finite()
                && **rtt >= 0.0
                && data.regions.iter().any(|r| &r.name == region)
                && data.clusters.iter().any(|c| &c.name == cluster)
        })
        .map(|((region, cluster), rtt)| RttSample {
            region: region.clone(),
            cluster: cluster.clone(),
            rtt_ms: *rtt,
        })
        .collect();
    data
}

/// A published RTT moves only when the smoothed measurement differs from it by more than
/// this many milliseconds and by more than [`RTT_HYSTERESIS_RATIO`] of it.
pub const RTT_HYSTERESIS_MS: f64 = 5.0;

/// See [`RTT_HYSTERESIS_MS`].
pub const RTT_HYSTERESIS_RATIO: f64 = 0.2;

/// Weight of a new measurement in the smoothed RTT (an exponentially weighted mean), so
/// one slow probe among steady ones does not move it far.
pub const RTT_SMOOTHING: f64 = 0.25;

/// An RTT track: the smoothed measurement and the value published in the table.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RttTrack {
    /// Exponentially weighted mean of the measurements, milliseconds.
    pub smoothed_ms: f64,
    /// What the table carries: whole milliseconds, moved only past the hysteresis band.
    pub published_ms: f64,
}

/// The track after `measured_ms` (`None`: the first measurement). Steady probes with
/// ordinary jitter leave `published_ms` as it is, so they publish no new table.
pub fn settle_rtt(track: Option<RttTrack>, measured_ms: f64) -> RttTrack {
    let Some(t) = track else {
        return RttTrack {
            smoothed_ms: measured_ms,
            published_ms: measured_ms.round(),
        };
    };
    let smoothed_ms = t.smoothed_ms + RTT_SMOOTHING * (measured_ms - t.smoothed_ms);
    let band = RTT_HYSTERESIS_MS.max(t.published_ms * RTT_HYSTERESIS_RATIO);
    let published_ms = if (smoothed_ms - t.published_ms).abs() > band {
        smoothed_ms.round()
    } else {
        t.published_ms
    };
    RttTrack {
        smoothed_ms,
        published_ms,
    }
}

/// Why `next` is a new version after `prev`, as a metric label: a verdict (a target
/// starts or stops serving), a ramp step (drain or slow start progress, weights), a
/// latency (RTT samples), else the config (regions, clusters, geo, apps).
pub fn version_cause(prev: &TableData, next: &TableData) -> &'static str {
    let same_shape = prev.apps.len() == next.apps.len()
        && prev.apps.iter().zip(&next.apps).all(|(a, b)| {
            a.name == b.name
                && a.targets.len() == b.targets.len()
                && a.targets
                    .iter()
                    .zip(&b.targets)
                    .all(|(x, y)| x.cluster == y.cluster)
        });
    if prev.regions != next.regions
        || prev.clusters != next.clusters
        || prev.geo != next.geo
        || !same_shape
    {
        return "config";
    }
    let targets = || {
        prev.apps
            .iter()
            .zip(&next.apps)
            .flat_map(|(a, b)| a.targets.iter().zip(&b.targets))
    };
    if targets().any(|(x, y)| (x.health == Health::Unhealthy) != (y.health == Health::Unhealthy)) {
        return "verdict";
    }
    if prev.apps != next.apps {
        return "ramp";
    }
    if prev.rtt != next.rtt {
        return "latency";
    }
    "config"
}

/// True when two tables route alike: equal but for version and generation time.
pub fn same_routing(a: &TableData, b: &TableData) -> bool {
    a.regions == b.regions
        && a.clusters == b.clusters
        && a.apps == b.apps
        && a.geo == b.geo
        && a.rtt == b.rtt
}

/// The next table: `None` when `data` routes as `prev` does; otherwise `data` numbered one
/// above `prev`, validated.
pub fn next_table(
    prev: Option<&RoutingTable>,
    mut data: TableData,
) -> Result<Option<RoutingTable>, meridian_routing::TableError> {
    if let Some(prev) = prev {
        if same_routing(prev.data(), &data) {
            return Ok(None);
        }
        data.version = prev.version() + 1;
    } else {
        data.version = 1;
    }
    RoutingTable::new(data).map(Some)
}

/// What [`next_table_contained`] set aside to publish the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Contained {
    /// An app whose computed state broke a rule: it keeps what the previous table had for
    /// it, or is left out when that had none (or that is no longer valid either).
    App(Problem),
    /// An RTT sample that broke a rule: dropped.
    Rtt(Problem),
}

impl Contained {
    /// The part, as a metric label.
    pub fn part(&self) -> &'static str {
        match self {
            Contained::App(_) => "app",
            Contained::Rtt(_) => "rtt",
        }
    }
}

/// The index `N` of a problem path that starts `PREFIX[N]`.
fn index_in(path: &str, prefix: &str) -> Option<usize> {
    let rest = path.strip_prefix(prefix)?.strip_prefix('[')?;
    rest.split_once(']')?.0.parse().ok()
}

/// As [`next_table`], but a problem located in one app or one RTT sample does not fail the
/// table for everyone: that app keeps its state of `prev` (or is left out), that sample is
/// dropped, and the rest is published. `make` gives the computed data; it is called again
/// (compute is pure) only when something had to be contained. Problems outside apps and
/// samples still fail.
pub fn next_table_contained(
    prev: Option<&RoutingTable>,
    make: impl Fn() -> TableData,
) -> Result<(Option<RoutingTable>, Vec<Contained>), meridian_routing::TableError> {
    use meridian_routing::TableError;
    let problems = match next_table(prev, make()) {
        Ok(table) => return Ok((table, Vec::new())),
        Err(TableError::Invalid(problems)) => problems,
        Err(other) => return Err(other),
    };
    let mut data = make();
    let mut contained = Vec::new();
    let mut problems = problems;
    // Attempt 1 puts back the previous state of failing apps; attempt 2 leaves out any
    // that still fail; attempt 3 must pass.
    for attempt in 0..3 {
        let mut apps = std::collections::BTreeSet::new();
        let mut samples = std::collections::BTreeSet::new();
        for p in &problems {
            if let Some(i) = index_in(&p.path, "apps") {
                apps.insert(i);
                contained.push(Contained::App(p.clone()));
            } else if let Some(i) = index_in(&p.path, "rtt") {
                samples.insert(i);
                contained.push(Contained::Rtt(p.clone()));
            } else {
                return Err(TableError::Invalid(problems));
            }
        }
        for &i in samples.iter().rev() {
            data.rtt.remove(i);
        }
        for &i in apps.iter().rev() {
            let previous = prev.and_then(|p| {
                p.apps()
                    .iter()
                    .find(|a| a.name == data.apps[i].name)
                    .cloned()
            });
            match previous {
                Some(app) if attempt == 0 => data.apps[i] = app,
                _ => {
                    data.apps.remove(i);
                }
            }
        }
        match next_table(prev, data.clone()) {
            Ok(table) => return Ok((table, contained)),
            Err(TableError::Invalid(more)) => problems = more,
            Err(other) => return Err(other),
        }
    }
    Err(TableError::Invalid(problems))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
regions:
  - { name: eu, location: { lat: 50.0, lon: 8.0 } }
  - { name: us, location: { lat: 39.0, lon: -77.0 } }
clusters:
  - { name: c1, region: eu, provider: aws, endpoints: ["127.0.0.1:1"] }
  - { name: c2, region: us, provider: gcp, endpoints: ["127.0.0.1:2"] }
apps:
  - name: shop
    hostnames: [shop.test]
    failure_mode: fail-open
    drain_period: 10s
    slow_start: 20s
    targets:
      - { cluster: c1, weight: 100 }
      - { cluster: c2, weight: 50 }
"#;

    fn config() -> Config {
        meridian_config::parse(CONFIG, std::path::Path::new("test.yaml"))
            .unwrap()
            .config
    }

    fn healths(data: &TableData) -> Vec<(String, u32, Health)> {
        data.apps[0]
            .targets
            .iter()
            .map(|t| (t.cluster.clone(), t.weight, t.health))
            .collect()
    }

    fn from_map(map: &BTreeMap<String, HealthInput>) -> VerdictInputs {
        let mut inputs = VerdictInputs::default();
        for (key, input) in map {
            let (app, cluster) = key.split_once('/').unwrap();
            inputs.insert(app, cluster, *input);
        }
        inputs
    }

    fn down(key: &str) -> BTreeMap<String, HealthInput> {
        [(
            key.to_string(),
            HealthInput {
                healthy: false,
                recovered_at_ms: None,
            },
        )]
        .into()
    }

    #[test]
    fn table_of_cases() {
        let cfg = config();
        let t0 = 1_000_000;
        let drained = |key: &str, at| Overrides {
            drains: [(key.to_string(), at)].into(),
            ..Default::default()
        };
        let undrained = |key: &str, at| Overrides {
            undrains: [(key.to_string(), at)].into(),
            ..Default::default()
        };
        let recovered = |at| -> BTreeMap<String, HealthInput> {
            [(
                "shop/c1".to_string(),
                HealthInput {
                    healthy: true,
                    recovered_at_ms: Some(at),
                },
            )]
            .into()
        };
        use Health::*;
        #[allow(clippy::type_complexity)]
        let cases: Vec<(
            &str,
            Overrides,
            BTreeMap<String, HealthInput>,
            u64,
            Vec<(&str, u32, Health)>,
        )> = vec![
            (
                "config as is",
                Overrides::default(),
                BTreeMap::new(),
                t0,
                vec![("c1", 100, Healthy), ("c2", 50, Healthy)],
            ),
            (
                "weight override",
                Overrides {
                    weights: [("shop/c2".into(), 7)].into(),
                    ..Default::default()
                },
                BTreeMap::new(),
                t0,
                vec![("c1", 100, Healthy), ("c2", 7, Healthy)],
            ),
            (
                "unhealthy verdict",
                Overrides::default(),
                down("shop/c1"),
                t0,
                vec![("c1", 100, Unhealthy), ("c2", 50, Healthy)],
            ),
            (
                "drain start",
                drained("cluster:c1", t0),
                BTreeMap::new(),
                t0,
                vec![("c1", 100, Draining { progress: 0.0 }), ("c2", 50, Healthy)],
            ),
            (
                "drain half way (10 s period)",
                drained("cluster:c1", t0),
                BTreeMap::new(),
                t0 + 5_000,
                vec![("c1", 100, Draining { progress: 0.5 }), ("c2", 50, Healthy)],
            ),
            (
                "drain quantised",
                drained("target:shop/c2", t0),
                BTreeMap::new(),
                t0 + 5_499,
                vec![("c1", 100, Healthy), ("c2", 50, Draining { progress: 0.5 })],
            ),
            (
                "drain done",
                drained("cluster:c1", t0),
                BTreeMap::new(),
                t0 + 60_000,
                vec![("c1", 100, Draining { progress: 1.0 }), ("c2", 50, Healthy)],
            ),
            (
                "unhealthy wins over drain",
                drained("cluster:c1", t0),
                down("shop/c1"),
                t0 + 1000,
                vec![("c1", 100, Unhealthy), ("c2", 50, Healthy)],
            ),
            (
                "undrain slow start (20 s)",
                undrained("cluster:c1", t0),
                BTreeMap::new(),
                t0 + 5_000,
                vec![
                    ("c1", 100, SlowStart { progress: 0.25 }),
                    ("c2", 50, Healthy),
                ],
            ),
            (
                "slow start done",
                undrained("cluster:c1", t0),
                BTreeMap::new(),
                t0 + 20_000,
                vec![("c1", 100, Healthy), ("c2", 50, Healthy)],
            ),
            (
                "recovery slow start",
                Overrides::default(),
                recovered(t0),
                t0 + 10_000,
                vec![
                    ("c1", 100, SlowStart { progress: 0.5 }),
                    ("c2", 50, Healthy),
                ],
            ),
        ];
        for (name, overrides, verdicts, now, want) in cases {
            let data = compute(
                &cfg,
                &overrides,
                &from_map(&verdicts),
                &TrafficStats::default(),
                &DrainGates::new(),
                now,
            );
            let want: Vec<_> = want
                .into_iter()
                .map(|(c, w, h)| (c.to_string(), w, h))
                .collect();
            assert_eq!(healths(&data), want, "case: {name}");
            assert_eq!(data.generated_at_ms, now, "case: {name}");
        }
    }

    #[test]
    fn capacity_gates_hold_a_drain_and_cap_an_evacuation() {
        use meridian_routing::Health::{Draining, Healthy};
        let cfg = config();
        let drained = Overrides {
            drains: [("cluster:c1".to_string(), 1_000)].into(),
            ..Overrides::default()
        };
        let none = VerdictInputs::default();
        let stats = TrafficStats::default();
        let gate = |g| DrainGates::from([(("shop".to_string(), "c1".to_string()), g)]);
        let health = |o: &Overrides, gates: &DrainGates, now| {
            compute(&cfg, o, &none, &stats, gates, now).apps[0].targets[0].health
        };
        // Held: the drain waits at 0 % however long ago it was asked for.
        assert_eq!(
            health(&drained, &gate(DrainGate::Hold), 60_000),
            Draining { progress: 0.0 }
        );
        // Released at 20 s: the 10 s ramp starts then, not at the drain's own start.
        let released = gate(DrainGate::Release {
            since_ms: 20_000,
            max_progress: 1.0,
        });
        assert_eq!(
            health(&drained, &released, 25_000),
            Draining { progress: 0.5 }
        );
        // An evacuation without an operator drain, capped where capacity ran short.
        let capped = gate(DrainGate::Release {
            since_ms: 0,
            max_progress: 0.6,
        });
        assert_eq!(
            health(&Overrides::default(), &capped, 60_000),
            Draining { progress: 0.6 }
        );
        // A hold without a drain changes nothing.
        assert_eq!(
            health(&Overrides::default(), &gate(DrainGate::Hold), 60_000),
            Healthy
        );
    }

    #[test]
    fn new_version_only_on_change() {
        let cfg = config();
        let none = BTreeMap::new();
        let stats = TrafficStats::default();
        let first = next_table(
            None,
            compute(
                &cfg,
                &Overrides::default(),
                &from_map(&none),
                &stats,
                &DrainGates::new(),
                1,
            ),
        )
        .unwrap()
        .unwrap();
        assert_eq!(first.version(), 1);
        // Only the time moved: no new version.
        let same = compute(
            &cfg,
            &Overrides::default(),
            &from_map(&none),
            &stats,
            &DrainGates::new(),
            5_000,
        );
        assert!(next_table(Some(&first), same).unwrap().is_none());
        let changed = compute(
            &cfg,
            &Overrides::default(),
            &from_map(&down("shop/c2")),
            &stats,
            &DrainGates::new(),
            6_000,
        );
        let second = next_table(Some(&first), changed).unwrap().unwrap();
        assert_eq!(second.version(), 2);
        assert_eq!(second.data().generated_at_ms, 6_000);
    }

    #[test]
    fn rtt_samples_of_known_regions_and_clusters_only() {
        let cfg = config();
        let stats = TrafficStats {
            rtt_ms: [
                (("eu".into(), "c1".into()), 4.0),
                (("mars".into(), "c1".into()), 9.0),
                (("us".into(), "c9".into()), 9.0),
            ]
            .into(),
        };
        let data = compute(
            &cfg,
            &Overrides::default(),
            &VerdictInputs::default(),
            &stats,
            &DrainGates::new(),
            1,
        );
        assert_eq!(data.rtt.len(), 1);
        assert_eq!(data.rtt[0].rtt_ms, 4.0);
        RoutingTable::new(data).unwrap();
    }

    #[test]
    fn one_bad_app_or_sample_is_contained_and_the_rest_published() {
        let yaml = CONFIG.replace(
            "apps:\n",
            "apps:\n  - { name: blog, hostnames: [blog.test], failure_mode: fail-open, targets: [{ cluster: c1, weight: 10 }] }\n",
        );
        let cfg = meridian_config::parse(&yaml, std::path::Path::new("t.yaml"))
            .unwrap()
            .config;
        let base = || cfg.base_table(1, 1000);
        let prev = next_table(None, base()).unwrap().unwrap();
        let (blog, shop) = (0, 1);
        assert_eq!(prev.apps()[shop].name, "shop");
        // shop's computed state breaks a rule, a sample is negative; blog changes validly.
        let bad = || {
            let mut data = base();
            data.apps[shop].targets[0].health = Health::Draining { progress: 2.0 };
            data.apps[blog].targets[0].weight = 5;
            data.rtt.push(RttSample {
                region: "eu".into(),
                cluster: "c1".into(),
                rtt_ms: -5000.0,
            });
            data
        };
        let (table, contained) = next_table_contained(Some(&prev), bad).unwrap();
        let table = table.expect("blog's change is published");
        assert_eq!(table.version(), 2);
        assert_eq!(table.apps()[blog].targets[0].weight, 5);
        assert_eq!(
            table.apps()[shop],
            prev.apps()[shop],
            "shop keeps its last state"
        );
        assert!(table.data().rtt.is_empty());
        let parts: Vec<&str> = contained.iter().map(Contained::part).collect();
        assert_eq!(parts, ["app", "rtt"]);

        // With no previous state to keep, the bad app is left out, the others go on.
        let (table, _) = next_table_contained(None, bad).unwrap();
        let table = table.unwrap();
        let names: Vec<&str> = table.apps().iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["blog"]);

        // A problem outside any app or sample still fails the compute.
        let global = || {
            let mut data = base();
            data.clusters[0].region = "nowhere".into();
            data
        };
        assert!(next_table_contained(Some(&prev), global).is_err());
    }

    #[test]
    fn rtts_settle_within_the_hysteresis_band() {
        let run = |series: &[f64]| {
            let mut track = None;
            let mut published = Vec::new();
            for m in series {
                let t = settle_rtt(track, *m);
                published.push(t.published_ms);
                track = Some(t);
            }
            published
        };
        assert_eq!(run(&[0.4]), [0.0], "whole milliseconds");
        // Loopback jitter with one slow round: nothing moves.
        assert_eq!(
            run(&[0.4, 0.9, 0.3, 12.0, 0.5, 0.6]),
            [0.0; 6],
            "a single slow probe is smoothed away"
        );
        // A WAN path with ±20 % jitter: one value.
        let wan = run(&[50.0, 58.0, 43.0, 60.0, 41.0, 55.0, 47.0]);
        assert!(wan.iter().all(|p| *p == 50.0), "{wan:?}");
        // A real change moves it within a few rounds.
        let moved = run(&[50.0, 120.0, 120.0, 120.0, 120.0]);
        assert!(moved[4] >= 90.0, "{moved:?}");
    }

    #[test]
    fn version_causes() {
        let cfg = config();
        let base = cfg.base_table(1, 0);
        let with = |f: &dyn Fn(&mut TableData)| {
            let mut d = base.clone();
            f(&mut d);
            d
        };
        let down = with(&|d| d.apps[0].targets[0].health = Health::Unhealthy);
        assert_eq!(version_cause(&base, &down), "verdict");
        assert_eq!(version_cause(&down, &base), "verdict");
        let ramp = with(&|d| d.apps[0].targets[0].health = Health::Draining { progress: 0.05 });
        assert_eq!(version_cause(&base, &ramp), "ramp");
        let rtt = with(&|d| {
            d.rtt.push(RttSample {
                region: "eu".into(),
                cluster: "c1".into(),
                rtt_ms: 3.0,
            })
        });
        assert_eq!(version_cause(&base, &rtt), "latency");
        let moved = with(&|d| d.clusters[0].endpoints.clear());
        assert_eq!(version_cause(&base, &moved), "config");
    }
}
