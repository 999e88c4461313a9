//! Zone transfer to the secondaries in `dns.axfr_allow`: AXFR (RFC 5936) and IXFR (RFC 1995)
//! over TCP, TSIG-signed (RFC 8945) when a key is configured, and the NOTIFY (RFC 1996) that
//! tells the secondaries in `dns.notify` a new version is there.
//!
//! The transfer carries the zone as this table version has it: SOA first and last, every
//! static record, and for each app hostname the addresses of its targets that are serving
//! now (TTL = the app's TTL). A secondary cannot steer per client, so it answers with every
//! serving address; the serial (the table version) tells it when to transfer again.
//! Each snapshot's zone content is kept in a bounded journal, so a secondary at a recent
//! serial gets only the difference (one condensed IXFR sequence); one further behind, or
//! at a serial never seen, gets the whole zone in the IXFR answer, which RFC 1995 allows.
//! Names are written uncompressed: transfers are rare and a plain encoding is easy to check.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use meridian_routing::{AppId, RoutingTable};

use crate::snapshot::Snapshot;
use crate::tsig::{self, TsigIn, TsigKey};
use crate::wire::{self, flag, put_u16, put_u32, rcode, rtype, set_u16};

/// Messages are cut at about this size (well under the 64 KiB TCP limit).
const CHUNK: usize = 16 * 1024;

/// Who may transfer.
#[derive(Clone, Debug, Default)]
pub struct AxfrAcl(pub Vec<IpNet>);

impl AxfrAcl {
    fn allows(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&addr))
    }
}

/// Everything about transfers: who may, with which key, and the journal for IXFR.
#[derive(Debug, Default)]
pub struct Transfers {
    /// Who may transfer.
    pub acl: AxfrAcl,
    /// The key every transfer must be signed with, when set.
    pub tsig: Option<TsigKey>,
    journal: Journal,
}

impl Transfers {
    /// Transfers to `acl`, signed with `tsig` when set, `journal` versions kept per zone.
    pub fn new(acl: AxfrAcl, tsig: Option<TsigKey>, journal: usize) -> Self {
        Transfers {
            acl,
            tsig,
            journal: Journal {
                limit: journal.max(1),
                zones: Mutex::new(HashMap::new()),
            },
        }
    }

    /// Whether anyone may transfer (and so whether versions are journaled).
    pub(crate) fn enabled(&self) -> bool {
        !self.acl.0.is_empty()
    }

    /// Keeps the zones' content of `snap` for incremental transfers.
    pub(crate) fn record(&self, snap: &Snapshot) {
        if !self.enabled() {
            return;
        }
        for zone in 0..snap.zones.len() {
            let (soa, records) = zone_records(snap, zone);
            let serial = soa_serial(&soa);
            let apex = snap.zones[zone].apex.clone();
            let mut zones = self.journal.zones.lock().unwrap_or_else(|e| e.into_inner());
            let versions = zones.entry(apex).or_default();
            if versions.back().is_some_and(|v| v.serial == serial) {
                continue;
            }
            versions.push_back(Version {
                serial,
                records: Arc::new(records),
            });
            while versions.len() > self.journal.limit {
                versions.pop_front();
            }
        }
    }

    fn version(&self, apex: &[u8], serial: u32) -> Option<Arc<Vec<Vec<u8>>>> {
        let zones = self.journal.zones.lock().unwrap_or_else(|e| e.into_inner());
        zones
            .get(apex)?
            .iter()
            .find(|v| v.serial == serial)
            .map(|v| v.records.clone())
    }
}

/// Recent versions of each zone's content (without the SOA), by apex.
#[derive(Debug, Default)]
struct Journal {
    limit: usize,
    zones: Mutex<HashMap<Box<[u8]>, VecDeque<Version>>>,
}

#[derive(Debug)]
struct Version {
    serial: u32,
    records: Arc<Vec<Vec<u8>>>,
}

/// A transfer request as read from the wire.
struct Request {
    qtype: u16,
    qname: Vec<u8>,
    question_end: usize,
    /// IXFR: the serial the secondary has (the SOA in the authority section).
    serial: Option<u32>,
    tsig: Option<TsigIn>,
}

