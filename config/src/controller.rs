//! The controller's section: its HTTP port (API, dashboard, metrics, watch stream), where it
//! keeps durable state, who may call it, and how verdicts are reached.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8090))
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(5)
}
fn default_vantage_ttl() -> Duration {
    Duration::from_secs(5)
}
fn default_flap_window() -> Duration {
    Duration::from_secs(120)
}
fn default_flap_threshold() -> u32 {
    3
}
fn default_hold_down() -> Duration {
    Duration::from_secs(10)
}
fn default_hold_down_max() -> Duration {
    Duration::from_secs(600)
}

/// The controller process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// Address of the API, dashboard, metrics and watch stream.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// A second listener in plain HTTP serving only `/livez`, `/readyz` and `/metrics` (no
    /// API, tokens or tables), for health checks and scrapers that hold no client
    /// certificate when `tls` asks for one; none when unset. Allowed on any address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_listen: Option<SocketAddr>,
    /// Directory of the embedded store (overrides, audit log, failover history, last table),
    /// relative to the config file. Unset: state lives in memory and is lost on exit.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Bearer tokens. With none configured the API is open (fit for loopback only).
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// How often an idle watch stream carries a heartbeat line.
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat: Duration,
    /// A vantage whose last report is older than this no longer votes.
    #[serde(default = "default_vantage_ttl", with = "humantime_serde")]
    pub vantage_ttl: Duration,
    /// Verdict changes within this window count towards flap damping.
    #[serde(default = "default_flap_window", with = "humantime_serde")]
    pub flap_window: Duration,
    /// Changes within the window from which a recovering target is held down.
    #[serde(default = "default_flap_threshold")]
    pub flap_threshold: u32,
    /// The first hold-down; each further flap in the window doubles it.
    #[serde(default = "default_hold_down", with = "humantime_serde")]
    pub hold_down: Duration,
    /// The longest hold-down.
    #[serde(default = "default_hold_down_max", with = "humantime_serde")]
    pub hold_down_max: Duration,
    /// Whether the controller's own probes (its vantage, `controller` unless renamed) vote in
    /// the quorum. When they do (the default), that vantage counts toward the quorum from the
    /// start, even before its first round, so one subscriber alone never decides; with
    /// three subscribers the quorum is then 3 of 4, and two subscribers that lose sight of
    /// a cluster do not fail it over while the controller still reaches it. When they do not,
    /// the controller still probes and shows its results, but only the subscribers' vantages
    /// vote (2 of 3 in that example). Without subscribers, keep it on.
    #[serde(default = "default_true")]
    pub own_probe_votes: bool,
    /// TLS on the controller's port (the API, the watch stream, reports, the dashboard).
    /// Without it the port speaks plain HTTP, which is allowed on a loopback address only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ControllerTlsConfig>,
}

fn default_tls_reload_interval() -> Duration {
    Duration::from_secs(10)
}

/// The controller's certificate, and the CA its clients' certificates must chain to. The
/// file names are cert-manager's (`tls.crt`, `tls.key`, `ca.crt`); `meridian certs` writes
/// such files for a deployment without Kubernetes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerTlsConfig {
    /// PEM certificate chain the controller presents, leaf first (relative to the config
    /// file).
    pub cert: PathBuf,
    /// PEM private key of that certificate.
    pub key: PathBuf,
    /// PEM CA certificate(s). When set, every client must present a certificate that
    /// chains to one of them (mutual TLS): a connection without one is refused in the
    /// handshake. A certificate's names (subject CN and DNS names) are the vantages its
    /// holder may report as; without a bearer token it authenticates as role subscriber.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// How often the three files are checked for changes; changed files are loaded without
    /// a restart and serve every new connection (files that fail to load keep the previous
    /// ones in force).
    #[serde(default = "default_tls_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
}

fn default_true() -> bool {
    true
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            listen: default_listen(),
            admin_listen: None,
            data_dir: None,
            tokens: Vec::new(),
            heartbeat: default_heartbeat(),
            vantage_ttl: default_vantage_ttl(),
            flap_window: default_flap_window(),
            flap_threshold: default_flap_threshold(),
            hold_down: default_hold_down(),
            hold_down_max: default_hold_down_max(),
            own_probe_votes: true,
            tls: None,
        }
    }
}

