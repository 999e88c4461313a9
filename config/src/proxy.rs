//! The proxy's section: where it listens, its limits and timeouts, how it retries, ejects
//! outliers, keeps session affinity and sheds load.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9080))
}
fn default_max_connections() -> usize {
    10_000
}
fn default_max_header_bytes() -> usize {
    64 * 1024
}
fn default_max_uri_bytes() -> usize {
    8 * 1024
}
fn default_max_body_bytes() -> u64 {
    16 * 1024 * 1024
}
fn default_replay_buffer_bytes() -> u64 {
    64 * 1024
}
fn default_header_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_body_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_drain_delay() -> Duration {
    Duration::from_secs(5)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_upstream_body_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_tunnel_idle_timeout() -> Duration {
    Duration::from_secs(300)
}
fn default_upstream_idle_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_upstream_keepalive() -> Duration {
    Duration::from_secs(10)
}
fn default_upstream_user_timeout() -> Duration {
    Duration::from_secs(10)
}

/// The proxy process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Plain HTTP (HTTP/1.1 and h2c) listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Admin listener: `/livez`, `/readyz`, `/metrics`. Kept apart from client traffic so a
    /// flood of clients cannot starve health checks and scrapes.
    #[serde(default = "default_admin_listen")]
    pub admin_listen: SocketAddr,
    /// Client connections open at once; further clients wait in the kernel's accept queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest request head (request line and headers) accepted, in bytes, plus
    /// `max_uri_bytes` of room for the request line; a larger head gets 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Longest request target (path and query) accepted, in bytes; longer gets 414.
    #[serde(default = "default_max_uri_bytes")]
    pub max_uri_bytes: usize,
    /// Largest request body accepted, in bytes; larger gets 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Request bodies up to this size are buffered so a retry can replay them; larger
    /// bodies are streamed and their requests are never retried.
    #[serde(default = "default_replay_buffer_bytes")]
    pub replay_buffer_bytes: u64,
    /// Time a client has to send a whole request head (slowloris guard), counted from
    /// the accept (after the TLS handshake, on the TLS listener): a connection that
    /// completes no request head in time is closed. On HTTP/1.1 the same timer runs while a
    /// keep-alive connection waits for its next request.
    #[serde(default = "default_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Time a client has to send a buffered request body, and the longest pause allowed
    /// inside a streamed one; past it the client gets 408 (the target is not blamed).
    #[serde(default = "default_body_timeout", with = "humantime_serde")]
    pub body_timeout: Duration,
    /// Time to open a connection to an upstream ingress endpoint.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time for one attempt to get the upstream's response head (see also
    /// `retry.per_try_timeout`, which cuts an attempt shorter when the request may go again).
    #[serde(default = "default_upstream_timeout", with = "humantime_serde")]
    pub upstream_timeout: Duration,
    /// A kept-alive upstream connection unused for this long is closed instead of reused:
    /// the older an idle connection, the likelier its upstream has closed it or gone away
    /// unseen. Cost: an endpoint that sees a request less often than this pays a new TCP
    /// connection (one round trip) for it.
    #[serde(default = "default_upstream_idle_timeout", with = "humantime_serde")]
    pub upstream_idle_timeout: Duration,
    /// TCP keepalive on upstream connections: a connection silent for this long is probed,
    /// and closed when three probes (a third of this apart) go unanswered, so a pooled
    /// connection to a host that vanished is noticed before a request is put on it. `0s`
    /// turns it off. Cost: one small packet each way per probe on an idle connection.
    #[serde(default = "default_upstream_keepalive", with = "humantime_serde")]
    pub upstream_keepalive: Duration,
    /// TCP_USER_TIMEOUT on upstream connections (Linux): a connection whose sent bytes stay
    /// unacknowledged this long is closed, so a request written into a silently dropping
    /// network fails (and, when it may, goes to another target) instead of waiting for
    /// `upstream_timeout`. `0s` leaves the kernel's default (about 15 minutes). Cost: a
    /// network stall longer than this cuts the connections through it, answers in progress
    /// included.
    #[serde(default = "default_upstream_user_timeout", with = "humantime_serde")]
    pub upstream_user_timeout: Duration,
    /// A client connection with no request in flight and no byte moving for this long is
    /// closed gracefully (HTTP/2 with GOAWAY); one still stuck a period later (a client
    /// that stopped reading its response) is closed at once. Each open connection holds
    /// its buffers' memory and one of `max_connections` until then.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Longest pause inside an upstream's response body; past it the upstream connection
    /// is closed and the client's response cut off (a stalled upstream cannot hold a client
    /// connection forever).
    #[serde(default = "default_upstream_body_timeout", with = "humantime_serde")]
    pub upstream_body_timeout: Duration,
    /// An upgraded connection (WebSocket and the like) with no byte moving either way for
    /// this long is closed. Applications that keep such connections open while quiet must
    /// send pings more often than this.
    #[serde(default = "default_tunnel_idle_timeout", with = "humantime_serde")]
    pub tunnel_idle_timeout: Duration,
    /// On SIGTERM, how long the proxy keeps accepting new connections after `/readyz`
    /// turned 503, so a load balancer's health checks (or DNS) move clients away before
    /// the listener closes: set it above the balancer's check interval times its unhealthy
    /// threshold. Costs that much more time per restart; a Ctrl-C (SIGINT) skips it, and
    /// a handover to a new process (`handover_socket`) ends it at once.
    #[serde(default = "default_drain_delay", with = "humantime_serde")]
    pub drain_delay: Duration,
    /// After the drain delay, time in-flight requests get to finish (the drain timeout);
    /// connections still open then are closed.
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// A Unix socket path for seamless restarts (binary upgrade, config reload) of
    /// `meridian proxy`: a proxy starting with it first asks the proxy running there for
    /// its listening sockets and serves on those same sockets (no connection is refused or
    /// reset: the kernel's accept queue is shared), then offers its own there; the old
    /// proxy stops accepting and drains. When nobody answers on it the proxy binds its
    /// listeners itself. No handover when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover_socket: Option<PathBuf>,
    /// Per-request failover.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Passive outlier detection.
    #[serde(default)]
    pub outlier: OutlierConfig,
    /// Session affinity; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<AffinityConfig>,
    /// Requests one target may have in flight; when every candidate is at it, the proxy
    /// answers 503 with Retry-After. No limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests_per_target: Option<u32>,
    /// Limits per client address (connections open, request rate); off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_client: Option<PerClientConfig>,
    /// TLS termination on a listener of its own; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// The access log, one JSON line per request; off when absent. Each line costs a
    /// little formatting on the request path (about 1.5 % of the proxy's CPU at full load;
    /// bench/proxy-results.md), and every 64 KiB of lines one write, made by the request
    /// that fills the buffer (and a flush every 100 ms); the rate cap bounds both under a
    /// flood. A sink that blocks (stderr into a pipe nobody reads) stalls the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLogConfig>,
}

