//! The answer data for one routing-table version, pre-rendered in wire format.
//!
//! Built once per table (by the first worker that sees the new table in the cell; the
//! others wait for it and share it), and once at start: every
//! owner name of every zone, every app hostname and every empty non-terminal between them
//! and their apex, keyed by the lower-case wire name. Each record is stored as its wire body
//! (type, class, TTL, RDLENGTH, RDATA) so the query path only writes an owner pointer and
//! copies bytes. The zone serial is the table's version.

use std::collections::HashMap;
use std::sync::Arc;

use meridian_config::dns::DnssecKeyConfig;
use meridian_config::schema::ZoneConfig;
use meridian_config::zone::RecordData;
use meridian_routing::{AppId, RegionId, RoutingTable};

use crate::dnssec::{self, SigCache, SigningKey, ZoneSigner, dtype};
use crate::error::DnsError;
use crate::metrics::{AnswerCounter, Metrics};
use crate::wire::{self, name_to_wire, put_u16, put_u32, rtype, suffix_offsets};

/// One record's wire body; `name_at` is the offset (in the body) of a domain name in its
/// RDATA that additional records may point at (NS, MX, SRV targets).
#[derive(Clone, Debug)]
pub(crate) struct Rr {
    pub(crate) body: Box<[u8]>,
    pub(crate) name_at: Option<usize>,
    /// Address records for that name (glue / additional section), as bodies.
    pub(crate) additional: Vec<Box<[u8]>>,
}

/// All records of one type at one name.
#[derive(Clone, Debug)]
pub(crate) struct RrSet {
    pub(crate) rtype: u16,
    pub(crate) rrs: Vec<Rr>,
    /// RRSIG bodies over the set (signed zones, authoritative data only).
    pub(crate) sigs: Vec<Box<[u8]>>,
}

/// One owner name.
#[derive(Clone, Debug, Default)]
pub(crate) struct Node {
    /// Index into [`Snapshot::zones`].
    pub(crate) zone: u16,
    pub(crate) rrsets: Vec<RrSet>,
    /// A CNAME's body and its target (lower-case wire).
    pub(crate) cname: Option<(Rr, Box<[u8]>)>,
    /// RRSIG bodies over the CNAME (signed zones).
    pub(crate) cname_sigs: Vec<Box<[u8]>>,
    /// The app answering for this hostname.
    pub(crate) app: Option<AppId>,
    /// The delegation this name is at or below.
    pub(crate) cut: Option<u32>,
}

impl Node {
    pub(crate) fn rrset(&self, rtype: u16) -> Option<&RrSet> {
        self.rrsets.iter().find(|s| s.rtype == rtype)
    }
}

/// A delegation below an apex.
#[derive(Clone, Debug)]
pub(crate) struct Cut {
    /// The cut's owner name, wire form.
    pub(crate) name: Box<[u8]>,
    pub(crate) ns: Vec<Rr>,
}

/// One authoritative zone.
#[derive(Clone, Debug)]
pub(crate) struct Zone {
    pub(crate) apex: Box<[u8]>,
    /// The SOA record as the negative-answer authority: TTL = min(SOA minimum, SOA TTL).
    pub(crate) negative_soa: Box<[u8]>,
    /// The negative TTL, for capping fail-closed answers.
    pub(crate) negative_ttl: u32,
    /// The zone's signer for this snapshot, when it is signed.
    pub(crate) signer: Option<Arc<ZoneSigner>>,
    /// RRSIGs over the SOA (also good for the negative SOA: validators sign with the
    /// original TTL the RRSIG carries).
    pub(crate) soa_sigs: Vec<Box<[u8]>>,
}

/// Every owner name of the snapshot by its lower-case wire form. Looked up once or more per
/// query: foldhash (seeded per process) costs a tenth of SipHash there. Its keys come
/// from the config and the table, never from queries, so a client cannot shape the map.
pub(crate) type NameIndex = HashMap<Box<[u8]>, Node, foldhash::fast::RandomState>;

