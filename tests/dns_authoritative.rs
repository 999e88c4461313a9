//! Authoritative correctness over UDP and TCP, as a client sees it: a real server on a
//! loopback port, queried with hickory-proto messages over std sockets and with kdig.

mod dns_support;

use std::io::Read;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dns_support::{CONFIG, Opts, Server, addrs, kdig, message, tcp, tcp_many, udp, udp_raw};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use meridian_subscriber::TableCell;

fn rtypes(records: &[hickory_proto::rr::Record]) -> Vec<RecordType> {
    records.iter().map(|r| r.record_type()).collect()
}

fn assert_authoritative(msg: &Message, rcode: ResponseCode) {
    assert_eq!(msg.metadata.response_code, rcode, "{msg:?}");
    assert!(msg.metadata.authoritative, "AA must be set: {msg:?}");
    assert!(!msg.metadata.recursion_available, "RA must be clear");
}

#[test]
fn soa_and_ns_at_the_apex_with_glue() {
    let server = Server::start(CONFIG);
    let soa = udp(
        server.addr(),
        "example.test.",
        RecordType::SOA,
        Opts::default(),
    );
    assert_authoritative(&soa, ResponseCode::NoError);
    let RData::SOA(data) = &soa.answers[0].data else {
        panic!("not a SOA: {soa:?}")
    };
    assert_eq!(data.serial, 1, "serial follows the table version");
    assert_eq!(data.minimum, 60);
    assert_eq!(soa.answers[0].ttl, 300);

    let ns = udp(
        server.addr(),
        "example.test.",
        RecordType::NS,
        Opts::default(),
    );
    assert_authoritative(&ns, ResponseCode::NoError);
    assert_eq!(rtypes(&ns.answers), vec![RecordType::NS, RecordType::NS]);
    assert_eq!(
        rtypes(&ns.additionals),
        vec![RecordType::A, RecordType::AAAA],
        "glue for in-zone name servers"
    );

    // A new table version moves the serial.
    server.update(|_| {});
    let soa = udp(
        server.addr(),
        "example.test.",
        RecordType::SOA,
        Opts::default(),
    );
    let RData::SOA(data) = &soa.answers[0].data else {
        panic!("not a SOA")
    };
    assert_eq!(data.serial, 2);
}

#[test]
fn static_records_of_every_type() {
    let server = Server::start(CONFIG);
    let a = server.addr();
    let www = udp(a, "www.example.test.", RecordType::A, Opts::default());
    assert_authoritative(&www, ResponseCode::NoError);
    assert_eq!(
        addrs(&www),
        vec!["192.0.2.10".parse::<std::net::IpAddr>().unwrap()]
    );
    let www6 = udp(a, "www.example.test.", RecordType::AAAA, Opts::default());
    assert_eq!(
        addrs(&www6),
        vec!["2001:db8::10".parse::<std::net::IpAddr>().unwrap()]
    );

    let mx = udp(a, "example.test.", RecordType::MX, Opts::default());
    let RData::MX(m) = &mx.answers[0].data else {
        panic!("{mx:?}")
    };
    assert_eq!(m.preference, 10);
    assert_eq!(m.exchange.to_string(), "mail.example.test.");
    assert_eq!(rtypes(&mx.additionals), vec![RecordType::A]);

    let txt = udp(a, "example.test.", RecordType::TXT, Opts::default());
    let RData::TXT(t) = &txt.answers[0].data else {
        panic!("{txt:?}")
    };
    assert_eq!(t.to_string(), "v=spf1 -all");

    let caa = udp(a, "example.test.", RecordType::CAA, Opts::default());
    assert_eq!(rtypes(&caa.answers), vec![RecordType::CAA]);
    let text = kdig(a, &["example.test", "CAA", "+short"]);
    assert_eq!(text.trim(), "0 issue \"letsencrypt.org\"");

    let srv = udp(
        a,
        "_sip._tcp.example.test.",
        RecordType::SRV,
        Opts::default(),
    );
    let RData::SRV(s) = &srv.answers[0].data else {
        panic!("{srv:?}")
    };
    assert_eq!((s.priority, s.weight, s.port), (10, 60, 5060));
    assert_eq!(s.target.to_string(), "sip.example.test.");
    assert_eq!(rtypes(&srv.additionals), vec![RecordType::A]);
}

