//! The wire format of a routing table: what crosses the process boundary between the
//! controller and its subscribers, and what a subscriber keeps on disk as its last good table.
//!
//! Two encodings, each carrying the format version it was written in, so a reader refuses
//! what it would misread rather than route by it:
//!
//! - **binary** (format [`WIRE_FORMAT`]), for the watch stream, the store and the disk: a
//!   header (`MRDT`, the format as a little-endian `u16`, the kind: snapshot or delta) and a
//!   [postcard](https://postcard.jamesmunns.com/wire-format) body. Postcard is not
//!   self-describing: a reader decodes by its own schema, so every change to a type that
//!   crosses the wire must bump [`WIRE_FORMAT`]; `schema_is_pinned` (a test below) fails on
//!   any change to the encoding of a sample table and delta until the format is bumped and
//!   the pinned digests updated. In a snapshot, targets name their cluster by its position
//!   in the table's cluster list (one byte for 50 clusters), the largest saving over JSON.
//! - **JSON** (format [`JSON_FORMAT`]), for the API, `curl` and debugging:
//!   `{"format":1,"table":{…}}`.
//!
//! [`decode`] reads either (by the first byte), so a table stored or persisted by a build
//! that wrote JSON still loads. A decoded table has passed validation.

use serde::{Deserialize, Serialize};

use crate::app::{App, FailureMode, GeoPreference, Policy, Target};
use crate::cluster::{Cluster, Region};
use crate::delta::TableDelta;
use crate::digest::Digest;
use crate::error::TableError;
use crate::geo::{RegionMap, SubnetRegion};
use crate::health::Health;
use crate::table::{RoutingTable, RttSample, TableData};

/// The binary format version this build reads and writes.
pub const WIRE_FORMAT: u32 = 2;
/// The JSON envelope's format version this build reads and writes.
pub const JSON_FORMAT: u32 = 1;

const MAGIC: &[u8; 4] = b"MRDT";
const HEADER_LEN: usize = 7;
const KIND_SNAPSHOT: u8 = 1;
const KIND_DELTA: u8 = 2;

#[derive(Serialize)]
struct EnvelopeOut<'a> {
    format: u32,
    table: &'a TableData,
}

#[derive(Deserialize)]
struct Head {
    format: u32,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    #[allow(
        dead_code,
        reason = "read by `Head` first; kept so the envelope parses whole"
    )]
    format: u32,
    table: TableData,
}

/// A snapshot as the binary format carries it.
#[derive(Serialize, Deserialize)]
struct WireTable {
    version: u64,
    generated_at_ms: u64,
    regions: Vec<Region>,
    clusters: Vec<Cluster>,
    apps: Vec<WireApp>,
    countries: Vec<(String, String)>,
    subnets: Vec<SubnetRegion>,
    rtt: Vec<RttSample>,
}

#[derive(Serialize, Deserialize)]
struct WireApp {
    name: String,
    hostnames: Vec<String>,
    policy: Policy,
    failure_mode: FailureMode,
    dns_ttl: u32,
    geo_preferences: Vec<GeoPreference>,
    targets: Vec<WireTarget>,
}

#[derive(Serialize, Deserialize)]
struct WireTarget {
    /// Position of the cluster in the snapshot's cluster list.
    cluster: u32,
    weight: u32,
    tier: u8,
    health: Health,
}

/// What a binary message is, read from its header and first fields without decoding it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peek {
    /// A whole table of this version.
    Snapshot {
        /// Its version.
        version: u64,
    },
    /// A delta.
    Delta {
        /// The version it applies to.
        base_version: u64,
        /// The digest of that version.
        base_digest: Digest,
        /// The version it makes.
        version: u64,
    },
}

/// A decoded message of the watch stream.
#[derive(Debug)]
pub enum Message {
    /// A whole table, validated.
    Snapshot(RoutingTable),
    /// A delta, to apply to the table held ([`RoutingTable::apply`]).
    Delta(TableDelta),
}

fn header(kind: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(WIRE_FORMAT as u16).to_le_bytes());
    out.push(kind);
    out
}

