//! A vantage's reports to the controller: the shapes on the wire and the client that sends
//! them (`POST /api/v1/reports`), plus `probe_and_report`, which runs the probes the
//! controller assigns (`GET /api/v1/probes`) and reports their results.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Method;
use serde::{Deserialize, Serialize};
use tracing::{debug, warn};

use crate::error::Error;
use crate::http::ControllerClient;
use crate::probe::{Observation, ProbeJob, Prober, Sink, TlsConnectors};

/// One report: a vantage's latest observation of each target it probes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VantageReport {
    /// The vantage, such as `proxy@host`.
    pub vantage: String,
    /// The vantage's region, when known: its latencies become the table's round-trip times.
    #[serde(default)]
    pub region: Option<String>,
    /// The latest observation per target.
    pub observations: Vec<Observation>,
    /// The traffic this vantage sent to each target (proxies report it; others send none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficSample>,
    /// The addresses this vantage gave out for each target (DNS servers report them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<AnswerSample>,
}

/// Upper bounds of the upstream latency histogram, seconds: from a loopback hop to a slow
/// cross-cloud one. The proxy's metric and its reports use these, so the controller can
/// estimate percentiles from the reported counts.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Requests a subscriber sent to one target since it started. The counters only grow, so a
/// lost report loses nothing: the controller turns the difference between two reports into
/// rates, and a counter that went down means the subscriber restarted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSample {
    /// The app.
    pub app: String,
    /// The target's cluster.
    pub cluster: String,
    /// Requests answered by the target.
    pub requests: u64,
    /// Of those, answered with a 5xx or failed.
    pub errors: u64,
    /// Sum of upstream latencies, seconds.
    pub latency_seconds_sum: f64,
    /// Number of latencies in the sum.
    pub latency_count: u64,
    /// Cumulative latency counts per bound of [`LATENCY_BUCKETS`] (latencies at most that
    /// long), so percentiles can be estimated; empty when the sender keeps no histogram.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency_buckets: Vec<u64>,
}

/// Addresses a DNS server gave for one target since it started; like the traffic counters,
/// it only grows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerSample {
    /// The app.
    pub app: String,
    /// The target's cluster.
    pub cluster: String,
    /// Answers that carried the target's addresses.
    pub answers: u64,
}

/// Where a vantage's traffic counters come from (the proxy's own metrics).
pub type TrafficSource = Arc<dyn Fn() -> Vec<TrafficSample> + Send + Sync>;

/// Where a vantage's answer counters come from (the DNS server's own metrics).
pub type AnswerSource = Arc<dyn Fn() -> Vec<AnswerSample> + Send + Sync>;

/// The counters a vantage adds to its reports, read once per report.
#[derive(Clone, Default)]
pub struct Counters {
    /// Requests sent per target (a proxy).
    pub traffic: Option<TrafficSource>,
    /// Answers given per target (a DNS server).
    pub answers: Option<AnswerSource>,
}

/// The probes the controller assigns to vantages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeAssignment {
    /// Every job.
    pub jobs: Vec<ProbeJob>,
    /// How often to report.
    pub report_interval_ms: u64,
}

/// Sends one report.
pub async fn send_report(client: &ControllerClient, report: &VantageReport) -> Result<(), Error> {
    let body = serde_json::to_vec(report).map_err(|error| Error::Json {
        what: "encoding a vantage report".into(),
        error,
    })?;
    client
        .call(Method::POST, "/api/v1/reports", Some(body))
        .await
        .map(|_| ())
}

/// Fetches the probe assignment.
pub async fn fetch_assignment(client: &ControllerClient) -> Result<ProbeAssignment, Error> {
    let (_, body) = client.call(Method::GET, "/api/v1/probes", None).await?;
    serde_json::from_slice(&body).map_err(|error| Error::Json {
        what: format!("probe assignment from {}", client.base()),
        error,
    })
}

/// Makes this process a vantage: fetches the controller's probe assignment, runs it, and
/// reports the latest observations every report interval; refetches the assignment when
/// the controller's changes. Runs until a fatal error (the controller refusing the token).
pub async fn probe_and_report(
    controller: &str,
    token: Option<String>,
    vantage: String,
    region: Option<String>,
) -> Result<(), Error> {
    probe_and_report_counters(controller, token, vantage, region, Counters::default()).await
}

/// As [`probe_and_report`], and each report also carries the counters `counters` gives.
pub async fn probe_and_report_counters(
    controller: &str,
    token: Option<String>,
    vantage: String,
    region: Option<String>,
    counters: Counters,
) -> Result<(), Error> {
    let client = ControllerClient::new(controller, token)?;
    probe_and_report_with(client, vantage, region, counters).await
}

/// As [`probe_and_report_counters`], through `client` (which may speak TLS, see
/// [`ControllerClient::with_tls`]).
pub async fn probe_and_report_with(
    client: ControllerClient,
    vantage: String,
    region: Option<String>,
    counters: Counters,
) -> Result<(), Error> {
    let tls = TlsConnectors::new(&[]);
    let latest: Arc<Mutex<BTreeMap<(String, String), Observation>>> = Arc::default();
    let mut running: Option<(ProbeAssignment, Prober)> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let assignment = match fetch_assignment(&client).await {
            Ok(a) => a,
            Err(err) if err.is_fatal() => return Err(err),
            Err(err) => {
                warn!(error = %err, "could not fetch the probe assignment");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        if running.as_ref().map(|(a, _)| a) != Some(&assignment) {
            debug!(jobs = assignment.jobs.len(), "starting the assigned probes");
            latest.lock().unwrap_or_else(|e| e.into_inner()).clear();
            let sink_latest = latest.clone();
            let sink: Sink = Arc::new(move |obs: Observation| {
                sink_latest
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((obs.app.clone(), obs.cluster.clone()), obs);
            });
            let prober = Prober::start(assignment.jobs.clone(), tls.clone(), sink);
            running = Some((assignment, prober));
        }
        let interval = Duration::from_millis(
            running
                .as_ref()
                .map_or(1000, |(a, _)| a.report_interval_ms.max(50)),
        );
        // Report a few times per assignment check; the assignment changes rarely.
        for _ in 0..10 {
            tokio::time::sleep(interval).await;
            let observations: Vec<Observation> = latest
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .cloned()
                .collect();
            let traffic = counters
                .traffic
                .as_ref()
                .map(|source| source())
                .unwrap_or_default();
            let answers = counters
                .answers
                .as_ref()
                .map(|source| source())
                .unwrap_or_default();
            if observations.is_empty() && traffic.is_empty() && answers.is_empty() {
                continue;
            }
            let report = VantageReport {
                vantage: vantage.clone(),
                region: region.clone(),
                observations,
                traffic,
                answers,
            };
            match send_report(&client, &report).await {
                Ok(()) => {}
                Err(err) if err.is_fatal() => return Err(err),
                Err(err) => warn!(error = %err, "could not send the vantage report"),
            }
        }
    }
}
