use std::net::SocketAddr;
use std::path::PathBuf;

/// The error type of the DNS crate: starting the server and loading its data.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A listener could not be set up.
    #[error("dns: cannot listen on {addr} ({what}): {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// UDP, TCP or admin.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// A zone's records could not be turned into answers.
    #[error("dns: zone {zone}: {message}")]
    Zone {
        /// The zone's apex as configured.
        zone: String,
        /// What is wrong.
        message: String,
    },
    /// A geo database could not be opened.
    #[error("dns: geo database {}: {message}", path.display())]
    GeoDatabase {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A worker thread could not be started.
    #[error("dns: cannot start thread {name}: {source}")]
    Thread {
        /// The thread's name.
        name: String,
        /// Why.
        source: std::io::Error,
    },
}
