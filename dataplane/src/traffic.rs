//! The traffic this proxy sent to each target, as the counters it reports to the controller
//! (so the dashboard shows live rates and the scaler can size replicas). Read from the proxy's
//! own metrics registry once per report, off the request path.

use std::collections::BTreeMap;

use meridian_subscriber::report::{LATENCY_BUCKETS, TrafficSample};
use prometheus::Registry;
use prometheus::proto::MetricFamily;

fn labels<'a>(metric: &'a prometheus::proto::Metric) -> impl Fn(&str) -> Option<&'a str> + 'a {
    move |name| {
        metric
            .get_label()
            .iter()
            .find(|l| l.name() == name)
            .map(|l| l.value())
    }
}

/// Every (app, target) the proxy has sent requests to, with cumulative counters: responses
/// and failed attempts count as requests; 5xx responses and failed attempts as errors.
pub(crate) fn samples(registry: &Registry) -> Vec<TrafficSample> {
    let mut by_target: BTreeMap<(String, String), TrafficSample> = BTreeMap::new();
    let families: Vec<MetricFamily> = registry.gather();
    for family in &families {
        for metric in family.get_metric() {
            let label = labels(metric);
            let (Some(app), Some(target)) = (label("app"), label("target")) else {
                continue;
            };
            if target.is_empty() {
                continue;
            }
            let entry = by_target
                .entry((app.to_string(), target.to_string()))
                .or_insert_with(|| TrafficSample {
                    app: app.to_string(),
                    cluster: target.to_string(),
                    requests: 0,
                    errors: 0,
                    latency_seconds_sum: 0.0,
                    latency_count: 0,
                    latency_buckets: vec![0; LATENCY_BUCKETS.len()],
                });
            match family.name() {
                "meridian_proxy_requests_total" => {
                    let count = metric.get_counter().get_value() as u64;
                    entry.requests += count;
                    if label("class") == Some("5xx") {
                        entry.errors += count;
                    }
                }
                "meridian_proxy_upstream_failures_total" => {
                    let count = metric.get_counter().get_value() as u64;
                    entry.requests += count;
                    entry.errors += count;
                }
                "meridian_proxy_upstream_duration_seconds" => {
                    let histogram = metric.get_histogram();
                    entry.latency_seconds_sum += histogram.get_sample_sum();
                    entry.latency_count += histogram.get_sample_count();
                    // Buckets in the order of LATENCY_BUCKETS (the metric is built with them).
                    for (sum, bucket) in
                        entry.latency_buckets.iter_mut().zip(histogram.get_bucket())
                    {
                        *sum += bucket.cumulative_count();
                    }
                }
                _ => {}
            }
        }
    }
    by_target.into_values().filter(|s| s.requests > 0).collect()
}
