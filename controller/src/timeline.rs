//! The dashboard's memory of the last hours: per target, requests/s, error ratio, upstream
//! p99 latency, DNS answers/s and replicas ready, downsampled into three ring buffers
//! ([`TIERS`]: 2 s points for 15 min, 15 s for 1 h, 60 s for 6 h). Pure: the caller gives
//! the time and the samples. Failover verdicts and operator changes are not kept here; the
//! store's history and audit log already hold them, and the API adds them to a window.
//!
//! Memory is bounded whatever happens outside: at most [`MAX_SERIES`] targets are tracked
//! (series that have left every ring make room; beyond that, new ones are refused and
//! counted), each point holds at most one cell per series, and the rings have fixed lengths.
//! [`Timeline::bound_bytes`] states the bound, [`Timeline::heap_bytes`] estimates the use from the capacities held.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use crate::store::{AuditEntry, HistoryEntry, MEMBER_EVENT_APP};

/// (step, points) per tier, finest first: 15 min at 2 s, 1 h at 15 s, 6 h at 60 s.
pub const TIERS: [(u64, usize); 3] = [(2_000, 450), (15_000, 240), (60_000, 360)];

/// Most targets charted at once.
pub const MAX_SERIES: usize = 256;

/// Longest app or cluster name kept (names are DNS labels in the config; this bounds the
/// registry even if that ever changes).
pub const MAX_NAME_LEN: usize = 253;

/// One target's readings at one moment; `None` where nothing is known (no traffic reported,
/// no DNS server reporting, no replica count outside Kubernetes mode).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Requests per second through the proxies.
    pub requests_per_second: Option<f64>,
    /// Share of them failed or answered 5xx, 0 to 1.
    pub error_ratio: Option<f64>,
    /// Upstream p99 latency, seconds.
    pub latency_p99_seconds: Option<f64>,
    /// DNS answers per second carrying the target's addresses.
    pub dns_answers_per_second: Option<f64>,
    /// Replicas ready in the target's cluster.
    pub replicas_ready: Option<u32>,
}

/// One series' readings over one point: means of requests/s, error ratio and answers/s;
/// the worst p99 (a spike must not be averaged away); the last replica count. Packed into
/// 24 bytes (`NaN` and `u32::MAX` stand for "none"), as the rings hold hundreds of
/// thousands of them.
#[derive(Clone, Copy, Debug)]
struct Cell {
    /// Sums of requests/s, error ratio and answers/s.
    sums: [f32; 3],
    /// How many readings each sum holds (a 60 s point holds at most 60).
    counts: [u8; 3],
    p99_max: f32,
    replicas_last: u32,
}

const NO_REPLICAS: u32 = u32::MAX;

impl Default for Cell {
    fn default() -> Self {
        Self {
            sums: [0.0; 3],
            counts: [0; 3],
            p99_max: f32::NAN,
            replicas_last: NO_REPLICAS,
        }
    }
}

impl Cell {
    fn add(&mut self, s: &Sample) {
        let means = [
            s.requests_per_second,
            s.error_ratio,
            s.dns_answers_per_second,
        ];
        for (i, v) in means.into_iter().enumerate() {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                self.sums[i] += v as f32;
                self.counts[i] = self.counts[i].saturating_add(1);
            }
        }
        if let Some(p99) = s.latency_p99_seconds.filter(|v| v.is_finite()) {
            // NaN (none yet) loses to any number in f32::max.
            self.p99_max = self.p99_max.max(p99 as f32);
        }
        if let Some(r) = s.replicas_ready {
            self.replicas_last = r.min(NO_REPLICAS - 1);
        }
    }

    fn mean(&self, i: usize) -> Option<f64> {
        (self.counts[i] > 0).then(|| f64::from(self.sums[i]) / f64::from(self.counts[i]))
    }

    fn p99(&self) -> Option<f64> {
        (!self.p99_max.is_nan()).then(|| f64::from(self.p99_max))
    }

    fn replicas(&self) -> Option<u32> {
        (self.replicas_last != NO_REPLICAS).then_some(self.replicas_last)
    }

    fn is_empty(&self) -> bool {
        self.counts == [0; 3] && self.p99().is_none() && self.replicas().is_none()
    }
}

#[derive(Debug)]
struct Point {
    start_ms: u64,
    /// By series id, up to the highest id sampled in this step; empty cells for the rest.
    cells: Vec<Cell>,
}

