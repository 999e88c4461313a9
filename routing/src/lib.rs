//! The shared routing-table crate: what the controller publishes and what the proxy and the
//! DNS server follow.
//!
//! It owns the model (regions, clusters, apps, targets and their health), the immutable,
//! versioned [`RoutingTable`] snapshot with its validation, the wire format that carries a
//! table from the controller to its subscribers, the client-to-region mapping, and target
//! selection per policy, which both the proxy and the DNS server call on their hot paths.
//!
//! What it must not do: any I/O (no sockets, files, clocks or threads), and know anything of
//! HTTP, DNS or Kubernetes. Callers bring bytes, addresses and draws; this crate answers.
//!
//! # Layout
//!
//! - [`cluster`]: regions, clusters, locations and great-circle distance.
//! - [`app`]: apps, targets, policies and the fail-open / fail-closed rule.
//! - [`health`]: the health state of a target and the weight factor it implies.
//! - [`geo`]: client address → region (CIDR overrides, most specific first; then country).
//! - [`table`]: [`TableData`] (plain data) and [`RoutingTable`] (validated, indexed snapshot).
//! - [`select`]: choosing a target per policy, allocation-free, and explaining the choice.
//! - [`digest`]: the digest of a table version, per app so a delta rehashes only its apps.
//! - [`delta`]: what changed between two versions, and applying it to the older one.
//! - [`wire`]: the versioned serialisation of a table.

#![warn(missing_docs)]

pub mod app;
pub mod cluster;
pub mod delta;
pub mod digest;
mod error;
pub mod geo;
pub mod health;
pub mod select;
pub mod table;
pub mod wire;

pub use app::{App, FailureMode, GeoPreference, Policy, Target};
pub use cluster::{Cluster, Location, Region};
pub use delta::TableDelta;
pub use digest::Digest;
pub use error::{Problem, TableError};
pub use geo::{RegionMap, SubnetRegion};
pub use health::Health;
pub use select::{Choice, Client, Explanation, NoTarget, Pick, Reason, TargetSet};
pub use table::{AppId, RegionId, RoutingTable, RttSample, TableData};
