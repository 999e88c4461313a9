//! The DNS wire format, as far as the hot path needs it: a query parsed in place without
//! allocation (question name lower-cased into a fixed buffer, EDNS and ECS read from the
//! additional section), and the helpers that write names and records into a response.
//!
//! Everything here is plain byte work on a `&[u8]`; malformed input is an error value, never
//! a panic, which the fuzz target and the proptest suite check.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest domain name in wire form (RFC 1035 §3.1).
pub const MAX_NAME: usize = 255;
/// The DNS header.
pub const HEADER_LEN: usize = 12;
/// The UDP payload size we offer and use at most (DNS flag day 2020: no IP fragmentation).
pub const OUR_UDP_PAYLOAD: u16 = 1232;

/// Record types.
pub mod rtype {
    /// IPv4 address.
    pub const A: u16 = 1;
    /// Name server.
    pub const NS: u16 = 2;
    /// Canonical name.
    pub const CNAME: u16 = 5;
    /// Start of authority.
    pub const SOA: u16 = 6;
    /// Mail exchanger.
    pub const MX: u16 = 15;
    /// Text.
    pub const TXT: u16 = 16;
    /// IPv6 address.
    pub const AAAA: u16 = 28;
    /// Service location.
    pub const SRV: u16 = 33;
    /// EDNS(0) pseudo-record.
    pub const OPT: u16 = 41;
    /// Delegation signer (answered by the parent side of a cut).
    pub const DS: u16 = 43;
    /// Incremental zone transfer.
    pub const IXFR: u16 = 251;
    /// Full zone transfer.
    pub const AXFR: u16 = 252;
    /// Any type (RFC 8482: answered minimally).
    pub const ANY: u16 = 255;
    /// Certification authority authorisation.
    pub const CAA: u16 = 257;
}

/// Response codes, including the extended BADVERS carried in OPT.
pub mod rcode {
    /// No error.
    pub const NOERROR: u16 = 0;
    /// Malformed query.
    pub const FORMERR: u16 = 1;
    /// Server failure.
    pub const SERVFAIL: u16 = 2;
    /// Name does not exist.
    pub const NXDOMAIN: u16 = 3;
    /// Opcode not implemented.
    pub const NOTIMP: u16 = 4;
    /// Refused (not our zone, or a policy says no).
    pub const REFUSED: u16 = 5;
    /// Unsupported EDNS version (extended: 12 bits, upper 8 in OPT).
    pub const BADVERS: u16 = 16;
}

/// Header flag bits.
pub mod flag {
    /// Response.
    pub const QR: u16 = 0x8000;
    /// Authoritative answer.
    pub const AA: u16 = 0x0400;
    /// Truncated.
    pub const TC: u16 = 0x0200;
    /// Recursion desired (copied from the query).
    pub const RD: u16 = 0x0100;
    /// Checking disabled (copied from the query, RFC 6840 §5.9).
    pub const CD: u16 = 0x0010;
}

const CLASS_IN: u16 = 1;
const ECS_OPTION: u16 = 8;

/// EDNS Client Subnet as the query carried it (RFC 7871).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ecs {
    /// 1 = IPv4, 2 = IPv6.
    pub family: u16,
    /// SOURCE PREFIX-LENGTH.
    pub source: u8,
    /// The address, with bits beyond the source prefix zero.
    pub addr: IpAddr,
}

/// EDNS(0) as the query carried it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    /// The requestor's UDP payload size.
    pub payload: u16,
    /// EDNS version; only 0 is supported.
    pub version: u8,
    /// The DO bit: the requestor takes DNSSEC records (echoed, RFC 3225).
    pub dnssec_ok: bool,
    /// Client subnet, when present and valid.
    pub ecs: Option<Ecs>,
}

