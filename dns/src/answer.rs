//! The packet handler: one query in, one response out, written into a reused buffer.
//!
//! Used by both the UDP fast path and the TCP path. It allocates nothing per query: the
//! query is parsed into a reused [`Query`], names are looked up by their lower-case wire
//! form, and the response is the query's own header and question (so the client's case is
//! kept) followed by pre-rendered record bodies behind compression pointers.
//!
//! Choices worth knowing:
//! - A fail-closed app with no serving target answers NODATA (NOERROR, SOA in authority)
//!   with the negative TTL capped at the app's TTL, so resolvers ask again soon after the
//!   app recovers; SERVFAIL would make resolvers retry other servers and hide the cause.
//! - With no routing table yet, app names (and any name that is not a static record)
//!   answer SERVFAIL, never NXDOMAIN, which resolvers would cache.
//! - Extra addresses of an answer come from further picks only while the rule that chose
//!   the first one still holds (same tier, same preferred set): a failover app never mixes
//!   a backup into a healthy primary's answer.

use std::mem::discriminant;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use meridian_routing::{
    AppId, Client, NoTarget, Pick, Policy, Reason, RegionId, RoutingTable, TargetSet,
};
use meridian_subscriber::TableCell;

use crate::axfr::{AxfrAcl, Transfers};
use crate::dnssec::{self, ZoneSigner, dtype};
use crate::geo::{GeoDb, is_routable};
use crate::metrics::{Metrics, Tally};
use crate::rrl::{Rrl, RrlAction};
use crate::snapshot::{Node, Snapshot, Zones, node_types};
use crate::wire::{
    self, Ecs, HEADER_LEN, MAX_NAME, OUR_UDP_PAYLOAD, Outcome, Query, flag, pointer, put_u16,
    put_u32, rcode, rtype, set_u16, suffix_offsets, zone_offset,
};

/// Longest CNAME chain followed inside our zones.
const MAX_CHAIN: usize = 8;
/// Largest UDP query answered: with EDNS a query may exceed 512 bytes (padding, cookies,
/// long names with options), as NSD and Knot accept; without EDNS it may not (RFC 1035).
pub const MAX_QUERY: usize = 4096;
/// Largest UDP query without EDNS.
const MAX_PLAIN_QUERY: usize = 512;

/// How a query arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// UDP: responses limited to the EDNS payload size (512 without EDNS), TC beyond.
    Udp,
    /// TCP: up to 65535 bytes.
    Tcp,
}

/// Per-worker state: the weighted-pick counter, the parsed query, the current snapshot,
/// reused buffers for signature lookups and the query counts not yet in the metrics.
pub struct Worker {
    counter: u64,
    query: Box<Query>,
    snapshot: Arc<Snapshot>,
    scratch: Scratch,
    tally: Tally,
}

/// Buffers reused for every signed answer, so a lookup of a cached signature allocates
/// nothing.
#[derive(Default)]
struct Scratch {
    key: Vec<u8>,
    rdata: Vec<u8>,
}

/// Whether and how an answer carries DNSSEC records: set when the query has DO and the
/// zone answering is signed.
struct Signing<'a> {
    dnssec_ok: bool,
    scratch: &'a mut Scratch,
    /// Signatures made while answering (a cache miss).
    made: u64,
}

impl Worker {
    /// A worker whose pick counter starts at `seed` (spread workers apart so their
    /// low-discrepancy sequences do not move in step).
    pub fn new(handler: &Handler, seed: u64) -> Self {
        let snapshot = handler.snapshot_for(None);
        Worker {
            counter: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            query: Box::new(Query {
                id: 0,
                flags: 0,
                qname: [0; MAX_NAME],
                qname_len: 0,
                qtype: 0,
                qclass: 0,
                question_end: 0,
                edns: None,
            }),
            snapshot,
            scratch: Scratch {
                key: Vec::with_capacity(512),
                rdata: Vec::with_capacity(512),
            },
            tally: Tally::new(handler.metrics.clone()),
        }
    }

    /// Adds the queries this worker answered since the last flush to the metrics (also
    /// done when it is dropped). Call after each batch of queries.
    pub fn flush_counts(&mut self) {
        self.tally.flush();
    }
}

/// Everything a query needs, shared by all workers.
pub struct Handler {
    zones: Zones,
    geo: GeoDb,
    cell: Arc<TableCell>,
    max_answers: usize,
    current: Mutex<Arc<Snapshot>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) rrl: Option<Rrl>,
    transfers: Transfers,
}

/// What to do with the response buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send it.
    Send,
    /// Send nothing.
    Drop,
}

struct Sections {
    rcode: u16,
    aa: bool,
    an: u16,
    ns: u16,
    ar: u16,
    /// The ECS scope for the echo, when the answer used the client's subnet.
    scope: u8,
    /// Where the additional section starts in the response: it is the first thing given
    /// up when the response does not fit (RFC 2181 §9).
    additional_at: usize,
    /// The additional section is a referral's glue, which must be complete or the response
    /// truncated (RFC 9471).
    glue_required: bool,
}

