//! Counters of the DNS server, kept in atomics so the query path never locks, rendered in
//! the Prometheus text format on demand.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use meridian_routing::RoutingTable;
use meridian_subscriber::report::AnswerSample;

use crate::wire::rtype;

/// Query types counted by name; everything else is `other`.
const TYPES: [(u16, &str); 12] = [
    (rtype::A, "A"),
    (rtype::AAAA, "AAAA"),
    (rtype::CNAME, "CNAME"),
    (rtype::MX, "MX"),
    (rtype::TXT, "TXT"),
    (rtype::NS, "NS"),
    (rtype::SOA, "SOA"),
    (rtype::SRV, "SRV"),
    (rtype::CAA, "CAA"),
    (rtype::ANY, "ANY"),
    (rtype::AXFR, "AXFR"),
    (0, "other"),
];
const RCODES: [&str; 7] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other",
];
/// Kinds of query counted: one per (type, rcode).
const QUERY_KINDS: usize = TYPES.len() * RCODES.len();
const _: () = assert!(
    QUERY_KINDS <= 128,
    "Tally marks the kinds it holds in a u128"
);

/// One (app, cluster) answer counter, shared by every snapshot whose table has that target.
pub(crate) type AnswerCounter = Arc<AtomicU64>;
/// (app name, cluster name).
type TargetName = (Box<str>, Box<str>);

fn query_kind(qtype: u16, rcode: u16) -> usize {
    let t = TYPES
        .iter()
        .position(|(code, _)| *code == qtype)
        .unwrap_or(TYPES.len() - 1);
    let r = usize::from(rcode).min(RCODES.len() - 1);
    t * RCODES.len() + r
}

/// The per-query counts of one worker between two flushes: an atomic add is a locked
/// instruction, two of them per query were ≈ 1 % of a UDP worker's time; one per kind per
/// batch is not. The UDP loop flushes after every batch, the TCP loop after every read,
/// and a dropped tally flushes what it holds.
pub(crate) struct Tally {
    metrics: Arc<Metrics>,
    queries: [u32; QUERY_KINDS],
    /// Bit `i` set: `queries[i]` is not zero.
    held: u128,
    ecs_seen: u32,
}