/// A parsed query. The name is kept lower-cased in wire form; the response copies the
/// original question bytes, so the client's case is preserved.
#[derive(Clone, Debug)]
pub struct Query {
    /// Message id.
    pub id: u16,
    /// The header's flags word as received.
    pub flags: u16,
    /// The question name, lower case, wire form with the root label.
    pub qname: [u8; MAX_NAME],
    /// Bytes of `qname` in use.
    pub qname_len: usize,
    /// Question type.
    pub qtype: u16,
    /// Question class.
    pub qclass: u16,
    /// End offset of the question section in the packet.
    pub question_end: usize,
    /// EDNS, when the query had an OPT record.
    pub edns: Option<Edns>,
}

impl Query {
    /// The lower-cased question name in wire form.
    pub fn name(&self) -> &[u8] {
        &self.qname[..self.qname_len]
    }

    /// True when the question class is IN.
    pub fn is_class_in(&self) -> bool {
        self.qclass == CLASS_IN
    }
}

/// What parsing a packet decided.
#[derive(Clone, Debug)]
pub enum Parsed {
    /// Not a query we answer at all: too short to carry an id, or a response (QR set).
    Drop,
    /// Answer with this rcode and no question (malformed or unsupported).
    Error {
        /// Message id.
        id: u16,
        /// The query's flags word.
        flags: u16,
        /// FORMERR, NOTIMP or BADVERS.
        rcode: u16,
        /// The query's EDNS, when it could be read (BADVERS needs an OPT in the answer).
        edns: Option<Edns>,
    },
    /// A well-formed standard query.
    Query(Box<Query>),
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*buf.get(at)?, *buf.get(at + 1)?]))
}

/// Parses a query packet. `Parsed::Query` boxes to keep the enum small; the hot path uses
/// [`parse_into`] with a reused `Query` instead.
pub fn parse(packet: &[u8]) -> Parsed {
    let mut query = Box::new(Query {
        id: 0,
        flags: 0,
        qname: [0; MAX_NAME],
        qname_len: 0,
        qtype: 0,
        qclass: 0,
        question_end: 0,
        edns: None,
    });
    match parse_into(packet, &mut query) {
        Outcome::Ok => Parsed::Query(query),
        Outcome::Drop => Parsed::Drop,
        Outcome::Error { rcode, edns } => Parsed::Error {
            id: query.id,
            flags: query.flags,
            rcode,
            edns,
        },
    }
}

/// The result of [`parse_into`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `query` holds a well-formed standard query.
    Ok,
    /// Do not answer.
    Drop,
    /// Answer with this rcode and no question; `query.id` and `query.flags` are set.
    Error {
        /// FORMERR, NOTIMP or BADVERS.
        rcode: u16,
        /// The query's EDNS when it could be read.
        edns: Option<Edns>,
    },
}