impl Sections {
    fn new(rcode: u16) -> Self {
        Sections {
            rcode,
            aa: true,
            an: 0,
            ns: 0,
            ar: 0,
            scope: 0,
            additional_at: 0,
            glue_required: false,
        }
    }
}

/// Additional records to write after the answer and authority sections: an owner pointer
/// target and a body. The first few are kept inline, so an ordinary answer allocates
/// nothing; a referral with many glue records spills over.
struct Additional<'a> {
    inline: [(usize, &'a [u8]); 16],
    len: usize,
    spill: Vec<(usize, &'a [u8])>,
}

impl<'a> Additional<'a> {
    fn new() -> Self {
        Additional {
            inline: [(0, &[]); 16],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, owner_at: usize, body: &'a [u8]) {
        if owner_at >= 0x4000 {
            return;
        }
        if self.len < self.inline.len() {
            self.inline[self.len] = (owner_at, body);
            self.len += 1;
        } else {
            self.spill.push((owner_at, body));
        }
    }

    /// Writes every record after what `out` holds; returns how many.
    fn write(&self, out: &mut Vec<u8>) -> u16 {
        let items = self.inline[..self.len].iter().chain(&self.spill);
        let mut n = 0;
        for &(at, body) in items {
            write_rr(out, at, body);
            n += 1;
        }
        n
    }
}
fn write_rr(out: &mut Vec<u8>, owner_at: usize, body: &[u8]) {
    out.extend_from_slice(&pointer(owner_at));
    out.extend_from_slice(body);
}

impl Handler {
    /// A handler over the static `zones`, the geo databases and the table in `cell`.
    pub fn new(
        zones: Zones,
        geo: GeoDb,
        cell: Arc<TableCell>,
        max_answers: usize,
        metrics: Arc<Metrics>,
        rrl: Option<Rrl>,
    ) -> Self {
        // A stand-in until the handler exists to build (and sign ahead) the real one.
        let snapshot = Snapshot::build(&Zones::empty(), None, &metrics);
        let mut handler = Handler {
            zones,
            geo,
            cell,
            max_answers: max_answers.max(1),
            current: Mutex::new(Arc::new(snapshot)),
            metrics,
            rrl,
            transfers: Transfers::default(),
        };
        let snapshot = handler.build_snapshot(handler.cell.load());
        handler.current = Mutex::new(Arc::new(snapshot));
        handler
    }

    /// The snapshot of `table`, with its signatures (static RRsets, denials, the GSLB
    /// answers the table can give) made now; counts what signing cost.
    fn build_snapshot(&self, table: Option<Arc<RoutingTable>>) -> Snapshot {
        let mut snapshot = Snapshot::build(&self.zones, table, &self.metrics);
        self.transfers.record(&snapshot);
        if snapshot.resign_at.is_some() {
            self.presign(&mut snapshot);
            let (made, took) = snapshot.signed;
            self.metrics
                .dnssec_signed(made, took, snapshot.sigs.presigned.len());
            tracing::debug!(
                version = snapshot.table.as_ref().map_or(0, |t| t.version()),
                signatures = made,
                micros = took.as_micros() as u64,
                "dnssec: snapshot signed"
            );
        }
        snapshot
    }

    /// Allows zone transfers (AXFR and IXFR over TCP) to these networks, unsigned.
    pub fn with_axfr(self, acl: AxfrAcl) -> Self {
        self.with_transfers(Transfers::new(acl, None, 16))
    }

    /// Sets who may transfer and how; the current version starts the journal.
    pub fn with_transfers(mut self, transfers: Transfers) -> Self {
        self.transfers = transfers;
        let current = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.transfers.record(&current);
        self
    }

    /// The snapshot of the cell's current table, built (and journaled) if need be.
    pub(crate) fn current_snapshot(&self) -> Arc<Snapshot> {
        self.snapshot_for(None)
    }

    /// Sends NOTIFY for every zone of `snap` to `targets` (the notifier thread).
    pub(crate) fn notify(&self, snap: &Snapshot, targets: &[std::net::SocketAddr]) {
        crate::axfr::notify(snap, targets, self.transfers.tsig.as_ref());
    }

    /// The messages answering an AXFR query (TCP only), or `None` when `packet` is not an
    /// AXFR query. Refused (one REFUSED message) unless `src` is allowed.
    pub fn transfer(&self, worker: &Worker, packet: &[u8], src: IpAddr) -> Option<Vec<Vec<u8>>> {
        let messages = crate::axfr::transfer(&worker.snapshot, &self.transfers, packet, src)?;
        self.metrics.count(
            rtype::AXFR,
            if messages.len() == 1 && messages[0][3] & 0xf != 0 {
                rcode::REFUSED
            } else {
                rcode::NOERROR
            },
        );
        Some(messages)
    }

    /// The snapshot for the cell's current table, building it when the table changed.
    /// Workers call this once per batch with what they hold; it is a pointer comparison
    /// unless a new table has arrived.
    fn snapshot_for(&self, held: Option<&Arc<Snapshot>>) -> Arc<Snapshot> {
        let table = self.cell.load();
        let same = |s: &Snapshot| match (&s.table, &table) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        let fresh = |s: &Snapshot| s.resign_at.is_none_or(|at| unix_now() < at);
        if let Some(held) = held
            && same(held)
            && fresh(held)
        {
            return held.clone();
        }
        // While one worker builds the new snapshot, the others keep answering from the one
        // they hold (a swap never stalls the query path) and look again next batch.
        let mut current = match (self.current.try_lock(), held) {
            (Ok(current), _) => current,
            (Err(std::sync::TryLockError::Poisoned(e)), _) => e.into_inner(),
            (Err(std::sync::TryLockError::WouldBlock), Some(held)) => return held.clone(),
            (Err(std::sync::TryLockError::WouldBlock), None) => {
                self.current.lock().unwrap_or_else(|e| e.into_inner())
            }
        };
        if !same(&current) || !fresh(&current) {
            *current = Arc::new(self.build_snapshot(table));
        }
        current.clone()
    }

    /// Signatures of GSLB answers and denials the current snapshot holds.
    pub(crate) fn signature_cache_entries(&self) -> usize {
        self.current.lock().map_or(0, |current| current.sigs.len())
    }

    /// Brings the worker's snapshot up to the cell's table.
    pub fn refresh(&self, worker: &mut Worker) {
        worker.snapshot = self.snapshot_for(Some(&worker.snapshot));
    }

    /// Answers `packet` from `src` into `out`. The caller sends `out` when told to.
    pub fn handle(
        &self,
        worker: &mut Worker,
        packet: &[u8],
        src: IpAddr,
        transport: Transport,
        out: &mut Vec<u8>,
    ) -> Action {
        out.clear();
        let m = &self.metrics;
        if packet.len() > MAX_QUERY && transport == Transport::Udp {
            m.dropped.fetch_add(1, Ordering::Relaxed);
            return Action::Drop;
        }
        let Worker {
            counter,
            query,
            snapshot,
            scratch,
            tally,
        } = worker;
        let outcome = wire::parse_into(packet, query);
        let q = &**query;
        match outcome {
            Outcome::Drop => {
                m.dropped.fetch_add(1, Ordering::Relaxed);
                return Action::Drop;
            }
            Outcome::Error { rcode: rc, edns } => {
                // Header only: id, opcode and RD echoed; no question.
                out.extend_from_slice(&packet[..HEADER_LEN]);
                let flags = flag::QR | (q.flags & (0x7800 | flag::RD | flag::CD)) | (rc & 0xf);
                set_u16(out, 2, flags);
                for at in [4, 6, 8, 10] {
                    set_u16(out, at, 0);
                }
                // With an OPT in the query, the error carries one too (RFC 6891 §7).
                if let Some(e) = edns {
                    push_opt(out, rc, e.dnssec_ok, None);
                    set_u16(out, 10, 1);
                }
                tally.count(0, rc);
                return Action::Send;
            }
            Outcome::Ok => {}
        }
        if transport == Transport::Udp && q.edns.is_none() && packet.len() > MAX_PLAIN_QUERY {
            m.dropped.fetch_add(1, Ordering::Relaxed);
            return Action::Drop;
        }
        let snap = &**snapshot;
        let limit = match (transport, q.edns) {
            (Transport::Tcp, _) => 65535,
            (Transport::Udp, None) => 512,
            (Transport::Udp, Some(e)) => usize::from(e.payload.clamp(512, OUR_UDP_PAYLOAD)),
        };
        out.extend_from_slice(&packet[..q.question_end]);
        let ecs = q.edns.and_then(|e| e.ecs);
        if ecs.is_some() {
            tally.ecs_seen();
        }
        let mut signing = Signing {
            dnssec_ok: q.edns.is_some_and(|e| e.dnssec_ok),
            scratch,
            made: 0,
        };
        let sections = self.resolve(snap, q, src, ecs, counter, &mut signing, out);
        if signing.made > 0 {
            m.dnssec_inline_signatures
                .fetch_add(signing.made, Ordering::Relaxed);
        }
        let Sections {
            rcode: rc,
            aa,
            mut an,
            mut ns,
            mut ar,
            scope,
            additional_at,
            glue_required,
        } = sections;
        let mut flags = flag::QR | (q.flags & (flag::RD | flag::CD)) | (rc & 0xf);
        if aa {
            flags |= flag::AA;
        }
        // Response rate limiting, once the answer is known (Knot and NSD classify the same way).
        if transport == Transport::Udp
            && let Some(rrl) = &self.rrl
        {
            match rrl.check(src) {
                RrlAction::Pass => {}
                RrlAction::Drop => {
                    m.rrl_dropped.fetch_add(1, Ordering::Relaxed);
                    out.clear();
                    return Action::Drop;
                }
                RrlAction::Slip => {
                    m.rrl_slipped.fetch_add(1, Ordering::Relaxed);
                    out.truncate(q.question_end);
                    an = 0;
                    ns = 0;
                    ar = 0;
                    flags |= flag::TC;
                }
            }
        }
        let opt_len = q.edns.map_or(0, |_| {
            11 + ecs.map_or(0, |e| 8 + usize::from(e.source).div_ceil(8))
        });
        if out.len() + opt_len > limit {
            if ar > 0 && !glue_required && additional_at + opt_len <= limit {
                // The additional section is optional: give it up, keep the answer.
                out.truncate(additional_at);
                ar = 0;
            } else {
                out.truncate(q.question_end);
                an = 0;
                ns = 0;
                ar = 0;
                flags |= flag::TC;
            }
        }
        if let Some(e) = q.edns {
            push_opt(out, rc, e.dnssec_ok, ecs.map(|e| (e, scope)));
            ar += 1;
        }
        set_u16(out, 2, flags);
        set_u16(out, 4, 1);
        set_u16(out, 6, an);
        set_u16(out, 8, ns);
        set_u16(out, 10, ar);
        tally.count(q.qtype, rc);
        if flags & flag::TC != 0 {
            m.truncated.fetch_add(1, Ordering::Relaxed);
        }
        Action::Send
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the query's parts and the worker's state, each used on some path"
    )]
    fn resolve(
        &self,
        snap: &Snapshot,
        q: &Query,
        src: IpAddr,
        ecs: Option<Ecs>,
        counter: &mut u64,
        sg: &mut Signing<'_>,
        out: &mut Vec<u8>,
    ) -> Sections {
        let name = q.name();
        if !q.is_class_in() {
            let mut s = Sections::new(rcode::REFUSED);
            s.aa = false;
            return s;
        }
        if matches!(q.qtype, rtype::AXFR | rtype::IXFR | rtype::OPT) {
            // Zone transfers are not offered (no secondaries are configured); OPT is not a
            // question anyone may ask.
            let mut s = Sections::new(if q.qtype == rtype::OPT {
                rcode::FORMERR
            } else {
                rcode::REFUSED
            });
            s.aa = false;
            return s;
        }
        let mut additional = Additional::new();
        let mut s = Sections::new(rcode::NOERROR);
        let mut owner_at = HEADER_LEN;
        let mut owner: &[u8] = name;
        // Owners already answered in this chain: a CNAME loop is answered once per record.
        let mut chain: [&[u8]; MAX_CHAIN] = [&[]; MAX_CHAIN];
        for step in 0..MAX_CHAIN {
            chain[step] = owner;
            let found = match snap.names.get(owner) {
                Some(node) => Found::Node(node),
                None => self.enclosing(snap, owner),
            };
            match found {
                Found::Refused => {
                    if s.an == 0 {
                        s.rcode = rcode::REFUSED;
                        s.aa = false;
                    }
                    // A chain that leaves our zones ends here; the resolver follows it.
                    break;
                }
                Found::Cut(cut) => {
                    if s.an == 0 {
                        self.referral(snap, cut, owner, owner_at, sg, &mut s, out);
                    }
                    break;
                }
                Found::Missing(zone) => {
                    if snap.table.is_none() {
                        s.rcode = rcode::SERVFAIL;
                        s.aa = false;
                        break;
                    }
                    if snap.has_wildcards
                        && let Some(table) = &snap.table
                    {
                        let mut buf = [0u8; MAX_NAME];
                        if let Some(app) = wire::wire_to_str(owner, &mut buf)
                            .and_then(|host| table.app_for_host(host))
                        {
                            self.app_answer(
                                snap, table, app, zone, q, src, ecs, counter, owner, owner_at, sg,
                                &mut s, out,
                            );
                            break;
                        }
                    }
                    s.rcode = rcode::NXDOMAIN;
                    negative(
                        snap,
                        zone,
                        owner,
                        owner_at,
                        None,
                        Denial::NxName,
                        sg,
                        &mut s,
                        out,
                    );
                    break;
                }
                Found::Node(node) => {
                    if let Some(cut) = node.cut {
                        let cut_data = &snap.cuts[cut as usize];
                        if q.qtype == rtype::DS && *cut_data.name == *owner {
                            // DS lives on the parent side of the cut: ours to answer (NODATA).
                            let denial = Denial::NoData(node, rtype::DS);
                            negative(
                                snap, node.zone, owner, owner_at, None, denial, sg, &mut s, out,
                            );
                        } else if s.an == 0 {
                            self.referral(snap, cut as usize, owner, owner_at, sg, &mut s, out);
                        }
                        break;
                    }
                    if let Some((rr, target)) = &node.cname {
                        let rr_at = out.len();
                        write_rr(out, owner_at, &rr.body);
                        s.an += 1;
                        if sg.dnssec_ok {
                            s.an += write_sigs(out, owner_at, &node.cname_sigs);
                        }
                        if matches!(q.qtype, rtype::CNAME | rtype::ANY)
                            || chain[..=step].contains(&&target[..])
                        {
                            break;
                        }
                        owner_at = rr_at + 12;
                        owner = target;
                        continue;
                    }
                    if q.qtype == rtype::ANY {
                        // RFC 8482: one RRset, not everything, so ANY cannot amplify.
                        if let (Some(app), Some(table)) = (node.app, &snap.table) {
                            self.app_answer(
                                snap, table, app, node.zone, q, src, ecs, counter, owner, owner_at,
                                sg, &mut s, out,
                            );
                        } else if let Some(set) = node.rrsets.first() {
                            // One whole RRset: a partial one would be cached as complete.
                            for rr in &set.rrs {
                                write_rr(out, owner_at, &rr.body);
                                s.an += 1;
                            }
                            if sg.dnssec_ok {
                                s.an += write_sigs(out, owner_at, &set.sigs);
                            }
                        } else {
                            let denial = Denial::NoData(node, q.qtype);
                            negative(
                                snap, node.zone, owner, owner_at, None, denial, sg, &mut s, out,
                            );
                        }
                        break;
                    }
                    if let Some(set) = node.rrset(q.qtype) {
                        for rr in &set.rrs {
                            let rr_at = out.len();
                            write_rr(out, owner_at, &rr.body);
                            s.an += 1;
                            if let Some(name_at) = rr.name_at {
                                for extra in &rr.additional {
                                    additional.push(rr_at + 2 + name_at, extra);
                                }
                            }
                        }
                        if sg.dnssec_ok {
                            s.an += write_sigs(out, owner_at, &set.sigs);
                        }
                    } else if let (Some(app), Some(table)) = (node.app, &snap.table) {
                        self.app_answer(
                            snap, table, app, node.zone, q, src, ecs, counter, owner, owner_at, sg,
                            &mut s, out,
                        );
                    } else {
                        let denial = Denial::NoData(node, q.qtype);
                        negative(
                            snap, node.zone, owner, owner_at, None, denial, sg, &mut s, out,
                        );
                    }
                    break;
                }
            }
        }
        if !s.glue_required {
            s.additional_at = out.len();
        }
        s.ar += additional.write(out);
        s
    }

    /// Where a name that is not in the map belongs: below a cut, in a zone, or nowhere.
    fn enclosing(&self, snap: &Snapshot, name: &[u8]) -> Found<'static> {
        for at in suffix_offsets(name).skip(1) {
            if let Some(node) = snap.names.get(&name[at..]) {
                return match node.cut {
                    Some(cut) => Found::Cut(cut as usize),
                    None => Found::Missing(node.zone),
                };
            }
        }
        Found::Refused
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the query's position in the response and the worker's signing state"
    )]
    fn referral(
        &self,
        snap: &Snapshot,
        cut: usize,
        owner: &[u8],
        owner_at: usize,
        sg: &mut Signing<'_>,
        s: &mut Sections,
        out: &mut Vec<u8>,
    ) {
        let cut = &snap.cuts[cut];
        let cut_node = snap.names.get(&cut.name);
        s.aa = false;
        let cut_at = zone_offset(owner, &cut.name).map(|off| owner_at + off);
        let mut glue = Additional::new();
        for rr in &cut.ns {
            let rr_at = out.len();
            match cut_at {
                Some(at) => write_rr(out, at, &rr.body),
                None => {
                    out.extend_from_slice(&cut.name);
                    out.extend_from_slice(&rr.body);
                }
            }
            s.ns += 1;
            let name_at = rr_at + if cut_at.is_some() { 2 } else { cut.name.len() } + 10;
            for extra in &rr.additional {
                glue.push(name_at, extra);
            }
        }
        // A signed parent proves the delegation insecure: the cut's NSEC shows NS, no DS.
        if let (true, Some(at), Some(node)) = (sg.dnssec_ok, cut_at, cut_node)
            && let Some(zone) = snap.zones.get(usize::from(node.zone))
            && let Some(signer) = &zone.signer
        {
            s.ns += write_nsec(
                snap,
                signer,
                &cut.name,
                at,
                Denial::NoData(node, rtype::DS),
                zone.negative_ttl,
                sg,
                out,
            );
        }
        s.additional_at = out.len();
        s.ar += glue.write(out);
        s.glue_required = s.ar > 0;
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one call site per answer kind; a struct would only rename them"
    )]
    fn app_answer(
        &self,
        snap: &Snapshot,
        table: &RoutingTable,
        app_id: AppId,
        zone: u16,
        q: &Query,
        src: IpAddr,
        ecs: Option<Ecs>,
        counter: &mut u64,
        owner: &[u8],
        owner_at: usize,
        sg: &mut Signing<'_>,
        s: &mut Sections,
        out: &mut Vec<u8>,
    ) {
        let app = table.app(app_id);
        let node = snap.names.get(owner);
        let want = match q.qtype {
            rtype::A | rtype::ANY => rtype::A,
            rtype::AAAA => rtype::AAAA,
            _ => {
                let denial = node.map_or(Denial::AppName(q.qtype), |n| Denial::NoData(n, q.qtype));
                negative(snap, zone, owner, owner_at, None, denial, sg, s, out);
                return;
            }
        };
        let (client, scope) = if matches!(app.policy, Policy::Geo | Policy::Latency) {
            self.locate(snap, table, src, ecs)
        } else {
            (
                Client {
                    addr: src,
                    region: None,
                },
                0,
            )
        };
        let picked = self.pick(table, app_id, &client, counter, want);
        if picked.fail_closed {
            self.metrics.fail_closed.fetch_add(1, Ordering::Relaxed);
            let denial = node.map_or(Denial::AppName(want), |n| Denial::NoData(n, want));
            negative(
                snap,
                zone,
                owner,
                owner_at,
                Some(app.dns_ttl),
                denial,
                sg,
                s,
                out,
            );
            return;
        }
        let count = picked.count;
        let mut rdatas: [&[u8]; 8] = [&[]; 8];
        let mut octets = [[0u8; 16]; 8];
        for ((ip, octets), &target) in picked.addrs[..count]
            .iter()
            .zip(&mut octets)
            .zip(&picked.targets)
        {
            let Some(ip) = ip else { continue };
            let len = match ip {
                IpAddr::V4(v4) => {
                    octets[..4].copy_from_slice(&v4.octets());
                    4
                }
                IpAddr::V6(v6) => {
                    *octets = v6.octets();
                    16
                }
            };
            out.extend_from_slice(&pointer(owner_at));
            put_u16(out, want);
            put_u16(out, 1);
            put_u32(out, app.dns_ttl);
            put_u16(out, len as u16);
            out.extend_from_slice(&octets[..len]);
            if let Some(counter) = snap
                .answers
                .get(app_id.0 as usize)
                .and_then(|a| a.get(target))
            {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
        if picked.location_dependent {
            s.scope = scope;
        }
        if count == 0 {
            let denial = node.map_or(Denial::AppName(want), |n| Denial::NoData(n, want));
            negative(snap, zone, owner, owner_at, None, denial, sg, s, out);
            return;
        }
        s.an += count as u16;
        if sg.dnssec_ok
            && let Some(signer) = snap
                .zones
                .get(usize::from(zone))
                .and_then(|z| z.signer.as_ref())
        {
            let len = if want == rtype::A { 4 } else { 16 };
            for (rdata, octets) in rdatas.iter_mut().zip(&octets).take(count) {
                *rdata = &octets[..len];
            }
            let rdatas = &mut rdatas[..count];
            rdatas.sort_unstable();
            dnssec::cache_key(want, owner, app.dns_ttl, rdatas, &mut sg.scratch.key);
            let mut made = false;
            let sigs = snap.sigs.get_or_sign(&sg.scratch.key, &mut made, || {
                signer.sign_rrset(owner, want, app.dns_ttl, rdatas)
            });
            if made {
                sg.made += sigs.len() as u64;
            }
            s.an += write_sigs(out, owner_at, &sigs);
        }
    }

    /// The addresses of `want`'s family an answer for `app_id` gives this client: targets
    /// in selection order while the rule that chose the first still holds, at most
    /// `max_answers` addresses, each once. Shared by the answers and the pre-signing of
    /// the answers a table can give.
    fn pick(
        &self,
        table: &RoutingTable,
        app_id: AppId,
        client: &Client,
        counter: &mut u64,
        want: u16,
    ) -> Picked {
        let mut picked = Picked {
            addrs: [None; 8],
            targets: [0; 8],
            count: 0,
            location_dependent: false,
            fail_closed: false,
        };
        let mut exclude = TargetSet::EMPTY;
        let mut first: Option<Reason> = None;
        let max = self.max_answers.min(picked.addrs.len());
        while picked.count < max {
            let choice = match table.select(app_id, client, Pick::Spread(*counter), exclude) {
                Ok(choice) => choice,
                Err(NoTarget::FailClosed) => {
                    picked.fail_closed = true;
                    return picked;
                }
                Err(NoTarget::AllExcluded) => break,
            };
            *counter = counter.wrapping_add(1);
            if let Some(first) = first {
                if !same_rule(first, choice.reason) {
                    break;
                }
            } else {
                first = Some(choice.reason);
            }
            picked.location_dependent |= choice.location_dependent;
            exclude.insert(choice.target);
            let cluster = table.target_cluster(app_id, choice.target);
            for endpoint in &cluster.endpoints {
                let ip = endpoint.ip();
                let count = picked.count;
                if count >= max || picked.addrs[..count].contains(&Some(ip)) {
                    continue;
                }
                if !matches!(
                    (want, ip),
                    (rtype::A, IpAddr::V4(_)) | (rtype::AAAA, IpAddr::V6(_))
                ) {
                    continue;
                }
                picked.addrs[count] = Some(ip);
                picked.targets[count] = choice.target;
                picked.count += 1;
            }
        }
        picked
    }

    /// Signs, with the snapshot, the GSLB answers the table can give: per app name, per
    /// client region (for the policies that look at it), per draw of the weighted pick,
    /// for A and AAAA. What a query then asks for is found without a lock or a signature.
    pub(crate) fn presign(&self, snap: &mut Snapshot) {
        let Some(table) = snap.table.clone() else {
            return;
        };
        let started = std::time::Instant::now();
        let mut made = 0u64;
        let mut key = Vec::new();
        let mut regions: Vec<Option<RegionId>> = vec![None];
        regions.extend((0..table.regions().len()).map(|r| Some(RegionId(r as u16))));
        for (owner, node) in &snap.names {
            let (Some(app_id), Some(signer)) = (
                node.app,
                snap.zones
                    .get(usize::from(node.zone))
                    .and_then(|z| z.signer.as_ref()),
            ) else {
                continue;
            };
            let app = table.app(app_id);
            let by_region = matches!(app.policy, Policy::Geo | Policy::Latency);
            let draws = if self.max_answers > 1 || app.targets.len() > 1 {
                PRESIGN_DRAWS
            } else {
                1
            };
            for region in regions
                .iter()
                .take(if by_region { regions.len() } else { 1 })
            {
                let client = Client {
                    addr: IpAddr::from([0, 0, 0, 0]),
                    region: *region,
                };
                for draw in 0..draws {
                    for want in [rtype::A, rtype::AAAA] {
                        let mut counter = draw;
                        let picked = self.pick(&table, app_id, &client, &mut counter, want);
                        if picked.fail_closed || picked.count == 0 {
                            continue;
                        }
                        let mut octets: Vec<Vec<u8>> = picked.addrs[..picked.count]
                            .iter()
                            .flatten()
                            .map(|ip| match ip {
                                IpAddr::V4(v4) => v4.octets().to_vec(),
                                IpAddr::V6(v6) => v6.octets().to_vec(),
                            })
                            .collect();
                        octets.sort_unstable();
                        let rdatas: Vec<&[u8]> = octets.iter().map(Vec::as_slice).collect();
                        dnssec::cache_key(want, owner, app.dns_ttl, &rdatas, &mut key);
                        if snap.sigs.presigned.contains_key(key.as_slice()) {
                            continue;
                        }
                        let sigs = signer.sign_rrset(owner, want, app.dns_ttl, &rdatas);
                        made += sigs.len() as u64;
                        snap.sigs
                            .presigned
                            .insert(key.as_slice().into(), sigs.into());
                    }
                }
            }
        }
        snap.signed.0 += made;
        snap.signed.1 += started.elapsed();
    }

    /// The client's address and region, and the ECS scope an answer chosen by them carries
    /// (0 without ECS). A configured override places any ECS address, private ones too
    /// (on-premises clients reach their cluster that way); a private address nothing
    /// places says nothing of where the client is, so the answer is the resolver's, scoped
    /// to the client's own network so a cache never hands it to clients placed elsewhere.
    fn locate(
        &self,
        snap: &Snapshot,
        table: &RoutingTable,
        src: IpAddr,
        ecs: Option<Ecs>,
    ) -> (Client, u8) {
        let Some(e) = ecs.filter(|e| e.source > 0) else {
            let (region, _) = self.place(snap, table, src);
            return (Client { addr: src, region }, 0);
        };
        let (region, scope) = self.place(snap, table, e.addr);
        // Never 0 for an answer chosen by location: resolvers cache scope 0 for every
        // client of either family.
        let scope = scope.max(1);
        if region.is_none() && !is_routable(e.addr) {
            let (region, _) = self.place(snap, table, src);
            return (Client { addr: src, region }, scope.max(e.source));
        }
        (
            Client {
                addr: e.addr,
                region,
            },
            scope,
        )
    }

    /// The region of `addr` (the table's CIDR overrides first, then the geo databases) and
    /// the prefix length over which every address gets that same region.
    fn place(&self, snap: &Snapshot, table: &RoutingTable, addr: IpAddr) -> (Option<RegionId>, u8) {
        let subnet = table.resolve_subnet(addr);
        if subnet.region.is_some() || self.geo.is_empty() {
            return (subnet.region, subnet.scope);
        }
        let (country, prefix) = self.geo.country(addr);
        let region = country.and_then(|cc| snap.countries.get(&cc).copied());
        (region, subnet.scope.max(prefix))
    }
}

/// Seconds since the Unix epoch (the signatures' clock).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn same_rule(first: Reason, next: Reason) -> bool {
    match (first, next) {
        (Reason::Tier { tier: a }, Reason::Tier { tier: b }) => a == b,
        (a, b) => discriminant(&a) == discriminant(&b),
    }
}

