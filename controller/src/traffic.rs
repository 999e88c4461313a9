//! Request and answer rates per target, from the cumulative counters subscribers report
//! (proxies their requests and upstream latency histogram, DNS servers their answers).
//! Pure: the caller gives the time. The dashboard shows and charts these rates; the scaler
//! sizes replicas by them.

use std::collections::BTreeMap;

use meridian_subscriber::report::{AnswerSample, LATENCY_BUCKETS, TrafficSample};
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
    /// 99th percentile of upstream latency, seconds, estimated from the reported histogram
    /// (linear within a bucket, as Prometheus' `histogram_quantile`); `None` when no timed
    /// request carried a histogram.
    pub latency_p99_seconds: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
struct Rate {
    requests: f64,
    errors: f64,
    latency_sum: f64,
    latency_count: f64,
    /// Cumulative per-bound latency counts per second; empty without a histogram.
    buckets: Vec<f64>,
}

#[derive(Clone, Debug)]
struct Track {
    at_ms: u64,
    sample: TrafficSample,
    /// Rates between the last two reports, with the time of the later one.
    rate: Option<(u64, Rate)>,
}

#[derive(Clone, Debug)]
struct AnswerTrack {
    at_ms: u64,
    answers: u64,
    /// Answers per second between the last two reports, with the time of the later one.
    rate: Option<(u64, f64)>,
}

/// Every (vantage, app, cluster)'s last counters and rate. Keys are bounded by what the
/// intake admits: known targets, and vantages from the bounded registry.
#[derive(Clone, Debug, Default)]
pub struct Traffic {
    tracks: BTreeMap<(String, String, String), Track>,
    answers: BTreeMap<(String, String, String), AnswerTrack>,
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
                        buckets: if sample.latency_buckets.len() == old.latency_buckets.len() {
                            sample
                                .latency_buckets
                                .iter()
                                .zip(&old.latency_buckets)
                                .map(|(new, old)| new.saturating_sub(*old) as f64 / seconds)
                                .collect()
                        } else {
                            Vec::new()
                        },
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

    /// Records a vantage's answer counter for one target, seen at `now_ms`.
    pub fn record_answers(&mut self, vantage: &str, sample: &AnswerSample, now_ms: u64) {
        let key = (
            vantage.to_string(),
            sample.app.clone(),
            sample.cluster.clone(),
        );
        let rate = self.answers.get(&key).and_then(|last| {
            let seconds = now_ms.saturating_sub(last.at_ms) as f64 / 1000.0;
            // A counter that went down means the DNS server restarted: a new baseline.
            (seconds > 0.0 && sample.answers >= last.answers)
                .then(|| (now_ms, (sample.answers - last.answers) as f64 / seconds))
        });
        self.answers.insert(
            key,
            AnswerTrack {
                at_ms: now_ms,
                answers: sample.answers,
                rate,
            },
        );
    }

    /// Forgets a vantage's counters (it was evicted from the vantage registry).
    pub fn forget(&mut self, vantage: &str) {
        self.tracks.retain(|(v, _, _), _| v != vantage);
        self.answers.retain(|(v, _, _), _| v != vantage);
    }

    /// Answers per second given for the target, summed over the DNS servers whose rate is at
    /// most `max_age_ms` old; `None` when none reports answers for it.
    pub fn answers_per_second(
        &self,
        app: &str,
        cluster: &str,
        now_ms: u64,
        max_age_ms: u64,
    ) -> Option<f64> {
        let rates: Vec<f64> = self
            .answers
            .iter()
            .filter(|((_, a, c), _)| a == app && c == cluster)
            .filter_map(|(_, track)| track.rate)
            .filter(|(at, _)| now_ms.saturating_sub(*at) <= max_age_ms)
            .map(|(_, rate)| rate)
            .collect();
        (!rates.is_empty()).then(|| rates.iter().sum())
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
            latency_p99_seconds: quantile(0.99, &rates),
        })
    }
}

