//! The edges of the protocol, against a running server over real sockets: ANY answered with
//! one whole RRset, the additional section given up before the answer, referrals with all
//! their glue (or TC), CNAME loops, the DO bit, errors that keep the OPT record, EDNS
//! queries over 512 bytes, and IPv4 and IPv6 listeners in one process.

mod dns_support;

use std::net::SocketAddr;
use std::sync::Arc;

use dns_support::{CONFIG, Opts, Server, kdig, message, tcp, udp, udp_raw};
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{RData, RecordType};
use meridian_dns::{Action, Handler, Metrics, Transport, Worker};
use meridian_subscriber::TableCell;

/// CONFIG with more records: a second SRV at `_sip._tcp`, an MX whose exchange has 40
/// addresses (the additional section alone overflows 512 bytes), and a delegation with 20
/// name servers, each with glue.
fn config() -> String {
    let mut extra = String::from(
        "      - { name: _sip._tcp, type: SRV, value: \"20 40 5061 sip2.example.test\" }\n      - { name: sip2, type: A, value: 192.0.2.51 }\n      - { name: bigmx, type: MX, value: \"10 pool.example.test\" }\n",
    );
    for i in 0..40 {
        extra.push_str(&format!(
            "      - {{ name: pool, type: A, value: 192.0.2.{} }}\n",
            100 + i
        ));
    }
    for i in 0..20 {
        extra.push_str(&format!(
            "      - {{ name: wide, type: NS, value: ns{i}.wide.example.test }}\n      - {{ name: ns{i}.wide, type: A, value: 127.0.9.{i} }}\n"
        ));
    }
    CONFIG.replacen(
        "      - { name: big, type: TXT,",
        &format!("{extra}      - {{ name: big, type: TXT,"),
        1,
    )
}

fn edns(payload: u16) -> Opts {
    Opts {
        edns: Some(payload),
        ecs: None,
    }
}

#[test]
fn any_returns_one_whole_rrset() {
    let server = Server::start(&config());
    let sip = udp(
        server.addr(),
        "_sip._tcp.example.test.",
        RecordType::ANY,
        edns(1232),
    );
    assert_eq!(sip.answers.len(), 2, "both SRV records: {:?}", sip.answers);
    assert!(
        sip.answers
            .iter()
            .all(|r| r.record_type() == RecordType::SRV)
    );
    let big = tcp(
        server.addr(),
        "big.example.test.",
        RecordType::ANY,
        Opts::default(),
    );
    assert_eq!(big.answers.len(), 6, "all 6 TXT records");
    // Over UDP without EDNS the 6 TXT do not fit: TC, never a part of the RRset.
    let cut = udp(
        server.addr(),
        "big.example.test.",
        RecordType::ANY,
        Opts::default(),
    );
    assert!(cut.metadata.truncation);
    assert!(cut.answers.is_empty());
}

#[test]
fn the_additional_section_is_given_up_before_the_answer() {
    let server = Server::start(&config());
    let a = server.addr();
    // 40 addresses for the exchange do not fit in 512 bytes; the MX answer does.
    let small = udp(a, "bigmx.example.test.", RecordType::MX, Opts::default());
    assert!(
        !small.metadata.truncation,
        "TC only when the answer does not fit"
    );
    assert_eq!(small.answers.len(), 1);
    assert!(small.additionals.is_empty());
    assert_eq!(small.metadata.response_code, ResponseCode::NoError);
    // With room, the additional section comes whole.
    let roomy = udp(a, "bigmx.example.test.", RecordType::MX, edns(1232));
    assert!(!roomy.metadata.truncation);
    let glue = roomy
        .additionals
        .iter()
        .filter(|r| r.record_type() == RecordType::A)
        .count();
    assert_eq!(glue, 40);
    // kdig agrees: an answer, no tc flag.
    let text = kdig(a, &["+noedns", "+notcp", "bigmx.example.test", "MX"]);
    assert!(text.contains("ANSWER: 1"), "{text}");
    assert!(!text.contains(" tc"), "{text}");
}

#[test]
fn referrals_carry_all_in_zone_glue_or_set_tc() {
    let server = Server::start(&config());
    let a = server.addr();
    let glue = |m: &Message| {
        m.additionals
            .iter()
            .filter(|r| matches!(r.data, RData::A(_)))
            .count()
    };
    // 20 NS records and 20 glue records do not fit in 512 bytes: TC over UDP.
    let small = udp(a, "host.wide.example.test.", RecordType::A, Opts::default());
    assert!(small.metadata.truncation, "{small:?}");
    // With EDNS they fit: every glue record, not 16.
    let roomy = udp(a, "host.wide.example.test.", RecordType::A, edns(1232));
    assert!(!roomy.metadata.truncation);
    assert_eq!(roomy.authorities.len(), 20);
    assert_eq!(glue(&roomy), 20);
    // Over TCP, the same.
    let full = tcp(a, "host.wide.example.test.", RecordType::A, Opts::default());
    assert!(!full.metadata.truncation);
    assert_eq!(glue(&full), 20);
}

