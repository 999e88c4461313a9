//! `meridian dns` as a process: serves the config's zones and base table, reports its
//! listeners in its log, and stops cleanly on SIGTERM.

mod dns_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dns_support::kdig;

struct Kill(std::process::Child);

fn http_get(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn meridian_dns_serves_the_demo_config_and_stops_on_sigterm() {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/examples/demo.yaml");
    let mut child = Kill(
        Command::new(env!("CARGO_BIN_EXE_meridian"))
            .args(["--log-format", "json", "dns", "-c", demo])
            .args(["--listen", "127.0.0.1:0", "--workers", "1"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start meridian dns"),
    );
    let stderr = child.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut admin: Option<SocketAddr> = None;
    let addr: SocketAddr = loop {
        assert!(Instant::now() < deadline, "no 'serving' log line");
        let line = lines.next().expect("log line").expect("read log");
        let value: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        if let Some(addr) = value["fields"]["admin_addr"].as_str() {
            admin = Some(addr.parse().unwrap());
        }
        if let Some(addr) = value["fields"]["udp_addr"].as_str() {
            break addr.parse().unwrap();
        }
    };
    // Without `dns.admin_listen` or `--admin-listen`, health and metrics are still there, on
    // the default port (the only test that leaves it unset, so nothing else takes it).
    let admin = admin.expect("an admin listener by default");
    assert_eq!(admin, "127.0.0.1:9054".parse().unwrap());
    assert!(http_get(admin, "/livez").starts_with("HTTP/1.1 200"));
    let metrics = http_get(admin, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(metrics.contains("meridian_dns_"), "{metrics}");
    let text = kdig(addr, &["+short", "shop.demo.test", "A"]);
    assert_eq!(text.lines().count(), 2, "max_answers 2 in the demo: {text}");
    let geo = kdig(
        addr,
        &["+short", "+subnet=198.51.100.0/24", "maps.demo.test", "A"],
    );
    assert_eq!(geo.lines().next(), Some("127.0.3.1"), "{geo}");

    let pid = child.0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
