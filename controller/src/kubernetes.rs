//! Kubernetes mode: apps and clusters come from `MeridianApp` and `MeridianCluster`
//! resources on the hub cluster instead of the config file (which still gives regions, geo
//! data, zones and the controller's own settings); member clusters are observed through
//! their kubeconfigs (reachability, discovered ingress endpoints, inventory); the leader
//! writes each resource's status back. With leader election, replicas take a Lease and only
//! the leader writes (see [`crate::leadership`]).
//!
//! Nothing here deletes or changes a spec, and an unreachable member is a condition and a
//! history entry, never an error of the controller.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use meridian_config::Config;
use meridian_k8s::crd::{
    AppStatus, ClusterStatus, MeridianApp, MeridianCluster, SecretKeyRef, WorkloadRef,
};
use meridian_k8s::lease::{LeaderElector, LeaseOptions};
use meridian_k8s::member::{
    KubeconfigSource, MemberOptions, MemberTarget, MemberView, Members, Reachability,
};
use meridian_k8s::status::{condition, now_rfc3339, set_condition, write_status};
use meridian_routing::Health;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::store::MEMBER_EVENT_APP;
use crate::verdict::Change;
use crate::{OwnProbe, Shared, leadership};

/// How the controller runs in Kubernetes mode.
#[derive(Clone)]
pub struct KubernetesOptions {
    /// A client of the hub cluster.
    pub client: Client,
    /// The namespace of the resources, the kubeconfig Secrets and the Lease.
    pub namespace: String,
    /// Take part in leader election (needed with more than one replica).
    pub leader_election: Option<LeaseTiming>,
    /// Timeouts and poll interval of the member clusters.
    pub members: MemberOptions,
    /// Re-read and re-write everything this often even without an event.
    pub resync: Duration,
}

impl std::fmt::Debug for KubernetesOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesOptions")
            .field("namespace", &self.namespace)
            .field("leader_election", &self.leader_election)
            .field("resync", &self.resync)
            .finish_non_exhaustive()
    }
}

