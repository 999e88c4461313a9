//! DNSSEC online signing: keys, RRSIGs, compact denial of existence, the signature cache.
//!
//! Hand-written over ring, and why: the query path writes pre-rendered wire bytes, so what it
//! needs is an RRSIG body for bytes it already holds. hickory-proto's signer works on its own
//! `Record` types, so using it would mean converting every RRset into hickory records and the
//! signature back into bytes, per table and per inline signing, for the same ~40 lines of
//! canonical-form assembly (RFC 4034 §3.1.8.1, §6). The cryptography itself is ring's (ECDSA
//! P-256 with SHA-256 in the fixed `r || s` form RFC 6605 wants, Ed25519 per RFC 8080); the
//! record layout is checked by a validating unbound, kdig and ldns in the suites.
//!
//! Denial of existence is compact (RFC 9824, "black lies"): a name that does not exist is
//! answered NOERROR with an NSEC at the query name whose next name is its immediate
//! successor and whose type bitmap holds NXNAME; a missing type at an existing name gets
//! the same NSEC with the types that are there. No NSEC ever spans two real names, so the
//! zone cannot be walked.
//!
//! Key files hold the PKCS#8 private key in base64 with the zone, algorithm and flags; they
//! are written 0600, refused when others may read them, and never logged (`Debug` shows the
//! key tag only).

use std::collections::HashMap;
use std::fmt;
use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};

use crate::wire::{name_to_wire, put_u16, put_u32, suffix_offsets};

/// DNSSEC record types and the NXNAME pseudo-type.
pub mod dtype {
    /// Signature.
    pub const RRSIG: u16 = 46;
    /// Next secure record (here: compact denial).
    pub const NSEC: u16 = 47;
    /// Zone key.
    pub const DNSKEY: u16 = 48;
    /// Child DS, for automated DS updates at the parent (RFC 7344).
    pub const CDS: u16 = 59;
    /// Child DNSKEY (RFC 7344).
    pub const CDNSKEY: u16 = 60;
    /// The name does not exist (RFC 9824), only ever in an NSEC type bitmap.
    pub const NXNAME: u16 = 128;
}

/// Flags of a key-signing (secure entry point) key.
pub const FLAGS_KSK: u16 = 257;
/// Flags of a zone-signing key.
pub const FLAGS_ZSK: u16 = 256;

/// A signing algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// ECDSA P-256 with SHA-256 (13), the default.
    EcdsaP256Sha256,
    /// Ed25519 (15).
    Ed25519,
}

impl Algorithm {
    /// The IANA number.
    pub fn number(self) -> u8 {
        match self {
            Algorithm::EcdsaP256Sha256 => 13,
            Algorithm::Ed25519 => 15,
        }
    }

    /// From the IANA number; `None` for algorithms Meridian does not sign with.
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            13 => Some(Algorithm::EcdsaP256Sha256),
            15 => Some(Algorithm::Ed25519),
            _ => None,
        }
    }

    /// From a command-line word: the number or the mnemonic.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "13" | "ecdsap256sha256" | "ecdsa-p256" | "ecdsa" => Some(Algorithm::EcdsaP256Sha256),
            "15" | "ed25519" => Some(Algorithm::Ed25519),
            _ => None,
        }
    }
}

