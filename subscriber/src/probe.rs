//! Probes: HTTP, HTTPS and TCP health checks of a target's ingress endpoints, their rise/fall
//! state, and the runner every vantage (the controller and each subscriber) uses.
//!
//! A target (one app in one cluster) is healthy from a vantage while at least one of its
//! cluster's endpoints is healthy by rise/fall: endpoints are alternatives for reaching the
//! same ingress.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use meridian_config::{Config, ProbeConfig, ProbeKind};
use rand::Rng;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;
use tracing::{debug, warn};

/// At most this much of a probe's response body is read for the body match.
const MAX_BODY: usize = 64 * 1024;

/// Where the system's trusted roots are on Debian and its derivatives.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What one vantage checks for one target: an app's probe against its cluster's endpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeJob {
    /// The app.
    pub app: String,
    /// The cluster.
    pub cluster: String,
    /// The check.
    pub probe: ProbeConfig,
    /// The Host header (and the default TLS server name).
    pub host: String,
    /// The cluster's ingress endpoints.
    pub endpoints: Vec<SocketAddr>,
}

/// Every target's probe job, as the config describes them.
pub fn jobs_from_config(config: &Config) -> Vec<ProbeJob> {
    let mut jobs = Vec::new();
    for app in &config.apps {
        let probe = config.probe_for(app);
        let host = probe.host.clone().unwrap_or_else(|| {
            app.hostnames
                .first()
                .map(|h| {
                    meridian_config::normalize_host(h)
                        .trim_start_matches("*.")
                        .to_string()
                })
                .unwrap_or_default()
        });
        for target in &app.targets {
            let Some(cluster) = config.clusters.iter().find(|c| c.name == target.cluster) else {
                continue;
            };
            jobs.push(ProbeJob {
                app: app.name.clone(),
                cluster: cluster.name.clone(),
                probe: probe.clone(),
                host: host.clone(),
                endpoints: cluster.endpoints.clone(),
            });
        }
    }
    jobs
}

/// The result of one check of one endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// True when the check passed.
    pub ok: bool,
    /// How long it took.
    pub latency: Duration,
    /// What was seen (`status 200`, `connect: connection refused`, …).
    pub detail: String,
}

/// TLS client configurations for HTTPS probes, built once per runner.
#[derive(Clone)]
pub struct TlsConnectors {
    verified: TlsConnector,
    unverified: TlsConnector,
}

impl std::fmt::Debug for TlsConnectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConnectors")
    }
}

impl TlsConnectors {
    /// Verifying connections trust the system's roots (`/etc/ssl/certs/ca-certificates.crt`)
    /// plus `extra_roots`; unverifying ones accept any certificate but still check the
    /// handshake's signatures.
    pub fn new(extra_roots: &[CertificateDer<'static>]) -> Self {
        use rustls::pki_types::pem::PemObject;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        if let Ok(iter) = CertificateDer::pem_file_iter(SYSTEM_ROOTS) {
            let certs: Vec<_> = iter.filter_map(Result::ok).collect();
            let (_added, _ignored) = roots.add_parsable_certificates(certs);
        }
        for cert in extra_roots {
            if let Err(err) = roots.add(cert.clone()) {
                warn!(error = %err, "ignoring an extra probe root certificate");
            }
        }
        let builder = || {
            ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports the default protocol versions")
        };
        let verified = builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let unverified = builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.clone())))
            .with_no_client_auth();
        Self {
            verified: TlsConnector::from(Arc::new(verified)),
            unverified: TlsConnector::from(Arc::new(unverified)),
        }
    }
}

/// Accepts any server certificate (for probes with `tls_verify: false`), yet verifies the
/// handshake signatures, so the peer still proves it holds the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Checks one endpoint once, within the probe's timeout.
pub async fn check(
    probe: &ProbeConfig,
    host: &str,
    endpoint: SocketAddr,
    tls: &TlsConnectors,
) -> Outcome {
    let start = Instant::now();
    let result = tokio::time::timeout(probe.timeout, check_inner(probe, host, endpoint, tls)).await;
    let latency = start.elapsed();
    let (ok, detail) = match result {
        Err(_) => (false, format!("timed out after {:?}", probe.timeout)),
        Ok(Ok(detail)) => (true, detail),
        Ok(Err(detail)) => (false, detail),
    };
    Outcome {
        ok,
        latency,
        detail,
    }
}

async fn check_inner(
    probe: &ProbeConfig,
    host: &str,
    endpoint: SocketAddr,
    tls: &TlsConnectors,
) -> Result<String, String> {
    let tcp = TcpStream::connect(endpoint)
        .await
        .map_err(|e| format!("connect {endpoint}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    match probe.kind {
        ProbeKind::Tcp => Ok("connected".into()),
        ProbeKind::Http => http_get(tcp, probe, host).await,
        ProbeKind::Https => {
            let name = probe.sni.clone().unwrap_or_else(|| host.to_string());
            let server_name = ServerName::try_from(name.clone())
                .map_err(|e| format!("TLS server name {name:?}: {e}"))?;
            let connector = if probe.tls_verify {
                &tls.verified
            } else {
                &tls.unverified
            };
            let stream = connector
                .connect(server_name, tcp)
                .await
                .map_err(|e| format!("TLS handshake with {endpoint} as {name:?}: {e}"))?;
            http_get(stream, probe, host).await
        }
    }
}

async fn http_get<S>(stream: S, probe: &ProbeConfig, host: &str) -> Result<String, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    // The connection task ends when the sender is dropped at the end of this check.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = Request::get(probe.path.as_str())
        .header(header::HOST, host)
        .header(header::USER_AGENT, "meridian-probe")
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request {}: {e}", probe.path))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("GET {}: {e}", probe.path))?;
    let status = response.status().as_u16();
    if !probe.expect_status.contains(&status) {
        return Err(format!(
            "status {status}, expected one of {:?}",
            probe.expect_status
        ));
    }
    if let Some(expect) = &probe.expect_body {
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading body: {e}"))?
            .to_bytes();
        if !String::from_utf8_lossy(&body).contains(expect.as_str()) {
            return Err(format!(
                "status {status}, body (first {MAX_BODY} bytes) lacks {expect:?}"
            ));
        }
    }
    Ok(format!("status {status}"))
}

