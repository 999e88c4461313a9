//! A subscriber's hold on the routing table: the proxy and the DNS server each keep one.
//!
//! It owns the [`TableCell`] that request and query paths read without waiting (arc-swap),
//! the client of the controller's watch stream that fills it, the last good table on disk
//! that a subscriber starts from when the controller is unreachable, and probe execution:
//! every subscriber is a vantage that checks targets and reports its results back, and the
//! controller runs the very same probes from here.
//!
//! What it must not do: compute tables, decide verdicts, or talk to Kubernetes. It receives,
//! validates, swaps and persists what the controller published; it never changes a table.
//! It must never depend on the controller crate.
//!
//! # Layout
//!
//! - [`TableCell`]: the arc-swap cell readers route from.
//! - [`watch`]: `follow`, the watch-stream client with reconnect, backoff and persistence.
//! - [`persist`]: the last good table on disk, written atomically.
//! - [`probe`]: HTTP, HTTPS and TCP probes, rise/fall state, the probe runner of a vantage.
//! - [`report`]: the wire shapes a vantage reports in, and the client that sends them.
//! - [`http`]: the small HTTP client both use to reach the controller.
//! - [`tls`]: the controller's CA and the client certificate, reloaded when they change.

mod cell;
mod error;
pub mod http;
pub mod persist;
pub mod probe;
pub mod report;
pub mod tls;
pub mod watch;

pub use cell::TableCell;
pub use error::Error;