/// The Lease's timing (client-go's defaults: 15 s, 10 s, 2 s).
#[derive(Clone, Copy, Debug)]
pub struct LeaseTiming {
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it stops writing.
    pub renew_deadline: Duration,
    /// How often to try.
    pub retry_period: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// The name of the Lease the replicas elect their leader through.
pub const LEASE_NAME: &str = "meridian-controller";

/// Runs Kubernetes mode until shutdown.
pub(crate) async fn run(
    shared: Arc<Shared>,
    own_probe: Option<Arc<OwnProbe>>,
    base: Config,
    options: KubernetesOptions,
) {
    let mut stop = shared.shutdown.subscribe();
    let elector = match options.leader_election {
        Some(timing) => {
            let identity = shared.leadership.borrow().identity.clone();
            let lease = LeaseOptions {
                lease_duration: timing.lease_duration,
                renew_deadline: timing.renew_deadline,
                retry_period: timing.retry_period,
                name: LEASE_NAME.into(),
                ..LeaseOptions::new(options.namespace.clone(), identity)
            };
            match LeaderElector::start(options.client.clone(), lease) {
                Ok(elector) => Some(elector),
                Err(err) => {
                    tracing::error!(error = %err, "cannot take part in leader election; this replica stays a follower");
                    None
                }
            }
        }
        None => None,
    };
    let changed = Arc::new(Notify::new());
    if let Some(elector) = &elector {
        tokio::spawn(follow_election(
            shared.clone(),
            elector.subscribe(),
            changed.clone(),
        ));
    }
    let members = Members::start(
        Some(options.client.clone()),
        options.namespace.clone(),
        options.members.clone(),
    );
    let mut views = members.subscribe();
    let clusters_api: Api<MeridianCluster> =
        Api::namespaced(options.client.clone(), &options.namespace);
    let apps_api: Api<MeridianApp> = Api::namespaced(options.client.clone(), &options.namespace);
    let clusters = reflect(clusters_api.clone(), changed.clone());
    let apps = reflect(apps_api.clone(), changed.clone());
    let mut reconciler = Reconciler {
        shared: shared.clone(),
        own_probe,
        base,
        clusters_api,
        apps_api,
        reachable: BTreeMap::new(),
        capacity: crate::capacity::CapacityLoop::default(),
    };
    let ready = async {
        let _ = clusters.wait_until_ready().await;
        let _ = apps.wait_until_ready().await;
    };
    tokio::select! {
        _ = ready => info!(namespace = %options.namespace, "read the Meridian resources"),
        _ = stop.wait_for(|s| *s) => return,
    }
    loop {
        let current = views.borrow_and_update().clone();
        reconciler
            .reconcile(&members, &clusters.state(), &apps.state(), &current)
            .await;
        tokio::select! {
            _ = changed.notified() => {}
            _ = views.changed() => {}
            _ = tokio::time::sleep(options.resync) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        // Let a burst of events settle into one reconcile.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(members);
    if let Some(elector) = elector {
        elector.release().await;
    }
}

/// Keeps a local cache of one kind of resource, waking `changed` on every event.
fn reflect<K>(api: Api<K>, changed: Arc<Notify>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tokio::spawn(async move {
        tokio::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(err) => warn!(error = %err, "watching Meridian resources"),
            }
        }
    });
    store
}

/// Mirrors the election into the controller: followers stop writing at once.
async fn follow_election(
    shared: Arc<Shared>,
    mut election: tokio::sync::watch::Receiver<meridian_k8s::lease::Leadership>,
    changed: Arc<Notify>,
) {
    loop {
        let seen = election.borrow_and_update().clone();
        let was_leader = shared.is_leader();
        shared
            .leadership
            .send_modify(|l: &mut leadership::Leadership| {
                l.is_leader = seen.is_leader;
                l.leader = seen.holder.clone();
            });
        shared.metrics.leader.set(i64::from(seen.is_leader));
        if seen.is_leader != was_leader {
            info!(leader = seen.is_leader, holder = ?seen.holder, "leadership changed");
            if seen.is_leader {
                // Resume computing from the last mirrored version, and write every status.
                shared.wake();
                changed.notify_one();
            }
        }
        if election.changed().await.is_err() {
            return;
        }
    }
}

struct Reconciler {
    shared: Arc<Shared>,
    own_probe: Option<Arc<OwnProbe>>,
    base: Config,
    clusters_api: Api<MeridianCluster>,
    apps_api: Api<MeridianApp>,
    /// Last reachability seen per member cluster, for history entries on a change.
    reachable: BTreeMap<String, bool>,
    /// Capacity-first failover: replicas and drain gates.
    capacity: crate::capacity::CapacityLoop,
}

impl Reconciler {
    async fn reconcile(
        &mut self,
        members: &Members,
        clusters: &[Arc<MeridianCluster>],
        apps: &[Arc<MeridianApp>],
        views: &BTreeMap<String, MemberView>,
    ) {
        members.set_targets(member_targets(clusters, apps));
        self.record_members(views);
        // Discovered endpoints join the resources' own before they are checked as a config.
        let clusters_seen: Vec<MeridianCluster> = clusters
            .iter()
            .map(|c| {
                let mut c = (**c).clone();
                let found = discovered(views.get(&c.name_any()));
                c.status
                    .get_or_insert_with(ClusterStatus::default)
                    .discovered_endpoints = found;
                c
            })
            .collect();
        let apps_seen: Vec<MeridianApp> = apps.iter().map(|a| (**a).clone()).collect();
        let (verdicts, result) =
            meridian_k8s::convert::to_config(&self.base, &clusters_seen, &apps_seen);
        match result {
            Ok(loaded) => {
                if self.shared.inputs().config != loaded.config {
                    let old_jobs = self.shared.inputs().jobs.clone();
                    let inputs = self.shared.set_config(loaded.config);
                    info!(
                        clusters = inputs.config.clusters.len(),
                        apps = inputs.config.apps.len(),
                        "config from Kubernetes resources changed"
                    );
                    if inputs.jobs != old_jobs
                        && let Some(own) = &self.own_probe
                    {
                        own.restart(&self.shared);
                    }
                }
            }
            Err(err) => warn!(
                problems = %err.diagnostics().join("; "),
                "the accepted resources do not make a valid config together; still serving the previous one"
            ),
        }
        // Only the leader writes; each write checks again right before it is sent
        // (`leadership::fenced`), since the pass awaits many calls.
        if self.shared.is_leader() {
            self.capacity.run(&self.shared, members, views).await;
            self.write_statuses(clusters, apps, views, &verdicts).await;
        }
    }