fn default_access_log_rate() -> u32 {
    1000
}

/// Where the access log goes and how much of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// File the lines are appended to (created if missing; relative to the working
    /// directory); stderr when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Lines written per second at most; lines over it are dropped and counted in
    /// `meridian_proxy_access_log_dropped_total{reason="rate"}` (lines a failed write
    /// loses, as on a full disk, under `reason="error"`).
    #[serde(default = "default_access_log_rate")]
    pub max_lines_per_second: u32,
}

fn default_max_clients() -> usize {
    100_000
}

/// Limits per client address, against one client (or one NAT) taking a share of the proxy
/// that belongs to everybody. An IPv4 address is one client; an IPv6 address counts by its
/// /64 prefix (what one host or site is usually given, so walking through the addresses of
/// a prefix gains nothing). The global `max_connections` still bounds everything.
///
/// State is kept per client address in a table of at most `max_clients` entries. When it
/// is full, entries with no connection open and a full request bucket (they hold nothing
/// a new entry would not) are dropped; when none can be, a new address is served without
/// a per-address limit until room frees, and counted in
/// `meridian_proxy_client_limit_untracked_total`. Refusing new addresses instead would let
/// anyone with enough addresses lock every newcomer out.
///
/// Cost: with either limit set, one short lock of the table per accepted connection (two
/// with its close) and, with the rate limit, one short per-address lock per request; about
/// 100 bytes per address tracked (10 MB at the default cap). Clients behind one NAT or one
/// forward proxy share one address and so one limit: set the limits for the largest such
/// crowd expected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerClientConfig {
    /// Connections one client address may hold open; a further connection is closed right
    /// after it is accepted (counted in `meridian_proxy_refused_total{reason="client-connections"}`).
    /// No limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Requests per second one client address may send, over all its connections (a token
    /// bucket refilled at this rate); a request over it gets 429 with `Retry-After` (the
    /// seconds until the bucket holds a token again) and never reaches an upstream.
    /// No limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<u32>,
    /// Requests a client may send at once above the rate (the bucket's size); defaults to
    /// `requests_per_second`, one second's worth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Client addresses tracked at most (see above for what happens when it is full).
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
}

