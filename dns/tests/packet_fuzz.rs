//! A bounded fuzz of the packet handler in the normal test suite: random packets and
//! mutations of valid queries must never panic, and every response must be a well-formed
//! DNS message (hickory-proto parses it) with the query's id, QR set, within the UDP size
//! limit. The same handler serves UDP and TCP, so this covers both paths' parsing.

use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use meridian_dns::geo::GeoDb;
use meridian_dns::snapshot::Zones;
use meridian_dns::{Action, Handler, Metrics, Transport, Worker};
use meridian_routing::RoutingTable;
use meridian_subscriber::TableCell;
use proptest::prelude::*;

const CONFIG: &str = r#"
regions:
  - { name: eu, location: { lat: 50.0, lon: 8.0 } }
  - { name: us, location: { lat: 39.0, lon: -77.0 } }
geo:
  subnets:
    - { cidr: 198.51.100.0/24, region: us }
clusters:
  - { name: a, region: eu, provider: aws, endpoints: ["127.0.1.1:443", "[::1]:443"] }
  - { name: b, region: us, provider: gcp, endpoints: ["127.0.2.1:443"] }
apps:
  - { name: w, hostnames: [w.z.test, "*.wild.z.test"], policy: weighted, failure_mode: fail-open, targets: [{ cluster: a }, { cluster: b }] }
  - { name: g, hostnames: [g.z.test], policy: geo, failure_mode: fail-closed, targets: [{ cluster: a }, { cluster: b }] }
zones:
  - name: z.test
    soa: { mname: ns.z.test, rname: h.z.test }
    ns: [ns.z.test]
    records:
      - { name: ns, type: A, value: 127.0.0.53 }
      - { name: c, type: CNAME, value: w.z.test }
      - { name: "@", type: MX, value: "5 ns.z.test" }
      - { name: "@", type: TXT, value: "hello" }
      - { name: d, type: NS, value: ns.d.z.test }
      - { name: ns.d, type: A, value: 127.0.0.54 }
"#;

fn handler() -> Handler {
    let config = meridian_config::parse(CONFIG, Path::new("/nonexistent/c.yaml"))
        .unwrap_or_else(|e| panic!("{}", e.diagnostics().join("\n")));
    let cell = Arc::new(TableCell::new());
    cell.store(Arc::new(
        RoutingTable::new(config.config.base_table(1, 0)).unwrap(),
    ));
    let zones = Zones::from_config(&config.config.zones).unwrap();
    Handler::new(
        zones,
        GeoDb::default(),
        cell,
        2,
        Arc::new(Metrics::default()),
        None,
    )
}

fn valid_query(name: &str, rtype: RecordType, ecs: bool, id: u16) -> Vec<u8> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(Name::from_str(name).unwrap(), rtype));
    if ecs {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                "198.51.100.0".parse().unwrap(),
                24,
                0,
            )));
        msg.set_edns(edns);
    }
    msg.to_vec().unwrap()
}

/// Runs one packet through the handler over UDP and TCP and checks every invariant.
fn check(handler: &Handler, worker: &mut Worker, packet: &[u8], out: &mut Vec<u8>) {
    let src: IpAddr = "127.0.0.1".parse().unwrap();
    for transport in [Transport::Udp, Transport::Tcp] {
        match handler.handle(worker, packet, src, transport, out) {
            Action::Drop => assert!(
                packet.len() < 12 || packet[2] & 0x80 != 0 || packet.len() > 512,
                "dropped a packet that deserved an answer: {packet:?}"
            ),
            Action::Send => {
                assert!(out.len() >= 12);
                assert_eq!(out[..2], packet[..2], "id echoed");
                assert!(out[2] & 0x80 != 0, "QR set");
                if transport == Transport::Udp {
                    assert!(out.len() <= 1232, "UDP response of {} bytes", out.len());
                }
                let full = match Message::from_vec(out) {
                    Ok(full) => full,
                    Err(err) => panic!("response does not parse ({err}): {out:?} for {packet:?}"),
                };
                if transport == Transport::Udp {
                    check_truncated(out, &full);
                }
            }
        }
    }
}

/// What a UDP answer becomes when the link cannot carry it: the same header and question,
/// TC set, no records but the OPT record, whose flags (DO) and rcode are kept.
fn check_truncated(out: &[u8], full: &Message) {
    let mut cut = out.to_vec();
    meridian_dns::wire::truncate_response(&mut cut).expect("our answer is well formed");
    let tc = Message::from_vec(&cut)
        .unwrap_or_else(|err| panic!("truncated answer does not parse ({err}): {cut:?}"));
    assert!(tc.metadata.truncation, "TC set");
    assert_eq!(tc.metadata.id, full.metadata.id);
    assert_eq!(tc.queries, full.queries);
    assert_eq!(tc.metadata.response_code, full.metadata.response_code);
    assert!(tc.answers.is_empty() && tc.authorities.is_empty() && tc.additionals.is_empty());
    assert_eq!(
        tc.edns
            .as_ref()
            .map(|e| (e.flags().dnssec_ok, e.max_payload())),
        full.edns
            .as_ref()
            .map(|e| (e.flags().dnssec_ok, e.max_payload()))
    );
}

fn corpus() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let names = [
        "w.z.test.",
        "G.Z.TEST.",
        "c.z.test.",
        "z.test.",
        "x.d.z.test.",
        "a.wild.z.test.",
        "nope.z.test.",
        "other.test.",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::MX,
        RecordType::ANY,
        RecordType::NS,
        RecordType::TXT,
        RecordType::DS,
        RecordType::AXFR,
    ];
    for (i, name) in names.iter().enumerate() {
        for (j, t) in types.iter().enumerate() {
            out.push(valid_query(name, *t, (i + j) % 2 == 0, (i * 31 + j) as u16));
        }
    }
    out
}

#[test]
fn every_valid_query_gets_a_well_formed_answer() {
    let handler = handler();
    let mut worker = Worker::new(&handler, 1);
    let mut out = Vec::new();
    for packet in corpus() {
        check(&handler, &mut worker, &packet, &mut out);
        // The question comes back as sent.
        handler.handle(
            &mut worker,
            &packet,
            "127.0.0.1".parse().unwrap(),
            Transport::Tcp,
            &mut out,
        );
        let q = Message::from_vec(&packet).unwrap();
        let r = Message::from_vec(&out).unwrap();
        assert_eq!(q.queries, r.queries);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_packets_never_break_the_handler(packet in proptest::collection::vec(any::<u8>(), 0..600)) {
        let handler = handler_once();
        let mut worker = Worker::new(handler, 2);
        let mut out = Vec::new();
        check(handler, &mut worker, &packet, &mut out);
    }

    #[test]
    fn mutated_queries_never_break_the_handler(
        pick in 0usize..64,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in proptest::option::of(any::<usize>()),
        extra in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let handler = handler_once();
        let corpus = corpus();
        let mut packet = corpus[pick % corpus.len()].clone();
        for (at, byte) in flips {
            let n = packet.len();
            packet[at % n] = byte;
        }
        if let Some(cut) = cut {
            let n = packet.len();
            packet.truncate(cut % (n + 1));
        }
        packet.extend_from_slice(&extra);
        let mut worker = Worker::new(handler, 3);
        let mut out = Vec::new();
        check(handler, &mut worker, &packet, &mut out);
    }
}

fn handler_once() -> &'static Handler {
    static HANDLER: std::sync::OnceLock<Handler> = std::sync::OnceLock::new();
    HANDLER.get_or_init(handler)
}
