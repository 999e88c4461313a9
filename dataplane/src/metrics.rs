//! The proxy's Prometheus metrics, on a registry of its own (no global state, so several
//! proxies can run in one process, as in tests).

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

/// Upstream latency buckets, seconds: shared with the traffic reports, from which the
/// controller estimates percentiles.
use meridian_subscriber::report::LATENCY_BUCKETS;

pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    pub(crate) requests: IntCounterVec,
    pub(crate) retries: IntCounterVec,
    pub(crate) hedges: IntCounterVec,
    pub(crate) ejections: IntCounterVec,
    pub(crate) upstream_failures: IntCounterVec,
    pub(crate) upstream_latency: HistogramVec,
    pub(crate) shed: IntCounterVec,
    pub(crate) budget_exhausted: IntCounter,
    pub(crate) refused: IntCounterVec,
    pub(crate) request_duration: Histogram,
    pub(crate) connections: IntGauge,
    pub(crate) worker_connections: IntCounterVec,
    pub(crate) active_requests: IntGauge,
    pub(crate) table_version: IntGauge,
    pub(crate) table_staleness: Gauge,
    pub(crate) draining: IntGauge,
    pub(crate) access_log_lines: IntCounter,
    pub(crate) access_log_dropped: IntCounterVec,
    pub(crate) client_limit_untracked: IntCounter,
}

impl Metrics {
    pub(crate) fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "meridian_proxy_requests_total",
                "Requests answered, by app, the target that answered and status class",
            ),
            &["app", "target", "class"],
        )?;
        let retries = IntCounterVec::new(
            Opts::new(
                "meridian_proxy_retries_total",
                "Attempts retried on another target, by app and the target that failed",
            ),
            &["app", "target"],
        )?;
        let hedges = IntCounterVec::new(
            Opts::new(
                "meridian_proxy_hedges_total",
                "Hedged attempts (a second attempt while the first is unanswered), by app and \
                 the target hedged to",
            ),
            &["app", "target"],
        )?;
        let ejections = IntCounterVec::new(
            Opts::new(
                "meridian_proxy_ejections_total",
                "Targets ejected locally by outlier detection",
            ),
            &["app", "target"],
        )?;
        let upstream_failures = IntCounterVec::new(
            Opts::new(
                "meridian_proxy_upstream_failures_total",
                "Failed attempts (connect error, timeout, retry status), by app and target",
            ),
            &["app", "target"],
        )?;
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "meridian_proxy_upstream_duration_seconds",
                "Time from sending an attempt to its response head, by app and target",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["app", "target"],
        )?;
        let shed = IntCounterVec::new(
            Opts::new(
                "meridian_proxy_shed_total",
                "Requests answered 503 because every target was at its concurrency limit",
            ),
            &["app"],
        )?;
        let budget_exhausted = IntCounter::new(
            "meridian_proxy_retry_budget_exhausted_total",
            "Budgeted retries and hedges not made because the retry budget was spent",
        )?;
        let refused = IntCounterVec::new(
            Opts::new(
                "meridian_proxy_refused_total",
                "Requests refused before routing, by reason",
            ),
            &["reason"],
        )?;
        let request_duration = Histogram::with_opts(
            HistogramOpts::new(
                "meridian_proxy_request_duration_seconds",
                "Time from a request's head to its response head, all attempts included",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let connections = IntGauge::new("meridian_proxy_connections", "Client connections open")?;
        let worker_connections = IntCounterVec::new(
            Opts::new(
                "meridian_proxy_worker_connections_total",
                "Client connections accepted, by the worker that serves them",
            ),
            &["worker"],
        )?;
        let active_requests =
            IntGauge::new("meridian_proxy_active_requests", "Requests in flight")?;
        let table_version = IntGauge::new(
            "meridian_proxy_table_version",
            "Version of the routing table served (0: none yet)",
        )?;
        let table_staleness = Gauge::new(
            "meridian_proxy_table_staleness_seconds",
            "Time since the controller generated the table served",
        )?;
        let draining = IntGauge::new(
            "meridian_proxy_draining",
            "1 while the proxy is shutting down gracefully",
        )?;
        let access_log_lines = IntCounter::new(
            "meridian_proxy_access_log_lines_total",
            "Access log lines written",
        )?;
        let access_log_dropped = IntCounterVec::new(
            Opts::new(
                "meridian_proxy_access_log_dropped_total",
                "Access log lines dropped: over the rate cap (rate) or lost to a failed write (error)",
            ),
            &["reason"],
        )?;
        let client_limit_untracked = IntCounter::new(
            "meridian_proxy_client_limit_untracked_total",
            "Connections served without per-client limits because the table of client \
             addresses was full",
        )?;
        registry.register(Box::new(client_limit_untracked.clone()))?;
        registry.register(Box::new(access_log_lines.clone()))?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(hedges.clone()))?;
        registry.register(Box::new(ejections.clone()))?;
        registry.register(Box::new(upstream_failures.clone()))?;
        registry.register(Box::new(upstream_latency.clone()))?;
        registry.register(Box::new(shed.clone()))?;
        registry.register(Box::new(budget_exhausted.clone()))?;
        registry.register(Box::new(refused.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(worker_connections.clone()))?;
        registry.register(Box::new(active_requests.clone()))?;
        registry.register(Box::new(table_version.clone()))?;
        registry.register(Box::new(table_staleness.clone()))?;
        registry.register(Box::new(draining.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            retries,
            hedges,
            ejections,
            upstream_failures,
            upstream_latency,
            shed,
            budget_exhausted,
            refused,
            request_duration,
            connections,
            worker_connections,
            active_requests,
            table_version,
            table_staleness,
            draining,
            access_log_lines,
            access_log_dropped,
            client_limit_untracked,
        })
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> String {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail on I/O; a failure would be a malformed metric.
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(%err, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The status class label of a status code.
pub(crate) fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

pub(crate) const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
