//! The controller's Prometheus metrics, in its own registry (no global state, so several
//! controllers can run in one process, as tests and `meridian up` do).

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the controller exports.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    /// Probe results per target, vantage and result (`ok`, `fail`).
    pub probe_results: IntCounterVec,
    /// Probe latency per target and vantage, seconds.
    pub probe_latency: HistogramVec,
    /// Verdict changes per target and new state.
    pub verdict_changes: IntCounterVec,
    /// Current verdict per target (1 healthy, 0 not).
    pub verdict_healthy: IntGaugeVec,
    /// Vantage reports refused whole, by reason (`invalid`, `forbidden-vantage`).
    pub reports_refused: IntCounterVec,
    /// Samples skipped without failing anything, by reason (`stale`, `latency`).
    pub samples_ignored: IntCounterVec,
    /// Problems a compute contained instead of failing, by part (`app`, `rtt`).
    pub compute_contained: IntCounterVec,
    /// Table versions published, by cause (`verdict`, `operator`, `ramp`, `latency`,
    /// `config`).
    pub table_versions: IntCounterVec,
    /// The version of the table being published.
    pub table_version: IntGauge,
    /// Time to compute a table, seconds.
    pub compute_seconds: Histogram,
    /// Size of the encoded table, bytes.
    pub table_bytes: IntGauge,
    /// Timeline samples refused because its series limit was reached.
    pub timeline_refused: prometheus::IntCounter,
    /// Watch streams open.
    pub subscribers_connected: IntGauge,
    /// The version last sent to each subscriber.
    pub subscriber_version: IntGaugeVec,
    /// Frames the binary watch streams sent, by kind (snapshot, delta).
    pub watch_frames: IntCounterVec,
    /// API requests per route and status.
    pub api_requests: IntCounterVec,
    /// 1 while this replica is the leader.
    pub leader: IntGauge,
    /// Per member cluster: 1 while its API server answers.
    pub member_reachable: IntGaugeVec,
    /// Per member cluster: nodes, by `state` (`ready`, `total`).
    pub member_nodes: IntGaugeVec,
    /// Per member cluster: CPU in millicores, by `kind` (`allocatable`, `requested`).
    pub member_cpu_millis: IntGaugeVec,
    /// Per member cluster: memory in bytes, by `kind` (`allocatable`, `requested`).
    pub member_memory_bytes: IntGaugeVec,
    /// Per app and member cluster: replicas, by `kind` (`desired`, `ready`).
    pub workload_replicas: IntGaugeVec,
    /// Per app: requests/s its ready replicas cannot carry (capacity short), else 0.
    pub capacity_missing_rps: GaugeVec,
    /// Per app and cluster: the replicas capacity-first placement wants there.
    pub capacity_wanted_replicas: IntGaugeVec,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let m = Self {
            probe_results: IntCounterVec::new(
                Opts::new(
                    "meridian_probe_results_total",
                    "Probe rounds by target, vantage and result",
                ),
                &["app", "cluster", "vantage", "result"],
            )?,
            probe_latency: HistogramVec::new(
                HistogramOpts::new(
                    "meridian_probe_latency_seconds",
                    "Latency of passing probe rounds",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ]),
                &["app", "cluster", "vantage"],
            )?,
            verdict_changes: IntCounterVec::new(
                Opts::new(
                    "meridian_verdict_changes_total",
                    "Verdict changes by target and new state",
                ),
                &["app", "cluster", "state"],
            )?,
            verdict_healthy: IntGaugeVec::new(
                Opts::new(
                    "meridian_verdict_healthy",
                    "Current verdict: 1 healthy, 0 unhealthy",
                ),
                &["app", "cluster"],
            )?,
            reports_refused: IntCounterVec::new(
                Opts::new(
                    "meridian_reports_refused_total",
                    "Vantage reports refused whole, by reason",
                ),
                &["reason"],
            )?,
            samples_ignored: IntCounterVec::new(
                Opts::new(
                    "meridian_samples_ignored_total",
                    "Probe samples skipped without failing anything, by reason",
                ),
                &["reason"],
            )?,
            compute_contained: IntCounterVec::new(
                Opts::new(
                    "meridian_compute_contained_total",
                    "Problems in a computed table contained to their part (an app keeps its last table, an RTT sample is dropped)",
                ),
                &["part"],
            )?,
            table_versions: IntCounterVec::new(
                Opts::new(
                    "meridian_table_versions_total",
                    "Routing table versions published, by what changed",
                ),
                &["cause"],
            )?,
            table_version: IntGauge::new(
                "meridian_table_version",
                "Version of the published routing table",
            )?,
            compute_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "meridian_table_compute_seconds",
                    "Time to compute a routing table",
                )
                .buckets(vec![
                    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
                ]),
            )?,
            table_bytes: IntGauge::new(
                "meridian_table_encoded_bytes",
                "Size of the encoded routing table",
            )?,
            timeline_refused: prometheus::IntCounter::new(
                "meridian_timeline_samples_refused_total",
                "Samples the dashboard timeline refused: more targets than it charts",
            )?,
            subscribers_connected: IntGauge::new(
                "meridian_subscribers_connected",
                "Watch streams open",
            )?,
            subscriber_version: IntGaugeVec::new(
                Opts::new(
                    "meridian_subscriber_table_version",
                    "Table version last sent to each subscriber",
                ),
                &["subscriber"],
            )?,
            watch_frames: IntCounterVec::new(
                Opts::new(
                    "meridian_watch_frames_total",
                    "Frames the binary watch streams sent, by kind: a snapshot (first connect, a gap the journal cannot bridge, or asked for) or a delta",
                ),
                &["kind"],
            )?,
            api_requests: IntCounterVec::new(
                Opts::new(
                    "meridian_api_requests_total",
                    "API requests by route and status",
                ),
                &["route", "status"],
            )?,
            leader: IntGauge::new(
                "meridian_controller_leader",
                "1 while this controller replica is the leader",
            )?,
            member_reachable: IntGaugeVec::new(
                Opts::new(
                    "meridian_member_reachable",
                    "1 while the member cluster's API server answers",
                ),
                &["cluster"],
            )?,
            member_nodes: IntGaugeVec::new(
                Opts::new(
                    "meridian_member_nodes",
                    "Nodes of a member cluster by state",
                ),
                &["cluster", "state"],
            )?,
            member_cpu_millis: IntGaugeVec::new(
                Opts::new(
                    "meridian_member_cpu_millis",
                    "CPU of a member cluster in millicores, allocatable or requested",
                ),
                &["cluster", "kind"],
            )?,
            member_memory_bytes: IntGaugeVec::new(
                Opts::new(
                    "meridian_member_memory_bytes",
                    "Memory of a member cluster in bytes, allocatable or requested",
                ),
                &["cluster", "kind"],
            )?,
            workload_replicas: IntGaugeVec::new(
                Opts::new(
                    "meridian_workload_replicas",
                    "Replicas of an app's workload in a member cluster, desired or ready",
                ),
                &["app", "cluster", "kind"],
            )?,
            capacity_missing_rps: GaugeVec::new(
                Opts::new(
                    "meridian_capacity_missing_rps",
                    "Requests per second an app's ready replicas cannot carry",
                ),
                &["app"],
            )?,
            capacity_wanted_replicas: IntGaugeVec::new(
                Opts::new(
                    "meridian_capacity_wanted_replicas",
                    "Replicas capacity-first placement wants for an app in a cluster",
                ),
                &["app", "cluster"],
            )?,
            registry,
        };
        m.registry.register(Box::new(m.probe_results.clone()))?;
        m.registry.register(Box::new(m.probe_latency.clone()))?;
        m.registry.register(Box::new(m.verdict_changes.clone()))?;
        m.registry.register(Box::new(m.verdict_healthy.clone()))?;
        m.registry.register(Box::new(m.reports_refused.clone()))?;
        m.registry.register(Box::new(m.samples_ignored.clone()))?;
        m.registry.register(Box::new(m.compute_contained.clone()))?;
        m.registry.register(Box::new(m.table_versions.clone()))?;
        m.registry.register(Box::new(m.table_version.clone()))?;
        m.registry.register(Box::new(m.compute_seconds.clone()))?;
        m.registry.register(Box::new(m.table_bytes.clone()))?;
        m.registry.register(Box::new(m.timeline_refused.clone()))?;
        m.registry
            .register(Box::new(m.subscribers_connected.clone()))?;
        m.registry
            .register(Box::new(m.subscriber_version.clone()))?;
        m.registry.register(Box::new(m.watch_frames.clone()))?;
        m.registry.register(Box::new(m.api_requests.clone()))?;
        m.registry.register(Box::new(m.leader.clone()))?;
        m.registry.register(Box::new(m.member_reachable.clone()))?;
        m.registry.register(Box::new(m.member_nodes.clone()))?;
        m.registry.register(Box::new(m.member_cpu_millis.clone()))?;
        m.registry
            .register(Box::new(m.member_memory_bytes.clone()))?;
        m.registry.register(Box::new(m.workload_replicas.clone()))?;
        m.registry
            .register(Box::new(m.capacity_missing_rps.clone()))?;
        m.registry
            .register(Box::new(m.capacity_wanted_replicas.clone()))?;
        Ok(m)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding gathered families into memory cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