/// Encodes a table in the binary format.
pub fn encode(table: &RoutingTable) -> Vec<u8> {
    let data = table.data();
    let position: std::collections::HashMap<&str, u32> = data
        .clusters
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i as u32))
        .collect();
    let wire = WireTable {
        version: data.version,
        generated_at_ms: data.generated_at_ms,
        regions: data.regions.clone(),
        clusters: data.clusters.clone(),
        apps: data
            .apps
            .iter()
            .map(|a| WireApp {
                name: a.name.clone(),
                hostnames: a.hostnames.clone(),
                policy: a.policy,
                failure_mode: a.failure_mode,
                dns_ttl: a.dns_ttl,
                geo_preferences: a.geo_preferences.clone(),
                targets: a
                    .targets
                    .iter()
                    .map(|t| WireTarget {
                        // A validated table's targets name clusters it has.
                        cluster: position
                            .get(t.cluster.as_str())
                            .copied()
                            .unwrap_or(u32::MAX),
                        weight: t.weight,
                        tier: t.tier,
                        health: t.health,
                    })
                    .collect(),
            })
            .collect(),
        countries: data
            .geo
            .countries
            .iter()
            .map(|(c, r)| (c.clone(), r.clone()))
            .collect(),
        subnets: data.geo.subnets.clone(),
        rtt: data.rtt.clone(),
    };
    // Serialising plain data into memory cannot fail.
    postcard::to_extend(&wire, header(KIND_SNAPSHOT)).unwrap_or_default()
}

/// Encodes a delta in the binary format.
pub fn encode_delta(delta: &TableDelta) -> Vec<u8> {
    postcard::to_extend(delta, header(KIND_DELTA)).unwrap_or_default()
}

/// Encodes a table as JSON, for the API and debugging.
pub fn encode_json(table: &RoutingTable) -> Vec<u8> {
    let envelope = EnvelopeOut {
        format: JSON_FORMAT,
        table: table.data(),
    };
    // Serialising plain data with string keys into memory cannot fail.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

fn malformed(message: impl Into<String>) -> TableError {
    TableError::Malformed(message.into())
}

/// The kind and body of a binary message, its header checked.
fn split(bytes: &[u8]) -> Result<(u8, &[u8]), TableError> {
    if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
        return Err(malformed("not a Meridian routing table message"));
    }
    let format = u16::from_le_bytes([bytes[4], bytes[5]]);
    if u32::from(format) != WIRE_FORMAT {
        return Err(TableError::UnsupportedFormat {
            found: u32::from(format),
            supported: WIRE_FORMAT,
        });
    }
    Ok((bytes[6], &bytes[HEADER_LEN..]))
}

/// Reads what a binary message is without decoding it.
pub fn peek(bytes: &[u8]) -> Result<Peek, TableError> {
    match split(bytes)? {
        (KIND_SNAPSHOT, body) => {
            let (version, _) = postcard::take_from_bytes::<u64>(body)?;
            Ok(Peek::Snapshot { version })
        }
        (KIND_DELTA, body) => {
            let ((base_version, base_digest, version), _) =
                postcard::take_from_bytes::<(u64, Digest, u64)>(body)?;
            Ok(Peek::Delta {
                base_version,
                base_digest,
                version,
            })
        }
        (kind, _) => Err(malformed(format!("unknown message kind {kind}"))),
    }
}

/// Decodes a message of the watch stream: a snapshot (validated) or a delta.
pub fn decode_message(bytes: &[u8]) -> Result<Message, TableError> {
    if bytes.first() == Some(&b'{') {
        return decode_json(bytes).map(Message::Snapshot);
    }
    match split(bytes)? {
        (KIND_SNAPSHOT, body) => decode_snapshot(body).map(Message::Snapshot),
        (KIND_DELTA, body) => Ok(Message::Delta(from_body(body)?)),
        (kind, _) => Err(malformed(format!("unknown message kind {kind}"))),
    }
}

/// Decodes and validates a table, binary or JSON.
pub fn decode(bytes: &[u8]) -> Result<RoutingTable, TableError> {
    match decode_message(bytes)? {
        Message::Snapshot(table) => Ok(table),
        Message::Delta(_) => Err(malformed("a delta where a whole table was expected")),
    }
}

/// A postcard body that must be read to its last byte.
fn from_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, TableError> {
    let (value, rest) = postcard::take_from_bytes(body)?;
    if !rest.is_empty() {
        return Err(malformed(format!("{} bytes after the message", rest.len())));
    }
    Ok(value)
}

fn decode_snapshot(body: &[u8]) -> Result<RoutingTable, TableError> {
    let wire: WireTable = from_body(body)?;
    let mut apps = Vec::with_capacity(wire.apps.len());
    for (i, a) in wire.apps.into_iter().enumerate() {
        let mut targets = Vec::with_capacity(a.targets.len());
        for (j, t) in a.targets.into_iter().enumerate() {
            let cluster = wire.clusters.get(t.cluster as usize).ok_or_else(|| {
                malformed(format!(
                    "apps[{i}].targets[{j}].cluster: no cluster at position {}",
                    t.cluster
                ))
            })?;
            targets.push(Target {
                cluster: cluster.name.clone(),
                weight: t.weight,
                tier: t.tier,
                health: t.health,
            });
        }
        apps.push(App {
            name: a.name,
            hostnames: a.hostnames,
            policy: a.policy,
            failure_mode: a.failure_mode,
            dns_ttl: a.dns_ttl,
            geo_preferences: a.geo_preferences,
            targets,
        });
    }
    RoutingTable::new(TableData {
        version: wire.version,
        generated_at_ms: wire.generated_at_ms,
        regions: wire.regions,
        clusters: wire.clusters,
        apps,
        geo: RegionMap {
            countries: wire.countries.into_iter().collect(),
            subnets: wire.subnets,
        },
        rtt: wire.rtt,
    })
}

