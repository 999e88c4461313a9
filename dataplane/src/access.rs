//! The access log: one JSON line per request, to a file or stderr.
//!
//! The request path formats a line and hands it to a writer thread through a bounded
//! queue, so it never waits on a disk. A rate cap bounds what a flood of requests costs in
//! formatting and writing; lines over it, and lines that find the queue full (the writer a
//! second or more behind), are dropped and counted rather than stalling requests.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use meridian_config::proxy::AccessLogConfig;
use prometheus::IntCounter;

use crate::error::Error;
use crate::metrics::Metrics;

/// One request, as logged.
pub(crate) struct Line<'a> {
    pub(crate) client: IpAddr,
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) app: &'a str,
    pub(crate) target: &'a str,
    pub(crate) attempts: u32,
    pub(crate) status: u16,
    pub(crate) duration_ms: f64,
    pub(crate) upstream_ms: f64,
    pub(crate) table_version: u64,
}

/// The access log of one proxy; see the module documentation.
pub(crate) struct AccessLog {
    queue: SyncSender<Vec<u8>>,
    max_per_second: u32,
    epoch: Instant,
    /// The second (since `epoch`) the count below is for.
    second: AtomicU64,
    in_second: AtomicU32,
    dropped_rate: IntCounter,
    dropped_backlog: IntCounter,
}

impl AccessLog {
    /// Opens the file (or stderr) and starts the writer thread, which ends when the log
    /// is dropped.
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
        // A second's worth of lines may wait for the writer.
        let (queue, lines) = mpsc::sync_channel::<Vec<u8>>(config.max_lines_per_second as usize);
        let written = metrics.access_log_lines.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(lines, sink, written))
            .map_err(|source| Error::AccessLog {
                path: config.file.clone().unwrap_or_else(|| "stderr".into()),
                source,
            })?;
        Ok(AccessLog {
            queue,
            max_per_second: config.max_lines_per_second,
            epoch: Instant::now(),
            second: AtomicU64::new(0),
            in_second: AtomicU32::new(0),
            dropped_rate: metrics.access_log_dropped.with_label_values(&["rate"]),
            dropped_backlog: metrics.access_log_dropped.with_label_values(&["backlog"]),
        })
    }

    /// Logs `line` unless the rate cap or the writer's backlog says drop it.
    pub(crate) fn log(&self, line: &Line<'_>) {
        if !self.admit() {
            self.dropped_rate.inc();
            return;
        }
        let mut buf = Vec::with_capacity(256);
        format_line(&mut buf, line, unix_ms());
        match self.queue.try_send(buf) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped_backlog.inc();
            }
        }
    }

    /// A fixed one-second window: cheap, and exact enough for a cap (two requests racing
    /// at a second's turn may let a line or two more through).
    fn admit(&self) -> bool {
        let now = self.epoch.elapsed().as_secs();
        if self.second.load(Ordering::Relaxed) != now {
            self.second.store(now, Ordering::Relaxed);
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

/// Writes lines as they come, flushing whenever the queue runs empty: one write per line
/// when quiet, batches under load.
fn write_lines(lines: mpsc::Receiver<Vec<u8>>, sink: Box<dyn Write + Send>, written: IntCounter) {
    let mut out = BufWriter::with_capacity(64 * 1024, sink);
    while let Ok(line) = lines.recv() {
        let mut batch = 1;
        let mut ok = out.write_all(&line).is_ok();
        while let Ok(line) = lines.try_recv() {
            ok &= out.write_all(&line).is_ok();
            batch += 1;
        }
        ok &= out.flush().is_ok();
        if ok {
            written.inc_by(batch);
        } else {
            // A full disk must not take the proxy down; the counter shows the gap.
            tracing::warn!("writing the access log failed; lines lost");
        }
    }
    let _ = out.flush();
}

/// One JSON object and a newline. Written by hand: the strings are the only fields that
/// need escaping, and serde_json's string escaper does that.
fn format_line(out: &mut Vec<u8>, line: &Line<'_>, ts_ms: u64) {
    use std::io::Write as _;
    let string = |out: &mut Vec<u8>, key: &str, value: &str| {
        let _ = write!(out, ",\"{key}\":");
        let _ = serde_json::to_writer(&mut *out, value);
    };
    let _ = write!(out, "{{\"ts_ms\":{ts_ms}");
    let _ = write!(out, ",\"client\":\"{}\"", line.client);
    string(out, "method", line.method);
    string(out, "path", line.path);
    string(out, "app", line.app);
    string(out, "target", line.target);
    let _ = write!(
        out,
        ",\"attempts\":{},\"status\":{},\"duration_ms\":{:.3},\"upstream_ms\":{:.3},\"table_version\":{}}}",
        line.attempts, line.status, line.duration_ms, line.upstream_ms, line.table_version
    );
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_with_escaped_strings() {
        let mut out = Vec::new();
        let line = Line {
            client: "::1".parse().unwrap(),
            method: "GET",
            path: "/a\"b\\c",
            app: "shop",
            target: "",
            attempts: 2,
            status: 200,
            duration_ms: 1.5,
            upstream_ms: 0.25,
            table_version: 7,
        };
        format_line(&mut out, &line, 1_700_000_000_000);
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["path"], "/a\"b\\c");
        assert_eq!(v["client"], "::1");
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["duration_ms"], 1.5);
        assert_eq!(v["ts_ms"], 1_700_000_000_000u64);
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
        let admitted = (0..20).filter(|_| log.admit()).count();
        assert_eq!(admitted, 5);
        drop(log);
        let _ = std::fs::remove_file(
            std::env::temp_dir().join(format!("meridian-access-cap-{}.log", std::process::id())),
        );
    }
}
