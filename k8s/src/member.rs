//! Member clusters: one task per cluster that builds a client from the cluster's kubeconfig
//! (a Secret in the hub namespace, or a file), polls its API server and publishes a
//! [`MemberView`]: reachability, discovered ingress endpoints and the inventory.
//!
//! A member that cannot be reached is a view saying why, retried with doubling backoff; it never
//! panics, never deletes anything and never holds up another member (each has its own task,
//! client and timeouts).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::crd::{IngressDiscovery, Inventory, SecretKeyRef, WorkloadRef};
use crate::{discovery, inventory};

/// Where a member cluster's kubeconfig comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum KubeconfigSource {
    /// A key of a Secret in the hub namespace (Kubernetes mode).
    Secret(SecretKeyRef),
    /// A file (file mode).
    File(PathBuf),
}

/// Timeouts and pacing of every member's polling.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberOptions {
    /// TCP and TLS connect timeout of each request.
    pub connect_timeout: Duration,
    /// Read timeout of each request.
    pub read_timeout: Duration,
    /// Time between polls of a reachable member.
    pub poll_interval: Duration,
    /// Longest time between retries of an unreachable member.
    pub max_backoff: Duration,
}

impl Default for MemberOptions {
    fn default() -> Self {
        MemberOptions {
            connect_timeout: Duration::from_secs(3),
            read_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// What the controller wants observed in one member cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberTarget {
    /// The cluster's name.
    pub cluster: String,
    /// How to reach its API server.
    pub kubeconfig: KubeconfigSource,
    /// Where its ingress endpoints are published, if they are discovered.
    pub discovery: Option<IngressDiscovery>,
    /// Each app's Deployment there, for the inventory.
    pub workloads: Vec<(String, WorkloadRef)>,
}

/// Whether a member's API server answers.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub enum Reachability {
    /// Not polled yet.
    Unknown,
    /// `/version` answered.
    Reachable {
        /// Its `gitVersion`, such as `v1.20.2`.
        version: String,
    },
    /// The last poll failed.
    Unreachable {
        /// Why, naming the cause (Secret missing, connection refused, timeout, 5xx, …).
        message: String,
        /// Since when (ms since the Unix epoch) it has been unreachable without interruption.
        since_ms: u64,
    },
}

/// What is known of one member cluster.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MemberView {
    /// The cluster's name.
    pub cluster: String,
    /// Whether its API server answers.
    pub reachability: Reachability,
    /// None: no discovery configured. Some(Err): configured but failed/empty (message names why).
    /// Kept from the last poll that reached the member while it is unreachable.
    pub discovered: Option<Result<Vec<SocketAddr>, String>>,
    /// The last good inventory, kept while unreachable.
    pub inventory: Option<Inventory>,
    /// When this view was last refreshed (ms since the Unix epoch).
    pub observed_ms: u64,
}

impl MemberView {
    fn unknown(cluster: &str) -> MemberView {
        MemberView {
            cluster: cluster.to_string(),
            reachability: Reachability::Unknown,
            discovered: None,
            inventory: None,
            observed_ms: now_ms(),
        }
    }
}

/// One poll's findings in a member that answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// The API server's `gitVersion`.
    pub version: String,
    /// Discovered endpoints, when discovery is configured.
    pub discovered: Option<Result<Vec<SocketAddr>, String>>,
    /// The inventory, or why it could not be read.
    pub inventory: Result<Inventory, String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An error and its causes in one line, such as `ServiceError: client error (Connect): tcp
/// connect error: Connection refused (os error 111)`: the top level alone rarely names the cause.
pub fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// A kube error as a message: an API status as `code reason: message`, others with their causes.
pub fn describe_kube_error(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            let mut out = format!("HTTP {}", status.code);
            if !status.reason.is_empty() {
                out.push(' ');
                out.push_str(&status.reason);
            }
            if !status.message.is_empty() {
                out.push_str(": ");
                out.push_str(&status.message);
            }
            out
        }
        other => describe_error(other),
    }
}

