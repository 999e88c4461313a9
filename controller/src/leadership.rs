//! Which replica writes. With several controller replicas one is elected leader (Kubernetes
//! mode, through a Lease); only the leader computes and publishes tables, changes overrides
//! and writes to Kubernetes. A follower keeps serving: it mirrors the leader's tables (the
//! same versions, so a subscriber may move between replicas) and overrides into its own
//! store, serves the read API and the watch streams from them, and forwards every write
//! (operator changes, vantage reports) to the leader (`api::forward`). When it is elected
//! it resumes from the last mirrored version, with the leader's overrides.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use meridian_routing::RoutingTable;
use meridian_subscriber::TableCell;
use meridian_subscriber::http::ControllerClient;
use meridian_subscriber::watch::{WatchConfig, follow_with};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

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

/// Runs one Kubernetes write only if this replica leads at this very moment; `None` when it
/// was not sent. The check sits immediately before the request goes out (an async write
/// sends nothing until it is awaited), not once per reconcile pass: a pass awaits many
/// calls, and the elector publishes the loss of the Lease before any other replica may take
/// it, so a replica that loses it mid-pass sends no further write. What stays open is a
/// write already in flight when the Lease is lost; the renew deadline's margin below the
/// Lease duration is for that.
pub(crate) async fn fenced<T>(
    shared: &Shared,
    what: &str,
    write: impl Future<Output = T>,
) -> Option<T> {
    if !shared.is_leader() {
        debug!(%what, "not the leader (any more): Kubernetes write not sent");
        return None;
    }
    Some(write.await)
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
    let client = ControllerClient::with_tls(leader, token.clone(), &shared.peer_tls);
    let config = WatchConfig {
        controller: leader.to_string(),
        token,
        state_dir: None,
        subscriber: format!("controller {}", shared.leadership.borrow().identity),
    };
    let follow = async {
        match ControllerClient::with_tls(leader, config.token.clone(), &shared.peer_tls) {
            Ok(watch) => follow_with(watch, config, cell.clone()).await,
            Err(err) => Err(err),
        }
    };
    tokio::pin!(follow);
    // Set while the latest table could not be made durable: it is tried again then, even if
    // the leader sends nothing newer.
    let mut retry: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
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
            }
            () = async { retry.as_mut().expect("guarded").await }, if retry.is_some() => {}
        }
        retry = None;
        let Some(table) = cell.load() else { continue };
        if !publish_mirrored(shared, client.as_ref().ok(), table).await {
            retry = Some(Box::pin(tokio::time::sleep(MIRROR_RETRY)));
        }
    }
}

/// How soon a mirrored table that could not be made durable is tried again.
const MIRROR_RETRY: Duration = Duration::from_secs(1);

