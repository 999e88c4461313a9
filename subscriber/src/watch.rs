//! Following the controller's watch stream: `GET {controller}/api/v1/watch?version=N`.
//!
//! The stream (`encoding=binary`) is a sequence of frames, each a big-endian `u32` length
//! and a wire-format message: a snapshot, or a delta to apply to the table held (checked
//! by its base version and digest, then by the digest of the result; a refused delta
//! makes the subscriber reconnect asking for a snapshot). A frame of length 0 is a
//! heartbeat. The subscriber names the version and digest it holds when it connects, so
//! the controller sends deltas from there when it can. The controller names its heartbeat interval in the
//! `meridian-heartbeat-ms` response header; a connection silent for three intervals is
//! treated as dead and replaced.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::Method;
use http_body_util::BodyExt;
use meridian_routing::{RoutingTable, TableError, wire};
use rand::Rng;
use tracing::{debug, info, warn};

use crate::cell::TableCell;
use crate::error::Error;
use crate::http::{ControllerClient, check_status, error_chain};
use crate::persist;

/// Where and how a subscriber follows the controller.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// The controller's base URL, such as `http://127.0.0.1:8090`.
    pub controller: String,
    /// The bearer token presented to the controller.
    pub token: Option<String>,
    /// Where the last good table is kept; `None` keeps nothing on disk.
    pub state_dir: Option<PathBuf>,
    /// Who is following, such as `proxy@host`; shown in the controller's metrics.
    pub subscriber: String,
}

/// The heartbeat interval assumed when the controller does not name one.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A frame longer than this is refused rather than buffered without end.
const MAX_FRAME: usize = 256 * 1024 * 1024;

/// Follows the controller forever, keeping `cell` at the newest table.
///
/// First loads the last good table from `state_dir` into the cell (when the cell holds an
/// older one or none), so a subscriber serves at once even with the controller down. Then
/// it follows the watch stream, reconnecting with capped exponential backoff and jitter and
/// resuming from the version it holds. Every table is validated (a snapshot by
/// `wire::decode_message`, a delta's result by `RoutingTable::apply`), swapped
/// into the cell and persisted atomically. Returns only on a fatal error: a bad URL, or the
/// controller refusing the token (401/403).
pub async fn follow(config: WatchConfig, cell: Arc<TableCell>) -> Result<(), Error> {
    let client = ControllerClient::new(&config.controller, config.token.clone())?;
    follow_with(client, config, cell).await
}

/// As [`follow`], through `client` (which may speak TLS, see
/// [`ControllerClient::with_tls`]); `config.controller` and `config.token` are not used.
pub async fn follow_with(
    client: ControllerClient,
    config: WatchConfig,
    cell: Arc<TableCell>,
) -> Result<(), Error> {
    if let Some(dir) = &config.state_dir {
        match persist::load(dir) {
            Ok(Some(table)) if table.version() > cell.version() => {
                info!(
                    version = table.version(),
                    dir = %dir.display(),
                    "serving the last good table from disk until the controller answers"
                );
                cell.store(Arc::new(table));
            }
            Ok(_) => {}
            Err(err) => warn!(error = %err, "ignoring the last good table on disk"),
        }
    }
    let mut backoff = BACKOFF_MIN;
    let mut want_snapshot = false;
    loop {
        match stream_once(&client, &config, &cell, &mut want_snapshot).await {
            Ok(got_table) => {
                if got_table {
                    backoff = BACKOFF_MIN;
                }
                debug!("watch stream ended; reconnecting");
            }
            Err(err) if err.is_fatal() => return Err(err),
            Err(err) if want_snapshot => {
                // A refused delta: straight back for a snapshot, once without waiting (a
                // controller that keeps sending bad deltas is then met with the backoff).
                debug!(error = %err, "reconnecting for a snapshot");
                if backoff == BACKOFF_MIN {
                    backoff *= 2;
                    continue;
                }
            }
            Err(err) => {
                warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "watch stream failed")
            }
        }
        // Full jitter in the upper half: subscribers that lost the controller together do
        // not come back in one burst, yet none waits much less than the backoff.
        let wait = rand::rng().random_range(backoff / 2..=backoff);
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection of the stream. `Ok(true)` when at least one table or heartbeat arrived.
async fn stream_once(
    client: &ControllerClient,
    config: &WatchConfig,
    cell: &TableCell,
    want_snapshot: &mut bool,
) -> Result<bool, Error> {
    let held = cell.load();
    let mut path = format!(
        "/api/v1/watch?encoding=binary&version={}&subscriber={}",
        held.as_ref().map_or(0, |t| t.version()),
        encode_query(&config.subscriber)
    );
    if let Some(table) = &held {
        path.push_str(&format!("&digest={}", table.digest()));
    }
    if *want_snapshot {
        path.push_str("&snapshot=1");
    }
    let url = format!("{}{}", client.base(), path);
    let response = client.send(Method::GET, &path, None).await?;
    let status = response.status();
    let heartbeat = response
        .headers()
        .get("meridian-heartbeat-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_HEARTBEAT);
    let mut body = response.into_body();
    if !status.is_success() {
        let bytes = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        check_status(&url, status, &bytes)?;
        return Ok(false);
    }
    let idle_limit = heartbeat * 3;
    let mut buf = BytesMut::new();
    let mut alive = false;
    loop {
        let frame = match tokio::time::timeout(idle_limit, body.frame()).await {
            Err(_) => {
                return Err(Error::Transport {
                    url,
                    message: format!("silent for {idle_limit:?}, three heartbeat intervals"),
                });
            }
            Ok(None) => return Ok(alive),
            Ok(Some(Err(e))) => {
                return Err(Error::Transport {
                    url,
                    message: error_chain(&e),
                });
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if len > MAX_FRAME {
                return Err(Error::Transport {
                    url,
                    message: format!("a frame of {len} bytes, longer than {MAX_FRAME}"),
                });
            }
            if buf.len() < 4 + len {
                buf.reserve(4 + len - buf.len());
                break;
            }
            buf.advance(4);
            let message = buf.split_to(len);
            alive = true;
            if message.is_empty() {
                continue;
            }
            let table_error = |error| Error::Table {
                source_name: url.clone(),
                error,
            };
            let table = match wire::decode_message(&message).map_err(table_error)? {
                wire::Message::Snapshot(table) => table,
                wire::Message::Delta(delta) => {
                    let applied = match cell.load() {
                        Some(held) => held.apply(&delta),
                        None => Err(TableError::DeltaBase {
                            held: 0,
                            base: delta.base_version,
                        }),
                    };
                    match applied {
                        Ok(table) => table,
                        Err(error) => {
                            // The table held is not the one the delta was made for, or
                            // applying it did not give the controller's table: start over
                            // from a snapshot.
                            warn!(%error, version = delta.version, "refused a delta; asking for a snapshot");
                            *want_snapshot = true;
                            return Err(table_error(error));
                        }
                    }
                }
            };
            *want_snapshot = false;
            install(config, cell, table);
        }
    }
}

fn install(config: &WatchConfig, cell: &TableCell, table: RoutingTable) {
    let version = table.version();
    if cell
        .load()
        .is_some_and(|held| held.version() == version && held.digest() == table.digest())
    {
        return;
    }
    let table = Arc::new(table);
    cell.store(table.clone());
    debug!(version, "routing table swapped in");
    if let Some(dir) = &config.state_dir {
        // Persisting must not hold up the swap; a failure leaves the previous good file.
        if let Err(err) = persist::save(dir, &table) {
            warn!(error = %err, "could not persist the routing table");
        }
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass as they are).
pub(crate) fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