impl Default for PerClientConfig {
    fn default() -> Self {
        PerClientConfig {
            max_connections: None,
            requests_per_second: None,
            burst: None,
            max_clients: default_max_clients(),
        }
    }
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(10)
}

/// The TLS listener (HTTP/2 and HTTP/1.1 by ALPN) and its certificates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Address of the TLS listener.
    pub listen: SocketAddr,
    /// Certificates, chosen by the client's SNI name; the first one also serves clients
    /// that send no name or one no certificate lists.
    pub certificates: Vec<CertificateConfig>,
    /// How often the certificate and key files are checked for changes; changed files are
    /// loaded without a restart (a file that fails to load keeps the previous certificate).
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
}

/// One certificate chain with its key, PEM files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// SNI names it serves: exact (`shop.example.com`) or wildcard (`*.example.com`).
    pub names: Vec<String>,
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: default_listen(),
            admin_listen: default_admin_listen(),
            max_connections: default_max_connections(),
            max_header_bytes: default_max_header_bytes(),
            max_uri_bytes: default_max_uri_bytes(),
            max_body_bytes: default_max_body_bytes(),
            replay_buffer_bytes: default_replay_buffer_bytes(),
            header_timeout: default_header_timeout(),
            body_timeout: default_body_timeout(),
            connect_timeout: default_connect_timeout(),
            upstream_timeout: default_upstream_timeout(),
            upstream_idle_timeout: default_upstream_idle_timeout(),
            upstream_keepalive: default_upstream_keepalive(),
            upstream_user_timeout: default_upstream_user_timeout(),
            drain_delay: default_drain_delay(),
            shutdown_grace: default_shutdown_grace(),
            handover_socket: None,
            idle_timeout: default_idle_timeout(),
            upstream_body_timeout: default_upstream_body_timeout(),
            tunnel_idle_timeout: default_tunnel_idle_timeout(),
            retry: RetryConfig::default(),
            outlier: OutlierConfig::default(),
            affinity: None,
            max_requests_per_target: None,
            per_client: None,
            tls: None,
            access_log: None,
        }
    }
}

fn default_retry_statuses() -> Vec<StatusCode> {
    [502, 503, 504].into_iter().map(StatusCode).collect()
}
fn default_max_attempts() -> u32 {
    3
}
fn default_budget_ratio() -> f64 {
    0.2
}
fn default_budget_burst() -> u32 {
    100
}
fn default_budget_min_per_second() -> u32 {
    10
}
fn default_retry_header() -> String {
    "x-meridian-retryable".to_string()
}

