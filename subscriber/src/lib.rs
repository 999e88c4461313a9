//! A subscriber's hold on the routing table: the proxy and the DNS server each keep one.
//!
//! It owns the [`TableCell`] that request and query paths read without waiting (arc-swap),
//! the client of the controller's watch stream that fills it, and the last good table on disk
//! that a subscriber starts from when the controller is unreachable.
//!
//! What it must not do: compute tables or talk to Kubernetes. It receives, validates, swaps
//! and persists what the controller published; it never changes a table.

mod cell;

pub use cell::TableCell;
