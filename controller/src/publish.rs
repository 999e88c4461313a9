//! Publishing: the current table, shared with every watch stream through a `watch` channel,
//! and a bounded journal of the latest versions with the delta that made each.
//!
//! Two stream encodings:
//!
//! - **binary** (`encoding=binary`, what subscribers use): length-prefixed frames (a
//!   big-endian `u32` length, then a `wire` message; length 0 is a heartbeat). A subscriber
//!   that names the version and digest it holds gets the deltas from there to the current
//!   version when the journal still bridges the gap and they are smaller than a snapshot;
//!   otherwise (first connect, a gap, a table the journal never had, or `snapshot=1`) one
//!   snapshot. Every frame is encoded once per version and shared (`Bytes`) by all streams.
//! - **JSON** (the default, for `curl` and debugging): newline-delimited whole tables.
//!
//! Back-pressure: a stream computes what to send only when its connection asks for more, so
//! a slow subscriber holds at most the frames of one step (shared with every other stream),
//! never a queue of versions; when it catches up it is sent the deltas it lacks, or a
//! snapshot once the journal no longer reaches back to it. Snapshot sends are limited to
//! [`SNAPSHOT_SENDS`] at once (a stream waiting for its turn still sends heartbeats), so a
//! fleet reconnecting together does not hold thousands of snapshots in flight.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, Stream};
use meridian_routing::delta::TableDelta;
use meridian_routing::{Digest, RoutingTable, wire};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::metrics::Metrics;

/// How many recent versions the journal keeps, with the delta that made each (and no more
/// than a snapshot's worth of delta bytes): a subscriber that fell further behind gets a
/// snapshot.
pub const JOURNAL_LEN: usize = 256;
/// How many snapshots may be in flight at once over all streams.
pub const SNAPSHOT_SENDS: usize = 64;
/// The binary stream's heartbeat frame: a length of zero.
const HEARTBEAT_FRAME: &[u8] = &[0, 0, 0, 0];

/// One published table with its encodings.
#[derive(Debug)]
pub struct Published {
    /// The table.
    pub table: Arc<RoutingTable>,
    /// The binary snapshot as a frame (length prefix and `wire::encode(table)`).
    pub snapshot: Bytes,
    /// The delta from the version published before this one, as a frame; `None` for the
    /// first version a publisher holds.
    pub delta: Option<DeltaFrame>,
    /// The JSON line (`wire::encode_json` and a newline), made on first use.
    json_line: OnceLock<Bytes>,
}

/// A delta frame and the version it applies to.
#[derive(Debug, Clone)]
pub struct DeltaFrame {
    /// The version the delta applies to.
    pub base_version: u64,
    /// The digest of that version.
    pub base_digest: Digest,
    /// The frame.
    pub frame: Bytes,
}

impl Published {
    /// The table's JSON line, encoded once and shared.
    pub fn json_line(&self) -> Bytes {
        self.json_line
            .get_or_init(|| {
                let mut line = wire::encode_json(&self.table);
                line.push(b'\n');
                Bytes::from(line)
            })
            .clone()
    }

    /// The binary snapshot without its frame prefix, as the store keeps it.
    pub fn encoded(&self) -> &[u8] {
        &self.snapshot[4..]
    }
}

/// Puts `message` in a frame: its length as a big-endian `u32`, then the message.
pub fn frame(message: Vec<u8>) -> Bytes {
    let mut out = Vec::with_capacity(message.len() + 4);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(&message);
    Bytes::from(out)
}

/// The publishing side of the current table.
#[derive(Debug)]
pub struct Publisher {
    tx: watch::Sender<Option<Arc<Published>>>,
    /// The latest versions, oldest first, the current one last.
    journal: Mutex<Journal>,
    journal_len: usize,
    snapshot_sends: Arc<Semaphore>,
}

impl Default for Publisher {
    fn default() -> Self {
        Self::with_limits(JOURNAL_LEN, SNAPSHOT_SENDS)
    }
}

/// One version in the journal: its digest and the delta that made it. Tables and
/// snapshots are not kept: at 10,000 apps a table is tens of MiB.
#[derive(Debug)]
struct JournalEntry {
    version: u64,
    digest: Digest,
    delta: Option<DeltaFrame>,
}