impl Tally {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Tally {
            metrics,
            queries: [0; QUERY_KINDS],
            held: 0,
            ecs_seen: 0,
        }
    }

    /// Counts one answered query.
    pub(crate) fn count(&mut self, qtype: u16, rcode: u16) {
        let kind = query_kind(qtype, rcode);
        self.queries[kind] += 1;
        self.held |= 1 << kind;
    }

    /// Counts a query that carried an ECS option.
    pub(crate) fn ecs_seen(&mut self) {
        self.ecs_seen += 1;
    }

    /// Adds what the tally holds to the shared counters and empties it.
    pub(crate) fn flush(&mut self) {
        while self.held != 0 {
            let kind = self.held.trailing_zeros() as usize;
            self.held &= self.held - 1;
            let n = std::mem::take(&mut self.queries[kind]);
            self.metrics.queries[kind].fetch_add(u64::from(n), Ordering::Relaxed);
        }
        if self.ecs_seen > 0 {
            let n = std::mem::take(&mut self.ecs_seen);
            self.metrics
                .ecs_seen
                .fetch_add(u64::from(n), Ordering::Relaxed);
        }
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The server's counters.
pub struct Metrics {
    queries: Box<[AtomicU64]>,
    /// Addresses given per (app, cluster), by name: a new table may order apps and targets
    /// differently, and a count must stay with its app. Entries no snapshot uses are
    /// dropped when a snapshot is built, so the map holds the targets of live tables only.
    answers: Mutex<HashMap<TargetName, AnswerCounter>>,
    /// Queries that carried an EDNS Client Subnet option.
    pub ecs_seen: AtomicU64,
    /// Responses dropped by rate limiting.
    pub rrl_dropped: AtomicU64,
    /// Responses sent truncated by rate limiting (slip).
    pub rrl_slipped: AtomicU64,
    /// Packets not answered at all (too short, responses, oversized).
    pub dropped: AtomicU64,
    /// Responses with TC set.
    pub truncated: AtomicU64,
    /// App answers given as NODATA because the app fails closed with no serving target.
    pub fail_closed: AtomicU64,
    /// TCP connections closed on accept (connection limits).
    pub tcp_refused: AtomicU64,
    /// TCP connections closed because a query did not arrive whole in time.
    pub tcp_timed_out: AtomicU64,
    /// DNSSEC signatures made when tables arrived (and at re-signing).
    pub dnssec_table_signatures: AtomicU64,
    /// DNSSEC signatures made while answering (an answer nobody signed ahead).
    pub dnssec_inline_signatures: AtomicU64,
    /// Microseconds the last table's signing took.
    pub dnssec_last_table_micros: AtomicU64,
    /// Microseconds spent signing tables, in all.
    pub dnssec_table_micros: AtomicU64,
    /// Signatures of GSLB answers and denials made ahead for the current table.
    pub dnssec_presigned: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        let zeros = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect();
        Metrics {
            queries: zeros(QUERY_KINDS),
            answers: Mutex::new(HashMap::new()),
            ecs_seen: AtomicU64::new(0),
            rrl_dropped: AtomicU64::new(0),
            rrl_slipped: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
            fail_closed: AtomicU64::new(0),
            tcp_refused: AtomicU64::new(0),
            tcp_timed_out: AtomicU64::new(0),
            dnssec_table_signatures: AtomicU64::new(0),
            dnssec_inline_signatures: AtomicU64::new(0),
            dnssec_last_table_micros: AtomicU64::new(0),
            dnssec_table_micros: AtomicU64::new(0),
            dnssec_presigned: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Records the signing of one table: signatures made, time taken, entries signed ahead.
    pub(crate) fn dnssec_signed(&self, made: u64, took: std::time::Duration, presigned: usize) {
        let micros = took.as_micros() as u64;
        self.dnssec_table_signatures
            .fetch_add(made, Ordering::Relaxed);
        self.dnssec_last_table_micros
            .store(micros, Ordering::Relaxed);
        self.dnssec_table_micros
            .fetch_add(micros, Ordering::Relaxed);
        self.dnssec_presigned
            .store(presigned as u64, Ordering::Relaxed);
    }

    /// Counts one answered query.
    pub fn count(&self, qtype: u16, rcode: u16) {
        self.queries[query_kind(qtype, rcode)].fetch_add(1, Ordering::Relaxed);
    }

    /// The answer counters for every target of `table`, per app in table order, for a new
    /// snapshot; forgets the counters of targets no snapshot holds any more.
    pub(crate) fn answer_counters(&self, table: &RoutingTable) -> Vec<Vec<AnswerCounter>> {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let counters = table
            .apps()
            .iter()
            .map(|app| {
                app.targets
                    .iter()
                    .map(|target| {
                        answers
                            .entry((app.name.as_str().into(), target.cluster.as_str().into()))
                            .or_default()
                            .clone()
                    })
                    .collect()
            })
            .collect();
        answers.retain(|_, counter| Arc::strong_count(counter) > 1);
        counters
    }

    /// Addresses given for `app` from `cluster` so far.
    pub fn answers(&self, app: &str, cluster: &str) -> u64 {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        answers
            .get(&(app.into(), cluster.into()))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Every live target's answer count (the targets of the tables being served), for the
    /// vantage reports; targets that have given no answer yet are left out.
    pub fn answer_samples(&self) -> Vec<AnswerSample> {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let mut samples: Vec<AnswerSample> = answers
            .iter()
            .map(|((app, cluster), counter)| AnswerSample {
                app: app.to_string(),
                cluster: cluster.to_string(),
                answers: counter.load(Ordering::Relaxed),
            })
            .filter(|s| s.answers > 0)
            .collect();
        samples.sort_by(|a, b| (&a.app, &a.cluster).cmp(&(&b.app, &b.cluster)));
        samples
    }

    /// Queries answered with `qtype` and `rcode` (names as in the metric labels).
    pub fn queries(&self, qtype: &str, rcode: &str) -> u64 {
        let t = TYPES.iter().position(|(_, n)| *n == qtype);
        let r = RCODES.iter().position(|n| *n == rcode);
        match (t, r) {
            (Some(t), Some(r)) => self.queries[t * RCODES.len() + r].load(Ordering::Relaxed),
            _ => 0,
        }
    }

    /// The Prometheus text exposition. Answer counters are given for the targets of
    /// `table`, the table now served.
    pub fn render(&self, table: Option<&RoutingTable>, staleness_s: Option<f64>) -> String {
        let mut out = String::new();
        out.push_str("# HELP meridian_dns_queries_total DNS queries answered, by type and rcode.\n# TYPE meridian_dns_queries_total counter\n");
        for (t, (_, tname)) in TYPES.iter().enumerate() {
            for (r, rname) in RCODES.iter().enumerate() {
                let v = self.queries[t * RCODES.len() + r].load(Ordering::Relaxed);
                if v > 0 {
                    let _ = writeln!(
                        out,
                        "meridian_dns_queries_total{{qtype=\"{tname}\",rcode=\"{rname}\"}} {v}"
                    );
                }
            }
        }
        out.push_str("# HELP meridian_dns_answers_total Addresses given in app answers, by app and target cluster.\n# TYPE meridian_dns_answers_total counter\n");
        if let Some(table) = table {
            for app in table.apps() {
                for target in &app.targets {
                    let v = self.answers(&app.name, &target.cluster);
                    let _ = writeln!(
                        out,
                        "meridian_dns_answers_total{{app=\"{}\",cluster=\"{}\"}} {v}",
                        app.name, target.cluster
                    );
                }
            }
        }
        for (name, help, v) in [
            (
                "meridian_dns_ecs_queries_total",
                "Queries that carried EDNS Client Subnet.",
                &self.ecs_seen,
            ),
            (
                "meridian_dns_rrl_dropped_total",
                "Responses dropped by response rate limiting.",
                &self.rrl_dropped,
            ),
            (
                "meridian_dns_rrl_slipped_total",
                "Responses sent truncated by response rate limiting.",
                &self.rrl_slipped,
            ),
            (
                "meridian_dns_dropped_total",
                "Packets not answered (malformed beyond a header, responses, oversized).",
                &self.dropped,
            ),
            (
                "meridian_dns_truncated_total",
                "Responses sent with TC set.",
                &self.truncated,
            ),
            (
                "meridian_dns_fail_closed_total",
                "App answers given as NODATA because the app fails closed.",
                &self.fail_closed,
            ),
            (
                "meridian_dns_tcp_refused_total",
                "TCP connections closed on accept by the connection limits.",
                &self.tcp_refused,
            ),
            (
                "meridian_dns_tcp_timed_out_total",
                "TCP connections closed because a query did not arrive whole in time.",
                &self.tcp_timed_out,
            ),
            (
                "meridian_dns_dnssec_table_signatures_total",
                "DNSSEC signatures made when routing tables arrived (and when re-signing).",
                &self.dnssec_table_signatures,
            ),
            (
                "meridian_dns_dnssec_inline_signatures_total",
                "DNSSEC signatures made while answering (answers not signed ahead).",
                &self.dnssec_inline_signatures,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP meridian_dns_dnssec_table_signing_seconds_total Time spent signing routing tables.\n# TYPE meridian_dns_dnssec_table_signing_seconds_total counter\nmeridian_dns_dnssec_table_signing_seconds_total {:.6}",
            self.dnssec_table_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "# HELP meridian_dns_dnssec_last_table_signing_seconds Time the last routing table's signing took.\n# TYPE meridian_dns_dnssec_last_table_signing_seconds gauge\nmeridian_dns_dnssec_last_table_signing_seconds {:.6}",
            self.dnssec_last_table_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "# HELP meridian_dns_dnssec_presigned_entries GSLB answers and denials signed ahead for the table served.\n# TYPE meridian_dns_dnssec_presigned_entries gauge\nmeridian_dns_dnssec_presigned_entries {}",
            self.dnssec_presigned.load(Ordering::Relaxed)
        );
        let version = table.map_or(0, RoutingTable::version);
        let _ = writeln!(
            out,
            "# HELP meridian_dns_table_version Version of the routing table served (0: none).\n# TYPE meridian_dns_table_version gauge\nmeridian_dns_table_version {version}"
        );
        if let Some(s) = staleness_s {
            let _ = writeln!(
                out,
                "# HELP meridian_dns_table_staleness_seconds Age of the routing table served.\n# TYPE meridian_dns_table_staleness_seconds gauge\nmeridian_dns_table_staleness_seconds {s:.3}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_reaches_the_metrics_when_flushed_and_when_dropped() {
        let metrics = Arc::new(Metrics::default());
        let mut tally = Tally::new(metrics.clone());
        tally.count(rtype::A, 0);
        tally.count(rtype::A, 0);
        tally.count(rtype::MX, 3);
        tally.count(999, 42);
        tally.ecs_seen();
        assert_eq!(metrics.queries("A", "NOERROR"), 0, "held until flushed");
        tally.flush();
        assert_eq!(metrics.queries("A", "NOERROR"), 2);
        assert_eq!(metrics.queries("MX", "NXDOMAIN"), 1);
        assert_eq!(metrics.queries("other", "other"), 1);
        assert_eq!(metrics.ecs_seen.load(Ordering::Relaxed), 1);
        // Flushed counts are not added twice; what is left goes in on drop.
        tally.flush();
        tally.count(rtype::A, 0);
        drop(tally);
        assert_eq!(metrics.queries("A", "NOERROR"), 3);
        assert_eq!(metrics.ecs_seen.load(Ordering::Relaxed), 1);
    }
}
