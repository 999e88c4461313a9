//! NSD as a real secondary of Meridian: it transfers the zone with TSIG, receives a signed
//! NOTIFY when a new table changes the zone, pulls the change by IXFR (its log says so),
//! and answers the same static records; a transfer without the key, or with another one,
//! is refused.

mod dns_support;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use dns_support::{CONFIG, Scratch, Server, daemon, kdig};
use meridian_routing::Health;

/// A base64 secret of 32 bytes, shared by Meridian and NSD.
const SECRET: &str = "bWVyaWRpYW4tdHNpZy10ZXN0LXNlY3JldC0zMi1ieXQ=";

struct Nsd(Child);

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    // Free for UDP and TCP alike at the moment of asking; loopback only.
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn write_secret(path: &Path) {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("secret file");
    f.write_all(SECRET.as_bytes()).unwrap();
}

fn start_nsd(dir: &Scratch, port: u16, primary: SocketAddr) -> Nsd {
    let conf = dir.0.join("nsd.conf");
    let d = dir.0.display();
    std::fs::write(
        &conf,
        format!(
            r#"server:
    ip-address: 127.0.0.1@{port}
    port: {port}
    do-ip6: no
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{d}"
    database: ""
    zonelistfile: "{d}/zone.list"
    xfrdfile: "{d}/xfrd.state"
    xfrdir: "{d}"
    pidfile: "{d}/nsd.pid"
    logfile: "{d}/nsd.log"
    verbosity: 3
    reuseport: no
remote-control:
    control-enable: no
key:
    name: "xfr-key"
    algorithm: hmac-sha256
    secret: "{SECRET}"
zone:
    name: "example.test"
    zonefile: "example.test.zone"
    allow-notify: 127.0.0.1 xfr-key
    # Keep what arrives by IXFR and serve it on: NSD then answers an IXFR itself only
    # when it received one (it makes no differences of its own without create-ixfr).
    store-ixfr: yes
    provide-xfr: 127.0.0.1 NOKEY
    request-xfr: {ip}@{pport} xfr-key
"#,
            ip = primary.ip(),
            pport = primary.port(),
        ),
    )
    .expect("write nsd.conf");
    Nsd(daemon("nsd", &conf))
}

fn short(addr: SocketAddr, name: &str, rtype: &str) -> Vec<String> {
    let mut lines: Vec<String> = kdig(addr, &["+short", name, rtype])
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}; NSD's log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn nsd_follows_meridian_by_notify_and_ixfr_with_tsig() {
    let dir = Scratch::new("dns-secondary");
    write_secret(&dir.0.join("tsig.secret"));
    let nsd_port = free_port();
    let config = format!(
        "{CONFIG}  axfr_allow: [127.0.0.0/8]\n  notify: [\"127.0.0.1:{nsd_port}\"]\n  tsig: {{ name: xfr-key, secret_file: tsig.secret }}\n"
    );
    let server = Server::start_in(&config, &dir.0.join("config.yaml"));
    let _nsd = start_nsd(&dir, nsd_port, server.dns.tcp_addr());
    let nsd: SocketAddr = format!("127.0.0.1:{nsd_port}").parse().unwrap();
    let log = dir.0.join("nsd.log");

    // The first transfer: NSD answers the static records as Meridian does.
    wait_for(
        "NSD did not load the zone",
        || short(nsd, "www.example.test", "A") == ["192.0.2.10"],
        &log,
    );
    for (name, rtype) in [
        ("www.example.test", "AAAA"),
        ("example.test", "MX"),
        ("example.test", "TXT"),
        ("mail.example.test", "A"),
        ("_sip._tcp.example.test", "SRV"),
        ("alias.example.test", "CNAME"),
    ] {
        assert_eq!(
            short(nsd, name, rtype),
            short(server.addr(), name, rtype),
            "{name} {rtype}"
        );
    }
    // A GSLB name: every serving address (a secondary cannot steer).
    assert_eq!(
        short(nsd, "pay.example.test", "A"),
        ["127.0.1.1", "127.0.3.1"]
    );

    // A new table changes the zone: NOTIFY, then IXFR from the serial NSD has.
    let before = std::fs::read_to_string(&log).unwrap_or_default().len();
    server.update(|t| {
        let app = t.apps.iter_mut().find(|a| a.name == "pay").unwrap();
        app.targets[0].health = Health::Unhealthy;
    });
    wait_for(
        "NSD did not follow the change",
        || short(nsd, "pay.example.test", "A") == ["127.0.3.1"],
        &log,
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let after = &text[before.min(text.len())..];
    assert!(
        after.to_ascii_lowercase().contains("notify"),
        "NSD logged the NOTIFY:\n{after}"
    );
    assert!(
        after.contains("received update to serial 2") && after.contains("TSIG verified"),
        "NSD logged the signed transfer:\n{after}"
    );
    // What NSD received was an increment: it serves that same IXFR on (serial 1 → 2, the
    // one address withdrawn), and its log shows a transfer a fraction of the first's size.
    let ixfr = kdig(nsd, &["+tcp", "example.test", "IXFR=1"]);
    let soas = ixfr.lines().filter(|l| l.contains("\tSOA\t")).count();
    assert!(
        soas >= 3 && !ixfr.contains("www.example.test."),
        "an incremental IXFR from NSD:\n{ixfr}"
    );
    assert!(ixfr.contains("127.0.1.1"), "the withdrawn address:\n{ixfr}");
    let soa = short(nsd, "example.test", "SOA");
    assert_eq!(
        soa,
        short(server.addr(), "example.test", "SOA"),
        "same serial"
    );

    // Transfers need the key: none, or another one, is refused.
    let tcp = server.dns.tcp_addr();
    let refused = kdig(tcp, &["+tcp", "example.test", "AXFR"]);
    assert!(!refused.contains("192.0.2.10"), "{refused}");
    assert_eq!(server.dns.metrics().queries("AXFR", "REFUSED"), 1);
    let wrong = kdig(
        tcp,
        &[
            "-y",
            "hmac-sha256:xfr-key:b3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXItb3Q=",
            "example.test",
            "AXFR",
        ],
    );
    assert!(!wrong.contains("192.0.2.10"), "{wrong}");
    assert_eq!(server.dns.metrics().queries("AXFR", "REFUSED"), 2);
    let signed = kdig(
        tcp,
        &[
            "-y",
            &format!("hmac-sha256:xfr-key:{SECRET}"),
            "example.test",
            "AXFR",
        ],
    );
    assert!(signed.contains("192.0.2.10"), "{signed}");
}