/// The latest versions, oldest first, bounded in count and in the bytes of their deltas.
#[derive(Debug, Default)]
struct Journal {
    entries: VecDeque<JournalEntry>,
    delta_bytes: usize,
}

impl Journal {
    /// Adds `entry`, then drops the oldest while more than `len` are kept or their deltas
    /// weigh more than a snapshot (`snapshot_len`): a subscriber that far behind is sent a
    /// snapshot anyway.
    fn push(&mut self, entry: JournalEntry, len: usize, snapshot_len: usize) {
        self.delta_bytes += entry.delta.as_ref().map_or(0, |d| d.frame.len());
        self.entries.push_back(entry);
        while self.entries.len() > len
            || (self.entries.len() > 1 && self.delta_bytes > snapshot_len)
        {
            if let Some(gone) = self.entries.pop_front() {
                self.delta_bytes -= gone.delta.as_ref().map_or(0, |d| d.frame.len());
            }
        }
    }
}

/// What a watch stream asks for.
#[derive(Clone, Debug, Default)]
pub struct StreamRequest {
    /// The version the subscriber holds (0: none).
    pub held_version: u64,
    /// Its digest, when the subscriber named it: deltas are sent only from a known table.
    pub held_digest: Option<Digest>,
    /// Binary frames with deltas (else JSON lines of whole tables).
    pub binary: bool,
    /// A snapshot first, whatever the subscriber holds.
    pub snapshot: bool,
}

impl Publisher {
    /// A publisher keeping `journal_len` versions and sending at most `snapshot_sends`
    /// snapshots at once.
    pub fn with_limits(journal_len: usize, snapshot_sends: usize) -> Self {
        Self {
            tx: watch::channel(None).0,
            journal: Mutex::new(Journal::default()),
            journal_len: journal_len.max(1),
            snapshot_sends: Arc::new(Semaphore::new(snapshot_sends.max(1))),
        }
    }

    /// Encodes `table` as a binary snapshot frame; `publish` takes it, and the store keeps
    /// it without its 4-byte prefix.
    pub fn encode_frame(table: &RoutingTable) -> Bytes {
        frame(wire::encode(table))
    }

    /// Publishes `table`, with its frame from [`Publisher::encode_frame`], to every stream,
    /// with the delta from the table published before it.
    pub fn publish(&self, table: Arc<RoutingTable>, snapshot: Bytes) {
        let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        let delta = self.tx.borrow().as_ref().and_then(|prev| {
            (prev.table.version() < table.version()).then(|| {
                let delta = TableDelta::between(&prev.table, &table);
                DeltaFrame {
                    base_version: prev.table.version(),
                    base_digest: prev.table.digest(),
                    frame: frame(wire::encode_delta(&delta)),
                }
            })
        });
        let published = Arc::new(Published {
            table,
            snapshot,
            delta,
            json_line: OnceLock::new(),
        });
        journal.push(
            JournalEntry {
                version: published.table.version(),
                digest: published.table.digest(),
                delta: published.delta.clone(),
            },
            self.journal_len,
            published.snapshot.len(),
        );
        // Under the journal's lock: a stream that sees this version finds it in the journal.
        self.tx.send_replace(Some(published));
    }

    /// The current table.
    pub fn current(&self) -> Option<Arc<RoutingTable>> {
        self.tx.borrow().as_ref().map(|p| p.table.clone())
    }

    /// The current publication.
    pub fn current_published(&self) -> Option<Arc<Published>> {
        self.tx.borrow().clone()
    }

    /// The delta frames from (`version`, `digest`) to `to`, when the journal holds them all
    /// and together they are smaller than `to`'s snapshot.
    fn bridge(&self, version: u64, digest: Digest, to: &Published) -> Option<Vec<Bytes>> {
        let journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        let start = journal.entries.iter().position(|e| {
            e.delta
                .as_ref()
                .is_some_and(|d| d.base_version == version && d.base_digest == digest)
        })?;
        let mut frames = Vec::new();
        let mut size = 0;
        for e in journal.entries.iter().skip(start) {
            let d = e.delta.as_ref()?;
            size += d.frame.len();
            if size >= to.snapshot.len() {
                return None;
            }
            frames.push(d.frame.clone());
            if e.version == to.table.version() {
                return (e.digest == to.table.digest()).then_some(frames);
            }
        }
        None
    }