#[derive(Debug)]
struct Tier {
    step_ms: u64,
    capacity: usize,
    points: VecDeque<Point>,
}

impl Tier {
    fn record(&mut self, now_ms: u64, samples: &[(u16, Sample)]) {
        let start_ms = now_ms - now_ms % self.step_ms;
        if self.points.back().is_none_or(|p| p.start_ms < start_ms) {
            if self.points.len() == self.capacity {
                // Reuse the oldest point's allocation: steady state allocates nothing.
                let mut oldest = self.points.pop_front().expect("capacity > 0");
                oldest.start_ms = start_ms;
                oldest.cells.clear();
                self.points.push_back(oldest);
            } else {
                self.points.push_back(Point {
                    start_ms,
                    cells: Vec::new(),
                });
            }
        }
        let Some(point) = self.points.back_mut().filter(|p| p.start_ms == start_ms) else {
            return; // the clock went back: a sample for a past point is dropped
        };
        for (id, sample) in samples {
            let id = usize::from(*id);
            if point.cells.len() <= id {
                // Exact growth: the bound counts one cell per series, not a doubling.
                point.cells.reserve_exact(id + 1 - point.cells.len());
                point.cells.resize(id + 1, Cell::default());
            }
            point.cells[id].add(sample);
        }
    }

    fn span_ms(&self) -> u64 {
        self.step_ms * self.capacity as u64
    }
}

/// The charted series, downsampled per tier.
#[derive(Debug)]
pub struct Timeline {
    tiers: Vec<Tier>,
    /// Series id → (app, cluster); `None` for a free id.
    series: Vec<Option<(String, String)>>,
    /// app → cluster → id (looked up by `&str`, without allocating).
    ids: HashMap<String, HashMap<String, u16>>,
    /// Ids in use (`Some` entries of `series`).
    live: usize,
    /// Scans of the rings for series to free, over the timeline's life.
    reclaim_scans: u64,
    /// Samples refused because [`MAX_SERIES`] series were live.
    refused: u64,
}

impl Default for Timeline {
    fn default() -> Self {
        Self {
            tiers: TIERS
                .iter()
                .map(|&(step_ms, capacity)| Tier {
                    step_ms,
                    capacity,
                    points: VecDeque::with_capacity(capacity),
                })
                .collect(),
            series: Vec::new(),
            ids: HashMap::new(),
            live: 0,
            reclaim_scans: 0,
            refused: 0,
        }
    }
}

/// One target's readings over a window, one entry per step (`null` where unknown).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SeriesView {
    /// The app.
    pub app: String,
    /// The target's cluster.
    pub cluster: String,
    /// Requests per second through the proxies.
    pub requests_per_second: Vec<Option<f64>>,
    /// Share of requests failed or answered 5xx, 0 to 1.
    pub error_ratio: Vec<Option<f64>>,
    /// Upstream p99 latency, seconds (the worst reading of each step).
    pub latency_p99_seconds: Vec<Option<f64>>,
    /// DNS answers per second carrying the target's addresses.
    pub dns_answers_per_second: Vec<Option<f64>>,
    /// Replicas ready in the target's cluster (Kubernetes mode).
    pub replicas_ready: Vec<Option<u32>>,
}

/// A window of the timeline: the step times and every series over them, and the events
/// (filled in by the API from the store).
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TimelineView {
    /// Width of one step, ms.
    pub step_ms: u64,
    /// Start of each step, ms since the Unix epoch, oldest first.
    pub times_ms: Vec<u64>,
    /// Every series with a reading in the window.
    pub series: Vec<SeriesView>,
    /// Verdict changes, member events and operator changes in the window, oldest first.
    pub events: Vec<TimelineEvent>,
}

/// Something that happened, drawn on the charts' time axis.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TimelineEvent {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// `verdict` (a target judged healthy or unhealthy), `member` (a member cluster's API
    /// server reachable or not) or `operator` (a change through the API: drain, weight, …).
    pub kind: String,
    /// The app, when the event concerns one.
    pub app: Option<String>,
    /// The cluster, when the event concerns one.
    pub cluster: Option<String>,
    /// The new state, for verdicts and members.
    pub healthy: Option<bool>,
    /// What happened, in words.
    pub text: String,
}