#[test]
fn a_cname_loop_is_answered_once_per_record() {
    // `meridian check` refuses a loop (config/tests/bad/cname-loop.yaml); a server given one
    // anyway (a library user, a future source of zones) must not repeat it.
    let zone: meridian_config::schema::ZoneConfig = serde_norway::from_str(
        r#"
name: loop.test
soa: { mname: ns1.loop.test, rname: hostmaster.loop.test }
ns: [ns1.loop.test]
records:
  - { name: a, type: CNAME, value: b.loop.test }
  - { name: b, type: CNAME, value: a.loop.test }
"#,
    )
    .unwrap();
    let zones = meridian_dns::snapshot::Zones::from_config(&[zone]).unwrap();
    let handler = Handler::new(
        zones,
        meridian_dns::geo::GeoDb::default(),
        Arc::new(TableCell::new()),
        1,
        Arc::new(Metrics::default()),
        None,
    );
    let mut worker = Worker::new(&handler, 1);
    let query = message("a.loop.test.", RecordType::A, Opts::default())
        .to_vec()
        .unwrap();
    let mut out = Vec::new();
    let action = handler.handle(
        &mut worker,
        &query,
        "127.0.0.1".parse().unwrap(),
        Transport::Udp,
        &mut out,
    );
    assert_eq!(action, Action::Send);
    let reply = Message::from_vec(&out).unwrap();
    let owners: Vec<String> = reply.answers.iter().map(|r| r.name.to_string()).collect();
    assert_eq!(owners, ["a.loop.test.", "b.loop.test."], "each CNAME once");
}

#[test]
fn the_do_bit_is_copied_and_errors_keep_their_opt() {
    let server = Server::start(CONFIG);
    let a = server.addr();
    let mut q = message("www.example.test.", RecordType::A, edns(1232));
    q.edns.as_mut().unwrap().set_dnssec_ok(true);
    let reply = Message::from_vec(&udp_raw(a, &q.to_vec().unwrap()).unwrap()).unwrap();
    assert!(
        reply.edns.as_ref().unwrap().flags().dnssec_ok,
        "DO echoed (RFC 3225)"
    );
    let plain = udp(a, "www.example.test.", RecordType::A, edns(1232));
    assert!(!plain.edns.as_ref().unwrap().flags().dnssec_ok);

    // An ECS option with bits set beyond its source prefix: FORMERR, with an OPT.
    let mut bad = message("www.example.test.", RecordType::A, edns(1232))
        .to_vec()
        .unwrap();
    // Replace the empty OPT rdata with an ECS option: family 1, source 23, 198.51.101.
    let n = bad.len();
    bad[n - 2..].copy_from_slice(&11u16.to_be_bytes());
    bad.extend_from_slice(&[0, 8, 0, 7, 0, 1, 23, 0, 198, 51, 101]);
    let raw = udp_raw(a, &bad).expect("a reply");
    assert_eq!(raw[3] & 0x0f, 1, "FORMERR");
    let reply = Message::from_vec(&raw).unwrap();
    assert!(
        reply.edns.is_some(),
        "the error carries an OPT (RFC 6891 §7)"
    );
}

#[test]
fn edns_queries_over_512_bytes_are_answered_over_udp() {
    let server = Server::start(CONFIG);
    let padded = |len: usize| {
        let mut q = message("www.example.test.", RecordType::A, Opts::default());
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        // Padding (RFC 7830) to push the query past 512 bytes.
        edns.options_mut()
            .insert(EdnsOption::Unknown(12, vec![0; len]));
        q.edns = Some(edns);
        q.to_vec().unwrap()
    };
    let bytes = padded(600);
    assert!(bytes.len() > 512);
    let reply = Message::from_vec(&udp_raw(server.addr(), &bytes).expect("answered")).unwrap();
    assert_eq!(reply.answers.len(), 1);
    // Past what any query needs: not answered.
    assert_eq!(udp_raw(server.addr(), &padded(5000)), None);
    // Over 512 bytes without EDNS: not a query a client may send over UDP.
    let mut plain = message("www.example.test.", RecordType::A, Opts::default())
        .to_vec()
        .unwrap();
    plain[11] = 1; // ARCOUNT: one TXT record with 600 bytes of data
    plain.extend_from_slice(&[0, 0, 16, 0, 1, 0, 0, 0, 0, 0x02, 0x58]);
    plain.extend_from_slice(&[0; 600]);
    assert_eq!(udp_raw(server.addr(), &plain), None);
}

#[test]
fn one_process_listens_on_ipv4_and_ipv6() {
    let server = Server::start(&CONFIG.replace(
        "  listen: 127.0.0.1:0\n",
        "  listen: 127.0.0.1:0\n  also_listen: [\"[::1]:0\"]\n",
    ));
    let addrs = server.dns.addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    let (v6_udp, v6_tcp): (SocketAddr, SocketAddr) = addrs[1];
    assert!(v6_udp.is_ipv6() && v6_tcp.is_ipv6());
    for (udp_addr, tcp_addr) in addrs {
        let text = kdig(udp_addr, &["+notcp", "www.example.test", "A"]);
        assert!(text.contains("192.0.2.10"), "{udp_addr}: {text}");
        let text = kdig(tcp_addr, &["+tcp", "pay.example.test", "A"]);
        assert!(text.contains("127.0.1.1"), "{tcp_addr}: {text}");
    }
}