    /// A watch stream for a subscriber that asks for `request`.
    pub fn stream(
        self: &Arc<Self>,
        request: StreamRequest,
        subscriber: String,
        heartbeat: Duration,
        metrics: Metrics,
        shutdown: watch::Receiver<bool>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let mut rx = self.tx.subscribe();
        // Mark the current value unseen, so the first poll sends what is needed.
        rx.mark_changed();
        metrics.subscribers_connected.inc();
        let guard = Connected {
            metrics,
            subscriber,
        };
        let state = StreamState {
            publisher: self.clone(),
            rx,
            held: request.held_version,
            held_digest: if request.snapshot {
                None
            } else {
                request.held_digest
            },
            binary: request.binary,
            force_snapshot: request.snapshot,
            pending: VecDeque::new(),
            permit: None,
            guard,
            shutdown,
            heartbeat,
        };
        stream::unfold(state, |mut st| async move {
            let item = st.next().await?;
            Some((Ok(item), st))
        })
    }
}

struct StreamState {
    publisher: Arc<Publisher>,
    rx: watch::Receiver<Option<Arc<Published>>>,
    held: u64,
    held_digest: Option<Digest>,
    binary: bool,
    force_snapshot: bool,
    /// Frames decided on and not yet handed to the connection (shared with other streams).
    pending: VecDeque<Bytes>,
    /// Held while a snapshot is being written: released when the connection asks for more.
    permit: Option<OwnedSemaphorePermit>,
    guard: Connected,
    shutdown: watch::Receiver<bool>,
    heartbeat: Duration,
}

impl StreamState {
    fn heartbeat_item(&self) -> Bytes {
        if self.binary {
            Bytes::from_static(HEARTBEAT_FRAME)
        } else {
            Bytes::from_static(b"\n")
        }
    }

    /// The next chunk of the stream; `None` ends it.
    async fn next(&mut self) -> Option<Bytes> {
        // The connection asked for more: the snapshot handed over before has been taken.
        self.permit = None;
        if let Some(frame) = self.pending.pop_front() {
            return Some(frame);
        }
        loop {
            if *self.shutdown.borrow() {
                return None;
            }
            tokio::select! {
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    let current = self.rx.borrow_and_update().clone();
                    let Some(p) = current else { continue };
                    if let Some(item) = self.catch_up(&p).await {
                        return Some(item);
                    }
                }
                _ = tokio::time::sleep(self.heartbeat) => return Some(self.heartbeat_item()),
                _ = self.shutdown.changed() => return None,
            }
        }
    }

    /// What brings the subscriber to `p`: `None` when it holds it already.
    async fn catch_up(&mut self, p: &Arc<Published>) -> Option<Bytes> {
        let version = p.table.version();
        if !self.binary {
            if version == self.held {
                return None;
            }
            self.set_held(p);
            return Some(p.json_line());
        }
        let holds_it = version == self.held
            && self.held_digest.is_none_or(|d| d == p.table.digest())
            && !self.force_snapshot;
        if holds_it {
            self.held_digest = Some(p.table.digest());
            return None;
        }
        let bridge = match (self.held_digest, self.force_snapshot) {
            (Some(digest), false) if self.held > 0 => self.publisher.bridge(self.held, digest, p),
            _ => None,
        };
        if let Some(frames) = bridge {
            self.set_held(p);
            self.guard
                .metrics
                .watch_frames
                .with_label_values(&["delta"])
                .inc_by(frames.len() as u64);
            self.pending.extend(frames);
            return self.pending.pop_front();
        }
        // A snapshot waits for its turn, with heartbeats meanwhile (a reader that hears
        // nothing for three heartbeats would give up and come back for another snapshot).
        let acquire = self.publisher.snapshot_sends.clone().acquire_owned();
        match tokio::time::timeout(self.heartbeat, acquire).await {
            Ok(permit) => self.permit = permit.ok(),
            Err(_) => {
                // Decide again after the heartbeat, from whatever is current then.
                self.rx.mark_changed();
                return Some(self.heartbeat_item());
            }
        }
        self.force_snapshot = false;
        self.set_held(p);
        self.guard
            .metrics
            .watch_frames
            .with_label_values(&["snapshot"])
            .inc();
        Some(p.snapshot.clone())
    }

    fn set_held(&mut self, p: &Published) {
        self.held = p.table.version();
        self.held_digest = Some(p.table.digest());
        self.guard
            .metrics
            .subscriber_version
            .with_label_values(&[self.guard.subscriber.as_str()])
            .set(self.held as i64);
    }
}

