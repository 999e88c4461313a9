//! The access log: one JSON line per request, to a file or stderr.
//!
//! The request path formats its line straight into a shared buffer (one short lock, no
//! allocation, no wake-up of another thread); a writer thread swaps the buffer out every
//! [`FLUSH_EVERY`] and writes it in one go, so a request never waits on a disk and a
//! busy proxy makes a few large writes a second rather than one per request. A rate cap
//! bounds what a flood of requests costs; lines over it, and lines that find the buffer
//! full (the writer behind by about a second's worth), are dropped and counted.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meridian_config::proxy::AccessLogConfig;
use prometheus::IntCounter;

use crate::error::Error;
use crate::metrics::Metrics;

/// How often the writer thread writes what has gathered.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Room per line allowed in the buffer (lines are about 200 bytes).
const LINE_ROOM: usize = 300;

/// One request, as logged.
pub(crate) struct Line<'a> {
    /// The client's address, as formatted once per connection.
    pub(crate) client: &'a str,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) app: &'a str,
    pub(crate) target: &'a str,
    pub(crate) attempts: u32,
    pub(crate) status: u16,
    /// From the request head to the response head.
    pub(crate) duration: Duration,
    /// Spent in attempts.
    pub(crate) upstream: Duration,
    pub(crate) table_version: u64,
}

/// Lines formatted and not written yet.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    lines: u64,
}

/// The access log of one proxy; see the module documentation.
pub(crate) struct AccessLog {
    pending: Arc<Mutex<Pending>>,
    /// Bytes the buffer may hold: about a second of lines at the rate cap.
    max_pending: usize,
    max_per_second: u32,
    /// The second (Unix time) the count below is for.
    second: AtomicU64,
    in_second: AtomicU32,
    dropped_rate: IntCounter,
    dropped_backlog: IntCounter,
}