/// A pre-rendered, immutable view of the zones and app hostnames for one table.
#[derive(Debug)]
pub struct Snapshot {
    pub(crate) table: Option<Arc<RoutingTable>>,
    pub(crate) zones: Vec<Zone>,
    pub(crate) names: NameIndex,
    pub(crate) cuts: Vec<Cut>,
    /// Whether any app has a wildcard hostname (so misses must ask the table).
    pub(crate) has_wildcards: bool,
    /// ISO country code → region, for mmdb lookups.
    pub(crate) countries: HashMap<[u8; 2], RegionId>,
    /// Per app and target of the table, its answer counter (shared across snapshots).
    pub(crate) answers: Vec<Vec<AnswerCounter>>,
    /// Signatures of GSLB answers and denials (signed zones).
    pub(crate) sigs: SigCache,
    /// When signatures must be made again (Unix seconds), if any zone is signed.
    pub(crate) resign_at: Option<u64>,
    /// Signatures made for this snapshot when it was built, and how long that took.
    pub(crate) signed: (u64, std::time::Duration),
}

/// Static zone content parsed from the config once; snapshots are built from it per table.
#[derive(Clone, Debug)]
pub struct Zones {
    zones: Vec<ParsedZone>,
}

#[derive(Clone, Debug)]
struct ParsedZone {
    apex: String,
    config: ZoneConfig,
    records: Vec<(String, u32, RecordData)>,
    /// The signing keys with their lifecycle, when the zone is signed.
    keys: Vec<(DnssecKeyConfig, Arc<SigningKey>)>,
}

impl Zones {
    /// Parses every zone's records; the config was validated, so an error here means a
    /// caller skipped validation, and it names the record. Key files of signed zones are
    /// read relative to the working directory.
    pub fn from_config(zones: &[ZoneConfig]) -> Result<Self, DnsError> {
        Zones::from_config_in(zones, std::path::Path::new("."))
    }

    /// As [`Zones::from_config`], with key files relative to `base` (the config's folder).
    pub fn from_config_in(zones: &[ZoneConfig], base: &std::path::Path) -> Result<Self, DnsError> {
        let mut parsed = Vec::new();
        for zone in zones {
            let mut records = Vec::new();
            for record in &zone.records {
                let owner = zone.owner(record).map_err(|message| DnsError::Zone {
                    zone: zone.name.clone(),
                    message,
                })?;
                let data = record.data().map_err(|message| DnsError::Zone {
                    zone: zone.name.clone(),
                    message: format!("{owner}: {message}"),
                })?;
                records.push((owner, record.ttl, data));
            }
            let mut keys = Vec::new();
            for key in zone.dnssec.iter().flat_map(|d| &d.keys) {
                let loaded =
                    SigningKey::load(&base.join(&key.file)).map_err(|e| DnsError::Zone {
                        zone: zone.name.clone(),
                        message: format!("dnssec key {e}"),
                    })?;
                if loaded.zone() != zone.apex().trim_end_matches('.') {
                    return Err(DnsError::Zone {
                        zone: zone.name.clone(),
                        message: format!(
                            "dnssec key {} is for zone {}",
                            key.file.display(),
                            loaded.zone()
                        ),
                    });
                }
                keys.push((key.clone(), Arc::new(loaded)));
            }
            parsed.push(ParsedZone {
                apex: zone.apex(),
                config: zone.clone(),
                records,
                keys,
            });
        }
        Ok(Zones { zones: parsed })
    }

    /// No zones at all.
    pub(crate) fn empty() -> Self {
        Zones { zones: Vec::new() }
    }

    /// The zones' apexes, lower case, presentation form.
    pub fn apexes(&self) -> impl Iterator<Item = &str> {
        self.zones.iter().map(|z| z.apex.as_str())
    }
}

fn body(rtype: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(10 + rdata.len());
    put_u16(&mut out, rtype);
    put_u16(&mut out, 1);
    put_u32(&mut out, ttl);
    put_u16(&mut out, rdata.len() as u16);
    out.extend_from_slice(rdata);
    out
}