/// The wait before the next poll after `failures` consecutive failures (0: the member answered):
/// the poll interval, doubled per failure up to `max_backoff`, less up to 20% of jitter
/// (`jitter` in 0..1) so that members lost together are not retried in lockstep.
pub fn retry_delay(options: &MemberOptions, failures: u32, jitter: f64) -> Duration {
    if failures == 0 {
        return options.poll_interval;
    }
    let doubled = options
        .poll_interval
        .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(31)));
    let base = doubled.min(options.max_backoff.max(options.poll_interval));
    base.mul_f64(1.0 - 0.2 * jitter.clamp(0.0, 1.0))
}

/// Reads the kubeconfig text of a member.
async fn kubeconfig_text(
    source: &KubeconfigSource,
    hub: Option<&Client>,
    namespace: &str,
) -> Result<Kubeconfig, String> {
    match source {
        KubeconfigSource::File(path) => Kubeconfig::read_from(path)
            .map_err(|e| format!("kubeconfig file {}: {}", path.display(), describe_error(&e))),
        KubeconfigSource::Secret(reference) => {
            let what = format!("kubeconfig Secret {namespace}/{}", reference.name);
            let hub = hub.ok_or_else(|| {
                format!("{what} cannot be read: no hub cluster (file mode takes kubeconfig files)")
            })?;
            let secrets: Api<Secret> = Api::namespaced(hub.clone(), namespace);
            let secret = secrets
                .get_opt(&reference.name)
                .await
                .map_err(|e| format!("reading {what}: {}", describe_kube_error(&e)))?
                .ok_or_else(|| format!("{what} not found"))?;
            let bytes = secret
                .data
                .as_ref()
                .and_then(|d| d.get(&reference.key))
                .ok_or_else(|| format!("{what} has no key {:?}", reference.key))?;
            let text = std::str::from_utf8(&bytes.0)
                .map_err(|_| format!("{what} key {:?} is not UTF-8 text", reference.key))?;
            Kubeconfig::from_yaml(text)
                .map_err(|e| format!("{what} key {:?}: {}", reference.key, describe_error(&e)))
        }
    }
}

/// Builds a member's client with the options' timeouts.
pub async fn member_client(
    source: &KubeconfigSource,
    hub: Option<&Client>,
    namespace: &str,
    options: &MemberOptions,
) -> Result<Client, String> {
    let kubeconfig = kubeconfig_text(source, hub, namespace).await?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("kubeconfig: {}", describe_error(&e)))?;
    config.connect_timeout = Some(options.connect_timeout);
    config.read_timeout = Some(options.read_timeout);
    // This loop is the retry (with backoff and a view saying why); the client's own retries
    // would only delay reporting an unreachable member.
    config.default_retry = false;
    Client::try_from(config)
        .map_err(|e| format!("building the client: {}", describe_kube_error(&e)))
}

/// One poll of a member: `/version` (its failure makes the member unreachable), then discovery
/// and inventory (their failures are reported beside a reachable member).
pub async fn observe(
    client: &Client,
    target: &MemberTarget,
    options: &MemberOptions,
) -> Result<Observation, String> {
    // The client's timeouts bound each read; this bounds the whole request, connect included.
    let limit = options.connect_timeout + options.read_timeout;
    let version = match tokio::time::timeout(limit, client.apiserver_version()).await {
        Ok(Ok(info)) => info.git_version,
        Ok(Err(e)) => return Err(format!("GET /version: {}", describe_kube_error(&e))),
        Err(_) => return Err(format!("GET /version: no answer within {limit:?}")),
    };
    let discovered = match &target.discovery {
        Some(d) => Some(discovery::discover(client, d).await),
        None => None,
    };
    let inventory = inventory::fetch(client, version.clone(), &target.workloads)
        .await
        .map_err(|e| match e {
            crate::Error::Kube { action, source } => {
                format!("{action}: {}", describe_kube_error(&source))
            }
            other => other.to_string(),
        });
    Ok(Observation {
        version,
        discovered,
        inventory,
    })
}

struct Shared {
    hub: Option<Client>,
    namespace: String,
    options: MemberOptions,
    views: watch::Sender<BTreeMap<String, MemberView>>,
}