/// Parses `packet` into `query` without allocating.
pub fn parse_into(packet: &[u8], query: &mut Query) -> Outcome {
    if packet.len() < HEADER_LEN {
        return Outcome::Drop;
    }
    query.id = u16::from_be_bytes([packet[0], packet[1]]);
    query.flags = u16::from_be_bytes([packet[2], packet[3]]);
    query.edns = None;
    if query.flags & flag::QR != 0 {
        // Answering responses invites reflection loops between servers.
        return Outcome::Drop;
    }
    let formerr = Outcome::Error {
        rcode: rcode::FORMERR,
        edns: None,
    };
    let opcode = (query.flags >> 11) & 0xf;
    if opcode != 0 {
        return Outcome::Error {
            rcode: rcode::NOTIMP,
            edns: None,
        };
    }
    let qdcount = u16::from_be_bytes([packet[4], packet[5]]);
    let ancount = u16::from_be_bytes([packet[6], packet[7]]);
    let nscount = u16::from_be_bytes([packet[8], packet[9]]);
    let arcount = u16::from_be_bytes([packet[10], packet[11]]);
    if qdcount != 1 || ancount != 0 || nscount != 0 {
        return formerr;
    }
    // Question name: plain labels only (compression in a lone question is never needed).
    let mut at = HEADER_LEN;
    let mut len = 0;
    loop {
        let Some(&label) = packet.get(at) else {
            return formerr;
        };
        if label & 0xc0 != 0 {
            return formerr;
        }
        let label = usize::from(label);
        if len + label + 1 > MAX_NAME || at + 1 + label > packet.len() {
            return formerr;
        }
        query.qname[len] = label as u8;
        for i in 0..label {
            query.qname[len + 1 + i] = packet[at + 1 + i].to_ascii_lowercase();
        }
        len += label + 1;
        at += label + 1;
        if label == 0 {
            break;
        }
    }
    query.qname_len = len;
    let (Some(qtype), Some(qclass)) = (u16_at(packet, at), u16_at(packet, at + 2)) else {
        return formerr;
    };
    query.qtype = qtype;
    query.qclass = qclass;
    at += 4;
    query.question_end = at;

    let mut edns = None;
    for _ in 0..arcount {
        let Some(name_end) = skip_name(packet, at) else {
            return formerr;
        };
        let (Some(rr_type), Some(class), Some(ttl_hi), Some(ttl_lo), Some(rdlen)) = (
            u16_at(packet, name_end),
            u16_at(packet, name_end + 2),
            u16_at(packet, name_end + 4),
            u16_at(packet, name_end + 6),
            u16_at(packet, name_end + 8),
        ) else {
            return formerr;
        };
        let rdata_at = name_end + 10;
        let rdata_end = rdata_at + usize::from(rdlen);
        if rdata_end > packet.len() {
            return formerr;
        }
        if rr_type == rtype::OPT {
            // One OPT, owned by the root (RFC 6891 §6.1.1).
            if edns.is_some() || name_end != at + 1 {
                return formerr;
            }
            let mut found = Edns {
                payload: class,
                version: (ttl_hi & 0xff) as u8,
                dnssec_ok: ttl_lo & 0x8000 != 0,
                ecs: None,
            };
            match parse_options(&packet[rdata_at..rdata_end]) {
                Ok(ecs) => found.ecs = ecs,
                // The error still carries an OPT (RFC 6891 §7), without the bad option.
                Err(()) => {
                    return Outcome::Error {
                        rcode: rcode::FORMERR,
                        edns: Some(found),
                    };
                }
            }
            edns = Some(found);
        }
        at = rdata_end;
    }
    if at != packet.len() {
        return Outcome::Error {
            rcode: rcode::FORMERR,
            edns,
        };
    }
    query.edns = edns;
    if let Some(e) = edns
        && e.version != 0
    {
        return Outcome::Error {
            rcode: rcode::BADVERS,
            edns,
        };
    }
    Outcome::Ok
}

/// Skips a (possibly compressed) name; returns the offset after it.
fn skip_name(packet: &[u8], mut at: usize) -> Option<usize> {
    let mut total = 0;
    loop {
        let label = *packet.get(at)?;
        match label & 0xc0 {
            0x00 => {
                at += 1 + usize::from(label);
                total += 1 + usize::from(label);
                if total > MAX_NAME || at > packet.len() {
                    return None;
                }
                if label == 0 {
                    return Some(at);
                }
            }
            0xc0 => {
                packet.get(at + 1)?;
                return Some(at + 2);
            }
            _ => return None,
        }
    }
}

/// Cuts a finished response down to its header, question section and OPT record (when it
/// has one, which our responses carry last) and sets TC: what a UDP answer becomes when the
/// link cannot carry it, so the client asks again over TCP. `None` when `response` is not
/// a well-formed message, which never happens for one we made.
pub fn truncate_response(response: &mut Vec<u8>) -> Option<()> {
    let records = usize::from(u16_at(response, 6)?)
        + usize::from(u16_at(response, 8)?)
        + usize::from(u16_at(response, 10)?);
    let mut at = HEADER_LEN;
    for _ in 0..u16_at(response, 4)? {
        at = skip_name(response, at)? + 4;
    }
    let question_end = at;
    let mut last = None;
    for _ in 0..records {
        let start = at;
        at = skip_name(response, at)?;
        let rdlen = usize::from(u16_at(response, at + 8)?);
        at += 10 + rdlen;
        if at > response.len() {
            return None;
        }
        last = Some(start);
    }
    let opt = last
        .filter(|&start| u16_at(response, start + 1) == Some(rtype::OPT) && response[start] == 0)
        .map(|start| response[start..at].to_vec());
    response.truncate(question_end);
    let ar = u16::from(opt.is_some());
    if let Some(opt) = opt {
        response.extend_from_slice(&opt);
    }
    let flags = get_u16(response, 2);
    set_u16(response, 2, flags | flag::TC);
    set_u16(response, 6, 0);
    set_u16(response, 8, 0);
    set_u16(response, 10, ar);
    Some(())
}