/// Renders one record's body; the offset of a name in RDATA for additional processing.
/// One static record rendered: its type, its wire body, the offset of the name in its
/// RDATA (if any) and that name in wire form.
struct Rendered {
    rtype: u16,
    body: Vec<u8>,
    name_at: Option<usize>,
    target: Option<Box<[u8]>>,
}

/// A record whose RDATA names a host we may hold addresses for (additional section).
struct WantsAdditional {
    target: Box<[u8]>,
    owner: Box<[u8]>,
    rtype: u16,
    index: usize,
}

fn render(ttl: u32, data: &RecordData) -> Rendered {
    let mut rdata = Vec::new();
    let (t, name) = match data {
        RecordData::A(a) => {
            rdata.extend_from_slice(&a.octets());
            (rtype::A, None)
        }
        RecordData::Aaaa(a) => {
            rdata.extend_from_slice(&a.octets());
            (rtype::AAAA, None)
        }
        RecordData::Cname(n) => {
            rdata.extend_from_slice(&name_to_wire(n));
            (rtype::CNAME, Some((0, n)))
        }
        RecordData::Ns(n) => {
            rdata.extend_from_slice(&name_to_wire(n));
            (rtype::NS, Some((0, n)))
        }
        RecordData::Mx {
            preference,
            exchange,
        } => {
            put_u16(&mut rdata, *preference);
            rdata.extend_from_slice(&name_to_wire(exchange));
            (rtype::MX, Some((2, exchange)))
        }
        RecordData::Txt(text) => {
            // Character-strings of at most 255 bytes each (RFC 1035 §3.3.14).
            for chunk in text.as_bytes().chunks(255) {
                rdata.push(chunk.len() as u8);
                rdata.extend_from_slice(chunk);
            }
            (rtype::TXT, None)
        }
        RecordData::Caa { flags, tag, value } => {
            rdata.push(*flags);
            rdata.push(tag.len() as u8);
            rdata.extend_from_slice(tag.as_bytes());
            rdata.extend_from_slice(value.as_bytes());
            (rtype::CAA, None)
        }
        RecordData::Srv {
            priority,
            weight,
            port,
            target,
        } => {
            put_u16(&mut rdata, *priority);
            put_u16(&mut rdata, *weight);
            put_u16(&mut rdata, *port);
            rdata.extend_from_slice(&name_to_wire(target));
            (rtype::SRV, Some((6, target)))
        }
    };
    Rendered {
        rtype: t,
        body: body(t, ttl, &rdata),
        name_at: name.map(|(at, _)| 10 + at),
        target: name.map(|(_, n)| name_to_wire(n).into_boxed_slice()),
    }
}