/// When a request is tried again on another target.
///
/// A request that may go again (idempotent, or carrying the retry marker, with a body that
/// fits the replay buffer) moves to another target when an attempt fails; one that may not
/// is tried again only when nothing of it was sent (the connection could not be opened).
///
/// Retries come in two kinds. Those that add no load to a struggling upstream are free:
/// the failed attempt sent nothing (connect failure), or its target is ejected (its
/// traffic moves to the other targets anyway). All others (a retry status, a timeout, a
/// connection broken after the request was written, on a target still in service) and
/// every hedge spend a token from the retry budget, a bucket that each request fills by
/// `budget_ratio` tokens and that refills by `budget_min_per_second` tokens a second
/// whatever the traffic, up to `budget_burst` tokens; it starts full. So a burst of failures
/// in flight on one dying target is absorbed, while the load the proxy adds when every
/// target fails stays bounded:
///
/// - **per request**: at most `max_attempts` attempts (hedges included), always;
/// - **over any span of T seconds**: budgeted retries and hedges at most
///   `budget_burst + budget_ratio × requests + budget_min_per_second × T`; free retries add
///   no attempt that reached an upstream for a failed connect, and at most one per request
///   in flight on a target at the moment it is ejected (at most `outlier.max_ejected_share`
///   of the targets are ejected at once).
///
/// With the defaults, when every cluster answers 503 the upstreams see at most 3 attempts
/// per request, and after the first 100 retries about 1.2 attempts per request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Upstream statuses that count as a failed attempt (connect failures and timeouts
    /// always do).
    #[serde(default = "default_retry_statuses")]
    pub on_status: Vec<StatusCode>,
    /// Attempts per request, the first and any hedge included: the hard bound on how much
    /// load one request can put on the upstreams.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Tokens each request adds to the retry budget, 0.0 to 1.0: the share of extra
    /// attempts budgeted retries may add over time (0.2: at most 20 % more).
    #[serde(default = "default_budget_ratio")]
    pub budget_ratio: f64,
    /// Tokens the retry budget holds at most: how many budgeted retries a burst of
    /// failures may spend at once. Cost: when every target fails at once, up to this many
    /// extra attempts reach them before the ratio holds.
    #[serde(default = "default_budget_burst")]
    pub budget_burst: u32,
    /// Tokens added to the retry budget each second whatever the traffic, so a quiet proxy
    /// can still retry. Cost: up to this many extra attempts a second when every target
    /// fails.
    #[serde(default = "default_budget_min_per_second")]
    pub budget_min_per_second: u32,
    /// For a request that may go again, an attempt with no response head after this long is
    /// given up (its connection closed) and the request moves to another target; the last
    /// attempt still waits `upstream_timeout`. This is what keeps a request written to a
    /// silent upstream (one that accepts and never answers, or a network that drops
    /// packets) from failing or waiting for `upstream_timeout`. Set it above the slowest
    /// normal time to a response head (its p99.9). Cost: a slower answer is cut and asked
    /// of another target (more load, a budgeted retry), and its target's failure streak
    /// grows toward ejection. Off when absent.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub per_try_timeout: Option<Duration>,
    /// Hedging: a request that may go again (and whose body is buffered) with no response
    /// head after this long is also sent to another target; the first answer wins and the
    /// other attempt is cancelled (its connection closed). Cuts the tail latency a slow or
    /// silent target causes to about this delay. A first attempt that loses to its hedge
    /// counts toward its target's failure streak (`outlier.consecutive_failures`), not as a
    /// failure reported to the controller: a target that loses that many races in a row is
    /// ejected rather than costing each of its requests a hedge. Cost: every request slower than this is
    /// sent twice (each hedge is an attempt and spends a budget token), so set it near the
    /// p95–p99 time to a response head. Off when absent.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub hedge_delay: Option<Duration>,
    /// A request header (value `true` or `1`) that marks a non-idempotent request, such as
    /// a POST, as safe to replay. The proxy removes it before forwarding.
    #[serde(default = "default_retry_header")]
    pub retryable_header: String,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            on_status: default_retry_statuses(),
            max_attempts: default_max_attempts(),
            budget_ratio: default_budget_ratio(),
            budget_burst: default_budget_burst(),
            budget_min_per_second: default_budget_min_per_second(),
            per_try_timeout: None,
            hedge_delay: None,
            retryable_header: default_retry_header(),
        }
    }
}

