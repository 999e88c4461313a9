use std::path::PathBuf;

/// The error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The controller section of the config is wrong.
    #[error("{file}: {path}: {message}")]
    Config {
        /// The config file.
        file: PathBuf,
        /// The field.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A token file could not be read.
    #[error("reading token file {path} (controller.tokens[{index}].file): {error}")]
    TokenFile {
        /// Position in `controller.tokens`.
        index: usize,
        /// The file.
        path: PathBuf,
        /// The system's error.
        error: std::io::Error,
    },
    /// The embedded store failed.
    #[error("embedded store {path}: {action}: {error}")]
    Store {
        /// The database file, or `<memory>`.
        path: String,
        /// What was being done.
        action: &'static str,
        /// redb's error.
        error: Box<redb::Error>,
    },
    /// A stored record could not be decoded.
    #[error("embedded store: decoding {what}: {error}")]
    StoreDecode {
        /// Which record.
        what: String,
        /// The parser's message.
        error: String,
    },
    /// A computed table failed validation; it is not published.
    #[error("computed table is invalid: {0}")]
    Table(#[from] meridian_routing::TableError),
    /// A what-if scenario (`now`, `fail:CLUSTER`, `drain:CLUSTER`, `peak:FACTOR`) could not
    /// be read; the message names the text and what is expected.
    #[error("{0}")]
    Scenario(String),
    /// A change was asked of a replica that does not lead.
    #[error("this replica is not the leader; changes are made by the leader only")]
    NotLeader,
    /// The HTTP listener could not be bound.
    #[error("binding {addr}: {error}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The system's error.
        error: std::io::Error,
    },
    /// The TLS files of `controller.tls` cannot be used.
    #[error("controller TLS: {0}")]
    Tls(String),
    /// Setting up metrics failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}
