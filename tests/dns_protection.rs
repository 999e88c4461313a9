//! Protection: response rate limiting per client network with slip, and the query size
//! limit, against a running server over real sockets.

mod dns_support;

use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dns_support::{CONFIG, Opts, Server, message, tcp_many, udp_raw};
use hickory_proto::op::{Edns, Message};
use hickory_proto::rr::RecordType;
use hickory_proto::rr::rdata::opt::EdnsOption;

#[test]
fn rate_limiting_drops_and_slips_per_network() {
    let server = Server::start(&CONFIG.replace("dns:\n", "dns:\n  rrl: { rate: 5, slip: 2 }\n"));
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sent = 40;
    for i in 0..sent {
        let mut q = message("www.example.test.", RecordType::A, Opts::default());
        q.metadata.id = i;
        socket.send_to(&q.to_vec().unwrap(), server.addr()).unwrap();
    }
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let (mut full, mut slipped) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let Ok(n) = socket.recv(&mut buf) else { break };
        let reply = Message::from_vec(&buf[..n]).unwrap();
        if reply.metadata.truncation {
            assert!(reply.answers.is_empty());
            slipped += 1;
        } else {
            assert_eq!(reply.answers.len(), 1);
            full += 1;
        }
    }
    // 5 a second pass; a second boundary during the burst may let 5 more through.
    assert!((5..=10).contains(&full), "full answers: {full}");
    assert!(slipped >= 10, "truncated (slip) answers: {slipped}");
    assert!(full + slipped < sent as i32, "the rest were dropped");
    let m = server.dns.metrics();
    assert!(m.rrl_dropped.load(Ordering::Relaxed) >= 10);
    assert_eq!(m.rrl_slipped.load(Ordering::Relaxed), slipped as u64);
    // TCP is not limited: the slipped clients' retry path.
    let queries: Vec<Message> = (0..20)
        .map(|_| message("www.example.test.", RecordType::A, Opts::default()))
        .collect();
    for reply in tcp_many(server.dns.tcp_addr(), &queries) {
        assert_eq!(reply.answers.len(), 1);
    }
}

#[test]
fn oversized_udp_queries_are_dropped_but_tcp_answers() {
    let server = Server::start(CONFIG);
    let mut q = message("www.example.test.", RecordType::A, Opts::default());
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    // Padding (RFC 7830) to push the query past 512 bytes.
    edns.options_mut()
        .insert(EdnsOption::Unknown(12, vec![0; 600]));
    q.set_edns(edns);
    let bytes = q.to_vec().unwrap();
    assert!(bytes.len() > 512);
    assert_eq!(
        udp_raw(server.addr(), &bytes),
        None,
        "no answer to a 600-byte UDP query"
    );
    assert!(server.dns.metrics().dropped.load(Ordering::Relaxed) >= 1);
    let reply = tcp_many(server.dns.tcp_addr(), &[q]).remove(0);
    assert_eq!(reply.answers.len(), 1);
}
