//! Shared by tests that run the `meridian` binary: a child killed on drop, a temporary
//! directory, a free port, and one plain HTTP/1.1 request.

#![allow(
    dead_code,
    reason = "each test binary uses a part of the support module"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
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