/// Why the controller may not listen on `listen` without TLS: plain HTTP carries tokens,
/// reports and tables in clear text, so it is kept to loopback (one host, `meridian up`,
/// tests). `None` when the address is fine.
pub fn plain_http_problem(listen: SocketAddr, tls: bool) -> Option<String> {
    if tls || listen.ip().to_canonical().is_loopback() {
        return None;
    }
    Some(format!(
        "{listen} is not a loopback address, and plain HTTP is allowed on loopback only: \
         configure controller.tls (certificates: `meridian certs`, or a cert-manager Secret) \
         or listen on 127.0.0.1"
    ))
}

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Read state, tables, history, audit log and explanations.
    ReadOnly,
    /// A proxy or DNS server: follow the watch stream, fetch probes, send reports.
    Subscriber,
    /// Everything read-only may, plus changing weights and drains.
    Operator,
}

impl Role {
    /// The role's name as written in config.
    pub fn name(&self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::Subscriber => "subscriber",
            Role::Operator => "operator",
        }
    }
}

/// One bearer token. The secret itself never sits in the config: either its SHA-256 (hex)
/// or a file holding it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it; recorded in the audit log.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Lower-case hex SHA-256 of the token.
    #[serde(default)]
    pub sha256: Option<String>,
    /// A file whose content (trimmed) is the token, relative to the config file.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The vantages this token may report probe results as (`--vantage` of the proxies and
    /// DNS servers that hold it). Empty: only the vantage named like the token. A report for
    /// any other vantage is refused, so one credential cannot add votes to a quorum. A name
    /// ending in `*` matches every vantage that starts with the rest (pods of a Deployment
    /// sharing one Secret): the holder may then vote as any such name, so keep patterns to
    /// tokens whose holders are trusted as a group.
    #[serde(default)]
    pub vantages: Vec<String>,
}

impl TokenConfig {
    /// The vantages this token may speak for.
    pub fn allowed_vantages(&self) -> Vec<String> {
        if self.vantages.is_empty() {
            vec![self.name.clone()]
        } else {
            self.vantages.clone()
        }
    }
}

impl ControllerConfig {
    /// Problems with this section, each as (field path, message); the controller refuses to
    /// start with any.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut names = std::collections::HashSet::new();
        let mut vantages = std::collections::HashMap::new();
        for (i, token) in self.tokens.iter().enumerate() {
            let path = format!("controller.tokens[{i}]");
            for (j, vantage) in token.vantages.iter().enumerate() {
                let field = format!("{path}.vantages[{j}]");
                let name = vantage.strip_suffix('*').unwrap_or(vantage);
                if name.is_empty()
                    || name.len() > 128
                    || name
                        .chars()
                        .any(|c| c.is_control() || c.is_whitespace() || c == '*')
                {
                    out.push((
                        field,
                        format!(
                            "{vantage:?} is not a vantage name (1 to 128 characters, no whitespace, `*` only at the end)"
                        ),
                    ));
                } else if let Some(other) = vantages.insert(vantage.as_str(), token.name.as_str()) {
                    // One vantage, one credential: otherwise two holders could vote as one.
                    out.push((
                        field,
                        format!("vantage {vantage:?} is already named by token {other:?}"),
                    ));
                }
            }
            if token.name.is_empty() {
                out.push((format!("{path}.name"), "must not be empty".into()));
            } else if !names.insert(token.name.as_str()) {
                out.push((
                    format!("{path}.name"),
                    format!("duplicate token name {:?}", token.name),
                ));
            }
            match (&token.sha256, &token.file) {
                (Some(_), Some(_)) | (None, None) => out.push((
                    path.clone(),
                    "give exactly one of `sha256` and `file`".into(),
                )),
                (Some(hex), None) => {
                    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        out.push((
                            format!("{path}.sha256"),
                            "must be 64 hexadecimal digits (the SHA-256 of the token)".into(),
                        ));
                    }
                }
                (None, Some(_)) => {}
            }
        }
        if let Some(problem) = plain_http_problem(self.listen, self.tls.is_some()) {
            out.push(("controller.listen".into(), problem));
        }
        if let Some(tls) = &self.tls
            && tls.reload_interval < Duration::from_millis(100)
        {
            out.push((
                "controller.tls.reload_interval".into(),
                "must be at least 100ms".into(),
            ));
        }
        if self.heartbeat < Duration::from_millis(10) {
            out.push((
                "controller.heartbeat".into(),
                "must be at least 10ms".into(),
            ));
        }
        if self.vantage_ttl.is_zero() {
            out.push(("controller.vantage_ttl".into(), "must be above zero".into()));
        }
        if self.hold_down > self.hold_down_max {
            out.push((
                "controller.hold_down".into(),
                "must be at most controller.hold_down_max".into(),
            ));
        }
        out
    }
}