/// Why a key could not be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is readable by others than its owner.
    #[error("{path}: readable by others (mode {mode:04o}); a key file must be 0600")]
    Permissions {
        /// The key file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// The content is not a key.
    #[error("{path}: {message}")]
    Format {
        /// The key file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

enum Pair {
    Ecdsa(EcdsaKeyPair, SystemRandom),
    Ed25519(Ed25519KeyPair),
}

/// A zone's signing key with its public DNSKEY data.
pub struct SigningKey {
    zone: String,
    algorithm: Algorithm,
    flags: u16,
    dnskey_rdata: Box<[u8]>,
    key_tag: u16,
    pair: Pair,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the private key: only what the DNSKEY publishes anyway.
        f.debug_struct("SigningKey")
            .field("zone", &self.zone)
            .field("algorithm", &self.algorithm.number())
            .field("flags", &self.flags)
            .field("key_tag", &self.key_tag)
            .finish()
    }
}

/// Lower case, without the trailing dot.
fn normal_zone(zone: &str) -> String {
    zone.trim_end_matches('.').to_ascii_lowercase()
}

impl SigningKey {
    /// A new key for `zone`; with `ksk` its flags are 257 (a combined signing key when it is
    /// the zone's only key), else 256. Returns the key and the text of its key file.
    pub fn generate(zone: &str, algorithm: Algorithm, ksk: bool) -> (SigningKey, String) {
        let rng = SystemRandom::new();
        let pkcs8 = match algorithm {
            Algorithm::EcdsaP256Sha256 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map(|d| d.as_ref().to_vec())
            }
            Algorithm::Ed25519 => Ed25519KeyPair::generate_pkcs8(&rng).map(|d| d.as_ref().to_vec()),
        }
        .unwrap_or_else(|_| panic!("the system's random source failed"));
        let flags = if ksk { FLAGS_KSK } else { FLAGS_ZSK };
        let key = SigningKey::from_parts(&normal_zone(zone), algorithm, flags, &pkcs8)
            .unwrap_or_else(|message| panic!("a key ring just made was refused: {message}"));
        let text = format!(
            "; Meridian DNSSEC key (keep secret: mode 0600). Public part:\n; {}\nzone: {}\nalgorithm: {}\nflags: {}\nprivate-key: {}\n",
            key.dnskey_text(),
            key.zone,
            algorithm.number(),
            flags,
            BASE64.encode(&pkcs8)
        );
        (key, text)
    }

    fn from_parts(
        zone: &str,
        algorithm: Algorithm,
        flags: u16,
        pkcs8: &[u8],
    ) -> Result<SigningKey, String> {
        let (pair, public) = match algorithm {
            Algorithm::EcdsaP256Sha256 => {
                let rng = SystemRandom::new();
                let pair = EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    pkcs8,
                    &rng,
                )
                .map_err(|e| format!("not an ECDSA P-256 private key ({e})"))?;
                // Uncompressed point 0x04 || X || Y; the DNSKEY holds X || Y (RFC 6605 §4).
                let public = pair.public_key().as_ref()[1..].to_vec();
                (Pair::Ecdsa(pair, rng), public)
            }
            Algorithm::Ed25519 => {
                let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
                    .map_err(|e| format!("not an Ed25519 private key ({e})"))?;
                let public = pair.public_key().as_ref().to_vec();
                (Pair::Ed25519(pair), public)
            }
        };
        let mut rdata = Vec::with_capacity(4 + public.len());
        put_u16(&mut rdata, flags);
        rdata.push(3);
        rdata.push(algorithm.number());
        rdata.extend_from_slice(&public);
        Ok(SigningKey {
            zone: zone.to_string(),
            algorithm,
            flags,
            key_tag: key_tag(&rdata),
            dnskey_rdata: rdata.into_boxed_slice(),
            pair,
        })
    }

    /// Parses a key file's text (`path` names it in errors).
    pub fn parse(text: &str, path: &str) -> Result<SigningKey, KeyError> {
        let format = |message: String| KeyError::Format {
            path: path.to_string(),
            message,
        };
        let mut fields: HashMap<&str, &str> = HashMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with(';') {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else {
                return Err(format(format!("line {line:?} is not `field: value`")));
            };
            fields.insert(k.trim(), v.trim());
        }
        let field = |name: &str| {
            fields
                .get(name)
                .copied()
                .ok_or_else(|| format(format!("no {name:?} field")))
        };
        let zone = normal_zone(field("zone")?);
        let algorithm = field("algorithm")?;
        let algorithm = algorithm
            .parse::<u8>()
            .ok()
            .and_then(Algorithm::from_number)
            .ok_or_else(|| {
                format(format!(
                    "algorithm {algorithm} is not supported (13 = ECDSA P-256/SHA-256, 15 = Ed25519)"
                ))
            })?;
        let flags = match field("flags")? {
            "256" => FLAGS_ZSK,
            "257" => FLAGS_KSK,
            other => return Err(format(format!("flags {other} (256 = ZSK, 257 = KSK)"))),
        };
        let pkcs8 = BASE64
            .decode(field("private-key")?)
            .map_err(|e| format(format!("private-key is not base64 ({e})")))?;
        SigningKey::from_parts(&zone, algorithm, flags, &pkcs8).map_err(format)
    }

    /// Reads a key file, refusing one that others than its owner may read.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let shown = path.display().to_string();
        let io = |source| KeyError::Io {
            path: shown.clone(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::Permissions { path: shown, mode });
            }
        }
        #[cfg(not(unix))]
        let _ = meta;
        let text = std::fs::read_to_string(path).map_err(io)?;
        SigningKey::parse(&text, &shown)
    }

    /// Writes a key file created 0600; never replaces an existing file.
    pub fn write_file(path: &Path, text: &str) -> Result<(), KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// The zone, lower case, without the trailing dot.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// 257 (KSK or combined) or 256 (ZSK).
    pub fn flags(&self) -> u16 {
        self.flags
    }

    /// The key tag (RFC 4034 Appendix B).
    pub fn key_tag(&self) -> u16 {
        self.key_tag
    }

    /// Whether this is a key-signing key (the secure entry point bit).
    pub fn is_ksk(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The DNSKEY RDATA.
    pub fn dnskey_rdata(&self) -> &[u8] {
        &self.dnskey_rdata
    }

    /// The DS RDATA with a SHA-256 digest (digest type 2).
    pub fn ds_rdata(&self) -> Vec<u8> {
        let mut data = name_to_wire(&self.zone);
        data.extend_from_slice(&self.dnskey_rdata);
        let digest = ring::digest::digest(&ring::digest::SHA256, &data);
        let mut out = Vec::with_capacity(4 + 32);
        put_u16(&mut out, self.key_tag);
        out.push(self.algorithm.number());
        out.push(2);
        out.extend_from_slice(digest.as_ref());
        out
    }

    /// The DS record in presentation form, for the parent zone.
    pub fn ds_text(&self) -> String {
        let ds = self.ds_rdata();
        let digest: String = ds[4..].iter().map(|b| format!("{b:02X}")).collect();
        format!(
            "{}. IN DS {} {} 2 {}",
            self.zone,
            self.key_tag,
            self.algorithm.number(),
            digest
        )
    }

    /// The DNSKEY record in presentation form (a trust anchor).
    pub fn dnskey_text(&self) -> String {
        format!(
            "{}. IN DNSKEY {} 3 {} {}",
            self.zone,
            self.flags,
            self.algorithm.number(),
            BASE64.encode(&self.dnskey_rdata[4..])
        )
    }

    fn sign(&self, data: &[u8]) -> Vec<u8> {
        match &self.pair {
            Pair::Ecdsa(pair, rng) => pair
                .sign(rng, data)
                .map(|s| s.as_ref().to_vec())
                // ring fails only when the system's random source does.
                .unwrap_or_else(|_| panic!("ECDSA signing failed: no randomness")),
            Pair::Ed25519(pair) => pair.sign(data).as_ref().to_vec(),
        }
    }
}

