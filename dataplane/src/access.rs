//! The access log: one JSON line per request, to a file or stderr.
//!
//! The request path formats its line into one buffer (a short lock, no allocation, no
//! clock read, no wake-up of anything) and, once the buffer holds [`WRITE_AT`] bytes, writes
//! it out itself, as nginx's buffered access log does: about one write per 300 lines. A
//! task on the proxy's runtime writes what has gathered every [`FLUSH_EVERY`], so a quiet
//! proxy's lines are not held back; what is left is written when the log is dropped. A
//! rate cap bounds what a flood of requests costs; lines over it are dropped and counted,
//! and so are lines a failed write loses (a full disk must not take the proxy down).
//!
//! What this layout saves, measured (bench/proxy-results.md): a writer thread of its own
//! turned a single-worker proxy multi-threaded, which switches on glibc's locked malloc
//! and the cancellation bookkeeping around every syscall (about 4 % of the proxy's CPU at
//! full load); a buffer of 100 ms of lines (a megabyte) written by that thread was cold in
//! cache by the time each line was written into it. The small buffer stays in cache. The
//! timestamp comes from the monotonic instant the request path already read, turned into
//! Unix time by an offset the flush task keeps current, and its seconds are formatted once
//! per second; numbers are written with constant divisors only.
//!
//! The cost: the request that fills the buffer waits for its write (a copy of 64 KiB into
//! the page cache, tens of microseconds), and a sink that blocks (stderr into a pipe nobody
//! reads) stalls the proxy, as the tracing log on stderr already would. Outside a runtime
//! (unit tests) a thread does the periodic flush.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meridian_config::proxy::AccessLogConfig;
use prometheus::IntCounter;

use crate::error::Error;
use crate::metrics::Metrics;

/// How often what has gathered is written, however little.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// The buffer is written out once it holds this much.
const WRITE_AT: usize = 64 * 1024;
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
    /// When the response head was ready (the line's timestamp).
    pub(crate) at: Instant,
    /// From the request head to the response head.
    pub(crate) duration: Duration,
    /// Spent in attempts.
    pub(crate) upstream: Duration,
    pub(crate) table_version: u64,
}

/// Lines formatted and not written yet, and where they go.
struct Buffer {
    sink: Box<dyn Write + Send>,
    bytes: Vec<u8>,
    lines: u64,
    /// The Unix second last formatted, and `{"ts_ms":` with its digits.
    second: u64,
    second_text: Vec<u8>,
}

impl Buffer {
    /// Writes the lines gathered; counts them as written, or as lost when the write fails.
    fn write_out(&mut self, written: &IntCounter, lost: &IntCounter) {
        if self.bytes.is_empty() {
            return;
        }
        match self
            .sink
            .write_all(&self.bytes)
            .and_then(|()| self.sink.flush())
        {
            Ok(()) => written.inc_by(self.lines),
            Err(err) => {
                lost.inc_by(self.lines);
                tracing::warn!(%err, lines = self.lines, "writing the access log failed; lines lost");
            }
        }
        self.bytes.clear();
        self.lines = 0;
    }
}

/// Unix time from monotonic instants: `base` and the Unix milliseconds at `base`, which
/// the writer thread re-reads every flush (so a wall clock step shows within 100 ms).
struct Clock {
    base: Instant,
    unix_ms_at_base: AtomicU64,
}

impl Clock {
    fn new() -> Self {
        let clock = Clock {
            base: Instant::now(),
            unix_ms_at_base: AtomicU64::new(0),
        };
        clock.sync();
        clock
    }

    fn sync(&self) {
        let since_base = self.base.elapsed();
        let ms = unix_ms().saturating_sub(millis(since_base));
        self.unix_ms_at_base.store(ms, Ordering::Relaxed);
    }

    fn unix_ms(&self, at: Instant) -> u64 {
        self.unix_ms_at_base.load(Ordering::Relaxed)
            + millis(at.saturating_duration_since(self.base))
    }
}

/// Whole milliseconds in u64 arithmetic (`Duration::as_millis` is u128).
fn millis(d: Duration) -> u64 {
    d.as_secs() * 1000 + u64::from(d.subsec_millis())
}

/// The access log of one proxy; see the module documentation.
pub(crate) struct AccessLog {
    inner: Arc<Inner>,
    max_per_second: u32,
    /// The second (Unix time) the count below is for.
    second: AtomicU64,
    in_second: AtomicU32,
    dropped_rate: IntCounter,
}

/// What the request path and the flush share.
struct Inner {
    buffer: Mutex<Buffer>,
    clock: Clock,
    written: IntCounter,
    lost: IntCounter,
}

