//! Client location: MaxMind-format databases (GeoIP2 `country.iso_code` or a flat
//! `country_code` field) give a country and the prefix length of the network that holds
//! the address; the routing table's CIDR overrides give a region directly. The most
//! specific of the two wins, and its prefix length becomes the ECS scope.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use maxminddb::Reader;
use serde::Deserialize;

use crate::error::DnsError;

#[derive(Deserialize)]
struct CountryField<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

/// The two layouts we read: GeoIP2 (`country.iso_code`) and flat (`country_code`).
/// Unknown fields are skipped by the decoder, and strings are borrowed from the database,
/// so a lookup does not allocate.
#[derive(Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow)]
    country: Option<CountryField<'a>>,
    #[serde(borrow)]
    country_code: Option<&'a str>,
}

/// The geo databases of the config, in order: the first that knows an address answers.
#[derive(Default)]
pub struct GeoDb {
    readers: Vec<(PathBuf, Reader<Vec<u8>>)>,
}

impl std::fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.readers.iter().map(|(p, _)| p))
            .finish()
    }
}

impl GeoDb {
    /// Opens each database (paths relative to `base`, the config file's folder).
    pub fn open(base: &Path, paths: &[PathBuf]) -> Result<Self, DnsError> {
        let mut readers = Vec::new();
        for path in paths {
            let full = base.join(path);
            let reader = Reader::open_readfile(&full).map_err(|err| DnsError::GeoDatabase {
                path: full.clone(),
                message: err.to_string(),
            })?;
            readers.push((full, reader));
        }
        Ok(GeoDb { readers })
    }

    /// True when no database is configured.
    pub fn is_empty(&self) -> bool {
        self.readers.is_empty()
    }

    /// The country of `addr` (upper-case ISO code), from the first database that knows it,
    /// and the prefix length over which that lookup holds: the network the answering
    /// database placed it in, lengthened by the networks of the databases before it that
    /// did not know it (they might know a neighbour). A database error for one address
    /// counts as "unknown".
    pub fn country(&self, addr: IpAddr) -> (Option<[u8; 2]>, u8) {
        let mut prefix = 0u8;
        for (_, reader) in &self.readers {
            let Ok((record, len)) = reader.lookup_prefix::<CountryRecord<'_>>(addr) else {
                continue;
            };
            prefix = prefix.max(len as u8);
            let code = record.and_then(|r| r.country.and_then(|c| c.iso_code).or(r.country_code));
            if let Some(&[a, b]) = code.map(str::as_bytes) {
                return (
                    Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()]),
                    prefix,
                );
            }
        }
        (None, prefix)
    }
}

/// False for addresses that say nothing about where a client is: private, loopback,
/// link-local, shared (CGNAT), multicast, reserved and unspecified ranges. An ECS option
/// carrying one falls back to the resolver's own address.
pub fn is_routable(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_routable(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routable_ranges() {
        for private in [
            "10.1.2.3",
            "192.168.1.0",
            "172.16.0.0",
            "127.0.0.1",
            "100.64.1.0",
            "169.254.1.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_routable(private.parse().unwrap()), "{private}");
        }
        for public in ["198.51.100.0", "8.8.8.0", "2001:db8::", "::ffff:8.8.8.8"] {
            assert!(is_routable(public.parse().unwrap()), "{public}");
        }
    }
}
