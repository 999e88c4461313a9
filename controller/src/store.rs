//! Durable state in an embedded redb database: operator overrides, the audit log, the
//! failover history and the last published table. Every change is one transaction that
//! commits with an fsync, so a crash mid-write (even kill -9) leaves the state before or
//! after it, never between: an override and its audit entry land together or not at all.

use std::path::Path;

use meridian_routing::{RoutingTable, wire};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::compute::Overrides;
use crate::error::Error;
use crate::verdict::Change;

const STATE: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("state");
const AUDIT: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("audit");
const HISTORY: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("history");

const KEY_OVERRIDES: &str = "overrides";
const KEY_TABLE: &str = "table";

/// The file name of the database inside `controller.data_dir`.
pub const DB_FILE: &str = "controller.redb";

/// One entry of the audit log: who changed what, when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// Sequence number, from 1.
    pub seq: u64,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// The token's name.
    pub who: String,
    /// The token's role.
    pub role: String,
    /// The action, such as `set-weight` or `drain`.
    pub action: String,
    /// What it applied to, such as `target:shop/aws-eu-west-1`.
    pub subject: String,
    /// The request's parameters.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// The pseudo-app of history entries about a member cluster as a whole.
pub const MEMBER_EVENT_APP: &str = "*";

/// One entry of the failover history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    /// Sequence number, from 1.
    pub seq: u64,
    /// The verdict change.
    #[serde(flatten)]
    pub change: Change,
}

/// The embedded store.
pub struct Store {
    db: Database,
    name: String,
    /// Tests make every write of a table (and of mirrored overrides) fail, to show a failed
    /// change leaves no trace.
    #[cfg(test)]
    pub(crate) fail_table_writes: std::sync::atomic::AtomicBool,
    /// Tests make every write of a table this slow, to show it blocks no other request.
    #[cfg(test)]
    pub(crate) slow_writes_ms: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.name)
    }
}

impl Store {
    /// Opens (creating if needed) the store in `dir`; `None` keeps it in memory.
    pub fn open(dir: Option<&Path>) -> Result<Self, Error> {
        let (db, name) = match dir {
            Some(dir) => {
                let path = dir.join(DB_FILE);
                let name = path.display().to_string();
                std::fs::create_dir_all(dir).map_err(|e| Error::Store {
                    path: name.clone(),
                    action: "creating the data directory",
                    error: Box::new(redb::Error::Io(e)),
                })?;
                let db = Database::create(&path).map_err(|e| Error::Store {
                    path: name.clone(),
                    action: "opening",
                    error: Box::new(e.into()),
                })?;
                (db, name)
            }
            None => {
                let db = Database::builder()
                    .create_with_backend(redb::backends::InMemoryBackend::new())
                    .map_err(|e| Error::Store {
                        path: "<memory>".into(),
                        action: "opening",
                        error: Box::new(e.into()),
                    })?;
                (db, "<memory>".to_string())
            }
        };
        let store = Self {
            db,
            name,
            #[cfg(test)]
            fail_table_writes: Default::default(),
            #[cfg(test)]
            slow_writes_ms: Default::default(),
        };
        store.write("creating tables", |txn| {
            txn.open_table(STATE)?;
            txn.open_table(AUDIT)?;
            txn.open_table(HISTORY)?;
            Ok(())
        })?;
        Ok(store)
    }

