use std::net::SocketAddr;

/// The error type of the proxy library: what went wrong while starting it.
///
/// Failures of single requests are not errors of this type: they become HTTP responses
/// (400, 404, 502, 503, 504) and access log lines.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The proxy section of the config breaks a rule.
    #[error("invalid proxy config: {}", .0.join("; "))]
    Config(Vec<String>),
    /// A listener could not be opened.
    #[error("binding the {what} listener on {addr}: {source}")]
    Bind {
        /// Which listener (`proxy` or `admin`).
        what: &'static str,
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The TLS certificates could not be loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// The access log file could not be opened.
    #[error("opening the access log {}: {source}", path.display())]
    AccessLog {
        /// The file configured.
        path: std::path::PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A worker's thread or runtime could not be started.
    #[error("starting a proxy worker: {0}")]
    Worker(std::io::Error),
    /// A metric could not be registered (a duplicate name is a bug in this crate).
    #[error("registering metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}