/// The key tag of a DNSKEY RDATA (RFC 4034 Appendix B).
pub fn key_tag(rdata: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    for (i, b) in rdata.iter().enumerate() {
        acc += if i & 1 == 1 {
            u32::from(*b)
        } else {
            u32::from(*b) << 8
        };
    }
    acc += (acc >> 16) & 0xffff;
    (acc & 0xffff) as u16
}

/// Labels of a wire name, the root and a leading `*` not counted (RRSIG labels field).
fn labels(owner: &[u8]) -> u8 {
    let n = suffix_offsets(owner).count();
    if owner.starts_with(b"\x01*") {
        (n - 1) as u8
    } else {
        n as u8
    }
}

/// The signing side of one zone for one snapshot: which keys sign what, and the validity
/// window every signature of the snapshot carries.
#[derive(Debug)]
pub(crate) struct ZoneSigner {
    /// The apex, lower-case wire form (the signer's name).
    pub(crate) apex: Box<[u8]>,
    /// Keys signing everything except the apex key sets.
    zsks: Vec<Arc<SigningKey>>,
    /// Keys signing DNSKEY, CDS and CDNSKEY.
    ksks: Vec<Arc<SigningKey>>,
    inception: u32,
    expiration: u32,
}

impl ZoneSigner {
    /// A signer over the active keys: KSKs sign the key sets, ZSKs the rest; with no
    /// active ZSK the KSKs sign everything (a combined signing key). `None` with no key.
    pub(crate) fn new(
        apex: &[u8],
        active: Vec<Arc<SigningKey>>,
        inception: u32,
        expiration: u32,
    ) -> Option<ZoneSigner> {
        let (ksks, zsks): (Vec<_>, Vec<_>) = active.into_iter().partition(|k| k.is_ksk());
        if ksks.is_empty() && zsks.is_empty() {
            return None;
        }
        let zsks = if zsks.is_empty() { ksks.clone() } else { zsks };
        let ksks = if ksks.is_empty() { zsks.clone() } else { ksks };
        Some(ZoneSigner {
            apex: apex.into(),
            zsks,
            ksks,
            inception,
            expiration,
        })
    }