fn decode_json(bytes: &[u8]) -> Result<RoutingTable, TableError> {
    let head: Head = serde_json::from_slice(bytes)?;
    if head.format != JSON_FORMAT {
        return Err(TableError::UnsupportedFormat {
            found: head.format,
            supported: JSON_FORMAT,
        });
    }
    let envelope: EnvelopeIn = serde_json::from_slice(bytes)?;
    RoutingTable::new(envelope.table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::sample;
    use sha2::Digest as _;

    #[test]
    fn round_trip() {
        let table = RoutingTable::new(sample()).unwrap();
        for bytes in [encode(&table), encode_json(&table)] {
            let back = decode(&bytes).unwrap();
            assert_eq!(back, table);
            assert_eq!(back.digest(), table.digest());
            assert_eq!(
                back.app_for_host("shop.example.com"),
                table.app_for_host("shop.example.com")
            );
        }
        assert_eq!(
            peek(&encode(&table)).unwrap(),
            Peek::Snapshot { version: 1 }
        );
    }

    fn next() -> (RoutingTable, RoutingTable) {
        let v1 = RoutingTable::new(sample()).unwrap();
        let mut d = sample();
        d.version = 2;
        d.apps[0].targets[1].health = Health::Draining { progress: 0.25 };
        d.geo.countries.insert("DE".into(), "eu".into());
        (v1, RoutingTable::new(d).unwrap())
    }

    #[test]
    fn deltas_round_trip() {
        let (v1, v2) = next();
        let delta = TableDelta::between(&v1, &v2);
        let bytes = encode_delta(&delta);
        assert_eq!(
            peek(&bytes).unwrap(),
            Peek::Delta {
                base_version: 1,
                base_digest: v1.digest(),
                version: 2
            }
        );
        let Message::Delta(back) = decode_message(&bytes).unwrap() else {
            panic!("not a delta")
        };
        assert_eq!(back, delta);
        assert_eq!(v1.apply(&back).unwrap(), v2);
        assert!(decode(&bytes).is_err(), "a delta is not a table");
    }

    /// The encoding of a sample table and delta, pinned: a change to any type that crosses
    /// the wire changes these, and must come with a new `WIRE_FORMAT` (postcard is read by
    /// the reader's schema alone, so an old reader would misread the new layout).
    #[test]
    fn schema_is_pinned() {
        let (v1, v2) = next();
        let hex = |b: &[u8]| Digest(sha2::Sha256::digest(b).into()).to_string();
        let table = hex(&encode(&v2));
        let delta = hex(&encode_delta(&TableDelta::between(&v1, &v2)));
        assert_eq!(
            (WIRE_FORMAT, table.as_str(), delta.as_str()),
            (
                2,
                "1e9d3effef87a24c3e6d913359d1076a0196fe02b0108aafe72bd4bcb7f6b8cb",
                "fddf39259765d8ff3adb60c800bebe34c4940c5182a8334011bfdd1d3ca3f9b6"
            ),
            "the binary encoding changed: bump WIRE_FORMAT and pin the new digests"
        );
    }

    #[test]
    fn refuses_other_formats_garbage_and_invalid_tables() {
        let table = RoutingTable::new(sample()).unwrap();
        let text = String::from_utf8(encode_json(&table)).unwrap();
        let future = text.replacen("\"format\":1", "\"format\":2", 1);
        assert!(matches!(
            decode(future.as_bytes()),
            Err(TableError::UnsupportedFormat {
                found: 2,
                supported: 1
            })
        ));
        assert!(matches!(decode(b"{not json"), Err(TableError::Decode(_))));
        assert!(matches!(
            decode(&text.as_bytes()[..text.len() / 2]),
            Err(TableError::Decode(_))
        ));
        let invalid = text.replacen("\"version\":1", "\"version\":0", 1);
        let err = decode(invalid.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("version: must be at least 1"), "{err}");

        let mut bin = encode(&table);
        assert!(decode(&bin[..bin.len() - 3]).is_err());
        assert!(matches!(decode(b"garbage"), Err(TableError::Malformed(_))));
        bin[4] = 9;
        assert!(matches!(
            decode(&bin),
            Err(TableError::UnsupportedFormat {
                found: 9,
                supported: 2
            })
        ));
        let mut bin = encode(&table);
        bin.push(0);
        assert!(matches!(decode(&bin), Err(TableError::Malformed(_))));
    }
}