/// Rise/fall state of one endpoint: `fall` consecutive failures make it unhealthy, `rise`
/// consecutive successes make it healthy again. It starts unknown, and its first check
/// decides: an endpoint never probed is not up (a vantage that just started must not vote
/// "up" for a target it has not seen answer), and one that answered is up at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RiseFall {
    /// `None` until the first check.
    healthy: Option<bool>,
    streak: u32,
}

impl RiseFall {
    /// Whether the endpoint is healthy now (false while unknown).
    pub fn healthy(&self) -> bool {
        self.healthy == Some(true)
    }

    /// Records one result; true when it changed the state.
    pub fn record(&mut self, ok: bool, rise: u32, fall: u32) -> bool {
        let Some(healthy) = self.healthy else {
            self.healthy = Some(ok);
            return true;
        };
        if ok == healthy {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let needed = if healthy { fall } else { rise };
        if self.streak >= needed.max(1) {
            self.healthy = Some(ok);
            self.streak = 0;
            return true;
        }
        false
    }
}

/// One vantage's view of one target after a round of checks: what it reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    /// The app.
    pub app: String,
    /// The cluster.
    pub cluster: String,
    /// Healthy by rise/fall on at least one endpoint.
    pub healthy: bool,
    /// Whether the latest round passed on at least one endpoint.
    pub last_ok: bool,
    /// The best latency of the latest round, seconds.
    pub latency_seconds: f64,
    /// What the latest round saw, per endpoint.
    pub detail: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where observations go.
pub type Sink = Arc<dyn Fn(Observation) + Send + Sync>;

/// Runs probe jobs until dropped: one task per job, each checking all of its endpoints
/// every interval (jittered by ±10 %, first round at a random point of the interval, so
/// vantages and jobs do not synchronise).
#[derive(Debug)]
pub struct Prober {
    tasks: JoinSet<()>,
}

impl Prober {
    /// Starts `jobs`, sending every round's observation to `sink`.
    pub fn start(jobs: Vec<ProbeJob>, tls: TlsConnectors, sink: Sink) -> Self {
        let mut tasks = JoinSet::new();
        for job in jobs {
            tasks.spawn(run_job(job, tls.clone(), sink.clone()));
        }
        Self { tasks }
    }

    /// The number of jobs running.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// True when no job runs.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::rng().random_range(0.9..=1.1))
}

async fn run_job(job: ProbeJob, tls: TlsConnectors, sink: Sink) {
    let interval = job.probe.interval;
    let mut states: HashMap<SocketAddr, RiseFall> = job
        .endpoints
        .iter()
        .map(|e| (*e, RiseFall::default()))
        .collect();
    let first = interval.mul_f64(rand::rng().random_range(0.0..1.0));
    tokio::time::sleep(first).await;
    loop {
        let round_start = tokio::time::Instant::now();
        let mut checks = JoinSet::new();
        for endpoint in job.endpoints.iter().copied() {
            let (probe, host, tls) = (job.probe.clone(), job.host.clone(), tls.clone());
            checks.spawn(async move { (endpoint, check(&probe, &host, endpoint, &tls).await) });
        }
        let mut last_ok = false;
        let mut best = f64::INFINITY;
        let mut details = Vec::new();
        while let Some(Ok((endpoint, outcome))) = checks.join_next().await {
            let state = states.entry(endpoint).or_default();
            if state.record(outcome.ok, job.probe.rise, job.probe.fall) {
                debug!(app = %job.app, cluster = %job.cluster, %endpoint,
                    healthy = state.healthy(), detail = %outcome.detail, "endpoint changed state");
            }
            last_ok |= outcome.ok;
            if outcome.ok {
                best = best.min(outcome.latency.as_secs_f64());
            }
            details.push(format!("{endpoint}: {}", outcome.detail));
        }
        details.sort();
        sink(Observation {
            app: job.app.clone(),
            cluster: job.cluster.clone(),
            healthy: states.values().any(RiseFall::healthy),
            last_ok,
            latency_seconds: if best.is_finite() { best } else { 0.0 },
            detail: details.join("; "),
            at_ms: now_ms(),
        });
        let next = round_start + jittered(interval);
        tokio::time::sleep_until(next).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall() {
        let mut s = RiseFall::default();
        assert!(!s.healthy(), "unknown is not up");
        assert!(s.record(true, 2, 3), "the first check decides");
        assert!(s.healthy());
        let mut down = RiseFall::default();
        assert!(down.record(false, 2, 3));
        assert!(
            !down.healthy(),
            "a first failure is not up for fall-1 rounds"
        );
        assert!(!s.record(false, 2, 3));
        assert!(!s.record(false, 2, 3));
        assert!(!s.record(true, 2, 3), "a success resets the failure streak");
        assert!(!s.record(false, 2, 3));
        assert!(!s.record(false, 2, 3));
        assert!(s.record(false, 2, 3));
        assert!(!s.healthy());
        assert!(!s.record(true, 2, 3));
        assert!(s.record(true, 2, 3));
        assert!(s.healthy());
    }
}
