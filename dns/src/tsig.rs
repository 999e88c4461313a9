//! TSIG (RFC 8945) with HMAC-SHA256: transfers are verified and their answers signed;
//! NOTIFYs are signed. Hand-written over ring's HMAC because the transfer path builds its
//! messages as bytes (as the rest of the server does); the MAC input is three byte strings
//! laid end to end, checked against NSD as a real secondary.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::hmac;

use crate::wire::{name_to_wire, put_u16, put_u32, set_u16};

/// The TSIG record type.
pub const TSIG: u16 = 250;
/// Class ANY, which a TSIG record carries.
const CLASS_ANY: u16 = 255;
/// Seconds of clock difference allowed.
const FUDGE: u16 = 300;
/// TSIG error: the MAC did not verify.
pub const BADSIG: u16 = 16;
/// TSIG error: the key is unknown.
pub const BADKEY: u16 = 17;
/// TSIG error: the time is outside the fudge.
pub const BADTIME: u16 = 18;

/// A shared key.
pub struct TsigKey {
    /// The key name, lower-case wire form.
    name: Vec<u8>,
    key: hmac::Key,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("TsigKey").field("name", &self.name).finish()
    }
}

/// A TSIG record read from a message.
#[derive(Clone, Debug)]
pub(crate) struct TsigIn {
    /// Where the TSIG record starts (the message before it is what was signed).
    pub(crate) at: usize,
    pub(crate) key_name: Vec<u8>,
    pub(crate) algorithm: Vec<u8>,
    pub(crate) time: u64,
    pub(crate) fudge: u16,
    pub(crate) mac: Vec<u8>,
    pub(crate) original_id: u16,
}

fn algorithm_name() -> Vec<u8> {
    name_to_wire("hmac-sha256")
}

impl TsigKey {
    /// A key from its name and base64 secret.
    pub fn new(name: &str, secret_b64: &str) -> Result<TsigKey, String> {
        let secret = BASE64
            .decode(secret_b64.trim())
            .map_err(|e| format!("the secret is not base64 ({e})"))?;
        if secret.len() < 16 {
            return Err(format!(
                "the secret has {} bytes; at least 16 (32 recommended)",
                secret.len()
            ));
        }
        Ok(TsigKey {
            name: name_to_wire(name),
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        })
    }

    /// Reads the secret from a file that only its owner may read.
    pub fn load(name: &str, path: &Path) -> Result<TsigKey, String> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(format!(
                    "{}: readable by others (mode {mode:04o}); a secret must be 0600",
                    path.display()
                ));
            }
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        TsigKey::new(name, &text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The TSIG variables (RFC 8945 §4.3.3), for `time`, with error and no other data.
    fn variables(&self, time: u64, error: u16, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.name);
        put_u16(out, CLASS_ANY);
        put_u32(out, 0);
        out.extend_from_slice(&algorithm_name());
        timers(time, out);
        put_u16(out, error);
        put_u16(out, 0);
    }

    /// Checks a request's TSIG: our key, our algorithm, the MAC over the message as it was
    /// before the TSIG was added, and the time. `Err` holds the TSIG error.
    pub(crate) fn verify(&self, packet: &[u8], tsig: &TsigIn, now: u64) -> Result<(), u16> {
        if tsig.key_name != self.name || tsig.algorithm != algorithm_name() {
            return Err(BADKEY);
        }
        let mut data = unsigned_message(packet, tsig);
        self.variables_from(tsig, &mut data);
        hmac::verify(&self.key, &data, &tsig.mac).map_err(|_| BADSIG)?;
        if now.abs_diff(tsig.time) > u64::from(tsig.fudge) {
            return Err(BADTIME);
        }
        Ok(())
    }

    fn variables_from(&self, tsig: &TsigIn, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.name);
        put_u16(out, CLASS_ANY);
        put_u32(out, 0);
        out.extend_from_slice(&tsig.algorithm);
        out.extend_from_slice(&tsig.time.to_be_bytes()[2..]);
        put_u16(out, tsig.fudge);
        put_u16(out, 0);
        put_u16(out, 0);
    }

    /// Signs a request (a NOTIFY): appends the TSIG record and counts it.
    pub(crate) fn sign_request(&self, message: &mut Vec<u8>, now: u64) {
        let mut data = message.clone();
        self.variables(now, 0, &mut data);
        let mac = hmac::sign(&self.key, &data);
        self.append(message, now, mac.as_ref(), 0);
    }

    /// Signs the messages of one answer: the first over the request's MAC, each next one
    /// over the MAC before it with the timers only (RFC 8945 §5.3.1).
    pub(crate) fn sign_answer(&self, messages: &mut [Vec<u8>], request_mac: &[u8], now: u64) {
        let mut prior = request_mac.to_vec();
        for (i, message) in messages.iter_mut().enumerate() {
            let mut data = Vec::with_capacity(message.len() + 128);
            put_u16(&mut data, prior.len() as u16);
            data.extend_from_slice(&prior);
            data.extend_from_slice(message);
            if i == 0 {
                self.variables(now, 0, &mut data);
            } else {
                timers(now, &mut data);
            }
            let mac = hmac::sign(&self.key, &data);
            self.append(message, now, mac.as_ref(), 0);
            prior = mac.as_ref().to_vec();
        }
    }

    fn append(&self, message: &mut Vec<u8>, now: u64, mac: &[u8], error: u16) {
        let id = u16::from_be_bytes([message[0], message[1]]);
        let mut rdata = algorithm_name();
        timers(now, &mut rdata);
        put_u16(&mut rdata, mac.len() as u16);
        rdata.extend_from_slice(mac);
        put_u16(&mut rdata, id);
        put_u16(&mut rdata, error);
        put_u16(&mut rdata, 0);
        message.extend_from_slice(&self.name);
        put_u16(message, TSIG);
        put_u16(message, CLASS_ANY);
        put_u32(message, 0);
        put_u16(message, rdata.len() as u16);
        message.extend_from_slice(&rdata);
        let arcount = u16::from_be_bytes([message[10], message[11]]);
        set_u16(message, 10, arcount + 1);
    }
}