enum Found<'a> {
    Node(&'a Node),
    Cut(usize),
    Missing(u16),
    Refused,
}

/// What a negative answer denies, for its NSEC in a signed zone.
#[derive(Clone, Copy)]
enum Denial<'a> {
    /// The name does not exist (NXNAME in the bitmap; the rcode becomes NOERROR, RFC 9824).
    NxName,
    /// The name exists; this type is not there.
    NoData(&'a Node, u16),
    /// A wildcard app's name (no node of its own): A and AAAA, less this type.
    AppName(u16),
}

/// How many draws of the weighted pick are signed ahead per app and region.
const PRESIGN_DRAWS: u64 = 32;

/// The addresses one answer gives.
struct Picked {
    addrs: [Option<IpAddr>; 8],
    /// The target of each address (for the answer counters).
    targets: [usize; 8],
    count: usize,
    location_dependent: bool,
    fail_closed: bool,
}

/// Writes RRSIGs owned by the name at `owner_at`; returns how many.
fn write_sigs(out: &mut Vec<u8>, owner_at: usize, sigs: &[Box<[u8]>]) -> u16 {
    for sig in sigs {
        write_rr(out, owner_at, sig);
    }
    sigs.len() as u16
}

/// Writes the compact-denial NSEC at `owner` (pointed to by `owner_at`) and its RRSIGs;
/// returns how many records.
#[expect(
    clippy::too_many_arguments,
    reason = "the zone's signer and TTL, the owner twice (name and position), the denial"
)]
fn write_nsec(
    snap: &Snapshot,
    signer: &ZoneSigner,
    owner: &[u8],
    owner_at: usize,
    denial: Denial<'_>,
    ttl: u32,
    sg: &mut Signing<'_>,
    out: &mut Vec<u8>,
) -> u16 {
    let mut types = [0u16; 20];
    let n = match denial {
        Denial::NxName => {
            types[0] = dtype::NXNAME;
            1
        }
        Denial::NoData(node, except) => node_types(node, except, &mut types),
        Denial::AppName(except) => {
            let mut n = 0;
            for t in [rtype::A, rtype::AAAA] {
                if t != except {
                    types[n] = t;
                    n += 1;
                }
            }
            n
        }
    };
    let Scratch { key, rdata } = &mut *sg.scratch;
    rdata.clear();
    if !dnssec::nsec_rdata(owner, &types[..n], rdata) {
        return 0;
    }
    dnssec::cache_key(dtype::NSEC, owner, ttl, &[rdata], key);
    let mut made = false;
    let sigs = snap.sigs.get_or_sign(key, &mut made, || {
        signer.sign_rrset(owner, dtype::NSEC, ttl, &[rdata])
    });
    if made {
        sg.made += sigs.len() as u64;
    }
    out.extend_from_slice(&pointer(owner_at));
    put_u16(out, dtype::NSEC);
    put_u16(out, 1);
    put_u32(out, ttl);
    put_u16(out, rdata.len() as u16);
    out.extend_from_slice(rdata);
    1 + write_sigs(out, owner_at, &sigs)
}