    /// Metrics, the inventory the API serves, and history entries when a member's
    /// reachability changes.
    fn record_members(&mut self, views: &BTreeMap<String, MemberView>) {
        let metrics = &self.shared.metrics;
        let now = crate::now_ms();
        let mut changes = Vec::new();
        for (cluster, view) in views {
            let reachable = match &view.reachability {
                Reachability::Unknown => continue,
                Reachability::Reachable { .. } => true,
                Reachability::Unreachable { .. } => false,
            };
            metrics
                .member_reachable
                .with_label_values(&[cluster.as_str()])
                .set(i64::from(reachable));
            if let Some(inv) = &view.inventory {
                let c = cluster.as_str();
                let gauge = |g: &prometheus::IntGaugeVec, kind: &str, v: u64| {
                    g.with_label_values(&[c, kind])
                        .set(i64::try_from(v).unwrap_or(i64::MAX));
                };
                gauge(&metrics.member_nodes, "total", u64::from(inv.nodes));
                gauge(&metrics.member_nodes, "ready", u64::from(inv.nodes_ready));
                gauge(
                    &metrics.member_cpu_millis,
                    "allocatable",
                    inv.allocatable_cpu_millis,
                );
                gauge(
                    &metrics.member_cpu_millis,
                    "requested",
                    inv.requested_cpu_millis,
                );
                gauge(
                    &metrics.member_memory_bytes,
                    "allocatable",
                    inv.allocatable_memory_bytes,
                );
                gauge(
                    &metrics.member_memory_bytes,
                    "requested",
                    inv.requested_memory_bytes,
                );
                for w in &inv.workloads {
                    for (kind, v) in [("desired", w.desired_replicas), ("ready", w.ready_replicas)]
                    {
                        metrics
                            .workload_replicas
                            .with_label_values(&[w.app.as_str(), c, kind])
                            .set(i64::from(v));
                    }
                }
            }
            let before = self.reachable.insert(cluster.clone(), reachable);
            // A change, or a member first seen unreachable; a first sighting that answers is
            // no event.
            if before != Some(reachable) && !(before.is_none() && reachable) {
                let cause = match &view.reachability {
                    Reachability::Reachable { version } => {
                        format!("member API server reachable (Kubernetes {version})")
                    }
                    Reachability::Unreachable { message, .. } => {
                        format!("member API server unreachable: {message}")
                    }
                    Reachability::Unknown => continue,
                };
                if reachable {
                    info!(%cluster, %cause, "member cluster");
                } else {
                    warn!(%cluster, %cause, "member cluster");
                }
                changes.push(Change {
                    app: MEMBER_EVENT_APP.into(),
                    cluster: cluster.clone(),
                    healthy: reachable,
                    at_ms: now,
                    cause,
                    votes: Vec::new(),
                });
            }
        }
        self.reachable.retain(|c, _| views.contains_key(c));
        if let Err(err) = self.shared.store.append_history(&changes) {
            warn!(error = %err, "could not record member reachability in the history");
        }
        *self
            .shared
            .members
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Arc::new(views.clone());
    }

