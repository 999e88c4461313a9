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

/// The region a client network's CIDR overrides give, and how far that answer reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubnetAnswer {
    /// The region of the most specific override containing the address; `None` when no
    /// override contains it.
    pub region: Option<RegionId>,
    /// The shortest prefix length around the address over which every address gets the
    /// same `region` (an override, a more specific override nested in it, or the gap
    /// between overrides). This is the ECS scope an answer chosen by it may carry: never
    /// shorter, or a resolver would cache it for clients another override sends elsewhere.
    pub scope: u8,
}

/// The region map, indexed for lookups without allocation: one hash map per distinct
/// prefix length, longest first; and the same overrides flattened into sorted, disjoint
/// address ranges for [`RegionIndex::subnet`].
#[derive(Clone, Debug, Default)]
pub(crate) struct RegionIndex {
    v4: Vec<(u8, HashMap<u32, RegionId>)>,
    v6: Vec<(u8, HashMap<u128, RegionId>)>,
    v4_ranges: Ranges,
    v6_ranges: Ranges,
    countries: HashMap<[u8; 2], RegionId>,
}

/// The address space of one family as disjoint ranges `[start, end]`, in order, each with
/// the region of the most specific override covering it (adjacent ranges with the same
/// region merged). Covers the whole space, so every address falls in exactly one.
#[derive(Clone, Debug, Default)]
struct Ranges {
    bits: u8,
    ranges: Vec<(u128, u128, Option<RegionId>)>,
}

impl Ranges {
    /// `rules` are (network start, prefix length, region) of one family of `bits` bits.
    fn build(bits: u8, mut rules: Vec<(u128, u8, RegionId)>) -> Self {
        let max = host_mask(bits, 0);
        // Parents before the networks nested in them.
        rules.sort_by_key(|&(start, len, _)| (start, len));
        let mut out: Vec<(u128, u128, Option<RegionId>)> = Vec::new();
        let mut push = |start: u128, end: u128, region: Option<RegionId>| match out.last_mut() {
            Some(last) if last.2 == region && last.1.checked_add(1) == Some(start) => {
                last.1 = end;
            }
            _ => out.push((start, end, region)),
        };
        // Open overrides containing the cursor, innermost last: (end, region).
        let mut open: Vec<(u128, RegionId)> = Vec::new();
        let mut cursor: Option<u128> = Some(0);
        for (start, len, region) in rules {
            let end = start | host_mask(bits, len);
            while let Some(&(top_end, top_region)) = open.last() {
                if top_end >= start {
                    break;
                }
                if let Some(c) = cursor.filter(|c| *c <= top_end) {
                    push(c, top_end, Some(top_region));
                }
                cursor = top_end.checked_add(1);
                open.pop();
            }
            if let Some(c) = cursor.filter(|c| *c < start) {
                push(c, start - 1, open.last().map(|o| o.1));
            }
            cursor = Some(start);
            open.push((end, region));
        }
        while let Some((top_end, top_region)) = open.pop() {
            if let Some(c) = cursor.filter(|c| *c <= top_end) {
                push(c, top_end, Some(top_region));
            }
            cursor = top_end.checked_add(1);
        }
        if let Some(c) = cursor {
            push(c, max, None);
        }
        Ranges { bits, ranges: out }
    }

    fn lookup(&self, addr: u128) -> SubnetAnswer {
        let i = self.ranges.partition_point(|r| r.0 <= addr);
        let Some(&(start, end, region)) = i.checked_sub(1).and_then(|i| self.ranges.get(i)) else {
            // Never built (no table yet): one range, no region.
            return SubnetAnswer {
                region: None,
                scope: 0,
            };
        };
        SubnetAnswer {
            region,
            scope: self.shortest_block_within(addr, start, end),
        }
    }

    /// The shortest prefix whose block around `addr` stays inside `[start, end]` (which
    /// holds `addr`). The block of a prefix `len` starts at or after `start` exactly when
    /// `len` reaches past the bits `addr` shares with `start - 1` (the first bit after them
    /// is 1 in `addr`, 0 in `start - 1`); likewise it ends at or before `end` when `len`
    /// reaches past the bits `addr` shares with `end + 1`. So two leading-zero counts
    /// instead of a search over the lengths.
    fn shortest_block_within(&self, addr: u128, start: u128, end: u128) -> u8 {
        let shared_bits = |other: u128| {
            // `addr != other` here, so the count is below `bits`.
            (addr ^ other).leading_zeros() - (128 - u32::from(self.bits))
        };
        let from_start = start
            .checked_sub(1)
            .map_or(0, |below| shared_bits(below) + 1);
        let from_end = if end == host_mask(self.bits, 0) {
            0
        } else {
            shared_bits(end + 1) + 1
        };
        from_start.max(from_end) as u8
    }
}