/// The `q` quantile of latency over `rates` whose histograms cover every timed request.
fn quantile(q: f64, rates: &[&Rate]) -> Option<f64> {
    let mut cumulative = vec![0.0; LATENCY_BUCKETS.len()];
    let mut total = 0.0;
    for rate in rates {
        if rate.buckets.len() != LATENCY_BUCKETS.len() {
            // Without a histogram from every vantage, a percentile would describe only some.
            if rate.latency_count > 0.0 {
                return None;
            }
            continue;
        }
        for (sum, n) in cumulative.iter_mut().zip(&rate.buckets) {
            *sum += n;
        }
        total += rate.latency_count;
    }
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut below = (0.0, 0.0); // (bound, cumulative count) of the bucket before
    for (bound, count) in LATENCY_BUCKETS.iter().zip(&cumulative) {
        if *count >= rank {
            let width = count - below.1;
            let within = if width > 0.0 {
                (rank - below.1) / width
            } else {
                1.0
            };
            return Some(below.0 + (bound - below.0) * within);
        }
        below = (*bound, *count);
    }
    // Beyond the last bound: that bound is all a histogram can say (as Prometheus does).
    LATENCY_BUCKETS.last().copied()
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
            latency_buckets: vec![],
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
    fn p99_is_estimated_from_the_summed_histograms() {
        let mut traffic = Traffic::default();
        let buckets = |fast: u64, slow: u64| {
            // `fast` latencies ≤ 5 ms, `slow` ones in (50, 100] ms.
            LATENCY_BUCKETS
                .iter()
                .map(|&b| {
                    if b < 0.005 {
                        0
                    } else if b < 0.1 {
                        fast
                    } else {
                        fast + slow
                    }
                })
                .collect::<Vec<u64>>()
        };
        let with = |requests: u64, b: Vec<u64>| TrafficSample {
            latency_count: requests,
            latency_buckets: b,
            ..sample(requests, 0, 0.0, requests)
        };
        traffic.record("proxy-a", &with(0, buckets(0, 0)), 1_000);
        traffic.record("proxy-b", &with(0, buckets(0, 0)), 1_000);
        // 990 fast requests on one vantage, 10 slow ones on the other: p99 falls at the
        // top of the fast bucket; with 20 slow ones, inside the slow one.
        traffic.record("proxy-a", &with(990, buckets(990, 0)), 2_000);
        traffic.record("proxy-b", &with(10, buckets(0, 10)), 2_000);
        let p99 = traffic
            .target("shop", "eu", 2_000, 5000)
            .unwrap()
            .latency_p99_seconds;
        assert!((p99.unwrap() - 0.005).abs() < 1e-9, "{p99:?}");
        traffic.record("proxy-b", &with(30, buckets(0, 30)), 3_000);
        traffic.record("proxy-a", &with(1980, buckets(1980, 0)), 3_000);
        let p99 = traffic
            .target("shop", "eu", 3_000, 5000)
            .unwrap()
            .latency_p99_seconds
            .unwrap();
        assert!(p99 > 0.05 && p99 < 0.1, "{p99}");
        // A vantage without a histogram makes the percentile unknown, not wrong.
        traffic.record("proxy-c", &sample(0, 0, 0.0, 0), 2_000);
        traffic.record("proxy-c", &sample(100, 0, 1.0, 100), 3_000);
        assert_eq!(
            traffic
                .target("shop", "eu", 3_000, 5000)
                .unwrap()
                .latency_p99_seconds,
            None
        );
    }

    #[test]
    fn answer_rates_per_target_summed_over_dns_servers() {
        let mut traffic = Traffic::default();
        let answers = |n| AnswerSample {
            app: "shop".into(),
            cluster: "eu".into(),
            answers: n,
        };
        traffic.record_answers("dns-a", &answers(100), 1_000);
        assert_eq!(traffic.answers_per_second("shop", "eu", 1_000, 5000), None);
        traffic.record_answers("dns-a", &answers(300), 3_000);
        traffic.record_answers("dns-b", &answers(0), 2_000);
        traffic.record_answers("dns-b", &answers(10), 3_000);
        assert_eq!(
            traffic.answers_per_second("shop", "eu", 3_000, 5000),
            Some(110.0)
        );
        assert_eq!(traffic.answers_per_second("shop", "eu", 9_000, 5000), None);
        traffic.forget("dns-a");
        assert_eq!(
            traffic.answers_per_second("shop", "eu", 3_000, 5000),
            Some(10.0)
        );
        // A restarted DNS server is a new baseline, never a negative rate.
        traffic.record_answers("dns-b", &answers(2), 4_000);
        assert_eq!(traffic.answers_per_second("shop", "eu", 4_000, 5000), None);
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
