//! Vantage reports, checked where they enter: before anything of a report touches the
//! controller's state, every name is one the controller knows, every latency is finite,
//! non-negative and within its probe's timeout, and every timestamp lies within a skew
//! window of the controller's clock and is never later than it. A report with any such
//! problem is refused whole with the field named; observations that are merely old are
//! skipped (they would not vote anyway), and a timestamp a little ahead of the controller
//! counts as now, so no vote can outlive its TTL.

use std::collections::HashMap;

use meridian_subscriber::probe::Observation;
use meridian_subscriber::report::{AnswerSample, LATENCY_BUCKETS, TrafficSample, VantageReport};

use crate::Inputs;

/// How far ahead of the controller's clock a vantage's timestamp may be (clock skew
/// between hosts); later than this, the report is refused.
pub const MAX_CLOCK_SKEW_MS: u64 = 2_000;

/// Latency beyond a probe's timeout is impossible for a passing check; this much is allowed
/// on top for scheduling delay.
pub const LATENCY_SLACK_SECONDS: f64 = 1.0;

/// Longest vantage name accepted (names become keys and metric labels).
pub const MAX_VANTAGE_LEN: usize = 128;

/// Longest observation detail kept; longer ones are cut (the detail is only shown).
pub const MAX_DETAIL_LEN: usize = 1024;

/// What is wrong with a report: the field and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The field, as a path into the report (`observations[2].latency_seconds`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A report that passed its checks: the observations to record (timestamps capped at now,
/// details bounded) and how many old ones were skipped.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    /// Observations to record.
    pub observations: Vec<Observation>,
    /// Traffic samples to record.
    pub traffic: Vec<TrafficSample>,
    /// Answer counts to record.
    pub answers: Vec<AnswerSample>,
    /// Observations older than `max_age_ms`, skipped.
    pub stale: usize,
}

/// A name fit to be a key and a metric label: printable, no whitespace, bounded.
pub fn check_vantage_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_VANTAGE_LEN {
        return Err(format!("is longer than {MAX_VANTAGE_LEN} bytes"));
    }
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{name:?} contains whitespace or control characters"
        ));
    }
    Ok(())
}

/// Checks a report against the config in force at `now_ms`: observations older than
/// `max_age_ms` are skipped; `own_vantage` (the controller's) cannot be reported as.
pub fn check_report(
    report: &VantageReport,
    inputs: &Inputs,
    own_vantage: &str,
    now_ms: u64,
    max_age_ms: u64,
) -> Result<Checked, Problem> {
    check_vantage_name(&report.vantage).map_err(|m| Problem::new("vantage", m))?;
    if report.vantage == own_vantage {
        return Err(Problem::new(
            "vantage",
            format!("{own_vantage:?} is the controller's own vantage"),
        ));
    }
    if let Some(region) = &report.region
        && !inputs.config.regions.iter().any(|r| &r.name == region)
    {
        return Err(Problem::new("region", format!("unknown region {region:?}")));
    }
    let timeouts: HashMap<(&str, &str), f64> = inputs
        .jobs
        .iter()
        .map(|j| {
            (
                (j.app.as_str(), j.cluster.as_str()),
                j.probe.timeout.as_secs_f64(),
            )
        })
        .collect();
    let mut observations = Vec::with_capacity(report.observations.len());
    let mut stale = 0;
    for (i, obs) in report.observations.iter().enumerate() {
        let path = format!("observations[{i}]");
        let Some(timeout) = timeouts.get(&(obs.app.as_str(), obs.cluster.as_str())) else {
            return Err(Problem::new(
                path,
                format!("no target {}/{}", obs.app, obs.cluster),
            ));
        };
        let bound = timeout + LATENCY_SLACK_SECONDS;
        let latency = obs.latency_seconds;
        if !latency.is_finite() || latency < 0.0 || latency > bound {
            return Err(Problem::new(
                format!("{path}.latency_seconds"),
                format!(
                    "{latency} is not a latency in 0..={bound} s (the probe's timeout plus {LATENCY_SLACK_SECONDS} s)"
                ),
            ));
        }
        if obs.at_ms > now_ms.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err(Problem::new(
                format!("{path}.at_ms"),
                format!(
                    "{} is {} ms ahead of the controller's clock (at most {MAX_CLOCK_SKEW_MS} ms of skew is allowed)",
                    obs.at_ms,
                    obs.at_ms - now_ms
                ),
            ));
        }
        if now_ms.saturating_sub(obs.at_ms) > max_age_ms {
            stale += 1;
            continue;
        }
        let mut obs = obs.clone();
        // A vote's age is judged by the controller's clock: never younger than now.
        obs.at_ms = obs.at_ms.min(now_ms);
        truncate(&mut obs.detail, MAX_DETAIL_LEN);
        observations.push(obs);
    }
    for (i, sample) in report.traffic.iter().enumerate() {
        let path = format!("traffic[{i}]");
        if !timeouts.contains_key(&(sample.app.as_str(), sample.cluster.as_str())) {
            return Err(Problem::new(
                path,
                format!("no target {}/{}", sample.app, sample.cluster),
            ));
        }
        let sum = sample.latency_seconds_sum;
        if !sum.is_finite() || sum < 0.0 {
            return Err(Problem::new(
                format!("{path}.latency_seconds_sum"),
                format!("{sum} is not a finite, non-negative sum of seconds"),
            ));
        }
        let buckets = &sample.latency_buckets;
        if !buckets.is_empty() {
            let field = format!("{path}.latency_buckets");
            if buckets.len() != LATENCY_BUCKETS.len() {
                return Err(Problem::new(
                    field,
                    format!(
                        "{} counts for {} bounds (one cumulative count per bound of the latency histogram)",
                        buckets.len(),
                        LATENCY_BUCKETS.len()
                    ),
                ));
            }
            if buckets.windows(2).any(|w| w[0] > w[1])
                || buckets.last().is_some_and(|&n| n > sample.latency_count)
            {
                return Err(Problem::new(
                    field,
                    "counts must be cumulative: non-decreasing, and at most latency_count",
                ));
            }
        }
        if sample.errors > sample.requests {
            return Err(Problem::new(
                format!("{path}.errors"),
                format!(
                    "{} errors out of {} requests: errors are counted among the requests",
                    sample.errors, sample.requests
                ),
            ));
        }
    }
    for (i, sample) in report.answers.iter().enumerate() {
        if !timeouts.contains_key(&(sample.app.as_str(), sample.cluster.as_str())) {
            return Err(Problem::new(
                format!("answers[{i}]"),
                format!("no target {}/{}", sample.app, sample.cluster),
            ));
        }
    }
    Ok(Checked {
        observations,
        traffic: report.traffic.clone(),
        answers: report.answers.clone(),
        stale,
    })
}

