//! Shared by tests that run the `meridian` binary: a child killed on drop, a temporary
//! directory, a free port, a token's SHA-256 as the config wants it, the config of one
//! app on one cluster (and of a proxy in front of it), and one plain HTTP/1.1 request.

#![allow(
    dead_code,
    reason = "each test binary uses a part of the support module"
)]

use std::fmt::Display;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A child process killed (and reaped) when the test ends, however it ends.
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("meridian-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port free on `ip` right now (for listeners whose address the process does not print).
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `meridian controller -c CONFIG --listen 127.0.0.1:0 --data-dir DATA` with
/// `extra` arguments; the child and its URL, read from the first line it prints.
pub fn start_controller(config: &Path, data: &Path, extra: &[&str]) -> (Kill, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["controller", "--listen", "127.0.0.1:0", "-c"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn meridian controller");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("controller listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (Kill(child), url)
}

/// A token's SHA-256 in hex, as the config's `tokens` list it (from `sha256sum`).
pub fn sha256_hex(token: &str) -> String {
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(token.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// The start of a config file: one region, one cluster `cluster` whose ingress is
/// `endpoint`, and the app `shop` (host `shop.test`) on it; with `probed`, a TCP probe
/// every 100 ms that the app uses. The caller appends its own sections.
pub fn one_cluster_config(cluster: &str, endpoint: impl Display, probed: bool) -> String {
    let probes = if probed {
        "probes:\n  - { name: tcp, kind: tcp, interval: 100ms, timeout: 80ms, rise: 1, fall: 1 }\n"
    } else {
        ""
    };
    let probe = if probed { "    probe: tcp\n" } else { "" };
    format!(
        r#"
regions:
  - {{ name: eu, location: {{ lat: 50.0, lon: 8.0 }} }}
clusters:
  - {{ name: {cluster}, region: eu, provider: onprem, endpoints: ["{endpoint}"] }}
{probes}apps:
  - name: shop
    hostnames: [shop.test]
    failure_mode: fail-open
    dns_ttl: 5
{probe}    targets:
      - {{ cluster: {cluster}, weight: 100 }}
"#
    )
}

/// A config file for `meridian proxy`, written to `dir/proxy.yaml`: [`one_cluster_config`]
/// on `endpoint`, and a `proxy:` section listening on free loopback ports with `settings`
/// (lines of that section, indented by two spaces) added. Returns the file, the client
/// address and the admin address.
pub fn proxy_config(
    dir: &Path,
    endpoint: impl Display,
    settings: &str,
) -> (PathBuf, SocketAddr, SocketAddr) {
    let (port, admin_port) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let config = dir.join("proxy.yaml");
    std::fs::write(
        &config,
        one_cluster_config("alpha", endpoint, false)
            + &format!(
                "\nproxy:\n  listen: 127.0.0.1:{port}\n  admin_listen: 127.0.0.1:{admin_port}\n{settings}"
            ),
    )
    .unwrap();
    let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
    (config, addr(port), addr(admin_port))
}

/// One HTTP/1.1 request with `Connection: close`: (status, body).
pub fn http(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
) -> std::io::Result<(u16, String)> {
    exchange(addr, method, host, path, "")
}

/// A write to the controller's API as a client program makes it: `Content-Type:
/// application/json` and an empty body (the controller refuses other writes).
pub fn api_write(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    exchange(
        addr,
        method,
        "localhost",
        path,
        "Content-Type: application/json\r\n",
    )
}

/// A request with no body and `extra` header lines (each ending in CRLF).
fn exchange(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    extra: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}
