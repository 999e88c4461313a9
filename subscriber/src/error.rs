use std::path::PathBuf;

/// The error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The controller URL cannot be used.
    #[error("controller URL {url:?}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The controller refused the token (401) or the token's role (403): retrying cannot help.
    #[error("controller {url} refused the request with status {status}: {message}")]
    Refused {
        /// The request URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The controller's message.
        message: String,
    },
    /// The controller answered with an unexpected status.
    #[error("controller {url} answered status {status}: {message}")]
    Status {
        /// The request URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The controller's message.
        message: String,
    },
    /// The controller could not be reached or the connection broke.
    #[error("controller {url}: {message}")]
    Transport {
        /// The request URL.
        url: String,
        /// What happened.
        message: String,
    },
    /// The TLS files towards the controller cannot be used (a missing CA, a bad key).
    #[error("controller TLS: {0}")]
    Tls(String),
    /// A table failed decoding or validation.
    #[error("routing table from {source_name}: {error}")]
    Table {
        /// Where the table came from (the controller URL or a file).
        source_name: String,
        /// Why it was refused.
        error: meridian_routing::TableError,
    },
    /// A JSON body could not be read.
    #[error("{what}: {error}")]
    Json {
        /// What was being read.
        what: String,
        /// The parser's message.
        error: serde_json::Error,
    },
    /// Reading or writing the state directory failed.
    #[error("{action} {path}: {error}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The system's error.
        error: std::io::Error,
    },
}

impl Error {
    /// True when retrying the same request cannot succeed (the controller refused the token).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Error::Refused { .. } | Error::BadUrl { .. } | Error::Tls(_)
        )
    }
}
