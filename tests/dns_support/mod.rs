//! Shared by the DNS suites: a test zone and apps, an in-process server on an ephemeral
//! loopback port, and clients (hickory-proto messages over std sockets, and `kdig`).
#![allow(dead_code)]

pub mod mmdb;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use meridian_dns::{DnsServer, RunningDns};
use meridian_routing::RoutingTable;
use meridian_subscriber::TableCell;

/// Regions, clusters on loopback addresses, three apps (weighted, geo, failover) and one
/// zone with every static record type, a delegation, a CNAME chain and a large RRset.
pub const CONFIG: &str = r#"
regions:
  - { name: eu-west, location: { lat: 53.35, lon: -6.26 } }
  - { name: us-east, location: { lat: 38.95, lon: -77.45 } }
geo:
  countries: { IE: eu-west, US: us-east }
  subnets:
    - { cidr: 192.0.2.0/24, region: eu-west }
    - { cidr: 198.51.100.0/24, region: us-east }
    - { cidr: 198.51.100.128/25, region: eu-west }
clusters:
  - { name: eu1, region: eu-west, provider: aws, endpoints: ["127.0.1.1:443", "[::1]:443"] }
  - { name: eu2, region: eu-west, provider: gcp, endpoints: ["127.0.1.2:443"] }
  - { name: us1, region: us-east, provider: aws, endpoints: ["127.0.3.1:443"] }
apps:
  - name: shop
    hostnames: [shop.example.test, "*.shop.example.test"]
    policy: weighted
    failure_mode: fail-open
    dns_ttl: 5
    targets: [{ cluster: eu1, weight: 300 }, { cluster: us1, weight: 100 }]
  - name: maps
    hostnames: [maps.example.test]
    policy: geo
    failure_mode: fail-closed
    dns_ttl: 30
    geo_preferences:
      - { region: us-east, clusters: [us1] }
      - { region: eu-west, clusters: [eu2] }
    targets: [{ cluster: eu2 }, { cluster: us1 }]
  - name: pay
    hostnames: [pay.example.test]
    policy: failover
    failure_mode: fail-closed
    dns_ttl: 10
    targets: [{ cluster: eu1, tier: 0 }, { cluster: us1, tier: 1 }]
zones:
  - name: example.test
    soa: { mname: ns1.example.test, rname: hostmaster.example.test, minimum: 60, ttl: 300 }
    ns: [ns1.example.test, ns2.example.test]
    records:
      - { name: ns1, type: A, value: 127.0.0.53 }
      - { name: ns2, type: AAAA, value: "::1" }
      - { name: www, type: A, value: 192.0.2.10 }
      - { name: www, type: AAAA, value: "2001:db8::10" }
      - { name: "@", type: MX, value: "10 mail.example.test" }
      - { name: mail, type: A, value: 192.0.2.25 }
      - { name: "@", type: TXT, value: "v=spf1 -all" }
      - { name: "@", type: CAA, value: '0 issue "letsencrypt.org"' }
      - { name: _sip._tcp, type: SRV, value: "10 60 5060 sip.example.test" }
      - { name: sip, type: A, value: 192.0.2.50 }
      - { name: alias, type: CNAME, value: www.example.test }
      - { name: chain, type: CNAME, value: alias.example.test }
      - { name: docs, type: CNAME, value: shop.example.test }
      - { name: dangling, type: CNAME, value: nothing.example.test }
      - { name: out, type: CNAME, value: www.elsewhere.test }
      - { name: sub, type: NS, value: ns.sub.example.test }
      - { name: ns.sub, type: A, value: 127.0.0.54 }
      - { name: a.b.deep, type: A, value: 192.0.2.99 }
      - { name: big, type: TXT, value: "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789-1" }
      - { name: big, type: TXT, value: "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789-2" }
      - { name: big, type: TXT, value: "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789-3" }
      - { name: big, type: TXT, value: "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789-4" }
      - { name: big, type: TXT, value: "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789-5" }
      - { name: big, type: TXT, value: "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789-6" }
dns:
  listen: 127.0.0.1:0
  max_answers: 2
  udp_workers: 2
  tcp_idle_timeout: 1s
  admin_listen: 127.0.0.1:0
  # Rate limiting is on by default; the suites query from loopback in bursts.
  rrl: { exempt: [127.0.0.0/8, "::1/128"] }