#[test]
fn nxdomain_and_nodata_carry_the_soa_with_the_negative_ttl() {
    let server = Server::start(CONFIG);
    let a = server.addr();
    let nx = udp(a, "nope.example.test.", RecordType::A, Opts::default());
    assert_authoritative(&nx, ResponseCode::NXDomain);
    assert!(nx.answers.is_empty());
    assert_eq!(rtypes(&nx.authorities), vec![RecordType::SOA]);
    assert_eq!(
        nx.authorities[0].ttl, 60,
        "min(SOA minimum 60, SOA TTL 300)"
    );

    let nodata = udp(a, "www.example.test.", RecordType::TXT, Opts::default());
    assert_authoritative(&nodata, ResponseCode::NoError);
    assert!(nodata.answers.is_empty());
    assert_eq!(rtypes(&nodata.authorities), vec![RecordType::SOA]);

    // Empty non-terminals exist: NODATA, not NXDOMAIN.
    for ent in ["deep.example.test.", "b.deep.example.test."] {
        let reply = udp(a, ent, RecordType::A, Opts::default());
        assert_authoritative(&reply, ResponseCode::NoError);
        assert!(reply.answers.is_empty(), "{ent}");
    }
    let below = udp(
        a,
        "x.a.b.deep.example.test.",
        RecordType::A,
        Opts::default(),
    );
    assert_eq!(below.metadata.response_code, ResponseCode::NXDomain);

    // An app name answers NODATA for types it does not have.
    let app_mx = udp(a, "shop.example.test.", RecordType::MX, Opts::default());
    assert_authoritative(&app_mx, ResponseCode::NoError);
    assert!(app_mx.answers.is_empty());
    assert_eq!(rtypes(&app_mx.authorities), vec![RecordType::SOA]);
}

#[test]
fn the_question_keeps_the_clients_case() {
    let server = Server::start(CONFIG);
    for name in ["WwW.ExAmPlE.TeSt.", "sHoP.example.TEST."] {
        let query = message(name, RecordType::A, Opts::default())
            .to_vec()
            .unwrap();
        let reply = udp_raw(server.addr(), &query).expect("reply");
        let qlen = query.len() - 12;
        assert_eq!(
            reply[12..12 + qlen],
            query[12..],
            "question section copied as sent"
        );
        let msg = Message::from_vec(&reply).unwrap();
        assert_eq!(msg.metadata.response_code, ResponseCode::NoError);
        assert!(!msg.answers.is_empty(), "{name}");
    }
}