/// Makes a table from the leader durable, with the overrides that made it, then publishes
/// it. Durable before published, as on the leader: a table whose overrides or itself could
/// not be stored is not served, and the overrides are not put in force. False when it
/// should be tried again.
async fn publish_mirrored(
    shared: &Arc<Shared>,
    client: Option<&ControllerClient>,
    table: Arc<RoutingTable>,
) -> bool {
    if table.version() <= shared.publisher.current().map_or(0, |t| t.version()) {
        return true;
    }
    // Overrides first: a table carries what its overrides made.
    if let Some(client) = client
        && let Err(err) = sync_overrides(shared, client).await
    {
        warn!(error = %err, version = table.version(), "could not mirror the leader's overrides; not publishing its table yet");
        return false;
    }
    let frame = Publisher::encode_frame(&table);
    let store_shared = shared.clone();
    let bytes = frame.clone();
    let saved = tokio::task::spawn_blocking(move || {
        store_shared
            .store
            .save_table(&bytes[4..])
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    if let Err(error) = saved {
        warn!(%error, version = table.version(), "could not store the mirrored table; not publishing it yet");
        return false;
    }
    shared.metrics.table_version.set(table.version() as i64);
    shared.metrics.table_bytes.set(frame.len() as i64 - 4);
    shared.publisher.publish(table, frame);
    true
}

/// Fetches the leader's overrides and, when they differ from this replica's, stores them and
/// then puts them in force; nothing changes when either step fails.
async fn sync_overrides(shared: &Arc<Shared>, client: &ControllerClient) -> Result<(), String> {
    let (_, body) = client
        .call(Method::GET, "/api/v1/overrides", None)
        .await
        .map_err(|e| format!("reading the leader's overrides: {e}"))?;
    let overrides: Overrides = serde_json::from_slice(&body)
        .map_err(|e| format!("decoding the leader's overrides: {e}"))?;
    if shared.state().overrides == overrides {
        return Ok(());
    }
    let store_shared = shared.clone();
    let to_store = overrides.clone();
    tokio::task::spawn_blocking(move || store_shared.store.save_overrides(&to_store))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("storing the leader's overrides: {e}"))?;
    shared.state().overrides = overrides;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    use super::*;
    use crate::compute::target_key;
    use crate::{Controller, ControllerOptions, RunningController};

    const CONFIG: &str = r#"
regions:
  - { name: eu, location: { lat: 50.0, lon: 8.0 } }
clusters:
  - { name: c1, region: eu, provider: aws, endpoints: ["127.0.0.1:1"] }
apps:
  - name: shop
    hostnames: [shop.test]
    failure_mode: fail-open
    targets:
      - { cluster: c1, weight: 100 }
controller:
  listen: 127.0.0.1:0
"#;

    async fn start() -> RunningController {
        let loaded = meridian_config::parse(CONFIG, std::path::Path::new("t.yaml")).unwrap();
        Controller::start(
            loaded,
            ControllerOptions {
                probe: false,
                ..Default::default()
            },
        )
        .await
        .unwrap()
    }

    async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn version(ctl: &RunningController) -> u64 {
        ctl.table().map_or(0, |t| t.version())
    }

    fn weight_in_force(ctl: &RunningController) -> Option<u32> {
        ctl.shared
            .state()
            .overrides
            .weights
            .get(&target_key("shop", "c1"))
            .copied()
    }

    async fn set_weight(leader: &RunningController, weight: u32) -> u64 {
        let client = ControllerClient::new(&leader.url(), None).unwrap();
        let body = format!(r#"{{"weight": {weight}}}"#).into_bytes();
        let (status, _) = client
            .call(
                Method::PUT,
                "/api/v1/apps/shop/targets/c1/weight",
                Some(body),
            )
            .await
            .unwrap();
        assert_eq!(status, 200);
        version(leader)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_publishes_only_what_it_stored() {
        let leader = start().await;
        let follower = start().await;
        follower.shared.leadership.send_modify(|l| {
            l.is_leader = false;
            l.leader = Some(leader.url());
        });
        let first = set_weight(&leader, 7).await;
        wait_until("the follower mirrors the leader's table", || {
            version(&follower) == first
        })
        .await;
        assert_eq!(weight_in_force(&follower), Some(7));

        // The follower's disk fails: the next table is not served, and its overrides are not
        // put in force, for as long as it cannot be stored (a retry comes every second).
        follower
            .shared
            .store
            .fail_table_writes
            .store(true, Ordering::SeqCst);
        let second = set_weight(&leader, 9).await;
        assert!(second > first);
        tokio::time::sleep(MIRROR_RETRY * 2).await;
        assert_eq!(
            version(&follower),
            first,
            "published what it could not store"
        );
        assert_eq!(weight_in_force(&follower), Some(7));
        assert_eq!(
            follower
                .shared
                .store
                .last_table()
                .unwrap()
                .unwrap()
                .version(),
            first
        );

        // The disk is back: the same table is stored and served, though the leader sent
        // nothing newer.
        follower
            .shared
            .store
            .fail_table_writes
            .store(false, Ordering::SeqCst);
        wait_until("the follower serves the table once stored", || {
            version(&follower) == second
        })
        .await;
        assert_eq!(weight_in_force(&follower), Some(9));
        assert_eq!(
            follower
                .shared
                .store
                .last_table()
                .unwrap()
                .unwrap()
                .version(),
            second
        );
        assert_eq!(follower.shared.store.overrides().unwrap().weights.len(), 1);
        follower.shutdown().await;
        leader.shutdown().await;
    }
}