    /// The RRSIG bodies (type … RDATA, owner left to the writer) over one RRset: every
    /// record `owner`, `rtype`, class IN, `ttl`, with these RDATAs (in any order).
    pub(crate) fn sign_rrset(
        &self,
        owner: &[u8],
        rtype: u16,
        ttl: u32,
        rdatas: &[&[u8]],
    ) -> Vec<Box<[u8]>> {
        let keys = if matches!(rtype, dtype::DNSKEY | dtype::CDS | dtype::CDNSKEY) {
            &self.ksks
        } else {
            &self.zsks
        };
        let mut sorted: Vec<&[u8]> = rdatas.to_vec();
        // Canonical order: RDATA as left-justified octet strings; duplicates once.
        sorted.sort_unstable();
        sorted.dedup();
        keys.iter()
            .map(|key| {
                let mut rdata = Vec::with_capacity(18 + self.apex.len() + 64);
                put_u16(&mut rdata, rtype);
                rdata.push(key.algorithm.number());
                rdata.push(labels(owner));
                put_u32(&mut rdata, ttl);
                put_u32(&mut rdata, self.expiration);
                put_u32(&mut rdata, self.inception);
                put_u16(&mut rdata, key.key_tag);
                rdata.extend_from_slice(&self.apex);
                let mut data = rdata.clone();
                for r in &sorted {
                    data.extend_from_slice(owner);
                    put_u16(&mut data, rtype);
                    put_u16(&mut data, 1);
                    put_u32(&mut data, ttl);
                    put_u16(&mut data, r.len() as u16);
                    data.extend_from_slice(r);
                }
                rdata.extend_from_slice(&key.sign(&data));
                let mut body = Vec::with_capacity(10 + rdata.len());
                put_u16(&mut body, dtype::RRSIG);
                put_u16(&mut body, 1);
                put_u32(&mut body, ttl);
                put_u16(&mut body, rdata.len() as u16);
                body.extend_from_slice(&rdata);
                body.into_boxed_slice()
            })
            .collect()
    }
}

/// Appends an NSEC type bitmap (RFC 4034 §4.1.2) of `types` (sorted, no duplicates).
pub(crate) fn type_bitmap(types: &[u16], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < types.len() {
        let window = (types[i] >> 8) as u8;
        let mut bits = [0u8; 32];
        let mut len = 0;
        while i < types.len() && (types[i] >> 8) as u8 == window {
            let low = (types[i] & 0xff) as usize;
            bits[low / 8] |= 0x80 >> (low % 8);
            len = len.max(low / 8 + 1);
            i += 1;
        }
        out.push(window);
        out.push(len as u8);
        out.extend_from_slice(&bits[..len]);
    }
}