#[test]
fn cname_chains_inside_the_zone_are_followed() {
    let server = Server::start(CONFIG);
    let a = server.addr();
    let chain = udp(a, "chain.example.test.", RecordType::A, Opts::default());
    assert_authoritative(&chain, ResponseCode::NoError);
    assert_eq!(
        rtypes(&chain.answers),
        vec![RecordType::CNAME, RecordType::CNAME, RecordType::A]
    );
    assert_eq!(chain.answers[2].name.to_string(), "www.example.test.");

    // Into an app: the app's answer follows the CNAME.
    let docs = udp(a, "docs.example.test.", RecordType::A, Opts::default());
    assert_eq!(docs.answers[0].record_type(), RecordType::CNAME);
    assert_eq!(docs.answers[1].name.to_string(), "shop.example.test.");
    assert!(!addrs(&docs).is_empty());

    // Asking for the CNAME itself stops there.
    let only = udp(a, "chain.example.test.", RecordType::CNAME, Opts::default());
    assert_eq!(rtypes(&only.answers), vec![RecordType::CNAME]);

    // A chain ending at a missing name in the zone: NXDOMAIN with the CNAME (RFC 6604).
    let dangling = udp(a, "dangling.example.test.", RecordType::A, Opts::default());
    assert_eq!(dangling.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(rtypes(&dangling.answers), vec![RecordType::CNAME]);
    assert_eq!(rtypes(&dangling.authorities), vec![RecordType::SOA]);

    // Leaving our zones: the CNAME alone, NOERROR; the resolver follows it.
    let out = udp(a, "out.example.test.", RecordType::A, Opts::default());
    assert_authoritative(&out, ResponseCode::NoError);
    assert_eq!(rtypes(&out.answers), vec![RecordType::CNAME]);
}

#[test]
fn names_outside_our_zones_are_refused() {
    let server = Server::start(CONFIG);
    let reply = udp(
        server.addr(),
        "www.elsewhere.test.",
        RecordType::A,
        Opts::default(),
    );
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    assert!(!reply.metadata.authoritative);
    assert!(!reply.metadata.recursion_available);
    let text = kdig(server.addr(), &["example.com", "A"]);
    assert!(text.contains("status: REFUSED"), "{text}");
}

#[test]
fn delegations_answer_with_a_referral_and_glue() {
    let server = Server::start(CONFIG);
    let a = server.addr();
    for name in [
        "host.sub.example.test.",
        "sub.example.test.",
        "ns.sub.example.test.",
    ] {
        let reply = udp(a, name, RecordType::A, Opts::default());
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NoError,
            "{name}"
        );
        assert!(
            !reply.metadata.authoritative,
            "a referral is not authoritative: {name}"
        );
        assert!(reply.answers.is_empty());
        assert_eq!(rtypes(&reply.authorities), vec![RecordType::NS], "{name}");
        assert_eq!(reply.authorities[0].name.to_string(), "sub.example.test.");
        let glue: Vec<_> = reply
            .additionals
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect();
        assert_eq!(
            glue,
            vec!["127.0.0.54".parse::<std::net::Ipv4Addr>().unwrap()],
            "{name}"
        );
    }
    // DS belongs to the parent side: answered authoritatively (NODATA here).
    let ds = udp(a, "sub.example.test.", RecordType::DS, Opts::default());
    assert_authoritative(&ds, ResponseCode::NoError);
}

