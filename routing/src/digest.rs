//! The digest of a table version: SHA-256 over the table's canonical encoding, built from one
//! digest per app so that a table made by applying a delta recomputes only the apps the delta
//! touched.
//!
//! It travels with every snapshot and delta, so a subscriber whose table differs from the
//! controller's in any field (a lost, corrupt or misapplied delta) sees a different digest
//! and asks for a snapshot.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::app::App;
use crate::table::TableData;

/// A SHA-256 digest of a table (or of one app in it).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl std::str::FromStr for Digest {
    type Err = String;
    /// Parses 64 hexadecimal digits.
    fn from_str(s: &str) -> Result<Self, String> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(format!("a digest is 64 hex digits, not {}", bytes.len()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hex = |b: u8| match b {
                b'0'..=b'9' => Ok(b - b'0'),
                b'a'..=b'f' => Ok(b - b'a' + 10),
                b'A'..=b'F' => Ok(b - b'A' + 10),
                _ => Err(format!("{:?} is not a hex digit", b as char)),
            };
            out[i] = hex(pair[0])? << 4 | hex(pair[1])?;
        }
        Ok(Digest(out))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            <[u8; 32]>::deserialize(d).map(Digest)
        }
    }
}

/// The canonical bytes of `value`: its postcard encoding, which is deterministic (no maps
/// with random order in the table: countries are a `BTreeMap`).
fn canonical<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) {
    buf.clear();
    // Serialising plain data into memory cannot fail.
    if let Ok(out) = postcard::to_extend(value, std::mem::take(buf)) {
        *buf = out;
    }
}

fn sha(buf: &[u8]) -> [u8; 32] {
    Sha256::digest(buf).into()
}

/// The digest of one app.
pub(crate) fn app_digest(buf: &mut Vec<u8>, app: &App) -> Digest {
    canonical(buf, app);
    Digest(sha(buf))
}

/// The digest of a table, given the digests of its apps in order.
pub(crate) fn table_digest(data: &TableData, apps: &[Digest]) -> Digest {
    let mut buf = Vec::new();
    let mut h = Sha256::new();
    // A label: a digest of something else never equals a table's.
    h.update(b"meridian routing table digest 1\0");
    h.update(data.version.to_le_bytes());
    h.update(data.generated_at_ms.to_le_bytes());
    canonical(&mut buf, &data.regions);
    h.update(sha(&buf));
    canonical(&mut buf, &data.clusters);
    h.update(sha(&buf));
    canonical(&mut buf, &data.geo);
    h.update(sha(&buf));
    canonical(&mut buf, &data.rtt);
    h.update(sha(&buf));
    h.update((apps.len() as u64).to_le_bytes());
    for app in apps {
        h.update(app.0);
    }
    Digest(h.finalize().into())
}

/// The digest of `data` computed from scratch.
pub fn digest_of(data: &TableData) -> Digest {
    let mut buf = Vec::new();
    let apps: Vec<Digest> = data.apps.iter().map(|a| app_digest(&mut buf, a)).collect();
    table_digest(data, &apps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::sample;

    #[test]
    fn any_field_changes_it_and_text_round_trips() {
        let base = digest_of(&sample());
        assert_eq!(base, digest_of(&sample()));
        let mut d = sample();
        d.apps[1].targets[2].weight += 1;
        assert_ne!(digest_of(&d), base);
        let mut d = sample();
        d.version += 1;
        assert_ne!(digest_of(&d), base);
        let mut d = sample();
        d.apps.swap(0, 1);
        assert_ne!(digest_of(&d), base);
        let mut d = sample();
        d.geo.countries.insert("DE".into(), "eu".into());
        assert_ne!(digest_of(&d), base);
        assert_eq!(base.to_string().parse::<Digest>().unwrap(), base);
        let json = serde_json::to_string(&base).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), base);
        assert!("zz".parse::<Digest>().is_err());
    }
}