/// Reads a (possibly compressed) name at `at` into `out`, lower case; returns the offset
/// after the name where it started.
fn read_name(packet: &[u8], mut at: usize, out: &mut Vec<u8>) -> Option<usize> {
    let mut end = None;
    let mut hops = 0;
    loop {
        let len = *packet.get(at)?;
        match len & 0xc0 {
            0x00 => {
                out.push(len);
                let label = packet.get(at + 1..at + 1 + usize::from(len))?;
                out.extend(label.iter().map(u8::to_ascii_lowercase));
                at += 1 + usize::from(len);
                if out.len() > wire::MAX_NAME {
                    return None;
                }
                if len == 0 {
                    return Some(end.unwrap_or(at));
                }
            }
            0xc0 => {
                hops += 1;
                if hops > 32 {
                    return None;
                }
                end.get_or_insert(at + 2);
                at = usize::from(u16::from_be_bytes([len & 0x3f, *packet.get(at + 1)?]));
            }
            _ => return None,
        }
    }
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Reads an AXFR or IXFR query; `None` for anything else (the ordinary handler answers
/// that), and for a malformed one.
fn parse_request(packet: &[u8]) -> Option<Request> {
    if packet.len() < wire::HEADER_LEN {
        return None;
    }
    let flags = u16_at(packet, 2)?;
    if flags & flag::QR != 0 || (flags >> 11) & 0xf != 0 || u16_at(packet, 4)? != 1 {
        return None;
    }
    let (an, ns, ar) = (u16_at(packet, 6)?, u16_at(packet, 8)?, u16_at(packet, 10)?);
    let mut qname = Vec::new();
    let mut at = read_name(packet, wire::HEADER_LEN, &mut qname)?;
    let qtype = u16_at(packet, at)?;
    if !matches!(qtype, rtype::AXFR | rtype::IXFR) {
        return None;
    }
    at += 4;
    let question_end = at;
    let mut serial = None;
    let mut tsig = None;
    for i in 0..(u32::from(an) + u32::from(ns) + u32::from(ar)) {
        let start = at;
        let mut owner = Vec::new();
        at = read_name(packet, at, &mut owner)?;
        let t = u16_at(packet, at)?;
        let rdlen = usize::from(u16_at(packet, at + 8)?);
        let rdata = packet.get(at + 10..at + 10 + rdlen)?;
        if t == rtype::SOA && serial.is_none() {
            // The serial follows MNAME and RNAME, which may be compressed: read them from
            // the packet so pointers resolve.
            let mut skip = Vec::new();
            let after = read_name(packet, at + 10, &mut skip)?;
            skip.clear();
            let after = read_name(packet, after, &mut skip)?;
            serial = Some(u32::from_be_bytes(
                packet.get(after..after + 4)?.try_into().ok()?,
            ));
        }
        if t == tsig::TSIG {
            // Only ever the last record (RFC 8945 §5.1).
            if i + 1 != u32::from(an) + u32::from(ns) + u32::from(ar) {
                return None;
            }
            tsig = Some(tsig::parse_rdata(start, owner, rdata)?);
        }
        at += 10 + rdlen;
    }
    Some(Request {
        qtype,
        qname,
        question_end,
        serial,
        tsig,
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The response messages to an AXFR or IXFR query, or `None` when `packet` is not one
/// (the ordinary handler answers it then). A refused transfer is one REFUSED message:
/// from an address not allowed, unsigned or wrongly signed when a key is configured, or
/// for a zone not ours.
pub(crate) fn transfer(
    snap: &Snapshot,
    transfers: &Transfers,
    packet: &[u8],
    src: IpAddr,
) -> Option<Vec<Vec<u8>>> {
    let request = parse_request(packet)?;
    let head = &packet[..request.question_end];
    let kind = if request.qtype == rtype::IXFR {
        "IXFR"
    } else {
        "AXFR"
    };
    let zone = snap.zones.iter().position(|z| *z.apex == *request.qname);
    let refused = |why: &str| {
        tracing::info!(%src, kind, why, "dns: zone transfer refused");
        Some(vec![message(head, rcode::REFUSED, &[], 0)])
    };
    let Some(zone) = zone else {
        return refused("not our zone");
    };
    if !transfers.acl.allows(src) {
        return refused("address not in dns.axfr_allow");
    }
    let now = unix_now();
    let request_mac = match (&transfers.tsig, &request.tsig) {
        (None, _) => None,
        (Some(_), None) => return refused("no TSIG, and dns.tsig requires one"),
        (Some(key), Some(tsig)) => match key.verify(packet, tsig, now) {
            Ok(()) => Some(tsig.mac.clone()),
            Err(error) => {
                return refused(match error {
                    tsig::BADKEY => "TSIG with an unknown key",
                    tsig::BADTIME => "TSIG time outside the fudge",
                    _ => "TSIG signature does not verify",
                });
            }
        },
    };
    let apex = &snap.zones[zone].apex;
    // The journal's copy of this version when there is one: a signed zone's signatures
    // differ each time they are made, and an IXFR must start from what was sent before.
    let (soa, records) = match zone_records_soa(snap, zone)
        .and_then(|soa| Some((transfers.version(apex, soa_serial(&soa))?, soa)))
    {
        Some((records, soa)) => (soa, records.as_ref().clone()),
        None => zone_records(snap, zone),
    };
    let serial = soa_serial(&soa);
    let mut answer: Vec<Vec<u8>> = Vec::new();
    let mut how = "full";
    match request.serial.filter(|_| request.qtype == rtype::IXFR) {
        Some(have) if have == serial => {
            // Up to date: the SOA alone.
            answer.push(soa.clone());
            how = "up to date";
        }
        Some(have) => match transfers.version(apex, have) {
            Some(old) => {
                let old_set: HashSet<&[u8]> = old.iter().map(Vec::as_slice).collect();
                let new_set: HashSet<&[u8]> = records.iter().map(Vec::as_slice).collect();
                let old_soa = with_serial(&soa, have);
                answer.push(soa.clone());
                answer.push(old_soa);
                answer.extend(
                    old.iter()
                        .filter(|r| !new_set.contains(r.as_slice()))
                        .cloned(),
                );
                answer.push(soa.clone());
                answer.extend(
                    records
                        .iter()
                        .filter(|r| !old_set.contains(r.as_slice()))
                        .cloned(),
                );
                answer.push(soa.clone());
                how = "incremental";
            }
            None => {
                answer.push(soa.clone());
                answer.extend(records);
                answer.push(soa);
            }
        },
        None => {
            answer.push(soa.clone());
            answer.extend(records);
            answer.push(soa);
        }
    }
    tracing::info!(%src, kind, how, serial, from = request.serial, "dns: zone transfer");
    let mut messages = Vec::new();
    let mut start = 0;
    while start < answer.len() {
        let mut size = head.len();
        let mut end = start;
        while end < answer.len() && (end == start || size + answer[end].len() <= CHUNK) {
            size += answer[end].len();
            end += 1;
        }
        let body: Vec<u8> = answer[start..end].concat();
        messages.push(message(head, rcode::NOERROR, &body, (end - start) as u16));
        start = end;
    }
    if let (Some(key), Some(mac)) = (&transfers.tsig, request_mac) {
        key.sign_answer(&mut messages, &mac, now);
    }
    Some(messages)
}

/// The serial of an SOA record (owner, type … RDATA, names uncompressed).
fn soa_serial(soa: &[u8]) -> u32 {
    let at = soa.len() - 20;
    u32::from_be_bytes([soa[at], soa[at + 1], soa[at + 2], soa[at + 3]])
}

/// The SOA record with another serial.
fn with_serial(soa: &[u8], serial: u32) -> Vec<u8> {
    let mut out = soa.to_vec();
    let at = out.len() - 20;
    out[at..at + 4].copy_from_slice(&serial.to_be_bytes());
    out
}

/// A zone's SOA record and every other record of it as this snapshot has it (owner
/// uncompressed, then type … RDATA), in a stable order.
fn zone_records(snap: &Snapshot, zone: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let apex = &snap.zones[zone].apex;
    let mut records: Vec<Vec<u8>> = Vec::new();
    let soa = zone_records_soa(snap, zone).unwrap_or_default();
    for (name, node) in &snap.names {
        if usize::from(node.zone) != zone {
            continue;
        }
        for set in &node.rrsets {
            if set.rtype == rtype::SOA && **name == **apex {
                continue;
            }
            for rr in &set.rrs {
                records.push([&name[..], &rr.body].concat());
            }
        }
        if let Some((rr, _)) = &node.cname {
            records.push([&name[..], &rr.body].concat());
        }
        if let (Some(app_id), Some(table)) = (node.app, &snap.table) {
            app_records(table, app_id, name, &mut records);
        }
    }
    // Wildcard app names have no node of their own (a miss asks the table), but a secondary
    // must hold them or it answers NXDOMAIN for every name below.
    if let Some(table) = &snap.table {
        for (ai, app) in table.apps().iter().enumerate() {
            for host in app.hostnames.iter().filter(|h| h.starts_with("*.")) {
                let owner = wire::name_to_wire(host);
                if wire::zone_offset(&owner, apex).is_some() {
                    app_records(table, AppId(ai as u32), &owner, &mut records);
                }
            }
        }
    }
    records.sort_unstable();
    records.dedup();
    if let Some(signer) = &snap.zones[zone].signer {
        let mut all = records.clone();
        all.push(soa.clone());
        records.extend(signed_extras(snap, zone, signer, &all));
        records.sort_unstable();
    }
    (soa, records)
}

/// Length of the uncompressed wire name at the start of `record`.
fn owner_len(record: &[u8]) -> usize {
    let mut at = 0;
    while let Some(&len) = record.get(at) {
        at += 1 + usize::from(len);
        if len == 0 {
            break;
        }
    }
    at
}

/// Whether `name` is at or below a delegation, where only the parent's NS and glue live.
fn below_cut(snap: &Snapshot, name: &[u8]) -> Option<bool> {
    for at in wire::suffix_offsets(name) {
        if let Some(node) = snap.names.get(&name[at..]) {
            return node.cut.map(|c| *snap.cuts[c as usize].name != *name);
        }
    }
    None
}

/// Canonical DNS name order (RFC 4034 §6.1): labels compared from the root down.
fn canonical_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let labels = |n: &[u8]| -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = wire::suffix_offsets(n)
            .map(|at| n[at + 1..at + 1 + usize::from(n[at])].to_vec())
            .collect();
        out.reverse();
        out
    };
    labels(a).cmp(&labels(b))
}

/// One RRset's TTL (the lowest of its records) and RDATAs.
type RrsetData<'a> = (u32, Vec<&'a [u8]>);

/// What a secondary needs to serve a signed zone: an RRSIG over every authoritative RRset
/// (the GSLB fallback sets included) and a real NSEC chain over the names, signed. The
/// primary itself answers with compact denial; a transfer is the one place the names are
/// listed anyway, and only to the secondaries allowed.
fn signed_extras(
    snap: &Snapshot,
    zone: usize,
    signer: &crate::dnssec::ZoneSigner,
    records: &[Vec<u8>],
) -> Vec<Vec<u8>> {
    use crate::dnssec::dtype;
    // (owner, type) → (TTL, RDATAs).
    let mut sets: std::collections::BTreeMap<(Vec<u8>, u16), RrsetData<'_>> =
        std::collections::BTreeMap::new();
    for r in records {
        let at = owner_len(r);
        let t = u16::from_be_bytes([r[at], r[at + 1]]);
        let ttl = u32::from_be_bytes([r[at + 4], r[at + 5], r[at + 6], r[at + 7]]);
        let set = sets
            .entry((r[..at].to_vec(), t))
            .or_insert((ttl, Vec::new()));
        set.0 = set.0.min(ttl);
        set.1.push(&r[at + 10..]);
    }
    let mut out = Vec::new();
    let mut owners: Vec<Vec<u8>> = Vec::new();
    let mut types: HashMap<Vec<u8>, Vec<u16>> = HashMap::new();
    for ((owner, t), (ttl, rdatas)) in &sets {
        let cut = below_cut(snap, owner);
        if cut == Some(true) {
            continue; // glue
        }
        if !owners.contains(owner) {
            owners.push(owner.clone());
        }
        types.entry(owner.clone()).or_default().push(*t);
        let delegation = cut == Some(false) && *t == rtype::NS && **owner != *snap.zones[zone].apex;
        if delegation {
            continue; // the child's NS: not signed by the parent
        }
        for sig in signer.sign_rrset(owner, *t, *ttl, rdatas) {
            out.push([&owner[..], &sig].concat());
        }
    }
    owners.sort_by(|a, b| canonical_cmp(a, b));
    let ttl = snap.zones[zone].negative_ttl;
    for (i, owner) in owners.iter().enumerate() {
        let next = &owners[(i + 1) % owners.len()];
        let mut t = types.remove(owner).unwrap_or_default();
        t.extend([dtype::RRSIG, dtype::NSEC]);
        t.sort_unstable();
        t.dedup();
        let mut rdata = next.clone();
        crate::dnssec::type_bitmap(&t, &mut rdata);
        let mut record = owner.clone();
        put_u16(&mut record, dtype::NSEC);
        put_u16(&mut record, 1);
        put_u32(&mut record, ttl);
        put_u16(&mut record, rdata.len() as u16);
        record.extend_from_slice(&rdata);
        out.push(record);
        for sig in signer.sign_rrset(owner, dtype::NSEC, ttl, &[&rdata]) {
            out.push([&owner[..], &sig].concat());
        }
    }
    out
}

/// Sends a NOTIFY for every zone of `snap` to every target, each waiting up to a second
/// for the acknowledgement and tried three times (RFC 1996 §3.6), signed with `tsig`
/// when set. Runs on the notifier thread, never on a query path.
pub(crate) fn notify(snap: &Snapshot, targets: &[SocketAddr], tsig: Option<&TsigKey>) {
    for (zi, zone) in snap.zones.iter().enumerate() {
        let soa = zone_records_soa(snap, zi);
        for target in targets {
            let id = (unix_now() as u16) ^ (zi as u16).wrapping_mul(7919) ^ target.port();
            let mut msg = Vec::new();
            put_u16(&mut msg, id);
            put_u16(&mut msg, (4 << 11) | flag::AA);
            put_u16(&mut msg, 1);
            put_u16(&mut msg, u16::from(soa.is_some()));
            put_u32(&mut msg, 0);
            msg.extend_from_slice(&zone.apex);
            put_u16(&mut msg, rtype::SOA);
            put_u16(&mut msg, 1);
            if let Some(soa) = &soa {
                msg.extend_from_slice(soa);
            }
            if let Some(key) = tsig {
                key.sign_request(&mut msg, unix_now());
            }
            let bind: SocketAddr = if target.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                ([0u16; 8], 0).into()
            };
            let Ok(socket) = UdpSocket::bind(bind) else {
                continue;
            };
            let _ = socket.set_read_timeout(Some(Duration::from_secs(1)));
            let mut acknowledged = false;
            for _ in 0..3 {
                if socket.send_to(&msg, target).is_err() {
                    break;
                }
                let mut buf = [0u8; 1024];
                if let Ok((n, from)) = socket.recv_from(&mut buf)
                    && from == *target
                    && n >= 12
                    && buf[..2] == id.to_be_bytes()
                {
                    acknowledged = true;
                    break;
                }
            }
            let serial = soa.as_deref().map(soa_serial);
            if acknowledged {
                tracing::info!(%target, serial, "dns: NOTIFY acknowledged");
            } else {
                tracing::warn!(%target, serial, "dns: NOTIFY not acknowledged after 3 tries");
            }
        }
    }
}

fn zone_records_soa(snap: &Snapshot, zone: usize) -> Option<Vec<u8>> {
    let apex = &snap.zones[zone].apex;
    snap.names[apex]
        .rrset(rtype::SOA)
        .and_then(|s| s.rrs.first())
        .map(|rr| [&apex[..], &rr.body].concat())
}

/// The addresses of `app`'s serving targets under `owner` (TTL = the app's TTL), each once:
/// what a secondary, which cannot steer per client, should answer for the app's name.
fn app_records(table: &RoutingTable, app_id: AppId, owner: &[u8], records: &mut Vec<Vec<u8>>) {
    let app = table.app(app_id);
    for (i, target) in app.targets.iter().enumerate() {
        if target.effective_weight() == 0 {
            continue;
        }
        for endpoint in &table.target_cluster(app_id, i).endpoints {
            let mut rec = owner.to_vec();
            match endpoint.ip() {
                IpAddr::V4(v4) => {
                    put_u16(&mut rec, rtype::A);
                    put_u16(&mut rec, 1);
                    put_u32(&mut rec, app.dns_ttl);
                    put_u16(&mut rec, 4);
                    rec.extend_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    put_u16(&mut rec, rtype::AAAA);
                    put_u16(&mut rec, 1);
                    put_u32(&mut rec, app.dns_ttl);
                    put_u16(&mut rec, 16);
                    rec.extend_from_slice(&v6.octets());
                }
            }
            if !records.contains(&rec) {
                records.push(rec);
            }
        }
    }
}

fn message(head: &[u8], rc: u16, body: &[u8], count: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + body.len());
    out.extend_from_slice(head);
    let query_flags = u16::from_be_bytes([head[2], head[3]]);
    let mut flags = flag::QR | (query_flags & flag::RD) | rc;
    if rc == rcode::NOERROR {
        flags |= flag::AA;
    }
    set_u16(&mut out, 2, flags);
    set_u16(&mut out, 4, 1);
    set_u16(&mut out, 6, count);
    set_u16(&mut out, 8, 0);
    set_u16(&mut out, 10, 0);
    out.extend_from_slice(body);
    out
}