impl AccessLog {
    /// Opens the file (or stderr) and starts the writer thread, which writes what is left
    /// and ends once the log is dropped.
    pub(crate) fn open(config: &AccessLogConfig, metrics: &Metrics) -> Result<Self, Error> {
        let sink: Box<dyn Write + Send> = match &config.file {
            Some(path) => Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| Error::AccessLog {
                        path: path.clone(),
                        source,
                    })?,
            ),
            None => Box::new(io::stderr()),
        };
        let pending = Arc::new(Mutex::new(Pending::default()));
        let writer = pending.clone();
        let written = metrics.access_log_lines.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(&writer, sink, &written))
            .map_err(|source| Error::AccessLog {
                path: config.file.clone().unwrap_or_else(|| "stderr".into()),
                source,
            })?;
        let max_pending = (config.max_lines_per_second as usize)
            .saturating_mul(LINE_ROOM)
            .clamp(64 * 1024, 64 * 1024 * 1024);
        Ok(AccessLog {
            pending,
            max_pending,
            max_per_second: config.max_lines_per_second,
            second: AtomicU64::new(0),
            in_second: AtomicU32::new(0),
            dropped_rate: metrics.access_log_dropped.with_label_values(&["rate"]),
            dropped_backlog: metrics.access_log_dropped.with_label_values(&["backlog"]),
        })
    }

    /// Logs `line` unless the rate cap or the writer's backlog says drop it.
    pub(crate) fn log(&self, line: &Line<'_>) {
        let ts_ms = unix_ms();
        if !self.admit(ts_ms / 1000) {
            self.dropped_rate.inc();
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.bytes.len() >= self.max_pending {
            drop(pending);
            self.dropped_backlog.inc();
            return;
        }
        format_line(&mut pending.bytes, line, ts_ms);
        pending.lines += 1;
    }

    /// A fixed one-second window: cheap, and exact enough for a cap (two requests racing
    /// at a second's turn may let a line or two more through).
    fn admit(&self, second: u64) -> bool {
        if self.second.load(Ordering::Relaxed) != second {
            self.second.store(second, Ordering::Relaxed);
            self.in_second.store(0, Ordering::Relaxed);
        }
        self.in_second.fetch_add(1, Ordering::Relaxed) < self.max_per_second
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Every [`FLUSH_EVERY`], swaps the buffer for an empty one and writes it out; after the
/// log is dropped (the thread holds the last reference), writes what is left and ends.
fn write_lines(
    pending: &Arc<Mutex<Pending>>,
    mut sink: Box<dyn Write + Send>,
    written: &IntCounter,
) {
    let mut spare = Pending::default();
    loop {
        std::thread::sleep(FLUSH_EVERY);
        let last = Arc::strong_count(pending) == 1;
        std::mem::swap(
            &mut *pending.lock().unwrap_or_else(|e| e.into_inner()),
            &mut spare,
        );
        if !spare.bytes.is_empty() {
            if sink
                .write_all(&spare.bytes)
                .and_then(|()| sink.flush())
                .is_ok()
            {
                written.inc_by(spare.lines);
            } else {
                // A full disk must not take the proxy down; the counter shows the gap.
                tracing::warn!(
                    lines = spare.lines,
                    "writing the access log failed; lines lost"
                );
            }
            spare.bytes.clear();
            spare.lines = 0;
        }
        if last {
            return;
        }
    }
}

/// One JSON object and a newline, written by hand into `out`: a profile of the first
/// version (`write!` and serde_json's escaper) showed the formatting machinery, u128
/// arithmetic for the durations included, as the larger part of the log's cost. Integers
/// are written digit by digit, durations as integer microseconds split into ms and a
/// three-digit fraction, and strings are copied whole unless they hold a byte JSON must
/// escape (rare: paths and names are mostly plain ASCII).
fn format_line(out: &mut Vec<u8>, line: &Line<'_>, ts_ms: u64) {
    // One capacity check for the whole line (escaping aside): the keys and numbers below
    // then copy without growing.
    out.reserve(
        LINE_ROOM + line.client.len() + line.path.len() + line.app.len() + line.target.len(),
    );
    out.extend_from_slice(b"{\"ts_ms\":");
    push_u64(out, ts_ms);
    push_str(out, b",\"client\":", line.client);
    push_str(out, b",\"method\":", line.method);
    push_str(out, b",\"path\":", line.path);
    push_str(out, b",\"app\":", line.app);
    push_str(out, b",\"target\":", line.target);
    out.extend_from_slice(b",\"attempts\":");
    push_u64(out, u64::from(line.attempts));
    out.extend_from_slice(b",\"status\":");
    push_u64(out, u64::from(line.status));
    push_millis(out, b",\"duration_ms\":", line.duration);
    push_millis(out, b",\"upstream_ms\":", line.upstream);
    out.extend_from_slice(b",\"table_version\":");
    push_u64(out, line.table_version);
    out.extend_from_slice(b"}\n");
}

/// Digit by digit, most significant first (no slice copy of a variable length: that is a
/// call to memcpy, which showed in profiles).
fn push_u64(out: &mut Vec<u8>, n: u64) {
    let mut scale = 1u64;
    while scale <= n / 10 {
        scale *= 10;
    }
    loop {
        out.push(b'0' + (n / scale % 10) as u8);
        if scale == 1 {
            break;
        }
        scale /= 10;
    }
}

/// `key` then `d` in milliseconds with three decimals (microsecond precision).
fn push_millis(out: &mut Vec<u8>, key: &[u8], d: Duration) {
    // u64 microseconds last 584,000 years; saturate rather than wrap beyond.
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    out.extend_from_slice(key);
    push_u64(out, us / 1000);
    let frac = us % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// `key` then `value` as a JSON string.
fn push_str(out: &mut Vec<u8>, key: &[u8], value: &str) {
    out.extend_from_slice(key);
    if value
        .bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f)
    {
        out.push(b'"');
        out.extend_from_slice(value.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_with_escaped_strings() {
        let mut out = Vec::new();
        let line = Line {
            client: "::1",
            method: "GET",
            path: "/a\"b\\c",
            app: "shop",
            target: "",
            attempts: 2,
            status: 200,
            duration: Duration::from_micros(1500),
            upstream: Duration::from_micros(250),
            table_version: 7,
        };
        format_line(&mut out, &line, 1_700_000_000_000);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["path"], "/a\"b\\c");
        assert_eq!(v["client"], "::1");
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["upstream_ms"], 0.25);
        assert_eq!(v["ts_ms"], 1_700_000_000_000u64);
        assert_eq!(v["table_version"], 7);
        assert_eq!(v["status"], 200);
    }

    #[test]
    fn numbers_and_strings_format_as_json_would() {
        for (n, text) in [
            (0u64, "0"),
            (9, "9"),
            (10, "10"),
            (u64::MAX, "18446744073709551615"),
        ] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, text.as_bytes());
        }
        for (us, text) in [
            (0, "0.000"),
            (7, "0.007"),
            (1_234_567, "1234.567"),
            (50_000, "50.000"),
        ] {
            let mut out = Vec::new();
            push_millis(&mut out, b"", Duration::from_micros(us));
            assert_eq!(out, text.as_bytes());
        }
        for value in [
            "/plain",
            "/caf\u{e9}",
            "tab\there",
            "nl\n",
            "q\"",
            "b\\",
            "\u{7f}",
            "",
        ] {
            let mut out = Vec::new();
            push_str(&mut out, b"", value);
            let parsed: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(parsed, value);
        }
    }

    #[test]
    fn the_rate_cap_admits_that_many_lines_a_second() {
        let metrics = Metrics::new().unwrap();
        let log = AccessLog::open(
            &AccessLogConfig {
                file: Some(
                    std::env::temp_dir()
                        .join(format!("meridian-access-cap-{}.log", std::process::id())),
                ),
                max_lines_per_second: 5,
            },
            &metrics,
        )
        .unwrap();
        let admitted = (0..20).filter(|_| log.admit(7)).count();
        assert_eq!(admitted, 5);
        assert!(log.admit(8), "a new second starts a new count");
        drop(log);
        let _ = std::fs::remove_file(
            std::env::temp_dir().join(format!("meridian-access-cap-{}.log", std::process::id())),
        );
    }
}