/// The compact-denial NSEC RDATA at `owner`: next name `\000.owner` (its immediate
/// successor), and `types` (present at the name, or NXNAME) with RRSIG and NSEC added.
/// Returns false when the successor would be longer than a name may be; the caller then
/// answers without the proof (the validator treats the name as bogus, which it is).
pub(crate) fn nsec_rdata(owner: &[u8], types: &[u16], out: &mut Vec<u8>) -> bool {
    if owner.len() + 2 > crate::wire::MAX_NAME {
        return false;
    }
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(owner);
    let mut all: [u16; 24] = [0; 24];
    let mut n = 0;
    for &t in types
        .iter()
        .chain(&[dtype::RRSIG, dtype::NSEC])
        .take(all.len())
    {
        if !all[..n].contains(&t) {
            all[n] = t;
            n += 1;
        }
    }
    all[..n].sort_unstable();
    type_bitmap(&all[..n], out);
    true
}

/// The key a cached signature is found by: the RRset's type, owner, TTL and RDATAs in
/// canonical order, written into `out` (reused, so a lookup allocates nothing).
pub(crate) fn cache_key(rtype: u16, owner: &[u8], ttl: u32, rdatas: &[&[u8]], out: &mut Vec<u8>) {
    out.clear();
    put_u16(out, rtype);
    out.extend_from_slice(owner);
    put_u32(out, ttl);
    for r in rdatas {
        put_u16(out, r.len() as u16);
        out.extend_from_slice(r);
    }
}

/// Signatures of one RRset, one per signing key.
pub(crate) type Sigs = Arc<[Box<[u8]>]>;

/// RRSIGs of answers that are not static records: GSLB address sets and denial NSECs.
/// Those expected are made with the snapshot (per app, per client region, per draw) and
/// read without a lock; others are signed when first asked and kept in a bounded map,
/// emptied when full (a flood of random names costs signing, never unbounded memory).
#[derive(Debug, Default)]
pub(crate) struct SigCache {
    pub(crate) presigned: HashMap<Box<[u8]>, Sigs>,
    overflow: Mutex<HashMap<Box<[u8]>, Sigs>>,
    limit: usize,
}

/// Entries kept beyond the presigned ones before the overflow map is emptied.
pub(crate) const OVERFLOW_LIMIT: usize = 10_000;

impl SigCache {
    pub(crate) fn new(limit: usize) -> Self {
        SigCache {
            presigned: HashMap::new(),
            overflow: Mutex::new(HashMap::new()),
            limit,
        }
    }

    /// The signatures under `key`, made by `sign` when neither map has them (`made` is
    /// set then).
    pub(crate) fn get_or_sign(
        &self,
        key: &[u8],
        made: &mut bool,
        sign: impl FnOnce() -> Vec<Box<[u8]>>,
    ) -> Sigs {
        if let Some(sigs) = self.presigned.get(key) {
            return sigs.clone();
        }
        if let Some(sigs) = self
            .overflow
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            return sigs.clone();
        }
        // Signed outside the lock: another worker may sign the same set meanwhile; both
        // signatures are valid.
        let sigs: Sigs = sign().into();
        *made = true;
        let mut overflow = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
        if overflow.len() >= self.limit {
            overflow.clear();
        }
        overflow.insert(key.into(), sigs.clone());
        sigs
    }

    /// Entries held (presigned and signed since).
    pub(crate) fn len(&self) -> usize {
        self.presigned.len() + self.overflow.lock().map_or(0, |o| o.len())
    }
}