    /// Writes each resource's status where it differs from what it should be, while this
    /// replica leads: the pass ends at the first write that finds it no longer does.
    async fn write_statuses(
        &self,
        clusters: &[Arc<MeridianCluster>],
        apps: &[Arc<MeridianApp>],
        views: &BTreeMap<String, MemberView>,
        verdicts: &meridian_k8s::convert::Verdicts,
    ) {
        let now = now_rfc3339();
        for cluster in clusters {
            let name = cluster.name_any();
            let status = cluster_status(cluster, views.get(&name), verdicts, &now);
            if Some(&status) == cluster.status.as_ref() {
                continue;
            }
            let write = write_status(&self.clusters_api, &name, &status);
            match leadership::fenced(&self.shared, "cluster status", write).await {
                None => return,
                Some(Err(err)) => {
                    warn!(cluster = %name, error = %err, "could not write the cluster's status");
                }
                Some(Ok(())) => {}
            }
        }
        let table = self.shared.publisher.current();
        let capacity = self
            .shared
            .capacity
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for app in apps {
            let name = app.name_any();
            let mut status = app_status(app, verdicts, table.as_deref(), &now);
            if let Some(report) = capacity.iter().find(|r| r.app == name) {
                set_condition(
                    &mut status.conditions,
                    capacity_condition(report, status.observed_generation.unwrap_or(0), &now),
                );
            }
            if Some(&status) == app.status.as_ref() {
                continue;
            }
            let write = write_status(&self.apps_api, &name, &status);
            match leadership::fenced(&self.shared, "app status", write).await {
                None => return,
                Some(Err(err)) => {
                    warn!(app = %name, error = %err, "could not write the app's status")
                }
                Some(Ok(())) => {}
            }
        }
    }
}

/// What a cluster's status should say: `Accepted` (its spec as config), `Reachable` (its API
/// server, when it has a kubeconfig), `EndpointsDiscovered` (with ingress discovery), the
/// discovered endpoints and the inventory. Transition times move only on a status change.
pub fn cluster_status(
    cluster: &MeridianCluster,
    view: Option<&MemberView>,
    verdicts: &meridian_k8s::convert::Verdicts,
    now: &str,
) -> ClusterStatus {
    let name = cluster.name_any();
    let generation = cluster.metadata.generation.unwrap_or(0);
    let mut status = cluster.status.clone().unwrap_or_default();
    status.observed_generation = Some(generation);
    let problems = verdicts.clusters.get(&name).cloned().unwrap_or_default();
    set_condition(&mut status.conditions, accepted(&problems, generation, now));
    let reachable = match view.map(|v| &v.reachability) {
        Some(Reachability::Reachable { version }) => {
            Some((true, "Connected", format!("Kubernetes {version}")))
        }
        Some(Reachability::Unreachable { message, .. }) => {
            Some((false, "Unreachable", message.clone()))
        }
        _ => None,
    };
    if let Some((ok, reason, message)) = reachable {
        set_condition(
            &mut status.conditions,
            condition("Reachable", ok, reason, message, generation, now),
        );
    }
    if cluster.spec.ingress_discovery.is_some() {
        let (ok, message) = match view.and_then(|v| v.discovered.as_ref()) {
            Some(Ok(found)) => (
                true,
                found
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            Some(Err(message)) => (false, message.clone()),
            None => (false, "not observed yet".to_string()),
        };
        set_condition(
            &mut status.conditions,
            condition(
                "EndpointsDiscovered",
                ok,
                if ok { "Found" } else { "NotFound" },
                message,
                generation,
                now,
            ),
        );
    }
    status.discovered_endpoints = discovered(view);
    if let Some(inventory) = view.and_then(|v| v.inventory.clone()) {
        status.inventory = Some(inventory);
    }
    status
}

/// What an app's status should say: `Accepted` (naming targets left out while their
/// cluster is not accepted) and `Ready` (some target serving in the published table).
pub fn app_status(
    app: &MeridianApp,
    verdicts: &meridian_k8s::convert::Verdicts,
    table: Option<&meridian_routing::RoutingTable>,
    now: &str,
) -> AppStatus {
    let name = app.name_any();
    let generation = app.metadata.generation.unwrap_or(0);
    let mut status = app.status.clone().unwrap_or_default();
    status.observed_generation = Some(generation);
    let problems = verdicts.apps.get(&name).cloned().unwrap_or_default();
    let mut accepted = accepted(&problems, generation, now);
    if let Some(skipped) = verdicts.skipped_targets.get(&name) {
        accepted.message = format!(
            "served without target(s) in {}: cluster not accepted yet",
            skipped.join(", ")
        );
    }
    set_condition(&mut status.conditions, accepted);
    let serving = table.and_then(|t| {
        t.apps().iter().find(|a| a.name == name).map(|a| {
            let n = a
                .targets
                .iter()
                .filter(|t| t.health != Health::Unhealthy && t.effective_weight() > 0)
                .count();
            (n, a.targets.len())
        })
    });
    let (ready, reason, message) = match serving {
        Some((0, _)) => (false, "NoTargetServing", "no target is serving".to_string()),
        Some((n, total)) => (true, "Serving", format!("{n} of {total} target(s) serving")),
        None => (
            false,
            "NotInTable",
            "not in the published table".to_string(),
        ),
    };
    set_condition(
        &mut status.conditions,
        condition("Ready", ready, reason, message, generation, now),
    );
    status
}

/// `CapacityReady`: whether the app's traffic sits on ready replicas.
pub fn capacity_condition(
    report: &crate::capacity::AppCapacity,
    generation: i64,
    now: &str,
) -> meridian_k8s::crd::Condition {
    use meridian_capacity::TransitionStatus;
    let (ok, reason, message) = match &report.status {
        TransitionStatus::Converged => (
            true,
            "Converged",
            "traffic is on ready replicas at the wanted weights".to_string(),
        ),
        TransitionStatus::WaitingForCapacity {
            cluster,
            ready,
            wanted,
        } => (
            false,
            "WaitingForCapacity",
            format!("traffic held until {cluster} has {wanted} ready replicas ({ready} now)"),
        ),
        TransitionStatus::CapacityShort {
            missing_rps,
            reason,
        } => (
            false,
            "CapacityShort",
            format!("{missing_rps:.1} req/s not carried by ready replicas: {reason}"),
        ),
    };
    condition("CapacityReady", ok, reason, message, generation, now)
}

fn accepted(problems: &[String], generation: i64, now: &str) -> meridian_k8s::crd::Condition {
    if problems.is_empty() {
        condition(
            "Accepted",
            true,
            "Valid",
            "the spec passed validation",
            generation,
            now,
        )
    } else {
        condition(
            "Accepted",
            false,
            "Invalid",
            problems.join("; "),
            generation,
            now,
        )
    }
}

fn discovered(view: Option<&MemberView>) -> Vec<String> {
    match view.and_then(|v| v.discovered.as_ref()) {
        Some(Ok(found)) => found.iter().map(ToString::to_string).collect(),
        _ => Vec::new(),
    }
}

/// What to observe in each member cluster: those with a kubeconfig Secret, with their
/// discovery and the workloads of the apps placed there.
fn member_targets(
    clusters: &[Arc<MeridianCluster>],
    apps: &[Arc<MeridianApp>],
) -> Vec<MemberTarget> {
    clusters
        .iter()
        .filter_map(|c| {
            let secret: &SecretKeyRef = c.spec.kubeconfig_secret_ref.as_ref()?;
            let name = c.name_any();
            let workloads: Vec<(String, WorkloadRef)> = apps
                .iter()
                .filter(|a| a.spec.targets.iter().any(|t| t.cluster == name))
                .filter_map(|a| {
                    let placement = a.spec.placement.as_ref()?;
                    Some((a.name_any(), placement.workload.clone()))
                })
                .collect();
            Some(MemberTarget {
                cluster: name,
                kubeconfig: KubeconfigSource::Secret(secret.clone()),
                discovery: c.spec.ingress_discovery.clone(),
                workloads,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use meridian_k8s::convert::Verdicts;
    use meridian_k8s::crd::{ClusterSpec, DiscoveryKind, IngressDiscovery, Inventory};

    use super::*;

    fn cluster() -> MeridianCluster {
        let mut c = MeridianCluster::new(
            "aws-1",
            ClusterSpec {
                region: "eu".into(),
                provider: "aws".into(),
                location: None,
                endpoints: Vec::new(),
                ingress_discovery: Some(IngressDiscovery {
                    kind: DiscoveryKind::Service,
                    namespace: "edge".into(),
                    name: "ingress".into(),
                    port: None,
                }),
                kubeconfig_secret_ref: None,
                capacity: None,
                node_scaling: None,
            },
        );
        c.metadata.generation = Some(4);
        c
    }

    fn view(reachability: Reachability, discovered: Result<Vec<&str>, &str>) -> MemberView {
        MemberView {
            cluster: "aws-1".into(),
            reachability,
            discovered: Some(
                discovered
                    .map(|v| v.iter().map(|a| a.parse().unwrap()).collect())
                    .map_err(str::to_string),
            ),
            inventory: Some(Inventory {
                kubernetes_version: "v1.20.2".into(),
                nodes: 3,
                nodes_ready: 2,
                ..Inventory::default()
            }),
            observed_ms: 1,
        }
    }

    fn get<'a>(status: &'a ClusterStatus, type_: &str) -> &'a meridian_k8s::crd::Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn a_reachable_member_with_an_address_is_accepted_discovered_and_inventoried() {
        let reachable = Reachability::Reachable {
            version: "v1.20.2".into(),
        };
        let mut verdicts = Verdicts::default();
        verdicts.clusters.insert("aws-1".into(), Vec::new());
        let status = cluster_status(
            &cluster(),
            Some(&view(reachable, Ok(vec!["192.0.2.7:443"]))),
            &verdicts,
            "t1",
        );
        assert_eq!(status.observed_generation, Some(4));
        for type_ in ["Accepted", "Reachable", "EndpointsDiscovered"] {
            let c = get(&status, type_);
            assert_eq!(
                (c.status.as_str(), c.observed_generation),
                ("True", 4),
                "{type_}"
            );
        }
        assert_eq!(get(&status, "Reachable").message, "Kubernetes v1.20.2");
        assert_eq!(status.discovered_endpoints, ["192.0.2.7:443"]);
        assert_eq!(status.inventory.unwrap().nodes_ready, 2);
    }

    #[test]
    fn a_lost_member_keeps_its_inventory_and_says_why() {
        let mut c = cluster();
        let mut verdicts = Verdicts::default();
        verdicts.clusters.insert(
            "aws-1".into(),
            vec!["no ingress endpoint yet: none in spec.endpoints and none discovered".into()],
        );
        let reachable = Reachability::Reachable {
            version: "v1.20.2".into(),
        };
        c.status = Some(cluster_status(
            &c,
            Some(&view(reachable, Ok(vec!["192.0.2.7:443"]))),
            &verdicts,
            "t1",
        ));
        let lost = Reachability::Unreachable {
            message: "GET /version: connection refused".into(),
            since_ms: 5,
        };
        let mut v = view(
            lost,
            Err("Service edge/ingress has no load-balancer address yet"),
        );
        v.inventory = c.status.as_ref().unwrap().inventory.clone();
        let status = cluster_status(&c, Some(&v), &verdicts, "t2");
        let reachable = get(&status, "Reachable");
        assert_eq!(
            (reachable.status.as_str(), reachable.reason.as_str()),
            ("False", "Unreachable")
        );
        assert_eq!(reachable.last_transition_time, "t2");
        assert!(reachable.message.contains("connection refused"));
        let accepted = get(&status, "Accepted");
        assert_eq!(accepted.status, "False");
        assert!(accepted.message.contains("no ingress endpoint yet"));
        assert_eq!(get(&status, "EndpointsDiscovered").status, "False");
        assert!(status.discovered_endpoints.is_empty());
        assert_eq!(
            status.inventory.unwrap().nodes,
            3,
            "the last inventory is kept"
        );
        // Unchanged facts a second later: nothing to write.
        let mut again = c.clone();
        again.status = Some(cluster_status(&c, Some(&v), &verdicts, "t2"));
        assert_eq!(
            cluster_status(&again, Some(&v), &verdicts, "t3"),
            again.status.unwrap()
        );
    }

    #[test]
    fn an_app_names_the_targets_it_is_served_without() {
        let mut app = MeridianApp::new(
            "shop",
            serde_json::from_value(serde_json::json!({
                "hostnames": ["shop.example.com"], "failureMode": "fail-open",
                "targets": [{"cluster": "aws-1"}, {"cluster": "gcp-1"}]
            }))
            .unwrap(),
        );
        app.metadata.generation = Some(2);
        let mut verdicts = Verdicts::default();
        verdicts.apps.insert("shop".into(), Vec::new());
        verdicts
            .skipped_targets
            .insert("shop".into(), vec!["aws-1".into()]);
        let status = app_status(&app, &verdicts, None, "t1");
        let accepted = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Accepted")
            .unwrap();
        assert_eq!(accepted.status, "True");
        assert!(accepted.message.contains("aws-1"), "{}", accepted.message);
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "NotInTable")
        );
        assert_eq!(status.observed_generation, Some(2));
    }

    fn shop() -> MeridianApp {
        let mut app = MeridianApp::new(
            "shop",
            serde_json::from_value(serde_json::json!({
                "hostnames": ["shop.example.com"], "failureMode": "fail-open",
                "targets": [{"cluster": "aws-1"}]
            }))
            .unwrap(),
        );
        app.metadata.generation = Some(1);
        app
    }

    /// A stand-in hub API server that counts status writes and, when `lose`, takes the
    /// leadership from `shared` as the first one arrives (as the elector does when the Lease
    /// cannot be renewed): mid-pass, after the pass's own check.
    async fn hub(shared: Arc<Shared>, lose: bool) -> (Client, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let writes = Arc::new(AtomicUsize::new(0));
        let counted = writes.clone();
        let status = move |uri: http::Uri| {
            let (writes, shared) = (counted.clone(), shared.clone());
            async move {
                if writes.fetch_add(1, Ordering::SeqCst) == 0 && lose {
                    shared.leadership.send_modify(|l| l.is_leader = false);
                }
                let body = if uri.path().contains("/meridianclusters/") {
                    serde_json::to_vec(&cluster())
                } else {
                    serde_json::to_vec(&shop())
                };
                (
                    [(http::header::CONTENT_TYPE, "application/json")],
                    body.unwrap(),
                )
            }
        };
        let router = axum::Router::new().route("/apis/{*rest}", axum::routing::patch(status));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        let client = Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
        (client, writes)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_kubernetes_write_follows_a_lease_lost_mid_pass() {
        const CONFIG: &str = r#"
regions:
  - { name: eu, location: { lat: 50.0, lon: 8.0 } }
clusters:
  - { name: aws-1, region: eu, provider: aws, endpoints: ["127.0.0.1:1"] }
apps:
  - name: shop
    hostnames: [shop.example.com]
    failure_mode: fail-open
    targets:
      - { cluster: aws-1, weight: 100 }
controller:
  listen: 127.0.0.1:0
"#;
        // Three clusters and one app whose statuses are all out of date: four writes.
        let clusters: Vec<Arc<MeridianCluster>> = ["aws-1", "aws-2", "gcp-1"]
            .into_iter()
            .map(|name| {
                let mut c = cluster();
                c.metadata.name = Some(name.into());
                Arc::new(c)
            })
            .collect();
        let apps = vec![Arc::new(shop())];
        for (lose, expected) in [(false, 4), (true, 1)] {
            let loaded = meridian_config::parse(CONFIG, std::path::Path::new("t.yaml")).unwrap();
            let base = loaded.config.clone();
            let ctl = crate::Controller::start(
                loaded,
                crate::ControllerOptions {
                    probe: false,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            let shared = ctl.shared.clone();
            assert!(shared.is_leader());
            let (client, writes) = hub(shared.clone(), lose).await;
            let reconciler = Reconciler {
                shared,
                own_probe: None,
                base,
                clusters_api: Api::namespaced(client.clone(), "meridian"),
                apps_api: Api::namespaced(client, "meridian"),
                reachable: BTreeMap::new(),
                capacity: crate::capacity::CapacityLoop::default(),
            };
            reconciler
                .write_statuses(&clusters, &apps, &BTreeMap::new(), &Verdicts::default())
                .await;
            assert_eq!(
                writes.load(std::sync::atomic::Ordering::SeqCst),
                expected,
                "lease lost at the first write: {lose}"
            );
            ctl.shutdown().await;
        }
    }
}