fn default_consecutive_failures() -> u32 {
    3
}
fn default_base_ejection() -> Duration {
    Duration::from_secs(5)
}
fn default_max_ejection() -> Duration {
    Duration::from_secs(300)
}
fn default_max_ejected_share() -> f64 {
    0.5
}

/// Passive outlier detection: what real traffic says about a target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Failed attempts in a row (connect errors, timeouts, retry statuses) that eject a
    /// target.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// First ejection's length; each further ejection in a row doubles it.
    #[serde(default = "default_base_ejection", with = "humantime_serde")]
    pub base_ejection: Duration,
    /// Longest ejection.
    #[serde(default = "default_max_ejection", with = "humantime_serde")]
    pub max_ejection: Duration,
    /// Share of an app's targets that may be ejected at once, 0.0 to 1.0.
    #[serde(default = "default_max_ejected_share")]
    pub max_ejected_share: f64,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: default_consecutive_failures(),
            base_ejection: default_base_ejection(),
            max_ejection: default_max_ejection(),
            max_ejected_share: default_max_ejected_share(),
        }
    }
}

/// Where the session key for affinity is read from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum AffinityConfig {
    /// A cookie, by name.
    Cookie(String),
    /// A request header, by name.
    Header(String),
}

/// An HTTP status code, 100 to 599.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct StatusCode(pub u16);

impl TryFrom<u16> for StatusCode {
    type Error = String;
    fn try_from(code: u16) -> Result<Self, String> {
        if (100..=599).contains(&code) {
            Ok(StatusCode(code))
        } else {
            Err(format!("{code} is not an HTTP status code (100..=599)"))
        }
    }
}

impl From<StatusCode> for u16 {
    fn from(code: StatusCode) -> u16 {
        code.0
    }
}