impl Snapshot {
    /// Builds the snapshot for `table` (None: static zones only, app names fail), counting
    /// its answers in `metrics`.
    pub fn build(zones: &Zones, table: Option<Arc<RoutingTable>>, metrics: &Metrics) -> Snapshot {
        let serial = table.as_ref().map_or(0, |t| t.version() as u32);
        let mut names = NameIndex::default();
        let mut out_zones = Vec::new();
        let mut cuts = Vec::new();
        // Targets whose address records go in the additional section: (name, (node, rrset, rr)).
        let mut wants_additional: Vec<WantsAdditional> = Vec::new();

        for (zi, zone) in zones.zones.iter().enumerate() {
            let zi = zi as u16;
            let soa = &zone.config.soa;
            let apex = name_to_wire(&zone.apex).into_boxed_slice();
            let mut soa_rdata = name_to_wire(&soa.mname);
            soa_rdata.extend_from_slice(&name_to_wire(&soa.rname));
            for v in [serial, soa.refresh, soa.retry, soa.expire, soa.minimum] {
                put_u32(&mut soa_rdata, v);
            }
            let negative_ttl = soa.minimum.min(soa.ttl);
            out_zones.push(Zone {
                apex: apex.clone(),
                negative_soa: body(rtype::SOA, negative_ttl, &soa_rdata).into_boxed_slice(),
                negative_ttl,
                signer: None,
                soa_sigs: Vec::new(),
            });
            let apex_node = names.entry(apex.clone()).or_default();
            apex_node.zone = zi;
            apex_node.rrsets.push(RrSet {
                rtype: rtype::SOA,
                rrs: vec![Rr {
                    body: body(rtype::SOA, soa.ttl, &soa_rdata).into_boxed_slice(),
                    name_at: None,
                    additional: Vec::new(),
                }],
                sigs: Vec::new(),
            });
            let mut ns = Vec::new();
            for name in &zone.config.ns {
                let wire = name_to_wire(name);
                wants_additional.push(WantsAdditional {
                    target: wire.clone().into(),
                    owner: apex.clone(),
                    rtype: rtype::NS,
                    index: ns.len(),
                });
                ns.push(Rr {
                    body: body(rtype::NS, soa.ttl, &wire).into_boxed_slice(),
                    name_at: Some(10),
                    additional: Vec::new(),
                });
            }
            apex_node.rrsets.push(RrSet {
                rtype: rtype::NS,
                rrs: ns,
                sigs: Vec::new(),
            });

            for (owner, ttl, data) in &zone.records {
                let owner_wire = name_to_wire(owner).into_boxed_slice();
                add_ents(&mut names, &owner_wire, &apex, zi);
                let Rendered {
                    rtype: t,
                    body,
                    name_at,
                    target,
                } = render(*ttl, data);
                let node = names.entry(owner_wire.clone()).or_default();
                node.zone = zi;
                let rr = Rr {
                    body: body.into_boxed_slice(),
                    name_at,
                    additional: Vec::new(),
                };
                if t == rtype::CNAME {
                    node.cname = Some((rr, target.unwrap_or_default()));
                    continue;
                }
                let pos = match node.rrsets.iter().position(|s| s.rtype == t) {
                    Some(pos) => pos,
                    None => {
                        node.rrsets.push(RrSet {
                            rtype: t,
                            rrs: Vec::new(),
                            sigs: Vec::new(),
                        });
                        node.rrsets.len() - 1
                    }
                };
                if let (Some(target), true) =
                    (target, matches!(t, rtype::NS | rtype::MX | rtype::SRV))
                {
                    wants_additional.push(WantsAdditional {
                        target,
                        owner: owner_wire.clone(),
                        rtype: t,
                        index: node.rrsets[pos].rrs.len(),
                    });
                }
                node.rrsets[pos].rrs.push(rr);
                if t == rtype::NS && owner_wire != apex {
                    node.cut = Some(u32::MAX); // marked; cut index assigned below
                }
            }
        }

        // Additional-section address records for NS/MX/SRV targets we serve ourselves.
        for WantsAdditional {
            target,
            owner,
            rtype: t,
            index: i,
        } in wants_additional
        {
            let Some(target_node) = names.get(&target) else {
                continue;
            };
            let mut extra = Vec::new();
            for set in &target_node.rrsets {
                if matches!(set.rtype, rtype::A | rtype::AAAA) {
                    extra.extend(set.rrs.iter().map(|rr| rr.body.clone()));
                }
            }
            if let Some(node) = names.get_mut(&owner)
                && let Some(set) = node.rrsets.iter_mut().find(|s| s.rtype == t)
                && let Some(rr) = set.rrs.get_mut(i)
            {
                rr.additional = extra;
            }
        }

        // Delegations: every name at or below a cut answers with a referral.
        let cut_names: Vec<Box<[u8]>> = names
            .iter()
            .filter(|(_, n)| n.cut == Some(u32::MAX))
            .map(|(k, _)| k.clone())
            .collect();
        for name in cut_names {
            let idx = cuts.len() as u32;
            let ns = names[&name]
                .rrset(rtype::NS)
                .map(|s| s.rrs.clone())
                .unwrap_or_default();
            cuts.push(Cut {
                name: name.clone(),
                ns,
            });
            for (key, node) in names.iter_mut() {
                if wire::zone_offset(key, &name).is_some() {
                    node.cut = Some(idx);
                }
            }
        }

        let mut has_wildcards = false;
        let mut countries = HashMap::new();
        if let Some(table) = &table {
            for (ai, app) in table.apps().iter().enumerate() {
                for host in &app.hostnames {
                    let (host, wildcard) = match host.strip_prefix("*.") {
                        Some(rest) => (rest, true),
                        None => (host.as_str(), false),
                    };
                    let wire = name_to_wire(host).into_boxed_slice();
                    let Some(zi) = out_zones
                        .iter()
                        .position(|z| wire::zone_offset(&wire, &z.apex).is_some())
                    else {
                        continue;
                    };
                    let apex = out_zones[zi].apex.clone();
                    add_ents(&mut names, &wire, &apex, zi as u16);
                    if wildcard {
                        has_wildcards = true;
                    } else {
                        let node = names.entry(wire).or_default();
                        node.zone = zi as u16;
                        node.app = Some(AppId(ai as u32));
                    }
                }
            }
            for (country, region) in &table.data().geo.countries {
                if let ([a, b], Some(id)) = (country.as_bytes(), table.region_id(region)) {
                    countries.insert([a.to_ascii_uppercase(), b.to_ascii_uppercase()], id);
                }
            }
        }

        let answers = table
            .as_ref()
            .map_or_else(Vec::new, |t| metrics.answer_counters(t));
        let mut snapshot = Snapshot {
            table,
            zones: out_zones,
            names,
            cuts,
            has_wildcards,
            countries,
            answers,
            sigs: SigCache::new(dnssec::OVERFLOW_LIMIT),
            resign_at: None,
            signed: (0, std::time::Duration::ZERO),
        };
        snapshot.sign_static(zones, u64::from(serial));
        snapshot
    }