    fn err(&self, action: &'static str) -> impl FnOnce(redb::Error) -> Error + '_ {
        move |e| Error::Store {
            path: self.name.clone(),
            action,
            error: Box::new(e),
        }
    }

    fn write<T>(
        &self,
        action: &'static str,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, Error> {
        let run = || -> Result<T, redb::Error> {
            let txn = self.db.begin_write()?;
            let out = f(&txn)?;
            txn.commit()?;
            Ok(out)
        };
        run().map_err(self.err(action))
    }

    fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let run = || -> Result<Option<Vec<u8>>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(STATE)?;
            Ok(table.get(key)?.map(|v| v.value().to_vec()))
        };
        run().map_err(self.err("reading state"))
    }

    /// The stored overrides (empty when none were ever stored).
    pub fn overrides(&self) -> Result<Overrides, Error> {
        match self.get_state(KEY_OVERRIDES)? {
            None => Ok(Overrides::default()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::StoreDecode {
                what: "overrides".into(),
                error: e.to_string(),
            }),
        }
    }

    /// The last published table, if any.
    pub fn last_table(&self) -> Result<Option<RoutingTable>, Error> {
        match self.get_state(KEY_TABLE)? {
            None => Ok(None),
            Some(bytes) => wire::decode(&bytes)
                .map(Some)
                .map_err(|e| Error::StoreDecode {
                    what: "the last published table".into(),
                    error: e.to_string(),
                }),
        }
    }

    /// Stores `overrides`, the audit entry of the change that made them and the table that
    /// carries them (wire format, when the change made a new one), in one transaction: all
    /// land or none does. Returns the entry with its sequence number.
    pub fn commit_change(
        &self,
        overrides: &Overrides,
        mut entry: AuditEntry,
        table: Option<&[u8]>,
    ) -> Result<AuditEntry, Error> {
        #[cfg(test)]
        if table.is_some() {
            self.injected_failure("recording a change")?;
        }
        let overrides = serde_json::to_vec(overrides).unwrap_or_default();
        self.write("recording a change", |txn| {
            let mut state = txn.open_table(STATE)?;
            state.insert(KEY_OVERRIDES, overrides.as_slice())?;
            if let Some(table) = table {
                state.insert(KEY_TABLE, table)?;
            }
            drop(state);
            let mut audit = txn.open_table(AUDIT)?;
            entry.seq = audit.last()?.map_or(0, |(k, _)| k.value()) + 1;
            let bytes = serde_json::to_vec(&entry).unwrap_or_default();
            audit.insert(entry.seq, bytes.as_slice())?;
            Ok(())
        })?;
        Ok(entry)
    }

    /// Stores overrides made elsewhere (a follower mirroring its leader's), with no audit
    /// entry: the leader audited the change.
    pub fn save_overrides(&self, overrides: &Overrides) -> Result<(), Error> {
        #[cfg(test)]
        self.injected_failure("saving the overrides")?;
        let overrides = serde_json::to_vec(overrides).unwrap_or_default();
        self.write("saving the overrides", |txn| {
            txn.open_table(STATE)?
                .insert(KEY_OVERRIDES, overrides.as_slice())?;
            Ok(())
        })
    }

    #[cfg(test)]
    fn injected_failure(&self, action: &'static str) -> Result<(), Error> {
        let slow = self
            .slow_writes_ms
            .load(std::sync::atomic::Ordering::SeqCst);
        if slow > 0 {
            // Stands for a disk that takes its time to sync.
            std::thread::sleep(std::time::Duration::from_millis(slow));
        }
        if self
            .fail_table_writes
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Err(Error::Store {
                path: self.name.clone(),
                action,
                error: Box::new(redb::Error::Io(std::io::Error::other("injected failure"))),
            });
        }
        Ok(())
    }

    /// Stores a published table, given in the wire format (as `wire::encode` made it).
    pub fn save_table(&self, encoded: &[u8]) -> Result<(), Error> {
        #[cfg(test)]
        self.injected_failure("saving the table")?;
        self.write("saving the table", |txn| {
            txn.open_table(STATE)?.insert(KEY_TABLE, encoded)?;
            Ok(())
        })
    }

    /// Appends verdict changes to the failover history.
    pub fn append_history(&self, changes: &[Change]) -> Result<(), Error> {
        if changes.is_empty() {
            return Ok(());
        }
        self.write("appending to the history", |txn| {
            let mut history = txn.open_table(HISTORY)?;
            let mut seq = history.last()?.map_or(0, |(k, _)| k.value());
            for change in changes {
                seq += 1;
                let entry = HistoryEntry {
                    seq,
                    change: change.clone(),
                };
                let bytes = serde_json::to_vec(&entry).unwrap_or_default();
                history.insert(seq, bytes.as_slice())?;
            }
            Ok(())
        })
    }

    fn latest<T: for<'de> Deserialize<'de>>(
        &self,
        def: TableDefinition<'_, u64, &[u8]>,
        limit: usize,
    ) -> Result<Vec<T>, Error> {
        let run = || -> Result<Vec<Vec<u8>>, redb::Error> {
            let txn = self.db.begin_read()?;
            let table = txn.open_table(def)?;
            let mut out = Vec::new();
            for item in table.range::<u64>(..)?.rev().take(limit) {
                let (_, v) = item?;
                out.push(v.value().to_vec());
            }
            Ok(out)
        };
        let raw = run().map_err(self.err("reading a log"))?;
        raw.iter()
            .map(|b| {
                serde_json::from_slice(b).map_err(|e| Error::StoreDecode {
                    what: "a log entry".into(),
                    error: e.to_string(),
                })
            })
            .collect()
    }

    /// The newest `limit` audit entries, newest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        self.latest(AUDIT, limit)
    }

    /// The newest `limit` history entries, newest first.
    pub fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>, Error> {
        self.latest(HISTORY, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            seq: 0,
            at_ms: 5,
            who: "alice".into(),
            role: "operator".into(),
            action: action.into(),
            subject: "target:shop/c1".into(),
            detail: serde_json::json!({"weight": 3}),
        }
    }

    #[test]
    fn survives_reopen() {
        let dir = std::env::temp_dir().join(format!("meridian-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = Store::open(Some(&dir)).unwrap();
            let mut o = Overrides::default();
            o.weights.insert("shop/c1".into(), 3);
            assert_eq!(
                store
                    .commit_change(&o, entry("set-weight"), None)
                    .unwrap()
                    .seq,
                1
            );
            assert_eq!(
                store.commit_change(&o, entry("drain"), None).unwrap().seq,
                2
            );
        }
        let store = Store::open(Some(&dir)).unwrap();
        assert_eq!(store.overrides().unwrap().weights["shop/c1"], 3);
        let audit = store.audit(10).unwrap();
        assert_eq!(
            audit.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
            ["drain", "set-weight"]
        );
        assert_eq!(store.audit(1).unwrap().len(), 1);
        assert!(store.last_table().unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