"#;

/// A scratch directory under the system temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "meridian-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A server started in-process with the config's base table in its cell.
pub struct Server {
    pub dns: RunningDns,
    pub cell: Arc<TableCell>,
    pub config: meridian_config::LoadedConfig,
}

impl Server {
    pub fn start(yaml: &str) -> Server {
        Server::start_in(yaml, Path::new("/nonexistent/config.yaml"))
    }

    /// Starts with `yaml` as if read from `file` (relative geo databases resolve there).
    pub fn start_in(yaml: &str, file: &Path) -> Server {
        let config = meridian_config::parse(yaml, file)
            .unwrap_or_else(|err| panic!("test config: {}", err.diagnostics().join("\n")));
        let cell = Arc::new(TableCell::new());
        cell.store(Arc::new(
            RoutingTable::new(config.config.base_table(1, now_ms())).expect("base table"),
        ));
        let dns = DnsServer::start(&config, cell.clone()).expect("start dns");
        Server { dns, cell, config }
    }

    pub fn addr(&self) -> SocketAddr {
        self.dns.udp_addr()
    }

    /// Publishes a changed copy of the current table as the next version.
    pub fn update(&self, change: impl FnOnce(&mut meridian_routing::TableData)) {
        let current = self.cell.load().expect("table");
        let mut data = current.data().clone();
        data.version += 1;
        change(&mut data);
        self.cell
            .store(Arc::new(RoutingTable::new(data).expect("valid table")));
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Options of one query.
#[derive(Clone, Copy, Default)]
pub struct Opts {
    /// Add EDNS(0) with this payload size.
    pub edns: Option<u16>,
    /// Add ECS (address, source prefix); implies EDNS 1232.
    pub ecs: Option<(IpAddr, u8)>,
}

pub fn message(name: &str, rtype: RecordType, opts: Opts) -> Message {
    let mut msg = Message::new(rand_id(), MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(Name::from_str(name).expect("name"), rtype));
    if opts.edns.is_some() || opts.ecs.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(opts.edns.unwrap_or(1232));
        if let Some((addr, prefix)) = opts.ecs {
            edns.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(addr, prefix, 0)));
        }
        msg.set_edns(edns);
    }
    msg
}

fn rand_id() -> u16 {
    static N: AtomicU32 = AtomicU32::new(7);
    (N.fetch_add(7919, Ordering::Relaxed) & 0xffff) as u16
}

/// Sends raw bytes over UDP and returns the raw reply (None on timeout).
pub fn udp_raw(addr: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    socket.send_to(packet, addr).expect("send");
    let mut buf = vec![0u8; 65535];
    let n = socket.recv(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

pub fn udp(addr: SocketAddr, name: &str, rtype: RecordType, opts: Opts) -> Message {
    let msg = message(name, rtype, opts);
    let reply = udp_raw(addr, &msg.to_vec().expect("encode")).expect("udp reply");
    let reply = Message::from_vec(&reply).expect("decode reply");
    assert_eq!(reply.metadata.id, msg.metadata.id, "reply id");
    reply
}

/// Several queries over one TCP connection, all written before any reply is read
/// (pipelining); replies come back in order.
pub fn tcp_many(addr: SocketAddr, queries: &[Message]) -> Vec<Message> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let mut out = Vec::new();
    for q in queries {
        let bytes = q.to_vec().expect("encode");
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    stream.write_all(&out).expect("write");
    queries
        .iter()
        .map(|_| {
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).expect("reply length");
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut buf).expect("reply");
            Message::from_vec(&buf).expect("decode")
        })
        .collect()
}

pub fn tcp(addr: SocketAddr, name: &str, rtype: RecordType, opts: Opts) -> Message {
    tcp_many(addr, &[message(name, rtype, opts)]).remove(0)
}