fn timers(time: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&time.to_be_bytes()[2..]);
    put_u16(out, FUDGE);
}

/// The message as it was signed: before the TSIG record, ARCOUNT one less, the original id.
fn unsigned_message(packet: &[u8], tsig: &TsigIn) -> Vec<u8> {
    let mut data = packet[..tsig.at].to_vec();
    set_u16(&mut data, 0, tsig.original_id);
    let arcount = u16::from_be_bytes([data[10], data[11]]);
    set_u16(&mut data, 10, arcount.saturating_sub(1));
    data
}

/// Reads a TSIG record's RDATA at `rdata` (of a record starting at `at` owned by `owner`).
pub(crate) fn parse_rdata(at: usize, owner: Vec<u8>, rdata: &[u8]) -> Option<TsigIn> {
    let mut algorithm = Vec::new();
    let mut i = 0;
    loop {
        let len = usize::from(*rdata.get(i)?);
        if len & 0xc0 != 0 {
            return None;
        }
        algorithm.push(len as u8);
        algorithm.extend(
            rdata
                .get(i + 1..i + 1 + len)?
                .iter()
                .map(u8::to_ascii_lowercase),
        );
        i += 1 + len;
        if len == 0 {
            break;
        }
    }
    let rest = rdata.get(i..)?;
    if rest.len() < 10 {
        return None;
    }
    let time = u64::from_be_bytes([
        0,
        0,
        rest[0],
        rest[1],
        rest[2],
        rest[3],
        rest[4],
        *rest.get(5)?,
    ]);
    let fudge = u16::from_be_bytes([*rest.get(6)?, *rest.get(7)?]);
    let mac_len = usize::from(u16::from_be_bytes([*rest.get(8)?, *rest.get(9)?]));
    let mac = rest.get(10..10 + mac_len)?.to_vec();
    let original_id = u16::from_be_bytes([*rest.get(10 + mac_len)?, *rest.get(11 + mac_len)?]);
    Some(TsigIn {
        at,
        key_name: owner,
        algorithm,
        time,
        fudge,
        mac,
        original_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_verifies_and_a_changed_one_does_not() {
        let key = TsigKey::new("xfr-key", "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0").unwrap();
        let mut message = vec![
            0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, b'a', 0, 0, 252, 0, 1,
        ];
        let plain_len = message.len();
        key.sign_request(&mut message, 1_000_000);
        // Read the TSIG back as a server would.
        let owner_end = plain_len + key.name.len();
        let rdata = &message[owner_end + 10..];
        let tsig = parse_rdata(plain_len, key.name.clone(), rdata).unwrap();
        assert_eq!(key.verify(&message, &tsig, 1_000_100), Ok(()));
        assert_eq!(key.verify(&message, &tsig, 1_000_400), Err(BADTIME));
        let mut changed = message.clone();
        changed[13] = b'b';
        assert_eq!(key.verify(&changed, &tsig, 1_000_000), Err(BADSIG));
        let other = TsigKey::new("xfr-key", "b3RoZXItb3RoZXItb3RoZXItb3RoZXI=").unwrap();
        assert_eq!(other.verify(&message, &tsig, 1_000_000), Err(BADSIG));
        assert!(TsigKey::new("k", "c2hvcnQ=").is_err(), "too short a secret");
    }
}