impl ProxyConfig {
    /// Rules the types cannot express, as (field path, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut add = |path: &str, message: String| out.push((path.to_string(), message));
        // Port 0 asks the system for a free port, so two of them never collide.
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            add(
                "proxy.admin_listen",
                format!("{} is also proxy.listen", self.admin_listen),
            );
        }
        if self.max_connections == 0 {
            add("proxy.max_connections", "must be at least 1".to_string());
        }
        if self.max_header_bytes < 1024 {
            add(
                "proxy.max_header_bytes",
                format!("{} is below the minimum of 1024", self.max_header_bytes),
            );
        }
        if self.max_uri_bytes < 256 {
            add(
                "proxy.max_uri_bytes",
                format!("{} is below the minimum of 256", self.max_uri_bytes),
            );
        }
        if self.replay_buffer_bytes > self.max_body_bytes {
            add(
                "proxy.replay_buffer_bytes",
                format!(
                    "{} is larger than proxy.max_body_bytes ({})",
                    self.replay_buffer_bytes, self.max_body_bytes
                ),
            );
        }
        for (path, timeout) in [
            ("proxy.header_timeout", self.header_timeout),
            ("proxy.body_timeout", self.body_timeout),
            ("proxy.idle_timeout", self.idle_timeout),
            ("proxy.upstream_body_timeout", self.upstream_body_timeout),
            ("proxy.tunnel_idle_timeout", self.tunnel_idle_timeout),
            ("proxy.upstream_idle_timeout", self.upstream_idle_timeout),
            (
                "proxy.retry.per_try_timeout",
                self.retry.per_try_timeout.unwrap_or(Duration::MAX),
            ),
            (
                "proxy.retry.hedge_delay",
                self.retry.hedge_delay.unwrap_or(Duration::MAX),
            ),
        ] {
            if timeout.is_zero() {
                add(path, "must be longer than zero".to_string());
            }
        }
        if self.retry.max_attempts == 0 {
            add("proxy.retry.max_attempts", "must be at least 1".to_string());
        }
        if !(0.0..=1.0).contains(&self.retry.budget_ratio) {
            add(
                "proxy.retry.budget_ratio",
                format!("{} is out of range 0.0..=1.0", self.retry.budget_ratio),
            );
        }
        if http_token(&self.retry.retryable_header).is_none() {
            add(
                "proxy.retry.retryable_header",
                format!(
                    "{:?} is not a valid header name",
                    self.retry.retryable_header
                ),
            );
        }
        if self.outlier.consecutive_failures == 0 {
            add(
                "proxy.outlier.consecutive_failures",
                "must be at least 1".to_string(),
            );
        }
        if !(0.0..=1.0).contains(&self.outlier.max_ejected_share) {
            add(
                "proxy.outlier.max_ejected_share",
                format!(
                    "{} is out of range 0.0..=1.0",
                    self.outlier.max_ejected_share
                ),
            );
        }
        if self.outlier.base_ejection > self.outlier.max_ejection {
            add(
                "proxy.outlier.base_ejection",
                "is longer than proxy.outlier.max_ejection".to_string(),
            );
        }
        match &self.affinity {
            Some(AffinityConfig::Header(name)) if http_token(name).is_none() => add(
                "proxy.affinity.header",
                format!("{name:?} is not a valid header name"),
            ),
            Some(AffinityConfig::Cookie(name)) if http_token(name).is_none() => add(
                "proxy.affinity.cookie",
                format!("{name:?} is not a valid cookie name"),
            ),
            _ => {}
        }
        if let Some(tls) = &self.tls {
            if tls.listen.port() != 0
                && (tls.listen == self.listen || tls.listen == self.admin_listen)
            {
                add(
                    "proxy.tls.listen",
                    format!("{} is also another proxy listener", tls.listen),
                );
            }
            if tls.certificates.is_empty() {
                add(
                    "proxy.tls.certificates",
                    "a TLS listener needs at least one certificate".to_string(),
                );
            }
            if tls.reload_interval.is_zero() {
                add(
                    "proxy.tls.reload_interval",
                    "must be longer than zero".to_string(),
                );
            }
        }
        if self
            .access_log
            .as_ref()
            .is_some_and(|log| log.max_lines_per_second == 0)
        {
            add(
                "proxy.access_log.max_lines_per_second",
                "must be at least 1".to_string(),
            );
        }
        if let Some(per_client) = &self.per_client {
            for (path, value) in [
                (
                    "proxy.per_client.max_connections",
                    per_client.max_connections,
                ),
                (
                    "proxy.per_client.requests_per_second",
                    per_client.requests_per_second,
                ),
                ("proxy.per_client.burst", per_client.burst),
            ] {
                if value == Some(0) {
                    add(path, "must be at least 1".to_string());
                }
            }
            if per_client.max_clients == 0 {
                add(
                    "proxy.per_client.max_clients",
                    "must be at least 1".to_string(),
                );
            }
        }
        if self.max_requests_per_target == Some(0) {
            add(
                "proxy.max_requests_per_target",
                "must be at least 1".to_string(),
            );
        }
        out
    }
}

/// The name, when it is a non-empty RFC 9110 token (what header and cookie names must be).
fn http_token(name: &str) -> Option<&str> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    ok.then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(ProxyConfig::default().problems().is_empty());
    }

    #[test]
    fn bad_values_are_named() {
        let mut c = ProxyConfig::default();
        c.admin_listen = c.listen;
        c.retry.retryable_header = "bad header".into();
        c.outlier.max_ejected_share = 1.5;
        let paths: Vec<String> = c.problems().into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "proxy.admin_listen",
                "proxy.retry.retryable_header",
                "proxy.outlier.max_ejected_share"
            ]
        );
    }

    #[test]
    fn status_codes_are_checked() {
        assert!(StatusCode::try_from(503).is_ok());
        assert!(StatusCode::try_from(99).is_err());
        assert!(StatusCode::try_from(600).is_err());
    }
}
