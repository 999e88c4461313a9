use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use meridian_routing::RoutingTable;

/// The routing table a subscriber serves from. Readers get a whole version or none, and
/// never wait for a writer (arc-swap); a swap never drops a request or query in flight,
/// since each holds its own `Arc` of the version it started with.
#[derive(Debug, Default)]
pub struct TableCell {
    table: ArcSwapOption<RoutingTable>,
    /// When the current table was stored, ms since the Unix epoch (0: never).
    stored_at_ms: AtomicU64,
    /// The version last stored, for whoever waits for the next table (not the hot path).
    stored: tokio::sync::watch::Sender<u64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl TableCell {
    /// An empty cell: no table yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current table, if any.
    pub fn load(&self) -> Option<Arc<RoutingTable>> {
        self.table.load_full()
    }

    /// Swaps in `table` and returns the one it replaced.
    pub fn store(&self, table: Arc<RoutingTable>) -> Option<Arc<RoutingTable>> {
        let version = table.version();
        let old = self.table.swap(Some(table));
        self.stored_at_ms.store(now_ms(), Ordering::Release);
        self.stored.send_replace(version);
        old
    }

    /// Wakes on every store: `changed()` on the receiver waits for the next table.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.stored.subscribe()
    }

    /// The current table's version, 0 when there is none.
    pub fn version(&self) -> u64 {
        self.table.load().as_ref().map_or(0, |t| t.version())
    }

    /// How old the current table is: time since the controller generated it, `None` when
    /// there is no table. This is the staleness subscribers report in metrics and health.
    pub fn staleness(&self) -> Option<Duration> {
        let table = self.table.load();
        let generated = table.as_ref()?.data().generated_at_ms;
        Some(Duration::from_millis(now_ms().saturating_sub(generated)))
    }

    /// Time since a table was last stored in this cell, `None` when never.
    pub fn since_stored(&self) -> Option<Duration> {
        match self.stored_at_ms.load(Ordering::Acquire) {
            0 => None,
            at => Some(Duration::from_millis(now_ms().saturating_sub(at))),
        }
    }
}
