//! A minimal MaxMind DB writer, enough for tests to build small databases themselves: a
//! binary search tree with 32-bit records over the given networks, a data section of maps
//! and strings, and the metadata the format requires.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// A value of the data section.
pub enum Value {
    Str(String),
    Map(BTreeMap<String, Value>),
}

impl Value {
    pub fn map<const N: usize>(pairs: [(&str, Value); N]) -> Value {
        Value::Map(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }
    pub fn str(s: &str) -> Value {
        Value::Str(s.to_string())
    }
}

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    assert!(size < 29, "sizes below 29 are all the tests need");
    if kind <= 7 {
        out.push((kind << 5) | size as u8);
    } else {
        out.push(size as u8);
        out.push(kind - 7);
    }
}

fn encode(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Str(s) => {
            control(out, 2, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        Value::Map(m) => {
            control(out, 7, m.len());
            for (k, v) in m {
                encode(out, &Value::Str(k.clone()));
                encode(out, v);
            }
        }
    }
}

fn uint(out: &mut Vec<u8>, kind: u8, v: u64, bytes: usize) {
    control(out, kind, bytes);
    out.extend_from_slice(&v.to_be_bytes()[8 - bytes..]);
}

#[derive(Clone, Copy)]
enum Rec {
    Node(usize),
    Empty,
    Data(usize),
}

/// Builds a database. `ip_version` 4 takes IPv4 networks; 6 takes IPv6 ones (IPv4
/// networks are stored at ::a.b.c.d, where readers look them up).
pub fn build(ip_version: u16, networks: &[(IpAddr, u8, Value)]) -> Vec<u8> {
    let bits = if ip_version == 4 { 32 } else { 128 };
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    let mut data = Vec::new();
    for (addr, prefix, value) in networks {
        let (key, offset): (u128, usize) = match (addr, ip_version) {
            (IpAddr::V4(v4), 4) => (u128::from(u32::from(*v4)) << 96, 0),
            (IpAddr::V4(v4), _) => (u128::from(u32::from(*v4)), 96),
            (IpAddr::V6(v6), _) => (u128::from(*v6), 0),
        };
        let len = usize::from(*prefix) + offset;
        assert!(len <= bits);
        let at = data.len();
        encode(&mut data, value);
        let mut node = 0;
        let bit = |i: usize| ((key >> (127 - i)) & 1) as usize;
        for i in 0..len {
            let b = bit(i);
            if i + 1 == len {
                nodes[node][b] = Rec::Data(at);
                break;
            }
            node = match nodes[node][b] {
                Rec::Node(n) => n,
                _ => {
                    nodes.push([Rec::Empty, Rec::Empty]);
                    let n = nodes.len() - 1;
                    nodes[node][b] = Rec::Node(n);
                    n
                }
            };
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for node in &nodes {
        for rec in node {
            let v = match *rec {
                Rec::Node(n) => n,
                Rec::Empty => count,
                Rec::Data(at) => count + 16 + at,
            };
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xab\xcd\xefMaxMind.com");
    let mut meta = Vec::new();
    control(&mut meta, 7, 9);
    let key = |m: &mut Vec<u8>, k: &str| encode(m, &Value::Str(k.into()));
    key(&mut meta, "binary_format_major_version");
    uint(&mut meta, 5, 2, 2);
    key(&mut meta, "binary_format_minor_version");
    uint(&mut meta, 5, 0, 0);
    key(&mut meta, "build_epoch");
    uint(&mut meta, 9, 1_700_000_000, 4);
    key(&mut meta, "database_type");
    encode(&mut meta, &Value::str("Meridian-Test"));
    key(&mut meta, "description");
    encode(&mut meta, &Value::map([("en", Value::str("test"))]));
    key(&mut meta, "ip_version");
    uint(&mut meta, 5, u64::from(ip_version), 2);
    key(&mut meta, "languages");
    control(&mut meta, 11, 0);
    key(&mut meta, "node_count");
    uint(&mut meta, 6, count as u64, 4);
    key(&mut meta, "record_size");
    uint(&mut meta, 5, 32, 2);
    out.extend_from_slice(&meta);
    out
}