    /// Signs every signed zone's authoritative RRsets and the denial NSECs of its names,
    /// with the keys active at table `version`, and publishes the keys at the apex.
    fn sign_static(&mut self, zones: &Zones, version: u64) {
        let started = std::time::Instant::now();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut made = 0u64;
        for (zi, zone) in zones.zones.iter().enumerate() {
            let Some(config) = &zone.config.dnssec else {
                continue;
            };
            let published: Vec<Arc<SigningKey>> = zone
                .keys
                .iter()
                .filter(|(c, _)| c.published_at(version))
                .map(|(_, k)| k.clone())
                .collect();
            let active: Vec<Arc<SigningKey>> = zone
                .keys
                .iter()
                .filter(|(c, _)| c.active_at(version))
                .map(|(_, k)| k.clone())
                .collect();
            let mut jitter = [0u8; 4];
            let jitter =
                match ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut jitter)
                {
                    Ok(()) => {
                        u64::from(u32::from_be_bytes(jitter)) % config.jitter.as_secs().max(1)
                    }
                    Err(_) => 0,
                };
            let inception = now.saturating_sub(config.inception_offset.as_secs());
            let expiration = now + config.validity.as_secs() + jitter;
            // Made again at a quarter of the validity, long before a cached answer expires.
            let resign = now + config.validity.as_secs() / 4;
            self.resign_at = Some(self.resign_at.map_or(resign, |r| r.min(resign)));
            let apex = self.zones[zi].apex.clone();
            let Some(signer) = ZoneSigner::new(&apex, active, inception as u32, expiration as u32)
            else {
                tracing::error!(zone = %zone.apex, version, "dnssec: no key is active at this table version; the zone is served unsigned");
                continue;
            };
            let signer = Arc::new(signer);
            let ttl = zone.config.soa.ttl;
            if let Some(apex_node) = self.names.get_mut(&apex) {
                for (t, rdatas) in dnssec::apex_key_sets(&published) {
                    if rdatas.is_empty() {
                        continue;
                    }
                    apex_node.rrsets.push(RrSet {
                        rtype: t,
                        rrs: rdatas
                            .iter()
                            .map(|r| Rr {
                                body: body(t, ttl, r).into_boxed_slice(),
                                name_at: None,
                                additional: Vec::new(),
                            })
                            .collect(),
                        sigs: Vec::new(),
                    });
                }
            }
            let zi = zi as u16;
            let mut key = Vec::new();
            let mut nsec = Vec::new();
            for (owner, node) in self.names.iter_mut() {
                if node.zone != zi {
                    continue;
                }
                let at_cut = node
                    .cut
                    .is_some_and(|c| *self.cuts[c as usize].name == **owner);
                if node.cut.is_some() && !at_cut {
                    continue; // glue below a delegation: not ours to sign
                }
                if !at_cut {
                    for set in &mut node.rrsets {
                        // One TTL per RRset (RFC 2181 §5.2): the lowest configured.
                        let ttl = set.rrs.iter().map(|rr| ttl_of(&rr.body)).min().unwrap_or(0);
                        for rr in &mut set.rrs {
                            rr.body[4..8].copy_from_slice(&ttl.to_be_bytes());
                        }
                        let rdatas: Vec<&[u8]> = set.rrs.iter().map(|rr| &rr.body[10..]).collect();
                        set.sigs = signer.sign_rrset(owner, set.rtype, ttl, &rdatas);
                        made += set.sigs.len() as u64;
                    }
                    if let Some((rr, _)) = &node.cname {
                        node.cname_sigs = signer.sign_rrset(
                            owner,
                            rtype::CNAME,
                            ttl_of(&rr.body),
                            &[&rr.body[10..]],
                        );
                        made += node.cname_sigs.len() as u64;
                    }
                }
                // The NODATA proof of a name without an app (app names vary by table and
                // query type; theirs are signed when first asked).
                if node.app.is_none() {
                    let mut types = [0u16; 20];
                    let n = node_types(node, 0, &mut types);
                    let types = &types[..n];
                    nsec.clear();
                    let negative_ttl = self.zones[usize::from(zi)].negative_ttl;
                    if dnssec::nsec_rdata(owner, types, &mut nsec) {
                        dnssec::cache_key(dtype::NSEC, owner, negative_ttl, &[&nsec], &mut key);
                        let sigs = signer.sign_rrset(owner, dtype::NSEC, negative_ttl, &[&nsec]);
                        made += sigs.len() as u64;
                        self.sigs
                            .presigned
                            .insert(key.as_slice().into(), sigs.into());
                    }
                }
            }
            let z = &mut self.zones[usize::from(zi)];
            z.soa_sigs = self.names[&apex]
                .rrset(rtype::SOA)
                .map(|s| s.sigs.clone())
                .unwrap_or_default();
            z.signer = Some(signer);
        }
        self.signed = (made, started.elapsed());
    }

    /// The table this snapshot was built from.
    pub fn table(&self) -> Option<&Arc<RoutingTable>> {
        self.table.as_ref()
    }
}