/// Most vantages the controller keeps state and metric labels for at once. A credential
/// whose `vantages` is a pattern could otherwise name new vantages without end.
pub const MAX_VANTAGES: usize = 256;

/// The vantages that have reported, with when each last did: bounded by [`MAX_VANTAGES`].
#[derive(Clone, Debug, Default)]
pub struct Vantages {
    last_seen: std::collections::BTreeMap<String, u64>,
}

impl Vantages {
    /// Admits a report from `name` at `now_ms`. When the registry is full, vantages silent
    /// for more than `forget_ms` (their votes are forgotten anyway) make room; they are
    /// returned so their state and labels go too. `Err` when it is still full.
    pub fn admit(&mut self, name: &str, now_ms: u64, forget_ms: u64) -> Result<Vec<String>, ()> {
        if let Some(seen) = self.last_seen.get_mut(name) {
            *seen = now_ms;
            return Ok(Vec::new());
        }
        let mut forgotten = Vec::new();
        if self.last_seen.len() >= MAX_VANTAGES {
            self.last_seen.retain(|v, seen| {
                let keep = now_ms.saturating_sub(*seen) <= forget_ms;
                if !keep {
                    forgotten.push(v.clone());
                }
                keep
            });
            if self.last_seen.len() >= MAX_VANTAGES {
                return Err(());
            }
        }
        self.last_seen.insert(name.to_string(), now_ms);
        Ok(forgotten)
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;

    fn inputs() -> Inputs {
        let yaml = r#"
regions:
  - { name: eu, location: { lat: 50.0, lon: 8.0 } }
clusters:
  - { name: c1, region: eu, provider: aws, endpoints: ["127.0.0.1:1"] }
probes:
  - { name: p, kind: tcp, interval: 1s, timeout: 500ms }
apps:
  - name: shop
    hostnames: [shop.test]
    failure_mode: fail-open
    probe: p
    targets:
      - { cluster: c1, weight: 100 }
"#;
        let config = meridian_config::parse(yaml, std::path::Path::new("t.yaml"))
            .unwrap()
            .config;
        Inputs::new(config)
    }

    fn report(latency: f64, at_ms: u64) -> VantageReport {
        VantageReport {
            vantage: "edge".into(),
            region: Some("eu".into()),
            observations: vec![Observation {
                app: "shop".into(),
                cluster: "c1".into(),
                healthy: true,
                last_ok: true,
                latency_seconds: latency,
                detail: "x".repeat(5000),
                at_ms,
            }],
            traffic: vec![],
            answers: vec![],
        }
    }

    fn field(r: &VantageReport) -> String {
        check_report(r, &inputs(), "controller", NOW, 50_000)
            .unwrap_err()
            .field
    }

    #[test]
    fn bad_latencies_are_refused_naming_the_field() {
        for latency in [-5.0, f64::NAN, f64::INFINITY, 1.6, 1e300] {
            assert_eq!(
                field(&report(latency, NOW)),
                "observations[0].latency_seconds",
                "{latency}"
            );
        }
        let ok = check_report(&report(1.4, NOW), &inputs(), "controller", NOW, 50_000).unwrap();
        assert_eq!(ok.observations.len(), 1);
        assert_eq!(ok.observations[0].detail.len(), MAX_DETAIL_LEN);
    }

    #[test]
    fn future_stamps_are_refused_and_small_skew_counts_as_now() {
        assert_eq!(
            field(&report(0.01, NOW + MAX_CLOCK_SKEW_MS + 1)),
            "observations[0].at_ms"
        );
        let ok = check_report(
            &report(0.01, NOW + MAX_CLOCK_SKEW_MS),
            &inputs(),
            "controller",
            NOW,
            50_000,
        )
        .unwrap();
        assert_eq!(ok.observations[0].at_ms, NOW, "never later than now");
        let old = check_report(
            &report(0.01, NOW - 50_001),
            &inputs(),
            "controller",
            NOW,
            50_000,
        )
        .unwrap();
        assert_eq!((old.observations.len(), old.stale), (0, 1));
    }

    #[test]
    fn names_must_be_known() {
        let mut r = report(0.01, NOW);
        r.region = Some("mars".into());
        assert_eq!(field(&r), "region");
        let mut r = report(0.01, NOW);
        r.observations[0].cluster = "c9".into();
        assert_eq!(field(&r), "observations[0]");
        for name in ["", "a b", "controller", &"v".repeat(MAX_VANTAGE_LEN + 1)] {
            let mut r = report(0.01, NOW);
            r.vantage = name.into();
            assert_eq!(field(&r), "vantage", "{name:?}");
        }
    }

    #[test]
    fn traffic_samples_are_checked() {
        let mut r = report(0.01, NOW);
        r.traffic.push(TrafficSample {
            app: "shop".into(),
            cluster: "c1".into(),
            requests: 1,
            errors: 2,
            latency_seconds_sum: 0.0,
            latency_count: 0,
            latency_buckets: vec![],
        });
        assert_eq!(field(&r), "traffic[0].errors");
        r.traffic[0].errors = 0;
        r.traffic[0].latency_seconds_sum = -1.0;
        assert_eq!(field(&r), "traffic[0].latency_seconds_sum");
        r.traffic[0].latency_seconds_sum = 0.0;
        r.traffic[0].latency_count = 3;
        r.traffic[0].latency_buckets = vec![1, 2];
        assert_eq!(field(&r), "traffic[0].latency_buckets");
        let mut buckets = vec![3; LATENCY_BUCKETS.len()];
        buckets[0] = 4;
        r.traffic[0].latency_buckets = buckets;
        assert_eq!(field(&r), "traffic[0].latency_buckets");
        r.traffic[0].latency_buckets = vec![4; LATENCY_BUCKETS.len()];
        assert_eq!(
            field(&r),
            "traffic[0].latency_buckets",
            "more than latency_count"
        );
        r.traffic[0].latency_buckets = vec![3; LATENCY_BUCKETS.len()];
        assert!(check_report(&r, &inputs(), "controller", NOW, 10_000).is_ok());
    }

    #[test]
    fn answer_samples_must_name_known_targets() {
        let mut r = report(0.01, NOW);
        r.answers.push(AnswerSample {
            app: "shop".into(),
            cluster: "c9".into(),
            answers: 5,
        });
        assert_eq!(field(&r), "answers[0]");
        r.answers[0].cluster = "c1".into();
        assert!(check_report(&r, &inputs(), "controller", NOW, 10_000).is_ok());
    }

    #[test]
    fn the_vantage_registry_is_bounded_and_makes_room_from_silent_ones() {
        let mut v = Vantages::default();
        for i in 0..MAX_VANTAGES {
            assert_eq!(v.admit(&format!("pod-{i}"), 1_000, 50_000), Ok(vec![]));
        }
        assert_eq!(
            v.admit("pod-0", 2_000, 50_000),
            Ok(vec![]),
            "known ones report on"
        );
        assert_eq!(v.admit("pod-new", 2_000, 50_000), Err(()), "full");
        // Once the others have been silent past the horizon, they make room.
        let forgotten = v.admit("pod-new", 52_000, 50_000).unwrap();
        assert_eq!(forgotten.len(), MAX_VANTAGES - 1, "all but pod-0");
        assert!(!forgotten.contains(&"pod-0".to_string()));
    }
}
