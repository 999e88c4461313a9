//! The admin listener: `/livez` (the process answers), `/readyz` (a routing table is being
//! served; 503 until then) and `/metrics` (Prometheus text). A few requests a minute from
//! an orchestrator and a scraper: a blocking HTTP/1.0-style responder on one thread, one
//! request per connection, is all it needs.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use meridian_subscriber::TableCell;

use crate::answer::Handler;

pub(crate) fn render(handler: &Handler, cell: &TableCell) -> String {
    let table = cell.load();
    let mut out = handler
        .metrics
        .render(table.as_deref(), cell.staleness().map(|d| d.as_secs_f64()));
    out.push_str(&format!(
        "# HELP meridian_dns_dnssec_cache_entries Signatures of GSLB answers and denials held (signed ahead and since).\n# TYPE meridian_dns_dnssec_cache_entries gauge\nmeridian_dns_dnssec_cache_entries {}\n",
        handler.signature_cache_entries()
    ));
    out
}

pub(crate) fn serve(
    listener: TcpListener,
    handler: Arc<Handler>,
    cell: Arc<TableCell>,
    stop: Arc<AtomicBool>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 2048];
        let mut have = 0;
        // Read the request head (we ignore any body).
        while have < buf.len() {
            match stream.read(&mut buf[have..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    have += n;
                    if buf[..have].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
        let head = String::from_utf8_lossy(&buf[..have]);
        let mut parts = head.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let path = path.split('?').next().unwrap_or("");
        let (status, content_type, body) = match (method, path) {
            ("GET", "/livez") => ("200 OK", "text/plain", "ok\n".to_string()),
            ("GET", "/readyz") => match cell.load() {
                Some(table) => (
                    "200 OK",
                    "text/plain",
                    format!("ready: table version {}\n", table.version()),
                ),
                None => (
                    "503 Service Unavailable",
                    "text/plain",
                    "not ready: no routing table yet\n".to_string(),
                ),
            },
            ("GET", "/metrics") => (
                "200 OK",
                "text/plain; version=0.0.4",
                render(&handler, &cell),
            ),
            ("GET", _) => ("404 Not Found", "text/plain", "not found\n".to_string()),
            _ => (
                "405 Method Not Allowed",
                "text/plain",
                "only GET\n".to_string(),
            ),
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
