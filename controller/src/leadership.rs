//! Which replica writes. With several controller replicas one is elected leader (Kubernetes
//! mode, through a Lease); only the leader computes and publishes tables, changes overrides
//! and writes to Kubernetes. A follower keeps serving: it mirrors the leader's tables (the
//! same versions, so a subscriber may move between replicas) and overrides into its own
//! store, serves the read API and the watch streams from them, and forwards every write
//! (operator changes, vantage reports) to the leader (`api::forward`). When it is elected
//! it resumes from the last mirrored version, with the leader's overrides.

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use meridian_subscriber::TableCell;
use meridian_subscriber::http::ControllerClient;
use meridian_subscriber::watch::{WatchConfig, follow};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::Shared;
use crate::compute::Overrides;
use crate::publish::Publisher;

/// This replica's part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Leadership {
    /// Whether this replica is the leader (always, without leader election).
    pub is_leader: bool,
    /// This replica's identity: the URL others reach it at.
    pub identity: String,
    /// The leader's identity, when one is known.
    pub leader: Option<String>,
}

impl Leadership {
    /// A replica that leads alone (no election).
    pub fn alone(identity: String) -> Self {
        Self {
            is_leader: true,
            leader: Some(identity.clone()),
            identity,
        }
    }

    /// The leader to mirror and forward to: known, and not this replica.
    pub(crate) fn other_leader(&self) -> Option<&str> {
        if self.is_leader {
            return None;
        }
        self.leader.as_deref().filter(|l| *l != self.identity)
    }
}

/// While this replica follows, mirrors the leader's tables and overrides. Ends on shutdown.
pub(crate) async fn mirror(shared: Arc<Shared>, token: Option<String>) {
    let mut roles = shared.leadership.subscribe();
    let mut stop = shared.shutdown.subscribe();
    loop {
        let leader = roles.borrow_and_update().other_leader().map(str::to_string);
        tokio::select! {
            _ = async {
                match &leader {
                    Some(leader) => mirror_from(&shared, leader, token.clone()).await,
                    None => std::future::pending().await,
                }
            } => {}
            changed = roles.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Follows one leader until its stream fails for good (then waits and returns, so the
/// caller tries again).
async fn mirror_from(shared: &Arc<Shared>, leader: &str, token: Option<String>) {
    info!(%leader, "following the leader's tables and overrides");
    let cell = Arc::new(TableCell::new());
    if let Some(table) = shared.publisher.current() {
        cell.store(table);
    }
    let mut stored = cell.subscribe();
    let client = ControllerClient::new(leader, token.clone());
    let config = WatchConfig {
        controller: leader.to_string(),
        token,
        state_dir: None,
        subscriber: format!("controller {}", shared.leadership.borrow().identity),
    };
    let follow = follow(config, cell.clone());
    tokio::pin!(follow);
    loop {
        tokio::select! {
            result = &mut follow => {
                if let Err(err) = result {
                    warn!(%leader, error = %err, "cannot follow the leader");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                return;
            }
            changed = stored.changed() => {
                if changed.is_err() {
                    return;
                }
                let Some(table) = cell.load() else { continue };
                if table.version() <= shared.publisher.current().map_or(0, |t| t.version()) {
                    continue;
                }
                // Overrides first: a table carries what its overrides made.
                if let Ok(client) = &client {
                    sync_overrides(shared, client).await;
                }
                let line = Publisher::encode_line(&table);
                // Durable before published, as on the leader: a table that could not be
                // stored is not served (the next one from the leader is tried).
                let store_shared = shared.clone();
                let bytes = line.clone();
                let saved = tokio::task::spawn_blocking(move || {
                    store_shared.store.save_table(&bytes[..bytes.len() - 1])
                })
                .await;
                if !matches!(saved, Ok(Ok(()))) {
                    let error = match saved {
                        Ok(Err(err)) => err.to_string(),
                        Err(err) => err.to_string(),
                        Ok(Ok(())) => String::new(),
                    };
                    warn!(%error, version = table.version(), "could not store the mirrored table; not publishing it");
                    continue;
                }
                shared.metrics.table_version.set(table.version() as i64);
                shared.metrics.table_bytes.set(line.len() as i64);
                shared.publisher.publish(table, line);
            }
        }
    }
}

async fn sync_overrides(shared: &Arc<Shared>, client: &ControllerClient) {
    let overrides = match client
        .call(Method::GET, "/api/v1/overrides", None)
        .await
        .map_err(|e| e.to_string())
        .and_then(|(_, body)| serde_json::from_slice::<Overrides>(&body).map_err(|e| e.to_string()))
    {
        Ok(overrides) => overrides,
        Err(err) => {
            warn!(error = %err, "could not mirror the leader's overrides");
            return;
        }
    };
    if shared.state().overrides == overrides {
        return;
    }
    let store_shared = shared.clone();
    let to_store = overrides.clone();
    match tokio::task::spawn_blocking(move || store_shared.store.save_overrides(&to_store)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => warn!(error = %err, "could not store the mirrored overrides"),
        Err(err) => warn!(error = %err, "storing the mirrored overrides failed"),
    }
    shared.state().overrides = overrides;
}