/// The DNSKEY, CDS and CDNSKEY RDATAs published for `keys`: every key's DNSKEY, and CDS and
/// CDNSKEY for the KSKs (the parent's DS should follow the secure entry points).
pub(crate) fn apex_key_sets(keys: &[Arc<SigningKey>]) -> [(u16, Vec<Vec<u8>>); 3] {
    let dnskey = keys.iter().map(|k| k.dnskey_rdata.to_vec()).collect();
    let ksks: Vec<&Arc<SigningKey>> = keys.iter().filter(|k| k.is_ksk()).collect();
    let cds = ksks.iter().map(|k| k.ds_rdata()).collect();
    let cdnskey = ksks.iter().map(|k| k.dnskey_rdata.to_vec()).collect();
    [
        (dtype::DNSKEY, dnskey),
        (dtype::CDS, cds),
        (dtype::CDNSKEY, cdnskey),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::rtype;

    #[test]
    fn key_tag_of_rfc_example() {
        // RFC 4034 §5.4's DNSKEY (dskey.example.com, key tag 60485).
        let key = BASE64
            .decode(
                "AQOeiiR0GOMYkDshWoSKz9XzfwJr1AYtsmx3TGkJaNXVbfi/2pHm822aJ5iI9BMzNXxeYCmZDRD99WYwYqUSdjMmmAphXdvxegXd/M5+X7OrzKBaMbCVdFLUUh6DhweJBjEVv5f2wwjM9XzcnOf+EPbtG9DMBmADjFDc2w/rljwvFw==",
            )
            .unwrap();
        let mut rdata = vec![1, 0, 3, 5];
        rdata.extend_from_slice(&key);
        assert_eq!(key_tag(&rdata), 60485);
    }

    #[test]
    fn key_file_round_trip_hides_the_private_key() {
        for alg in [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519] {
            let (key, text) = SigningKey::generate("Example.Test.", alg, true);
            let again = SigningKey::parse(&text, "k").unwrap();
            assert_eq!(again.dnskey_rdata(), key.dnskey_rdata());
            assert_eq!(again.zone(), "example.test");
            assert_eq!(again.flags(), FLAGS_KSK);
            let private = text.lines().find(|l| l.starts_with("private-key")).unwrap();
            let secret = private.split_once(": ").unwrap().1;
            assert!(!format!("{again:?}").contains(secret));
            assert_eq!(again.ds_rdata().len(), 36);
        }
    }

    #[test]
    fn bitmap_windows() {
        let mut out = Vec::new();
        type_bitmap(&[1, 15, 46, 47, 257], &mut out);
        // Window 0: A(1), MX(15), RRSIG(46), NSEC(47); window 1: CAA(257).
        assert_eq!(out, vec![0, 6, 0x40, 0x01, 0, 0, 0, 0x03, 1, 1, 0x40]);
        let mut nsec = Vec::new();
        assert!(nsec_rdata(b"\x01a\x00", &[dtype::NXNAME], &mut nsec));
        assert_eq!(&nsec[..5], b"\x01\x00\x01a\x00");
        // RRSIG, NSEC in window 0 (octet 5), NXNAME = 128 in window 0 octet 16.
        assert_eq!(nsec[5..7], [0, 17]);
    }

    #[test]
    fn signatures_verify_with_the_public_key() {
        for alg in [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519] {
            let (key, _) = SigningKey::generate("example.test", alg, true);
            let key = Arc::new(key);
            let apex = name_to_wire("example.test");
            let signer = ZoneSigner::new(&apex, vec![key.clone()], 1, 2).unwrap();
            let owner = name_to_wire("www.example.test");
            let sigs =
                signer.sign_rrset(&owner, rtype::A, 300, &[&[192, 0, 2, 2], &[192, 0, 2, 1]]);
            assert_eq!(sigs.len(), 1);
            let body = &sigs[0];
            let rdata = &body[10..];
            assert_eq!(rdata[3], 3, "labels");
            let sig_at = 18 + apex.len();
            let mut data = rdata[..sig_at].to_vec();
            for r in [[192u8, 0, 2, 1], [192, 0, 2, 2]] {
                data.extend_from_slice(&owner);
                data.extend_from_slice(&[0, 1, 0, 1, 0, 0, 1, 44, 0, 4]);
                data.extend_from_slice(&r);
            }
            let public: Vec<u8> = match alg {
                Algorithm::EcdsaP256Sha256 => [&[4u8][..], &key.dnskey_rdata()[4..]].concat(),
                Algorithm::Ed25519 => key.dnskey_rdata()[4..].to_vec(),
            };
            let verifier: &dyn signature::VerificationAlgorithm = match alg {
                Algorithm::EcdsaP256Sha256 => &signature::ECDSA_P256_SHA256_FIXED,
                Algorithm::Ed25519 => &signature::ED25519,
            };
            signature::UnparsedPublicKey::new(verifier, &public)
                .verify(&data, &rdata[sig_at..])
                .expect("signature verifies");
        }
    }
}
