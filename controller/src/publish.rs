//! Publishing: the current table, shared with every watch stream through a `watch` channel.
//! A stream gets a full snapshot on connect (unless the subscriber already holds the
//! current version), then every new version, with heartbeat lines while idle.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, Stream};
use meridian_routing::{RoutingTable, wire};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// One published table with its encoded line (wire format and a newline).
#[derive(Debug)]
pub struct Published {
    /// The table.
    pub table: Arc<RoutingTable>,
    /// `wire::encode(table)` followed by `\n`.
    pub line: Bytes,
}

/// The publishing side of the current table.
#[derive(Debug)]
pub struct Publisher {
    tx: watch::Sender<Option<Arc<Published>>>,
}

impl Default for Publisher {
    fn default() -> Self {
        Self {
            tx: watch::channel(None).0,
        }
    }
}

impl Publisher {
    /// Encodes `table` as a stream line (the wire format and a newline).
    pub fn encode_line(table: &RoutingTable) -> Bytes {
        let mut line = wire::encode(table);
        line.push(b'\n');
        Bytes::from(line)
    }

    /// Publishes `table`, with its line from [`Publisher::encode_line`], to every stream.
    pub fn publish(&self, table: Arc<RoutingTable>, line: Bytes) {
        self.tx
            .send_replace(Some(Arc::new(Published { table, line })));
    }

    /// The current table.
    pub fn current(&self) -> Option<Arc<RoutingTable>> {
        self.tx.borrow().as_ref().map(|p| p.table.clone())
    }

    /// A watch stream for a subscriber holding `held_version`.
    pub fn stream(
        &self,
        held_version: u64,
        subscriber: String,
        heartbeat: Duration,
        metrics: Metrics,
        shutdown: watch::Receiver<bool>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let mut rx = self.tx.subscribe();
        // Mark the current value unseen, so the first poll sends the snapshot when needed.
        rx.mark_changed();
        metrics.subscribers_connected.inc();
        let guard = Connected {
            metrics,
            subscriber,
        };
        let state = (rx, held_version, guard, shutdown);
        stream::unfold(
            state,
            move |(mut rx, mut held, guard, mut shutdown)| async move {
                loop {
                    if *shutdown.borrow() {
                        return None;
                    }
                    tokio::select! {
                        changed = rx.changed() => {
                            if changed.is_err() {
                                return None;
                            }
                            let current = rx.borrow_and_update().clone();
                            if let Some(p) = current
                                && p.table.version() != held
                            {
                                held = p.table.version();
                                guard.metrics.subscriber_version
                                    .with_label_values(&[guard.subscriber.as_str()])
                                    .set(held as i64);
                                return Some((Ok(p.line.clone()), (rx, held, guard, shutdown)));
                            }
                        }
                        _ = tokio::time::sleep(heartbeat) => {
                            return Some((Ok(Bytes::from_static(b"\n")), (rx, held, guard, shutdown)));
                        }
                        _ = shutdown.changed() => return None,
                    }
                }
            },
        )
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