/// Reads EDNS options; returns the client subnet, if any. A malformed option list or ECS
/// option is an error (RFC 7871 §7.1.1: FORMERR).
fn parse_options(mut rdata: &[u8]) -> Result<Option<Ecs>, ()> {
    let mut ecs = None;
    while !rdata.is_empty() {
        let code = u16_at(rdata, 0).ok_or(())?;
        let len = usize::from(u16_at(rdata, 2).ok_or(())?);
        let body = rdata.get(4..4 + len).ok_or(())?;
        if code == ECS_OPTION {
            if ecs.is_some() {
                return Err(());
            }
            ecs = Some(parse_ecs(body)?);
        }
        rdata = &rdata[4 + len..];
    }
    Ok(ecs)
}

fn parse_ecs(body: &[u8]) -> Result<Ecs, ()> {
    if body.len() < 4 {
        return Err(());
    }
    let family = u16::from_be_bytes([body[0], body[1]]);
    let source = body[2];
    let scope = body[3];
    let addr = &body[4..];
    let max = match family {
        1 => 32,
        2 => 128,
        _ => return Err(()),
    };
    // SCOPE must be 0 in queries; the address has exactly ceil(source/8) bytes and no bits
    // set beyond the source prefix (RFC 7871 §6).
    if source > max || scope != 0 || addr.len() != usize::from(source).div_ceil(8) {
        return Err(());
    }
    if !source.is_multiple_of(8)
        && let Some(last) = addr.last()
        && last & (0xffu8 >> (source % 8)) != 0
    {
        return Err(());
    }
    let addr = if family == 1 {
        let mut b = [0u8; 4];
        b[..addr.len()].copy_from_slice(addr);
        IpAddr::V4(Ipv4Addr::from(b))
    } else {
        let mut b = [0u8; 16];
        b[..addr.len()].copy_from_slice(addr);
        IpAddr::V6(Ipv6Addr::from(b))
    };
    Ok(Ecs {
        family,
        source,
        addr,
    })
}

/// A domain name in lower-case wire form, from presentation form (`a.b.c`, `` = root).
pub fn name_to_wire(name: &str) -> Vec<u8> {
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut out = Vec::with_capacity(name.len() + 2);
    if !name.is_empty() {
        for label in name.split('.') {
            out.push(label.len() as u8);
            out.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
    }
    out.push(0);
    out
}

/// Presentation form (without the trailing dot) of a wire name, into `buf`; `None` when a
/// label holds a byte that cannot appear in a hostname.
pub fn wire_to_str<'a>(wire: &[u8], buf: &'a mut [u8; MAX_NAME]) -> Option<&'a str> {
    let mut at = 0;
    let mut len = 0;
    while let Some(&label) = wire.get(at) {
        if label == 0 {
            break;
        }
        if len > 0 {
            buf[len] = b'.';
            len += 1;
        }
        let label = usize::from(label);
        let bytes = wire.get(at + 1..at + 1 + label)?;
        if len + label > MAX_NAME {
            return None;
        }
        buf[len..len + label].copy_from_slice(bytes);
        len += label;
        at += 1 + label;
    }
    std::str::from_utf8(&buf[..len]).ok()
}