impl AccessLog {
    /// Opens the file (or stderr) and starts the flush task (a thread outside a runtime),
    /// which ends once the log is dropped; what is left is written then.
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
        let inner = Arc::new(Inner {
            buffer: Mutex::new(Buffer {
                sink,
                bytes: Vec::with_capacity(WRITE_AT + 4 * LINE_ROOM),
                lines: 0,
                second: 0,
                second_text: Vec::new(),
            }),
            clock: Clock::new(),
            written: metrics.access_log_lines.clone(),
            lost: metrics.access_log_dropped.with_label_values(&["error"]),
        });
        let flusher = Arc::downgrade(&inner);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(flush_task(flusher));
            }
            Err(_) => {
                std::thread::Builder::new()
                    .name("access-log".into())
                    .spawn(move || flush_thread(&flusher))
                    .map_err(|source| Error::AccessLog {
                        path: config.file.clone().unwrap_or_else(|| "stderr".into()),
                        source,
                    })?;
            }
        }
        Ok(AccessLog {
            inner,
            max_per_second: config.max_lines_per_second,
            second: AtomicU64::new(0),
            in_second: AtomicU32::new(0),
            dropped_rate: metrics.access_log_dropped.with_label_values(&["rate"]),
        })
    }

    /// Logs `line` unless the rate cap says drop it.
    pub(crate) fn log(&self, line: &Line<'_>) {
        let inner = &*self.inner;
        let ts_ms = inner.clock.unix_ms(line.at);
        let second = ts_ms / 1000;
        if !self.admit(second) {
            self.dropped_rate.inc();
            return;
        }
        let mut buffer = inner.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let buffer = &mut *buffer;
        if buffer.second != second || buffer.second_text.is_empty() {
            buffer.second = second;
            buffer.second_text.clear();
            buffer.second_text.extend_from_slice(b"{\"ts_ms\":");
            push_u64(&mut buffer.second_text, second);
        }
        format_line(&mut buffer.bytes, &buffer.second_text, line, ts_ms);
        buffer.lines += 1;
        if buffer.bytes.len() >= WRITE_AT {
            buffer.write_out(&inner.written, &inner.lost);
        }
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

impl Inner {
    fn flush(&self) {
        self.clock.sync();
        self.buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_out(&self.written, &self.lost);
    }
}

impl Drop for Inner {
    /// The last reference gone (the proxy stopped): writes what is left.
    fn drop(&mut self) {
        self.flush();
    }
}

/// Every [`FLUSH_EVERY`], writes what has gathered; ends once the log is dropped.
async fn flush_task(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(FLUSH_EVERY).await;
        match inner.upgrade() {
            Some(inner) => inner.flush(),
            None => return,
        }
    }
}

/// As [`flush_task`], on a thread of its own.
fn flush_thread(inner: &Weak<Inner>) {
    loop {
        std::thread::sleep(FLUSH_EVERY);
        match inner.upgrade() {
            Some(inner) => inner.flush(),
            None => return,
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One JSON object and a newline, written by hand into `out`; `second` is `{"ts_ms":`
/// and the Unix second of `ts_ms`, formatted once per second. Profiles showed the
/// formatting machinery (`write!`, u128 arithmetic for durations) and then integer
/// division by a variable as most of the line's cost: integers here are written with
/// constant divisors only, durations as integer microseconds split into ms and a
/// three-digit fraction, and strings are copied whole unless they hold a byte JSON must
/// escape (rare: paths and names are mostly plain ASCII).
fn format_line(out: &mut Vec<u8>, second: &[u8], line: &Line<'_>, ts_ms: u64) {
    // One capacity check for the whole line (escaping aside): the keys and numbers below
    // then copy without growing.
    out.reserve(
        LINE_ROOM + line.client.len() + line.path.len() + line.app.len() + line.target.len(),
    );
    out.extend_from_slice(second);
    push_3(out, ts_ms % 1000);
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

/// `n` in decimal: digits written backwards into a stack buffer by constant divisions
/// (multiplications once compiled), then copied once.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    if n < 10 {
        out.push(b'0' + n as u8);
        return;
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    while n > 0 {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits[at..]);
}

/// `n` (below 1000) as exactly three digits.
fn push_3(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&[
        b'0' + (n / 100 % 10) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]);
}

/// `key` then `d` in milliseconds with three decimals (microsecond precision).
fn push_millis(out: &mut Vec<u8>, key: &[u8], d: Duration) {
    // Microseconds in u64 arithmetic (`as_micros` is u128); they last 584,000 years.
    let us = d
        .as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_micros()));
    out.extend_from_slice(key);
    push_u64(out, us / 1000);
    out.push(b'.');
    push_3(out, us % 1000);
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
            at: Instant::now(),
            duration: Duration::from_micros(1500),
            upstream: Duration::from_micros(250),
            table_version: 7,
        };
        let mut second = b"{\"ts_ms\":".to_vec();
        push_u64(&mut second, 1_700_000_000);
        format_line(&mut out, &second, &line, 1_700_000_000_007);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["path"], "/a\"b\\c");
        assert_eq!(v["client"], "::1");
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["upstream_ms"], 0.25);
        assert_eq!(v["ts_ms"], 1_700_000_000_007u64);
        assert_eq!(v["table_version"], 7);
        assert_eq!(v["status"], 200);
    }

    #[test]
    fn numbers_and_strings_format_as_json_would() {
        for (n, text) in [
            (0u64, "0"),
            (9, "9"),
            (10, "10"),
            (1_700_000_000, "1700000000"),
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
    fn the_clock_tells_unix_time_from_instants() {
        let clock = Clock::new();
        let now = Instant::now();
        let wall = unix_ms();
        assert!(clock.unix_ms(now).abs_diff(wall) < 50);
        let later = now + Duration::from_millis(1500);
        assert_eq!(clock.unix_ms(later) - clock.unix_ms(now), 1500);
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
