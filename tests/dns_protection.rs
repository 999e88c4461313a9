//! Protection: response rate limiting per client network with slip (on by default), the
//! query size limit, and TCP connection limits and deadlines against slow or silent
//! clients, against a running server over real sockets.

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
    let server = Server::start(&CONFIG.replace(
        "  rrl: { exempt: [127.0.0.0/8, \"::1/128\"] }\n",
        "  rrl: { rate: 5, slip: 2 }\n",
    ));
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
fn queries_past_the_udp_limit_are_dropped_but_tcp_answers() {
    let server = Server::start(CONFIG);
    let mut q = message("www.example.test.", RecordType::A, Opts::default());
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    // Padding (RFC 7830) to push the query past the 4096 bytes any query needs.
    edns.options_mut()
        .insert(EdnsOption::Unknown(12, vec![0; 5000]));
    q.set_edns(edns);
    let bytes = q.to_vec().unwrap();
    assert_eq!(
        udp_raw(server.addr(), &bytes),
        None,
        "no answer to a 5000-byte UDP query"
    );
    assert!(server.dns.metrics().dropped.load(Ordering::Relaxed) >= 1);
    let reply = tcp_many(server.dns.tcp_addr(), &[q]).remove(0);
    assert_eq!(reply.answers.len(), 1);
}

#[test]
fn rate_limiting_is_on_by_default_and_exempts_configured_networks() {
    let burst = |server: &Server| {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let q = message("www.example.test.", RecordType::A, Opts::default())
            .to_vec()
            .unwrap();
        for _ in 0..1000 {
            socket.send_to(&q, server.addr()).unwrap();
        }
        // Every query counted, answered or not.
        let m = server.dns.metrics();
        let deadline = Instant::now() + Duration::from_secs(5);
        while m.queries("A", "NOERROR") < 1000 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        (
            m.rrl_dropped.load(Ordering::Relaxed),
            m.rrl_slipped.load(Ordering::Relaxed),
        )
    };
    // No rrl section: NSD's default of 200 responses a second per /24, slip 2.
    let default =
        Server::start(&CONFIG.replace("  rrl: { exempt: [127.0.0.0/8, \"::1/128\"] }\n", ""));
    let (dropped, slipped) = burst(&default);
    assert!(dropped >= 300, "dropped {dropped}");
    assert!(slipped >= 300, "slipped {slipped}");
    // The test config exempts loopback, as an operator exempts the resolvers they know.
    let exempt = Server::start(CONFIG);
    assert_eq!(burst(&exempt), (0, 0));
}

/// A TCP connection from `source` (a loopback address of its own, so the server sees a
/// distinct client).
fn connect_from(source: &str, server: std::net::SocketAddr) -> Option<std::net::TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    let source: std::net::SocketAddr = format!("{source}:0").parse().ok()?;
    socket.bind(&source.into()).ok()?;
    socket.connect(&server.into()).ok()?;
    Some(socket.into())
}

/// True when the server closed `stream` (EOF or reset) before `deadline`.
fn closed_by(stream: &mut std::net::TcpStream, deadline: Instant) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 64];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn slow_tcp_clients_cannot_hold_the_slots() {
    use std::io::Write;
    let server = Server::start(&CONFIG.replace(
        "  tcp_idle_timeout: 1s\n",
        "  tcp_idle_timeout: 1s\n  tcp_write_timeout: 1s\n  tcp_max_connections: 32\n  tcp_max_connections_per_client: 8\n",
    ));
    let addr = server.dns.tcp_addr();
    let started = Instant::now();
    // Four attacking addresses, ten connections each, each announcing a 100-byte query and
    // sending it a byte every 200 ms (it never completes in time).
    let mut attackers = Vec::new();
    for source in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        for _ in 0..10 {
            let mut stream = connect_from(source, addr).expect("connect");
            let _ = stream.write_all(&[0, 100]);
            attackers.push(stream);
        }
    }
    let trickle = std::thread::spawn({
        let mut streams: Vec<_> = attackers.iter().map(|s| s.try_clone().unwrap()).collect();
        move || {
            for _ in 0..15 {
                std::thread::sleep(Duration::from_millis(200));
                for s in &mut streams {
                    let _ = s.write_all(&[0]);
                }
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    // While they hold what they could get, another client is answered over TCP.
    let reply = dns_support::tcp(addr, "www.example.test.", RecordType::A, Opts::default());
    assert_eq!(reply.answers.len(), 1, "answered during the attack");
    let m = server.dns.metrics();
    // 8 + 8 + 8 slots for the first three, then the reserve: one for the fourth.
    assert_eq!(m.tcp_refused.load(Ordering::Relaxed), 40 - 25);
    // Trickling bytes do not keep a connection: every one is closed at the query timeout.
    let deadline = started + Duration::from_secs(4);
    let open = attackers
        .iter_mut()
        .map(|s| closed_by(s, deadline))
        .filter(|closed| !closed)
        .count();
    assert_eq!(open, 0, "connections still open after 4 s");
    assert!(m.tcp_timed_out.load(Ordering::Relaxed) >= 25);
    trickle.join().unwrap();

    // A client that sends queries and never reads an answer is disconnected once its
    // answers back up for the write timeout.
    let mut reader_less = connect_from("127.0.0.6", addr).expect("connect");
    reader_less
        .set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let q = message("big.example.test.", RecordType::TXT, Opts::default())
        .to_vec()
        .unwrap();
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    let batch: Vec<u8> = framed.repeat(100);
    let deadline = Instant::now() + Duration::from_secs(10);
    let disconnected = loop {
        match reader_less.write(&batch) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break true,
        }
        if Instant::now() >= deadline {
            break false;
        }
    };
    assert!(disconnected, "a client that never reads is disconnected");
}