/// The offsets of each label start in a wire name: name[offsets[i]..] is the i-th suffix.
pub fn suffix_offsets(wire: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let label = *wire.get(at)?;
        if label == 0 {
            return None;
        }
        let this = at;
        at += 1 + usize::from(label);
        Some(this)
    })
}

/// True when `zone` (wire) is `name` (wire) or one of its suffixes on a label boundary;
/// returns the offset in `name` where `zone` starts.
pub fn zone_offset(name: &[u8], zone: &[u8]) -> Option<usize> {
    if name.len() < zone.len() {
        return None;
    }
    let start = name.len() - zone.len();
    if &name[start..] != zone {
        return None;
    }
    if start == 0 {
        return Some(0);
    }
    suffix_offsets(name).find(|&at| at == start)
}

/// Writes a 16-bit big-endian value.
pub fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Writes a 32-bit big-endian value.
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Overwrites a 16-bit value at `at`.
pub fn set_u16(out: &mut [u8], at: usize, v: u16) {
    out[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Reads a 16-bit value at `at` of a buffer the caller wrote.
pub fn get_u16(out: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([out[at], out[at + 1]])
}

/// A compression pointer to `offset` (which must be below 0x4000).
pub fn pointer(offset: usize) -> [u8; 2] {
    debug_assert!(offset < 0x4000);
    (0xc000u16 | offset as u16).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &[u8], extra: &[u8], arcount: u16) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0];
        p.extend_from_slice(&arcount.to_be_bytes());
        p.extend_from_slice(name);
        p.extend_from_slice(&[0, 1, 0, 1]);
        p.extend_from_slice(extra);
        p
    }

    #[test]
    fn parses_name_lowercase_and_ecs() {
        let ecs = [
            0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 11, 0, 8, 0, 7, 0, 1, 24, 0, 198, 51, 100,
        ];
        let p = query(b"\x03WwW\x04Demo\x04test\x00", &ecs, 1);
        let Parsed::Query(q) = parse(&p) else {
            panic!("not a query")
        };
        assert_eq!(q.name(), b"\x03www\x04demo\x04test\x00");
        assert_eq!(q.id, 0x1234);
        let edns = q.edns.unwrap();
        assert_eq!(edns.payload, 4096);
        assert_eq!(
            edns.ecs,
            Some(Ecs {
                family: 1,
                source: 24,
                addr: "198.51.100.0".parse().unwrap()
            })
        );
    }

    #[test]
    fn rejects_bad_ecs_and_garbage() {
        // Bits set beyond the source prefix.
        let bad = [
            0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 11, 0, 8, 0, 7, 0, 1, 23, 0, 198, 51, 101,
        ];
        let p = query(b"\x01a\x00", &bad, 1);
        assert!(matches!(
            parse(&p),
            Parsed::Error {
                rcode: rcode::FORMERR,
                ..
            }
        ));
        let mut trailing = query(b"\x01a\x00", &[], 0);
        trailing.push(7);
        assert!(matches!(
            parse(&trailing),
            Parsed::Error {
                rcode: rcode::FORMERR,
                ..
            }
        ));
        assert!(matches!(parse(&[1, 2, 3]), Parsed::Drop));
        let mut notify = query(b"\x01a\x00", &[], 0);
        notify[2] = 0x20; // opcode 4
        assert!(matches!(
            parse(&notify),
            Parsed::Error {
                rcode: rcode::NOTIMP,
                ..
            }
        ));
    }

    #[test]
    fn name_helpers() {
        let w = name_to_wire("Shop.Demo.Test.");
        assert_eq!(w, b"\x04shop\x04demo\x04test\x00");
        assert_eq!(zone_offset(&w, &name_to_wire("demo.test")), Some(5));
        assert_eq!(zone_offset(&w, &name_to_wire("mo.test")), None);
        let mut buf = [0u8; MAX_NAME];
        assert_eq!(wire_to_str(&w, &mut buf), Some("shop.demo.test"));
        assert_eq!(suffix_offsets(&w).collect::<Vec<_>>(), vec![0, 5, 10]);
    }
}