impl Shared {
    /// Changes a member's view unless its task was stopped: the flag is read under the watch's
    /// lock, so a stopped task can never re-add a view that `set_targets` removed.
    fn update(&self, cluster: &str, stopped: &AtomicBool, change: impl FnOnce(&mut MemberView)) {
        self.views.send_if_modified(|views| {
            if stopped.load(Ordering::Acquire) {
                return false;
            }
            let view = views
                .entry(cluster.to_string())
                .or_insert_with(|| MemberView::unknown(cluster));
            change(view);
            true
        });
    }
}

/// The client of a member's last poll that answered, shared between its task and
/// [`Members::client`].
type ClientSlot = Arc<Mutex<Option<Client>>>;

struct Task {
    target: MemberTarget,
    stopped: Arc<AtomicBool>,
    handle: JoinHandle<()>,
    client: ClientSlot,
}

impl Task {
    fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.handle.abort();
    }
}

/// Every member cluster's polling task and the views they publish.
pub struct Members {
    shared: Arc<Shared>,
    tasks: Mutex<BTreeMap<String, Task>>,
    runtime: tokio::runtime::Handle,
}

impl Members {
    /// `hub`: client of the hub cluster for Secret lookups (None in file mode: Secret sources fail
    /// with a clear message). `namespace`: where the Secrets live. Call it within a Tokio runtime:
    /// the tasks run on it.
    pub fn start(hub: Option<Client>, namespace: String, options: MemberOptions) -> Members {
        let (views, _) = watch::channel(BTreeMap::new());
        Members {
            shared: Arc::new(Shared {
                hub,
                namespace,
                options,
                views,
            }),
            tasks: Mutex::new(BTreeMap::new()),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Reconciles: starts a task per new cluster, restarts it when its target changed, stops
    /// removed ones (and drops their views). Cheap when nothing changed.
    pub fn set_targets(&self, targets: Vec<MemberTarget>) {
        let mut wanted = BTreeMap::new();
        for target in targets {
            if wanted.contains_key(&target.cluster) {
                tracing::warn!(
                    cluster = target.cluster,
                    "member cluster listed twice; the last one counts"
                );
            }
            wanted.insert(target.cluster.clone(), target);
        }
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let removed: Vec<String> = tasks
            .keys()
            .filter(|c| !wanted.contains_key(*c))
            .cloned()
            .collect();
        for cluster in &removed {
            if let Some(task) = tasks.remove(cluster) {
                task.stop();
                tracing::info!(cluster, "stopped following member cluster");
            }
        }
        if !removed.is_empty() {
            self.shared.views.send_modify(|views| {
                for cluster in &removed {
                    views.remove(cluster);
                }
            });
        }
        for (cluster, target) in wanted {
            if tasks.get(&cluster).is_some_and(|t| t.target == target) {
                continue;
            }
            if let Some(old) = tasks.remove(&cluster) {
                // The view stays: the new task refreshes it, keeping the last good inventory.
                old.stop();
                tracing::info!(
                    cluster,
                    "member cluster target changed; restarting its task"
                );
            } else {
                tracing::info!(cluster, "following member cluster");
                self.shared.views.send_modify(|views| {
                    views.insert(cluster.clone(), MemberView::unknown(&cluster));
                });
            }
            let stopped = Arc::new(AtomicBool::new(false));
            let client = ClientSlot::default();
            let handle = self.runtime.spawn(run(
                self.shared.clone(),
                target.clone(),
                stopped.clone(),
                client.clone(),
            ));
            tasks.insert(
                cluster,
                Task {
                    target,
                    stopped,
                    handle,
                    client,
                },
            );
        }
    }

    /// The member's current client: the one its last poll reached the API server with (with the
    /// member's timeouts), so writes to the member go where its view comes from. None while the
    /// member is unknown, unreachable or not followed, and after its target changed until the
    /// restarted task's first poll answers.
    pub fn client(&self, cluster: &str) -> Option<Client> {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let task = tasks.get(cluster)?;
        task.client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every member's view, updated after each poll.
    pub fn subscribe(&self) -> watch::Receiver<BTreeMap<String, MemberView>> {
        self.shared.views.subscribe()
    }
}

impl Drop for Members {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(|e| e.into_inner());
        for task in tasks.values() {
            task.stop();
        }
    }
}

async fn run(
    shared: Arc<Shared>,
    target: MemberTarget,
    stopped: Arc<AtomicBool>,
    slot: ClientSlot,
) {
    let cluster = target.cluster.as_str();
    let options = &shared.options;
    let mut client: Option<Client> = None;
    let mut failures: u32 = 0;
    loop {
        let connected = match &client {
            Some(c) => Ok(c.clone()),
            None => {
                member_client(
                    &target.kubeconfig,
                    shared.hub.as_ref(),
                    &shared.namespace,
                    options,
                )
                .await
            }
        };
        let result = match connected {
            Ok(c) => {
                let observed = observe(&c, &target, options).await;
                client = Some(c);
                observed
            }
            Err(message) => Err(message),
        };
        match result {
            Ok(observation) => {
                if failures > 0 {
                    tracing::info!(
                        cluster,
                        version = observation.version,
                        "member cluster reachable again"
                    );
                }
                failures = 0;
                if let Err(message) = &observation.inventory {
                    tracing::warn!(cluster, %message, "member inventory not read; keeping the last one");
                }
                // Before the view: whoever sees this poll's view finds its client.
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = client.clone();
                shared.update(cluster, &stopped, |view| {
                    view.reachability = Reachability::Reachable {
                        version: observation.version,
                    };
                    view.discovered = observation.discovered;
                    if let Ok(inventory) = observation.inventory {
                        view.inventory = Some(inventory);
                    }
                    view.observed_ms = now_ms();
                });
            }
            Err(message) => {
                failures = failures.saturating_add(1);
                // A new client next time: the Secret may have been fixed or rotated meanwhile.
                client = None;
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
                tracing::warn!(cluster, %message, failures, "member cluster unreachable");
                shared.update(cluster, &stopped, |view| {
                    let now = now_ms();
                    let since_ms = match view.reachability {
                        Reachability::Unreachable { since_ms, .. } => since_ms,
                        _ => now,
                    };
                    view.reachability = Reachability::Unreachable { message, since_ms };
                    view.observed_ms = now;
                });
            }
        }
        let delay = retry_delay(options, failures, rand::random::<f64>());
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_below() {
        let options = MemberOptions {
            poll_interval: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30),
            ..MemberOptions::default()
        };
        let secs = |failures| retry_delay(&options, failures, 0.0).as_secs();
        assert_eq!(
            [secs(0), secs(1), secs(2), secs(3), secs(4), secs(40)],
            [5, 5, 10, 20, 30, 30]
        );
        assert_eq!(retry_delay(&options, 3, 1.0), Duration::from_secs(16));
        assert_eq!(retry_delay(&options, 0, 1.0), Duration::from_secs(5));
    }

    #[test]
    fn errors_name_their_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let status = kube::core::Status::failure("etcd is down", "InternalError").with_code(500);
        assert_eq!(
            describe_kube_error(&kube::Error::Api(status.boxed())),
            "HTTP 500 InternalError: etcd is down"
        );
        #[derive(Debug, thiserror::Error)]
        #[error("client error (Connect)")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(
            describe_error(&Outer(io)),
            "client error (Connect): connection refused"
        );
    }

    #[tokio::test]
    async fn secret_source_without_a_hub_says_so() {
        let source = KubeconfigSource::Secret(SecretKeyRef {
            name: "member-a".into(),
            key: "kubeconfig".into(),
        });
        let message = member_client(&source, None, "meridian", &MemberOptions::default())
            .await
            .err()
            .expect("an error");
        assert_eq!(
            message,
            "kubeconfig Secret meridian/member-a cannot be read: no hub cluster (file mode takes kubeconfig files)"
        );
        let file = KubeconfigSource::File("/nonexistent/kubeconfig".into());
        let message = member_client(&file, None, "meridian", &MemberOptions::default())
            .await
            .err()
            .expect("an error");
        assert!(
            message.starts_with("kubeconfig file /nonexistent/kubeconfig: "),
            "{message}"
        );
    }
}
