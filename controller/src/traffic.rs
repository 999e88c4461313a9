//! Request rates per target, from the cumulative counters subscribers report. Pure: the
//! caller gives the time. The dashboard shows these rates; the scaler will size replicas by them.

use std::collections::BTreeMap;

use meridian_subscriber::report::TrafficSample;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A target's live traffic, summed over the vantages that carry it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrafficView {
    /// Requests per second.
    pub requests_per_second: f64,
    /// Share of those answered with a 5xx or failed, 0 to 1.
    pub error_ratio: f64,
    /// Mean upstream latency, seconds, when any request was timed.
    pub latency_seconds: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
struct Rate {
    requests: f64,
    errors: f64,
    latency_sum: f64,
    latency_count: f64,
}

#[derive(Clone, Debug)]
struct Track {
    at_ms: u64,
    sample: TrafficSample,
    /// Rates between the last two reports, with the time of the later one.
    rate: Option<(u64, Rate)>,
}

/// Every (vantage, app, cluster)'s last counters and rate.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    tracks: BTreeMap<(String, String, String), Track>,
}

impl Traffic {
    /// Records a vantage's counters for one target, seen at `now_ms`.
    pub fn record(&mut self, vantage: &str, sample: &TrafficSample, now_ms: u64) {
        let key = (
            vantage.to_string(),
            sample.app.clone(),
            sample.cluster.clone(),
        );
        let rate = self.tracks.get(&key).and_then(|last| {
            let seconds = now_ms.saturating_sub(last.at_ms) as f64 / 1000.0;
            let old = &last.sample;
            // A counter that went down means the subscriber restarted: a new baseline.
            let grew = sample.requests >= old.requests
                && sample.errors >= old.errors
                && sample.latency_count >= old.latency_count;
            (seconds > 0.0 && grew).then(|| {
                (
                    now_ms,
                    Rate {
                        requests: (sample.requests - old.requests) as f64 / seconds,
                        errors: (sample.errors - old.errors) as f64 / seconds,
                        latency_sum: (sample.latency_seconds_sum - old.latency_seconds_sum)
                            .max(0.0)
                            / seconds,
                        latency_count: (sample.latency_count - old.latency_count) as f64 / seconds,
                    },
                )
            })
        });
        self.tracks.insert(
            key,
            Track {
                at_ms: now_ms,
                sample: sample.clone(),
                rate,
            },
        );
    }

    /// Forgets a vantage's counters (it was evicted from the vantage registry).
    pub fn forget(&mut self, vantage: &str) {
        self.tracks.retain(|(v, _, _), _| v != vantage);
    }

    /// The target's traffic over the vantages whose rate is at most `max_age_ms` old; `None`
    /// when no vantage reports traffic for it.
    pub fn target(
        &self,
        app: &str,
        cluster: &str,
        now_ms: u64,
        max_age_ms: u64,
    ) -> Option<TrafficView> {
        let rates: Vec<&Rate> = self
            .tracks
            .iter()
            .filter(|((_, a, c), _)| a == app && c == cluster)
            .filter_map(|(_, track)| track.rate.as_ref())
            .filter(|(at, _)| now_ms.saturating_sub(*at) <= max_age_ms)
            .map(|(_, rate)| rate)
            .collect();
        if rates.is_empty() {
            return None;
        }
        let requests: f64 = rates.iter().map(|r| r.requests).sum();
        let errors: f64 = rates.iter().map(|r| r.errors).sum();
        let latency_sum: f64 = rates.iter().map(|r| r.latency_sum).sum();
        let latency_count: f64 = rates.iter().map(|r| r.latency_count).sum();
        Some(TrafficView {
            requests_per_second: requests,
            error_ratio: if requests > 0.0 {
                (errors / requests).min(1.0)
            } else {
                0.0
            },
            latency_seconds: (latency_count > 0.0).then(|| latency_sum / latency_count),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(
        requests: u64,
        errors: u64,
        latency_seconds_sum: f64,
        latency_count: u64,
    ) -> TrafficSample {
        TrafficSample {
            app: "shop".into(),
            cluster: "eu".into(),
            requests,
            errors,
            latency_seconds_sum,
            latency_count,
        }
    }

    #[test]
    fn rates_from_counter_differences_summed_over_vantages() {
        let mut traffic = Traffic::default();
        assert_eq!(traffic.target("shop", "eu", 0, 5000), None);
        traffic.record("proxy-a", &sample(100, 0, 1.0, 100), 1_000);
        // One report is a baseline, not a rate.
        assert_eq!(traffic.target("shop", "eu", 1_000, 5000), None);
        traffic.record("proxy-a", &sample(300, 10, 3.0, 300), 3_000);
        traffic.record("proxy-b", &sample(0, 0, 0.0, 0), 2_000);
        traffic.record("proxy-b", &sample(50, 0, 1.0, 50), 3_000);
        let view = traffic.target("shop", "eu", 3_000, 5000).unwrap();
        assert_eq!(view.requests_per_second, 100.0 + 50.0);
        assert!((view.error_ratio - 5.0 / 150.0).abs() < 1e-9);
        assert!((view.latency_seconds.unwrap() - (1.0 + 1.0) / 150.0).abs() < 1e-9);
        // Stale rates stop counting.
        assert_eq!(traffic.target("shop", "eu", 9_000, 5000), None);
        assert_eq!(traffic.target("shop", "us", 3_000, 5000), None);
    }

    #[test]
    fn a_restarted_subscriber_starts_a_new_baseline() {
        let mut traffic = Traffic::default();
        traffic.record("proxy-a", &sample(1000, 0, 0.0, 0), 1_000);
        traffic.record("proxy-a", &sample(10, 0, 0.0, 0), 2_000);
        assert_eq!(traffic.target("shop", "eu", 2_000, 5000), None);
        traffic.record("proxy-a", &sample(30, 0, 0.0, 0), 3_000);
        assert_eq!(
            traffic
                .target("shop", "eu", 3_000, 5000)
                .unwrap()
                .requests_per_second,
            20.0
        );
    }
}