#[test]
fn edns_truncation_and_the_same_query_over_tcp() {
    let server = Server::start(CONFIG);
    let a = server.addr();
    // Without EDNS the 512-byte limit applies: TC and no records.
    let small = udp(a, "big.example.test.", RecordType::TXT, Opts::default());
    assert!(small.metadata.truncation, "{small:?}");
    assert!(small.answers.is_empty());
    assert!(
        small.edns.is_none(),
        "no OPT in reply to a query without one"
    );
    // With EDNS the answer fits, and the OPT record offers our payload size.
    let edns = udp(
        a,
        "big.example.test.",
        RecordType::TXT,
        Opts {
            edns: Some(4096),
            ..Opts::default()
        },
    );
    assert!(!edns.metadata.truncation);
    assert_eq!(edns.answers.len(), 6);
    assert_eq!(edns.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    // A payload below 512 is treated as 512.
    let tiny = udp(
        a,
        "big.example.test.",
        RecordType::TXT,
        Opts {
            edns: Some(100),
            ..Opts::default()
        },
    );
    assert!(tiny.metadata.truncation);
    // TCP answers in full.
    let full = tcp(a, "big.example.test.", RecordType::TXT, Opts::default());
    assert!(!full.metadata.truncation);
    assert_eq!(full.answers.len(), 6);
    assert_authoritative(&full, ResponseCode::NoError);

    // kdig shows the same: tc over UDP without EDNS, the full answer over TCP.
    let udp_text = kdig(
        a,
        &["+noedns", "+notcp", "+ignore", "big.example.test", "TXT"],
    );
    assert!(udp_text.contains("tc"), "{udp_text}");
    let tcp_text = kdig(a, &["+tcp", "big.example.test", "TXT"]);
    assert!(tcp_text.contains("ANSWER: 6"), "{tcp_text}");
}

#[test]
fn formerr_notimp_badvers_and_silence() {
    let server = Server::start(CONFIG);
    let a = server.addr();
    let good = message("www.example.test.", RecordType::A, Opts::default())
        .to_vec()
        .unwrap();
    let rcode = |packet: &[u8]| {
        let reply = udp_raw(a, packet).expect("a reply");
        assert_eq!(reply[..2], packet[..2], "id echoed");
        assert!(reply[2] & 0x80 != 0, "QR set");
        reply[3] & 0x0f
    };
    // Two questions.
    let mut two = good.clone();
    two[5] = 2;
    assert_eq!(rcode(&two), 1, "FORMERR");
    // A question cut short.
    assert_eq!(rcode(&good[..good.len() - 3]), 1, "FORMERR");
    // A label that runs past the end.
    let mut runaway = good[..12].to_vec();
    runaway.extend_from_slice(&[40, b'a', b'b']);
    assert_eq!(rcode(&runaway), 1, "FORMERR");
    // Opcode STATUS (2) and UPDATE (5): not implemented.
    for opcode in [2u8, 5] {
        let mut op = good.clone();
        op[2] = (op[2] & 0x87) | (opcode << 3);
        assert_eq!(rcode(&op), 4, "NOTIMP for opcode {opcode}");
    }
    // EDNS version 1: BADVERS (extended rcode 16: low bits 0, OPT carries the high bits).
    let mut v1 = message(
        "www.example.test.",
        RecordType::A,
        Opts {
            edns: Some(1232),
            ..Opts::default()
        },
    )
    .to_vec()
    .unwrap();
    let opt = v1.len() - 11;
    assert_eq!(v1[opt + 1..opt + 3], [0, 41], "OPT is last");
    v1[opt + 6] = 1; // version
    let reply = Message::from_vec(&udp_raw(a, &v1).expect("reply")).unwrap();
    // 16 is both BADVERS (EDNS) and BADSIG (TSIG); hickory names it by the latter.
    assert_eq!(u16::from(reply.metadata.response_code), 16);
    assert!(reply.edns.is_some(), "BADVERS travels in an OPT record");
    // Too short for a header, and responses: no answer at all.
    assert_eq!(udp_raw(a, &good[..5]), None);
    let mut response = good.clone();
    response[2] |= 0x80;
    assert_eq!(udp_raw(a, &response), None);
    // Non-IN class: refused.
    let mut chaos = good.clone();
    let n = chaos.len();
    chaos[n - 1] = 3;
    assert_eq!(rcode(&chaos), 5, "REFUSED");
    // The server still answers normally afterwards.
    assert_eq!(rcode(&good), 0);
}

#[test]
fn any_is_answered_minimally() {
    let server = Server::start(CONFIG);
    let reply = udp(
        server.addr(),
        "example.test.",
        RecordType::ANY,
        Opts::default(),
    );
    assert_authoritative(&reply, ResponseCode::NoError);
    assert_eq!(reply.answers.len(), 1, "one RRset: the SOA (RFC 8482)");
    let app = udp(
        server.addr(),
        "pay.example.test.",
        RecordType::ANY,
        Opts::default(),
    );
    assert_eq!(rtypes(&app.answers), vec![RecordType::A]);
}

#[test]
fn tcp_pipelining_and_idle_timeout() {
    let server = Server::start(CONFIG);
    let names = [
        "www.example.test.",
        "nope.example.test.",
        "pay.example.test.",
        "example.test.",
    ];
    let queries: Vec<Message> = (0..40)
        .map(|i| message(names[i % names.len()], RecordType::A, Opts::default()))
        .collect();
    let replies = tcp_many(server.dns.tcp_addr(), &queries);
    for (q, r) in queries.iter().zip(&replies) {
        assert_eq!(q.metadata.id, r.metadata.id, "replies in order");
        assert_eq!(q.queries, r.queries);
    }
    assert_eq!(replies[1].metadata.response_code, ResponseCode::NXDomain);

    // An idle connection is closed after dns.tcp_idle_timeout (1 s in the test config).
    let mut idle = TcpStream::connect(server.dns.tcp_addr()).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1];
    let n = idle.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed, not answered");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

#[test]
fn without_a_table_app_names_fail_and_static_records_answer() {
    let config =
        meridian_config::parse(CONFIG, std::path::Path::new("/nonexistent/c.yaml")).unwrap();
    let cell = Arc::new(TableCell::new());
    let dns = meridian_dns::DnsServer::start(&config, cell).unwrap();
    let app = udp(
        dns.udp_addr(),
        "shop.example.test.",
        RecordType::A,
        Opts::default(),
    );
    assert_eq!(app.metadata.response_code, ResponseCode::ServFail);
    let www = udp(
        dns.udp_addr(),
        "www.example.test.",
        RecordType::A,
        Opts::default(),
    );
    assert_eq!(www.metadata.response_code, ResponseCode::NoError);
    assert_eq!(www.answers.len(), 1);
    let admin = dns.admin_addr().unwrap();
    let ready = http_get(admin, "/readyz");
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
    let live = http_get(admin, "/livez");
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    dns.shutdown();
}

#[test]
fn kdig_sees_an_authoritative_server() {
    let server = Server::start(CONFIG);
    let a = server.addr();
    let text = kdig(a, &["+norec", "www.example.test", "A"]);
    assert!(text.contains("status: NOERROR"), "{text}");
    assert!(
        text.contains("Flags: qr aa;"),
        "AA set, RA and RD clear: {text}"
    );
    let nx = kdig(a, &["nope.example.test", "A"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    assert!(nx.contains("AUTHORITY: 1"), "{nx}");
    let rd = kdig(a, &["+rec", "www.example.test", "A"]);
    assert!(rd.contains("Flags: qr aa rd;"), "RD echoed, RA clear: {rd}");
    let tcp = kdig(a, &["+tcp", "chain.example.test", "A"]);
    assert!(tcp.contains("ANSWER: 3"), "{tcp}");
}

#[test]
fn metrics_count_queries_by_type_and_rcode() {
    let server = Server::start(CONFIG);
    let a = server.addr();
    for _ in 0..3 {
        udp(a, "nope.example.test.", RecordType::AAAA, Opts::default());
    }
    udp(a, "www.example.test.", RecordType::A, Opts::default());
    let body = http_get(server.dns.admin_addr().unwrap(), "/metrics");
    assert!(
        body.contains("meridian_dns_queries_total{qtype=\"AAAA\",rcode=\"NXDOMAIN\"} 3"),
        "{body}"
    );
    assert!(body.contains("meridian_dns_table_version 1"), "{body}");
    assert!(
        body.contains("meridian_dns_table_staleness_seconds"),
        "{body}"
    );
    let ready = http_get(server.dns.admin_addr().unwrap(), "/readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
}

#[test]
fn axfr_to_allowed_secondaries_only() {
    let allowed = Server::start(&CONFIG.replace("dns:\n", "dns:\n  axfr_allow: [127.0.0.0/8]\n"));
    let xfr = kdig(allowed.dns.tcp_addr(), &["example.test", "AXFR"]);
    let soas = xfr.lines().filter(|l| l.contains("\tSOA\t")).count();
    assert_eq!(soas, 2, "SOA first and last: {xfr}");
    assert!(
        xfr.contains("www.example.test.") && xfr.contains("192.0.2.10"),
        "{xfr}"
    );
    assert!(xfr.contains("_sip._tcp.example.test."), "{xfr}");
    // App hostnames carry every serving target's address.
    let shop: Vec<&str> = xfr
        .lines()
        .filter(|l| l.starts_with("shop.example.test."))
        .collect();
    assert_eq!(shop.len(), 3, "127.0.1.1, ::1 and 127.0.3.1: {shop:?}");
    // So does the wildcard name (a secondary would answer NXDOMAIN below it otherwise).
    let wildcard: Vec<&str> = xfr
        .lines()
        .filter(|l| l.starts_with("*.shop.example.test."))
        .collect();
    assert_eq!(wildcard.len(), 3, "{wildcard:?}");

    // Not on the list: refused. Over UDP: refused.
    let refused = Server::start(&CONFIG.replace("dns:\n", "dns:\n  axfr_allow: [192.0.2.0/24]\n"));
    let msg = tcp(
        refused.dns.tcp_addr(),
        "example.test.",
        RecordType::AXFR,
        Opts::default(),
    );
    assert_eq!(msg.metadata.response_code, ResponseCode::Refused);
    let msg = udp(
        allowed.addr(),
        "example.test.",
        RecordType::AXFR,
        Opts::default(),
    );
    assert_eq!(msg.metadata.response_code, ResponseCode::Refused);
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::Write;
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}