/// Counts a stream as connected for as long as it lives.
struct Connected {
    metrics: Metrics,
    subscriber: String,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.metrics.subscribers_connected.dec();
        // The name is the subscriber's choice: its label lives only as long as its stream,
        // so the label set is bounded by the streams open.
        let _ = self
            .metrics
            .subscriber_version
            .remove_label_values(&[self.subscriber.as_str()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use meridian_routing::TableData;

    /// A table of 20 apps whose first app's weight is `weight`: large enough that a delta
    /// is smaller than a snapshot.
    fn table(version: u64, weight: u32) -> Arc<RoutingTable> {
        let apps: Vec<serde_json::Value> = (0..20)
            .map(|i| {
                serde_json::json!({
                    "name": format!("app-{i}"),
                    "hostnames": [format!("app-{i}.example.com")],
                    "failure_mode": "fail-open",
                    "dns_ttl": 30,
                    "targets": [{"cluster": "c1", "weight": if i == 0 { weight } else { 1 }}],
                })
            })
            .collect();
        let data: TableData = serde_json::from_value(serde_json::json!({
            "version": version,
            "generated_at_ms": 0,
            "regions": [{"name": "eu", "location": {"lat": 50.0, "lon": 8.0}}],
            "clusters": [{"name": "c1", "region": "eu", "provider": "x",
                          "location": {"lat": 50.0, "lon": 8.0}, "endpoints": ["127.0.0.1:1"]}],
            "apps": apps,
        }))
        .unwrap();
        Arc::new(RoutingTable::new(data).unwrap())
    }

    fn publish(p: &Publisher, t: Arc<RoutingTable>) {
        let frame = Publisher::encode_frame(&t);
        p.publish(t, frame);
    }

    async fn first(p: &Arc<Publisher>, request: StreamRequest) -> wire::Message {
        let (_tx, shutdown) = watch::channel(false);
        let s = p.stream(
            request,
            "t".into(),
            Duration::from_secs(60),
            Metrics::new().unwrap(),
            shutdown,
        );
        tokio::pin!(s);
        let item = s.next().await.unwrap().unwrap();
        wire::decode_message(&item[4..]).unwrap()
    }

    #[tokio::test]
    async fn deltas_from_a_known_version_else_a_snapshot() {
        let p = Arc::new(Publisher::with_limits(2, 1));
        let (v1, v2, v3, v4) = (table(1, 10), table(2, 20), table(3, 30), table(4, 40));
        for t in [&v1, &v2, &v3] {
            publish(&p, t.clone());
        }
        let binary = |held_version, held_digest| StreamRequest {
            held_version,
            held_digest,
            binary: true,
            snapshot: false,
        };
        // Two deltas bridge 1 → 3... but the journal keeps 2 versions: v2's delta from v1
        // and v3's from v2.
        let wire::Message::Delta(d) = first(&p, binary(1, Some(v1.digest()))).await else {
            panic!("expected a delta")
        };
        assert_eq!((d.base_version, d.version), (1, 2));
        // Unknown digest, no digest, or a snapshot asked for: a snapshot.
        for request in [
            binary(1, Some(v4.digest())),
            binary(1, None),
            StreamRequest {
                snapshot: true,
                ..binary(2, Some(v2.digest()))
            },
        ] {
            let wire::Message::Snapshot(t) = first(&p, request).await else {
                panic!("expected a snapshot")
            };
            assert_eq!(t.version(), 3);
        }
        publish(&p, v4.clone());
        // v1 fell out of the journal.
        assert!(matches!(
            first(&p, binary(1, Some(v1.digest()))).await,
            wire::Message::Snapshot(_)
        ));
    }
}