/// NXDOMAIN / NODATA authority: the zone's SOA, owner pointed into `owner` when the apex is
/// a suffix of it. `cap` lowers the TTL (fail-closed answers). With DO in a signed zone,
/// the SOA's RRSIGs and the NSEC proving `denial` follow, and a name that does not exist
/// is answered NOERROR (compact denial, RFC 9824).
#[expect(
    clippy::too_many_arguments,
    reason = "the zone, the owner twice (name and position), the TTL cap, the denial"
)]
fn negative(
    snap: &Snapshot,
    zone: u16,
    owner: &[u8],
    owner_at: usize,
    cap: Option<u32>,
    denial: Denial<'_>,
    sg: &mut Signing<'_>,
    s: &mut Sections,
    out: &mut Vec<u8>,
) {
    let Some(zone) = snap.zones.get(usize::from(zone)) else {
        return;
    };
    let soa_at = match zone_offset(owner, &zone.apex) {
        Some(off) => {
            out.extend_from_slice(&pointer(owner_at + off));
            owner_at + off
        }
        None => {
            let at = out.len();
            out.extend_from_slice(&zone.apex);
            at
        }
    };
    let ttl_at = out.len() + 4;
    out.extend_from_slice(&zone.negative_soa);
    if let Some(cap) = cap {
        let ttl = zone.negative_ttl.min(cap);
        out[ttl_at..ttl_at + 4].copy_from_slice(&ttl.to_be_bytes());
    }
    s.ns += 1;
    if let (true, Some(signer)) = (sg.dnssec_ok, &zone.signer)
        && soa_at < 0x4000
        && owner_at < 0x4000
    {
        s.ns += write_sigs(out, soa_at, &zone.soa_sigs);
        s.ns += write_nsec(
            snap,
            signer,
            owner,
            owner_at,
            denial,
            zone.negative_ttl,
            sg,
            out,
        );
        if matches!(denial, Denial::NxName) && s.rcode == rcode::NXDOMAIN {
            s.rcode = rcode::NOERROR;
        }
    }
}

/// Appends an OPT record: our payload size, the upper bits of an extended rcode, the DO
/// bit as the query had it (RFC 3225), and the ECS echo (family, source prefix and address
/// as received, our scope).
fn push_opt(out: &mut Vec<u8>, rc: u16, dnssec_ok: bool, ecs: Option<(Ecs, u8)>) {
    out.push(0);
    put_u16(out, rtype::OPT);
    put_u16(out, OUR_UDP_PAYLOAD);
    put_u32(
        out,
        (u32::from((rc >> 4) as u8) << 24) | if dnssec_ok { 0x8000 } else { 0 },
    );
    match ecs {
        None => put_u16(out, 0),
        Some((e, scope)) => {
            let addr_len = usize::from(e.source).div_ceil(8);
            put_u16(out, (8 + addr_len) as u16);
            put_u16(out, 8);
            put_u16(out, (4 + addr_len) as u16);
            put_u16(out, e.family);
            out.push(e.source);
            out.push(scope);
            match e.addr {
                IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()[..addr_len]),
                IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()[..addr_len]),
            }
        }
    }
}
