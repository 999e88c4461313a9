//! Client address → region: CIDR overrides first (most specific prefix wins), then the
//! client's country as the caller's geo database reported it.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::table::RegionId;

/// One CIDR → region override.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetRegion {
    /// The client network.
    pub cidr: IpNet,
    /// The region its clients belong to.
    pub region: String,
}

/// How clients are mapped to regions, as plain data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionMap {
    /// ISO 3166-1 alpha-2 country code (upper case) → region.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub countries: BTreeMap<String, String>,
    /// CIDR overrides; the most specific prefix containing the client wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<SubnetRegion>,
}

/// Why a client was put in a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionMatch {
    /// A CIDR override of this prefix length contained the client.
    Subnet {
        /// The override's prefix length.
        prefix_len: u8,
    },
    /// The client's country is mapped to the region.
    Country,
}

/// The region map, indexed for lookups without allocation: one hash map per distinct
/// prefix length, longest first.
#[derive(Clone, Debug, Default)]
pub(crate) struct RegionIndex {
    v4: Vec<(u8, HashMap<u32, RegionId>)>,
    v6: Vec<(u8, HashMap<u128, RegionId>)>,
    countries: HashMap<[u8; 2], RegionId>,
}

fn mask_v4(addr: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        addr & (u32::MAX << (32 - u32::from(len)))
    }
}

fn mask_v6(addr: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        addr & (u128::MAX << (128 - u32::from(len)))
    }
}

impl RegionIndex {
    /// Builds the index; `region_id` maps a region name to its id (validated beforehand).
    pub(crate) fn build(map: &RegionMap, region_id: impl Fn(&str) -> Option<RegionId>) -> Self {
        let mut index = RegionIndex::default();
        for subnet in &map.subnets {
            let Some(id) = region_id(&subnet.region) else {
                continue;
            };
            let len = subnet.cidr.prefix_len();
            match subnet.cidr {
                IpNet::V4(net) => {
                    let key = mask_v4(u32::from(net.addr()), len);
                    entry(&mut index.v4, len).insert(key, id);
                }
                IpNet::V6(net) => {
                    let key = mask_v6(u128::from(net.addr()), len);
                    entry(&mut index.v6, len).insert(key, id);
                }
            }
        }
        index.v4.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        index.v6.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        for (country, region) in &map.countries {
            if let (Some(id), [a, b]) = (region_id(region), country.as_bytes()) {
                index
                    .countries
                    .insert([a.to_ascii_uppercase(), b.to_ascii_uppercase()], id);
            }
        }
        index
    }

    /// The region of a client, from the CIDR overrides, else from its country code.
    pub(crate) fn resolve(
        &self,
        addr: IpAddr,
        country: Option<&str>,
    ) -> Option<(RegionId, RegionMatch)> {
        let by_subnet = match addr {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                self.v4
                    .iter()
                    .find_map(|(len, map)| map.get(&mask_v4(bits, *len)).map(|id| (*id, *len)))
            }
            IpAddr::V6(v6) => {
                // An IPv4-mapped address is looked up as the IPv4 address it carries.
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return self.resolve(IpAddr::V4(v4), country);
                }
                let bits = u128::from(v6);
                self.v6
                    .iter()
                    .find_map(|(len, map)| map.get(&mask_v6(bits, *len)).map(|id| (*id, *len)))
            }
        };
        if let Some((id, prefix_len)) = by_subnet {
            return Some((id, RegionMatch::Subnet { prefix_len }));
        }
        let code = country?.as_bytes();
        let key = match code {
            [a, b] => [a.to_ascii_uppercase(), b.to_ascii_uppercase()],
            _ => return None,
        };
        self.countries
            .get(&key)
            .map(|id| (*id, RegionMatch::Country))
    }
}

fn entry<K>(list: &mut Vec<(u8, HashMap<K, RegionId>)>, len: u8) -> &mut HashMap<K, RegionId> {
    let pos = match list.iter().position(|(l, _)| *l == len) {
        Some(pos) => pos,
        None => {
            list.push((len, HashMap::new()));
            list.len() - 1
        }
    };
    &mut list[pos].1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> RegionIndex {
        let map = RegionMap {
            countries: [
                ("DE".to_string(), "eu".to_string()),
                ("US".to_string(), "us".to_string()),
            ]
            .into(),
            subnets: vec![
                SubnetRegion {
                    cidr: "10.0.0.0/8".parse().unwrap(),
                    region: "us".into(),
                },
                SubnetRegion {
                    cidr: "10.1.0.0/16".parse().unwrap(),
                    region: "eu".into(),
                },
                SubnetRegion {
                    cidr: "2001:db8::/32".parse().unwrap(),
                    region: "eu".into(),
                },
            ],
        };
        RegionIndex::build(&map, |name| match name {
            "eu" => Some(RegionId(0)),
            "us" => Some(RegionId(1)),
            _ => None,
        })
    }

    #[test]
    fn most_specific_prefix_wins() {
        let index = index();
        let eu = index.resolve("10.1.2.3".parse().unwrap(), Some("US"));
        assert_eq!(
            eu,
            Some((RegionId(0), RegionMatch::Subnet { prefix_len: 16 }))
        );
        let us = index.resolve("10.2.2.3".parse().unwrap(), None);
        assert_eq!(
            us,
            Some((RegionId(1), RegionMatch::Subnet { prefix_len: 8 }))
        );
    }

    #[test]
    fn country_after_subnets_and_mapped_v4() {
        let index = index();
        assert_eq!(
            index.resolve("192.0.2.1".parse().unwrap(), Some("de")),
            Some((RegionId(0), RegionMatch::Country))
        );
        assert_eq!(
            index.resolve("192.0.2.1".parse().unwrap(), Some("FR")),
            None
        );
        assert_eq!(index.resolve("192.0.2.1".parse().unwrap(), None), None);
        let mapped = index.resolve("::ffff:10.1.0.9".parse().unwrap(), None);
        assert_eq!(
            mapped,
            Some((RegionId(0), RegionMatch::Subnet { prefix_len: 16 }))
        );
        let v6 = index.resolve("2001:db8:1::1".parse().unwrap(), None);
        assert_eq!(
            v6,
            Some((RegionId(0), RegionMatch::Subnet { prefix_len: 32 }))
        );
    }
}