/// The events since `from_ms`, oldest first: verdict changes from the failover history and
/// changes from the audit log (both newest first, as the store gives them).
pub fn events(history: &[HistoryEntry], audit: &[AuditEntry], from_ms: u64) -> Vec<TimelineEvent> {
    let verdicts = history
        .iter()
        .filter(|h| h.change.at_ms >= from_ms)
        .map(|h| {
            // The member cluster as a whole (its API server), not one target.
            let member = h.change.app == MEMBER_EVENT_APP;
            TimelineEvent {
                at_ms: h.change.at_ms,
                kind: if member { "member" } else { "verdict" }.into(),
                app: (!member).then(|| h.change.app.clone()),
                cluster: Some(h.change.cluster.clone()),
                healthy: Some(h.change.healthy),
                text: h.change.cause.clone(),
            }
        });
    let operator = audit.iter().filter(|a| a.at_ms >= from_ms).map(|a| {
        // Subjects read `target:APP/CLUSTER` or `cluster:CLUSTER`.
        let (app, cluster) = match a.subject.split_once(':') {
            Some(("target", rest)) => match rest.split_once('/') {
                Some((app, cluster)) => (Some(app.to_string()), Some(cluster.to_string())),
                None => (None, None),
            },
            Some(("cluster", cluster)) => (None, Some(cluster.to_string())),
            _ => (None, None),
        };
        let detail = match &a.detail {
            serde_json::Value::Object(m) if !m.is_empty() => format!(" {}", a.detail),
            _ => String::new(),
        };
        TimelineEvent {
            at_ms: a.at_ms,
            kind: "operator".into(),
            app,
            cluster,
            healthy: None,
            text: format!("{} {} {}{detail}", a.who, a.action, a.subject),
        }
    });
    let mut all: Vec<TimelineEvent> = verdicts.chain(operator).collect();
    all.sort_by_key(|e| e.at_ms);
    all
}

impl Timeline {
    /// Records one sampling round at `now_ms`: (app, cluster, readings) per target.
    pub fn record(&mut self, now_ms: u64, samples: &[(&str, &str, Sample)]) {
        let mut by_id = Vec::with_capacity(samples.len().min(MAX_SERIES));
        // The rings are scanned for room at most once per round: with more targets than
        // series (10,000 apps x 50 clusters), a scan per refused target would hold the
        // timeline's lock for minutes.
        let mut reclaimed = false;
        for (app, cluster, sample) in samples {
            match self.id(app, cluster, &by_id, &mut reclaimed) {
                Some(id) => by_id.push((id, *sample)),
                None => self.refused += 1,
            }
        }
        for tier in &mut self.tiers {
            tier.record(now_ms, &by_id);
        }
    }