/// The host bits of a `len`-bit prefix in a `bits`-bit address, as a mask.
fn host_mask(bits: u8, len: u8) -> u128 {
    let host = u32::from(bits.saturating_sub(len));
    if host >= 128 {
        u128::MAX
    } else {
        (1u128 << host) - 1
    }
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
        // The ranges from the same maps, so a duplicate override resolves the same way.
        let rules = |maps: Vec<(u8, u128, RegionId)>| {
            maps.into_iter()
                .map(|(len, start, id)| (start, len, id))
                .collect::<Vec<_>>()
        };
        index.v4_ranges = Ranges::build(
            32,
            rules(
                index
                    .v4
                    .iter()
                    .flat_map(|(len, m)| m.iter().map(|(k, id)| (*len, u128::from(*k), *id)))
                    .collect(),
            ),
        );
        index.v6_ranges = Ranges::build(
            128,
            rules(
                index
                    .v6
                    .iter()
                    .flat_map(|(len, m)| m.iter().map(|(k, id)| (*len, *k, *id)))
                    .collect(),
            ),
        );
        for (country, region) in &map.countries {
            if let (Some(id), [a, b]) = (region_id(region), country.as_bytes()) {
                index
                    .countries
                    .insert([a.to_ascii_uppercase(), b.to_ascii_uppercase()], id);
            }
        }
        index
    }

    /// The CIDR overrides' answer for `addr`, with the prefix length it holds for. An
    /// IPv4-mapped IPv6 address is looked up as IPv4 (its scope counted in IPv6 bits).
    pub(crate) fn subnet(&self, addr: IpAddr) -> SubnetAnswer {
        match addr {
            IpAddr::V4(v4) => self.v4_ranges.lookup(u128::from(u32::from(v4))),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => {
                    let answer = self.v4_ranges.lookup(u128::from(u32::from(v4)));
                    SubnetAnswer {
                        scope: answer.scope + 96,
                        ..answer
                    }
                }
                None => self.v6_ranges.lookup(u128::from(v6)),
            },
        }
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

    fn subnet(index: &RegionIndex, addr: &str) -> (Option<u16>, u8) {
        let answer = index.subnet(addr.parse().unwrap());
        (answer.region.map(|r| r.0), answer.scope)
    }

    #[test]
    fn subnet_scope_covers_only_addresses_with_the_same_answer() {
        let index = index();
        // Inside 10.1/16 (nested in 10/8): the /16 holds.
        assert_eq!(subnet(&index, "10.1.2.3"), (Some(0), 16));
        // In 10/8 but beside the nested /16: 10.0/16 is the largest block without it.
        assert_eq!(subnet(&index, "10.0.9.9"), (Some(1), 16));
        assert_eq!(subnet(&index, "10.128.0.0"), (Some(1), 9));
        // Outside every override: the gap around the address.
        assert_eq!(subnet(&index, "11.0.0.0"), (None, 8));
        assert_eq!(subnet(&index, "192.0.2.1"), (None, 1));
        assert_eq!(subnet(&index, "8.0.0.1"), (None, 7));
        assert_eq!(subnet(&index, "2001:db8:1::1"), (Some(0), 32));
        assert_eq!(subnet(&index, "2001:db9::"), (None, 32));
        assert_eq!(subnet(&index, "::ffff:10.1.0.9"), (Some(0), 112));
        // No overrides at all: every address, one answer.
        let empty = RegionIndex::build(&RegionMap::default(), |_| None);
        assert_eq!(subnet(&empty, "198.51.100.7"), (None, 0));
    }

    proptest::proptest! {
        /// The scope is the shortest prefix whose whole block lies in the address's range,
        /// checked against every prefix length.
        #[test]
        fn the_scope_is_the_shortest_block_inside_the_range(
            bits in proptest::sample::select(vec![32u8, 128]),
            addr in proptest::num::u128::ANY,
            below in proptest::num::u128::ANY,
            above in proptest::num::u128::ANY,
            // Ranges of every size, down to one address, and the family's edges.
            below_bits in 0u32..=128,
            above_bits in 0u32..=128,
        ) {
            let max = host_mask(bits, 0);
            let addr = addr & max;
            let start = addr.saturating_sub(below.checked_shr(below_bits).unwrap_or(0));
            let end = addr.saturating_add(above.checked_shr(above_bits).unwrap_or(0)).min(max);
            let ranges = Ranges { bits, ranges: Vec::new() };
            let fits = |len: u8| {
                let mask = host_mask(bits, len);
                addr & !mask >= start && addr | mask <= end
            };
            let shortest = (0..=bits).find(|&len| fits(len)).unwrap();
            proptest::prop_assert_eq!(ranges.shortest_block_within(addr, start, end), shortest);
        }
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