/// The addresses in a reply's answer section, in order.
pub fn addrs(msg: &Message) -> Vec<IpAddr> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// The ECS option of a reply: (address, source, scope).
pub fn ecs(msg: &Message) -> Option<(IpAddr, u8, u8)> {
    match msg.edns.as_ref()?.option(EdnsCode::Subnet)? {
        EdnsOption::Subnet(s) => Some((s.addr(), s.source_prefix(), s.scope_prefix())),
        _ => None,
    }
}

/// Runs kdig against `addr`; panics with an install hint when it is missing.
pub fn kdig(addr: SocketAddr, args: &[&str]) -> String {
    let output = Command::new("kdig")
        .arg(format!("@{}", addr.ip()))
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["+time=2", "+retry=0"])
        .args(args)
        .output()
        .unwrap_or_else(|err| {
            panic!("kdig could not run ({err}); install it: apt-get install knot-dnsutils")
        });
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Starts a DNS daemon of the Debian package of the same name (unbound, nsd) in the
/// foreground with config file `conf`, its output dropped (each logs to a file).
pub fn daemon(program: &str, conf: &Path) -> Child {
    Command::new(program)
        .arg("-d")
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| {
            panic!("{program} could not be started ({err}); install it: apt-get install {program}")
        })
}

/// How a test unbound treats example.test: as an insecure zone, or validated from a trust
/// anchor (a DS record in presentation form).
pub enum Trust<'a> {
    Insecure,
    Anchor(&'a str),
}

/// A real unbound on a free loopback port, resolving example.test from `authority` (a stub
/// zone) and sending ECS to it (cached per /24); killed when dropped, however the test ends.
pub struct Unbound {
    child: Child,
    pub addr: SocketAddr,
}

impl Unbound {
    /// Starts it with its config in `dir`, and waits until it answers for the zone. The
    /// port is found free and released before unbound binds it, so another socket may take
    /// it meanwhile: an unbound that exits at start is started again on another port.
    pub fn start(dir: &Scratch, authority: SocketAddr, trust: Trust<'_>) -> Unbound {
        let mut exits = Vec::new();
        for _ in 0..5 {
            match Self::try_start(dir, authority, &trust) {
                Ok(unbound) => return unbound,
                Err(log) => exits.push(log),
            }
        }
        panic!("unbound exited at start five times: {exits:#?}")
    }

    /// One start: `Err` with its log when unbound exits before answering.
    fn try_start(
        dir: &Scratch,
        authority: SocketAddr,
        trust: &Trust<'_>,
    ) -> Result<Unbound, String> {
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let (modules, trust_line) = match trust {
            Trust::Insecure => (
                "subnetcache iterator",
                r#"domain-insecure: "example.test""#.to_string(),
            ),
            Trust::Anchor(ds) => (
                "subnetcache validator iterator",
                format!("val-log-level: 2\n    trust-anchor: \"{ds}\""),
            ),
        };
        let conf = dir.0.join("unbound.conf");
        let log = dir.0.join("unbound.log");
        std::fs::write(
            &conf,
            format!(
                r#"server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    do-daemonize: no
    use-syslog: no
    logfile: "{log}"
    verbosity: 1
    chroot: ""
    username: ""
    directory: "{dir}"
    pidfile: ""
    access-control: 127.0.0.0/8 allow
    do-not-query-localhost: no
    module-config: "{modules}"
    send-client-subnet: 127.0.0.1
    max-client-subnet-ipv4: 24
    qname-minimisation: no
    {trust_line}
    local-zone: "test." nodefault
stub-zone:
    name: "example.test"
    stub-addr: {ip}@{aport}
"#,
                log = log.display(),
                dir = dir.0.display(),
                ip = authority.ip(),
                aport = authority.port(),
            ),
        )
        .expect("write unbound.conf");
        let child = daemon("unbound", &conf);
        let mut unbound = Unbound {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        // Up when it answers a query for the zone (a validator may answer SERVFAIL where
        // a test tampers with signatures).
        let validating = matches!(trust, Trust::Anchor(_));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = kdig(unbound.addr, &["www.example.test", "A"]);
            if text.contains("status: NOERROR") || validating && text.contains("status: SERVFAIL") {
                return Ok(unbound);
            }
            if let Ok(Some(status)) = unbound.child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("{status}: {log}"));
            }
            assert!(
                Instant::now() < deadline,
                "unbound did not answer: {text}; its log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
