//! Regions and clusters: where an app can be served from.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A point on the earth, in degrees.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// Latitude in degrees, -90 (south) to 90 (north).
    pub lat: f64,
    /// Longitude in degrees, -180 (west) to 180 (east).
    pub lon: f64,
}

/// Mean earth radius in kilometres (IUGG).
const EARTH_RADIUS_KM: f64 = 6371.0088;

impl Location {
    /// Great-circle distance to `other` in kilometres (haversine formula).
    pub fn distance_km(&self, other: &Location) -> f64 {
        let (lat1, lat2) = (self.lat.to_radians(), other.lat.to_radians());
        let dlat = lat2 - lat1;
        let dlon = (other.lon - self.lon).to_radians();
        let a = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }

    pub(crate) fn is_valid(&self) -> bool {
        (-90.0..=90.0).contains(&self.lat) && (-180.0..=180.0).contains(&self.lon)
    }
}

/// A named area clients and clusters belong to (for example `eu-west`), with the location
/// used to measure distance from its clients to clusters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Unique region name.
    pub name: String,
    /// A representative point of the region.
    pub location: Location,
}

/// One deployment site, usually a Kubernetes cluster, with the ingress endpoints its apps are
/// reached at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Unique cluster name.
    pub name: String,
    /// The region the cluster is in; must name a region of the table.
    pub region: String,
    /// Who runs it: `aws`, `gcp`, `azure`, `onprem`, …
    pub provider: String,
    /// Where it is.
    pub location: Location,
    /// Addresses where its ingress or load balancer listens, IPv4 and IPv6.
    pub endpoints: Vec<SocketAddr>,
}