/// Inserts empty non-terminals between `name` and its apex (exclusive of both), so names
/// that exist only because something lies below them answer NODATA, not NXDOMAIN.
fn add_ents(names: &mut NameIndex, name: &[u8], apex: &[u8], zone: u16) {
    for at in suffix_offsets(name).skip(1) {
        let suffix = &name[at..];
        if suffix.len() <= apex.len() {
            break;
        }
        names.entry(suffix.into()).or_insert_with(|| Node {
            zone,
            ..Node::default()
        });
    }
    names.entry(name.into()).or_insert_with(|| Node {
        zone,
        ..Node::default()
    });
}

fn ttl_of(body: &[u8]) -> u32 {
    u32::from_be_bytes([body[4], body[5], body[6], body[7]])
}

/// The types present at `node` for its NSEC (an app name has A and AAAA), without
/// `except` (the type a NODATA answer denies), sorted into `out`; returns how many.
pub(crate) fn node_types(node: &Node, except: u16, out: &mut [u16; 20]) -> usize {
    let mut n = 0;
    let app: &[u16] = if node.app.is_some() {
        &[rtype::A, rtype::AAAA]
    } else {
        &[]
    };
    let cname: &[u16] = if node.cname.is_some() {
        &[rtype::CNAME]
    } else {
        &[]
    };
    for t in node
        .rrsets
        .iter()
        .map(|s| s.rtype)
        .chain(app.iter().copied())
        .chain(cname.iter().copied())
    {
        if t != except && n < out.len() && !out[..n].contains(&t) {
            out[n] = t;
            n += 1;
        }
    }
    out[..n].sort_unstable();
    n
}
