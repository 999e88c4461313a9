//! Zone transfer (AXFR, RFC 5936) over TCP to the secondaries in `dns.axfr_allow`.
//!
//! The transfer carries the zone as this table version has it: SOA first and last, every
//! static record, and for each app hostname the addresses of its targets that are serving
//! now (TTL = the app's TTL). A secondary cannot steer per client, so it answers with every
//! serving address; the serial (the table version) tells it when to transfer again.
//! Names are written uncompressed: transfers are rare and a plain encoding is easy to check.

use std::net::IpAddr;

use ipnet::IpNet;
use meridian_routing::{AppId, RoutingTable};

use crate::snapshot::Snapshot;
use crate::wire::{self, Query, flag, put_u16, put_u32, rcode, rtype, set_u16};

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

/// The response messages to an AXFR query, or `None` when `packet` is not one (the
/// ordinary handler answers it then). A refused transfer is one REFUSED message.
pub(crate) fn transfer(
    snap: &Snapshot,
    acl: &AxfrAcl,
    packet: &[u8],
    src: IpAddr,
) -> Option<Vec<Vec<u8>>> {
    let mut query = Query {
        id: 0,
        flags: 0,
        qname: [0; wire::MAX_NAME],
        qname_len: 0,
        qtype: 0,
        qclass: 0,
        question_end: 0,
        edns: None,
    };
    if wire::parse_into(packet, &mut query) != wire::Outcome::Ok || query.qtype != rtype::AXFR {
        return None;
    }
    let head = &packet[..query.question_end];
    let zone = snap.zones.iter().position(|z| *z.apex == *query.name());
    let (Some(zone), true) = (zone, acl.allows(src)) else {
        tracing::info!(%src, "dns: zone transfer refused");
        return Some(vec![message(head, rcode::REFUSED, &[], 0)]);
    };
    tracing::info!(%src, zone = zone, "dns: zone transfer");
    let apex = &snap.zones[zone].apex;
    let mut records: Vec<Vec<u8>> = Vec::new();
    let soa = snap.names[apex]
        .rrset(rtype::SOA)
        .and_then(|s| s.rrs.first())
        .map(|rr| [&apex[..], &rr.body].concat())
        .unwrap_or_default();
    records.push(soa.clone());
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
    records.push(soa);
    let mut messages = Vec::new();
    let mut start = 0;
    while start < records.len() {
        let mut size = head.len();
        let mut end = start;
        while end < records.len() && (end == start || size + records[end].len() <= CHUNK) {
            size += records[end].len();
            end += 1;
        }
        let body: Vec<u8> = records[start..end].concat();
        messages.push(message(head, rcode::NOERROR, &body, (end - start) as u16));
        start = end;
    }
    Some(messages)
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