    /// The id of (app, cluster), assigning a free one if need be; `pending` are the ids
    /// assigned in this round, not yet in any ring; `reclaimed` says whether this round
    /// has scanned the rings for room already.
    fn id(
        &mut self,
        app: &str,
        cluster: &str,
        pending: &[(u16, Sample)],
        reclaimed: &mut bool,
    ) -> Option<u16> {
        if app.len() > MAX_NAME_LEN || cluster.len() > MAX_NAME_LEN {
            return None;
        }
        if let Some(&id) = self.ids.get(app).and_then(|c| c.get(cluster)) {
            return Some(id);
        }
        if self.live == MAX_SERIES {
            if *reclaimed {
                return None;
            }
            *reclaimed = true;
            self.reclaim(pending);
            if self.live == MAX_SERIES {
                return None;
            }
        }
        let free = match self.series.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.series.push(None);
                self.series.len() - 1
            }
        };
        let id = u16::try_from(free).ok()?;
        self.live += 1;
        self.series[free] = Some((app.to_string(), cluster.to_string()));
        self.ids
            .entry(app.to_string())
            .or_default()
            .insert(cluster.to_string(), id);
        Some(id)
    }

    /// Frees the ids of series no ring holds a reading of any more (targets gone for 6 h),
    /// but for the `pending` ones.
    fn reclaim(&mut self, pending: &[(u16, Sample)]) {
        self.reclaim_scans += 1;
        let mut used = vec![false; self.series.len()];
        for (id, _) in pending {
            used[usize::from(*id)] = true;
        }
        for tier in &self.tiers {
            for point in &tier.points {
                for (id, cell) in point.cells.iter().enumerate() {
                    used[id] |= !cell.is_empty();
                }
            }
        }
        for (id, used) in used.into_iter().enumerate() {
            if !used && let Some((app, cluster)) = self.series[id].take() {
                self.live -= 1;
                let Some(clusters) = self.ids.get_mut(&app) else {
                    continue;
                };
                clusters.remove(&cluster);
                if clusters.is_empty() {
                    self.ids.remove(&app);
                }
            }
        }
        // A freed id inherits no readings: its cells in the rings are all empty (that is
        // why it was freed).
    }

    /// Samples refused so far because the series limit was reached.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// The last `window_ms` up to `now_ms`, from the finest tier that spans it.
    pub fn window(&self, window_ms: u64, now_ms: u64) -> TimelineView {
        let tier = self
            .tiers
            .iter()
            .find(|t| t.span_ms() >= window_ms)
            .unwrap_or_else(|| self.tiers.last().expect("tiers"));
        let step = tier.step_ms;
        let last = now_ms - now_ms % step;
        let steps = window_ms.min(tier.span_ms()).div_ceil(step).max(1);
        let first = last.saturating_sub((steps - 1) * step);
        let times_ms: Vec<u64> = (0..steps).map(|i| first + i * step).collect();
        let mut series: Vec<Option<SeriesView>> = vec![None; self.series.len()];
        for point in tier.points.iter().filter(|p| p.start_ms >= first) {
            let Ok(slot) = usize::try_from((point.start_ms - first) / step) else {
                continue;
            };
            if slot >= times_ms.len() {
                continue;
            }
            for (id, cell) in point.cells.iter().enumerate() {
                if cell.is_empty() {
                    continue;
                }
                let Some((app, cluster)) = &self.series[id] else {
                    continue;
                };
                let view = series[id].get_or_insert_with(|| SeriesView {
                    app: app.clone(),
                    cluster: cluster.clone(),
                    requests_per_second: vec![None; times_ms.len()],
                    error_ratio: vec![None; times_ms.len()],
                    latency_p99_seconds: vec![None; times_ms.len()],
                    dns_answers_per_second: vec![None; times_ms.len()],
                    replicas_ready: vec![None; times_ms.len()],
                });
                view.requests_per_second[slot] = cell.mean(0);
                view.error_ratio[slot] = cell.mean(1);
                view.latency_p99_seconds[slot] = cell.p99();
                view.dns_answers_per_second[slot] = cell.mean(2);
                view.replicas_ready[slot] = cell.replicas();
            }
        }
        let mut series: Vec<SeriesView> = series.into_iter().flatten().collect();
        series.sort_by(|a, b| (&a.app, &a.cluster).cmp(&(&b.app, &b.cluster)));
        TimelineView {
            step_ms: step,
            times_ms,
            series,
            events: Vec::new(),
        }
    }

    /// Heap bytes held now: the rings' points and cells, and the series names.
    pub fn heap_bytes(&self) -> usize {
        let points: usize = self
            .tiers
            .iter()
            .map(|t| {
                t.points.capacity() * size_of::<Point>()
                    + t.points
                        .iter()
                        .map(|p| p.cells.capacity() * size_of::<Cell>())
                        .sum::<usize>()
            })
            .sum();
        // Names: once in the registry, once in the index (apps once per app), plus each
        // map's slots (key, value and a control byte per slot).
        let names: usize = self
            .series
            .iter()
            .flatten()
            .map(|(a, c)| 2 * (a.capacity() + c.capacity()))
            .sum::<usize>()
            + self.series.capacity() * size_of::<Option<(String, String)>>()
            + self.ids.capacity() * (size_of::<(String, HashMap<String, u16>)>() + 1)
            + self
                .ids
                .values()
                .map(|c| c.capacity() * (size_of::<(String, u16)>() + 1))
                .sum::<usize>();
        points + names
    }

    /// The most [`Timeline::heap_bytes`] can reach: every point of every ring holding a cell
    /// of every series (cells grow exactly), every name at its longest, and every map slot (a
    /// hash map keeps at most 8 slots per 7 entries and grows by doubling).
    pub fn bound_bytes() -> usize {
        let points: usize = TIERS.iter().map(|(_, n)| n).sum();
        let cells = MAX_SERIES * size_of::<Cell>();
        let slots = 4 * MAX_SERIES;
        let names = MAX_SERIES * 2 * 2 * 2 * MAX_NAME_LEN
            + 2 * MAX_SERIES * size_of::<Option<(String, String)>>()
            + slots * (size_of::<(String, HashMap<String, u16>)>() + 1)
            + 2 * slots * (size_of::<(String, u16)>() + 1);
        points * (size_of::<Point>() + cells) + names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rps(v: f64) -> Sample {
        Sample {
            requests_per_second: Some(v),
            ..Sample::default()
        }
    }

    #[test]
    fn a_window_gives_one_reading_per_step_from_the_finest_tier_that_spans_it() {
        let mut t = Timeline::default();
        let start = 1_000_000_000;
        for s in 0..30 {
            let at = start + s * 1_000;
            t.record(
                at,
                &[("shop", "eu", rps(s as f64)), ("shop", "us", rps(1.0))],
            );
        }
        let now = start + 29_000;
        let view = t.window(20_000, now);
        assert_eq!(view.step_ms, 2_000);
        assert_eq!(view.times_ms.len(), 10);
        assert_eq!(*view.times_ms.last().unwrap(), now - now % 2_000);
        let eu = &view.series[0];
        assert_eq!((eu.app.as_str(), eu.cluster.as_str()), ("shop", "eu"));
        // Each 2 s point is the mean of its two 1 s samples.
        assert_eq!(eu.requests_per_second.last().copied().flatten(), Some(28.5));
        assert_eq!(eu.requests_per_second[8], Some(26.5));
        assert_eq!(eu.error_ratio[8], None, "no error ratio was sampled");
        assert_eq!(t.window(3_600_000, now).step_ms, 15_000);
        assert_eq!(t.window(6 * 3_600_000, now).step_ms, 60_000);
        // A 6 h window of the coarsest tier holds the last minutes' mean in one point.
        let coarse = t.window(6 * 3_600_000, now);
        assert_eq!(coarse.times_ms.len(), 360);
    }

    #[test]
    fn gaps_stay_empty_and_p99_keeps_the_worst_second() {
        let mut t = Timeline::default();
        let start = 60_000 * 1000;
        let p99 = |v| Sample {
            latency_p99_seconds: Some(v),
            replicas_ready: Some(3),
            ..Sample::default()
        };
        t.record(start, &[("shop", "eu", p99(0.01))]);
        t.record(start + 1_000, &[("shop", "eu", p99(0.5))]);
        // Nothing for 10 s (the controller was busy, or down), then one sample.
        t.record(start + 12_000, &[("shop", "eu", p99(0.02))]);
        let view = t.window(14_000, start + 12_000);
        let eu = &view.series[0];
        assert_eq!(eu.latency_p99_seconds[0], Some(0.5f32 as f64));
        assert!(eu.latency_p99_seconds[1..6].iter().all(Option::is_none));
        assert_eq!(eu.replicas_ready[6], Some(3));
        assert_eq!(eu.requests_per_second[6], None);
    }

    #[test]
    fn a_cell_is_packed() {
        assert_eq!(size_of::<Cell>(), 24);
    }

    #[test]
    fn a_day_of_samples_over_more_series_than_the_limit_stays_under_the_bound() {
        let mut t = Timeline::default();
        let start = 1_700_000_000_000u64;
        let names: Vec<(String, String)> = (0..MAX_SERIES + 44)
            .map(|i| {
                (
                    format!("app-{}", i / 10),
                    format!("cluster-{}-{}", i % 10, "x".repeat(40)),
                )
            })
            .collect();
        let mut peak = 0;
        for s in 0..86_400u64 {
            // The set of targets shifts every hour (apps come and go, as in Kubernetes
            // mode): old series must make room once they leave every ring.
            let shift = (s / 3_600) as usize;
            let samples: Vec<(&str, &str, Sample)> = names
                .iter()
                .skip(shift % 44)
                .take(MAX_SERIES - 20)
                .map(|(a, c)| {
                    (
                        a.as_str(),
                        c.as_str(),
                        Sample {
                            requests_per_second: Some(100.0),
                            error_ratio: Some(0.01),
                            latency_p99_seconds: Some(0.02),
                            dns_answers_per_second: Some(5.0),
                            replicas_ready: Some(3),
                        },
                    )
                })
                .collect();
            t.record(start + s * 1_000, &samples);
            if s % 3_600 == 0 {
                peak = peak.max(t.heap_bytes());
            }
        }
        peak = peak.max(t.heap_bytes());
        let bound = Timeline::bound_bytes();
        assert!(peak <= bound, "peak {peak} B over the bound {bound} B");
        // ARCHITECTURE.md states about 7 MiB.
        assert!(
            bound <= 8 << 20,
            "the stated bound is {bound} B, over 8 MiB"
        );
        // The rings are full: every tier holds exactly its length.
        for (tier, (_, n)) in t.tiers.iter().zip(TIERS) {
            assert_eq!(tier.points.len(), n);
        }
        let view = t.window(15 * 60_000, start + 86_399_000);
        assert_eq!(view.series.len(), MAX_SERIES - 20);
        assert_eq!(t.refused(), 0, "gone series made room for new ones");
    }

    #[test]
    fn events_merge_verdicts_members_and_operator_changes_in_time_order() {
        use crate::verdict::Change;
        let change = |app: &str, healthy, at_ms| HistoryEntry {
            seq: at_ms,
            change: Change {
                app: app.into(),
                cluster: "eu".into(),
                healthy,
                at_ms,
                cause: "2 of 3 vantages report it failing (quorum 2)".into(),
                votes: vec![],
            },
        };
        let audit = |subject: &str, at_ms| AuditEntry {
            seq: at_ms,
            at_ms,
            who: "alice".into(),
            role: "operator".into(),
            action: "drain".into(),
            subject: subject.into(),
            detail: serde_json::json!({}),
        };
        let history = [
            change("shop", true, 300),
            change(MEMBER_EVENT_APP, false, 200),
            change("shop", false, 50),
        ];
        let audit = [audit("target:shop/us", 250), audit("cluster:eu", 100)];
        let e = events(&history, &audit, 100);
        let kinds: Vec<(&str, u64)> = e.iter().map(|e| (e.kind.as_str(), e.at_ms)).collect();
        assert_eq!(
            kinds,
            [
                ("operator", 100),
                ("member", 200),
                ("operator", 250),
                ("verdict", 300)
            ]
        );
        assert_eq!(
            (e[0].app.as_deref(), e[0].cluster.as_deref()),
            (None, Some("eu"))
        );
        assert_eq!((e[1].app.as_deref(), e[1].healthy), (None, Some(false)));
        assert_eq!(
            (e[2].app.as_deref(), e[2].cluster.as_deref()),
            (Some("shop"), Some("us"))
        );
        assert_eq!(e[2].text, "alice drain target:shop/us");
        assert_eq!(
            (e[3].app.as_deref(), e[3].healthy),
            (Some("shop"), Some(true))
        );
    }

    #[test]
    fn series_beyond_the_limit_are_refused_and_counted() {
        let mut t = Timeline::default();
        let names: Vec<String> = (0..MAX_SERIES + 5).map(|i| format!("c{i}")).collect();
        let samples: Vec<(&str, &str, Sample)> = names
            .iter()
            .map(|c| ("shop", c.as_str(), rps(1.0)))
            .collect();
        t.record(1_000_000, &samples);
        assert_eq!(t.refused(), 5);
        assert_eq!(t.window(60_000, 1_000_000).series.len(), MAX_SERIES);
        let long = "x".repeat(MAX_NAME_LEN + 1);
        t.record(1_001_000, &[("shop", long.as_str(), rps(1.0))]);
        assert_eq!(t.refused(), 6);
    }

    #[test]
    fn a_round_over_far_more_targets_than_series_scans_the_rings_once() {
        // 10,000 apps x 50 clusters is 500,000 targets a round; each refused one used to
        // scan every ring for room.
        let mut t = Timeline::default();
        let names: Vec<String> = (0..20 * MAX_SERIES).map(|i| format!("c{i}")).collect();
        let samples: Vec<(&str, &str, Sample)> = names
            .iter()
            .map(|c| ("shop", c.as_str(), rps(1.0)))
            .collect();
        for round in 0..3u64 {
            t.record(1_000_000 + round * 2_000, &samples);
        }
        // One scan a round (each finds every series still charted), not one per target.
        assert_eq!(t.reclaim_scans, 3);
        assert_eq!(t.refused(), 3 * (19 * MAX_SERIES) as u64);
        assert_eq!(t.window(60_000, 1_004_000).series.len(), MAX_SERIES);
    }
}
