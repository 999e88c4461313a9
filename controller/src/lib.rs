//! The controller: the brain of Meridian. It turns config, operator overrides, probe
//! verdicts and traffic statistics into routing tables and publishes them to every proxy
//! and DNS server.
//!
//! What it owns: probing from its own vantage (with the subscriber crate's prober), the
//! quorum of every vantage's votes, the pure table compute, publishing over watch streams,
//! the operator API with its tokens and audit log, and durable state in an embedded store.
//!
//! What it must not do: serve client traffic or DNS queries, or keep global state: several
//! controllers can run in one process (tests, `meridian up`), each from
//! [`Controller::start`].
//!
//! # Layout
//!
//! - [`verdict`]: quorum across vantages and flap damping (pure).
//! - [`compute`]: (config, overrides, verdicts, stats, now) → table data (pure).
//! - [`intake`]: vantage reports checked where they enter (pure).
//! - [`store`]: redb: overrides, audit log, failover history, last table.
//! - [`publish`]: the current table and the watch streams.
//! - [`api`]: the HTTP surface: `/api/v1/…`, `/openapi.json`, `/metrics`, `/livez`, `/readyz`.
//! - [`traffic`]: request and answer rates per target from the subscribers' counters (pure).
//! - [`timeline`]: the dashboard's bounded, downsampled memory of those rates (pure).
//! - [`metrics`]: the Prometheus registry.
//! - [`client`]: a typed client of the API, for the `meridian` operator commands.
//! - [`plan`]: the dry-run planner's inputs from the controller's state, `GET /api/v1/plan`.

pub mod api;
pub mod capacity;
pub mod client;
pub mod compute;
mod error;
mod guard;
pub(crate) mod intake;
pub mod kubernetes;
pub mod leadership;
pub mod metrics;
pub mod plan;
pub mod publish;
pub mod store;
pub mod timeline;
pub mod tls;
pub mod traffic;
pub mod verdict;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use meridian_config::{Config, LoadedConfig};
use meridian_routing::{Health, RoutingTable};
use meridian_subscriber::probe::{self, Observation, ProbeJob, Prober, Sink, TlsConnectors};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

pub use error::Error;

use crate::compute::{Contained, Overrides, TrafficStats};
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::store::Store;
use crate::verdict::{VerdictOptions, Verdicts};

/// How to start a controller, beyond its config.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// Listen here instead of `controller.listen` (tests bind `127.0.0.1:0`).
    pub listen: Option<SocketAddr>,
    /// Keep state here instead of `controller.data_dir`.
    pub data_dir: Option<PathBuf>,
    /// Run probes from the controller's own vantage.
    pub probe: bool,
    /// The controller's vantage name.
    pub vantage: String,
    /// How often the table is recomputed without an event (ramps, vote expiry).
    pub tick: Duration,
    /// Further routes served on the controller's port, such as the dashboard at `/` and the
    /// demo's controls (`meridian up` adds them).
    pub extra_routes: Option<axum::Router>,
    /// The URL other replicas and subscribers reach this one at (default `http://LISTEN`):
    /// its identity in leader election.
    pub advertise_url: Option<String>,
    /// The token a follower presents to the leader to mirror its tables and overrides
    /// (role subscriber or higher; not needed when the API has no tokens).
    pub peer_token: Option<String>,
    /// Kubernetes mode: apps and clusters from resources on the hub, member clusters
    /// observed, status written back, optionally leader election.
    pub kubernetes: Option<kubernetes::KubernetesOptions>,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        Self {
            listen: None,
            data_dir: None,
            probe: true,
            vantage: "controller".into(),
            tick: Duration::from_millis(100),
            extra_routes: None,
            advertise_url: None,
            peer_token: None,
            kubernetes: None,
        }
    }
}

/// Mutable runtime state, behind one lock that is never held across an await.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) overrides: Overrides,
    pub(crate) verdicts: Verdicts,
    /// Latency per (vantage region, cluster): smoothed, and as published.
    pub(crate) rtt: BTreeMap<(String, String), compute::RttTrack>,
    /// Request rates per target, from the subscribers' traffic counters.
    pub(crate) traffic: traffic::Traffic,
    /// What capacity-first failover allows of drains (Kubernetes mode, apps with placement).
    pub(crate) drain_gates: compute::DrainGates,
    /// The vantages that report, bounded.
    pub(crate) vantages: intake::Vantages,
}

/// What the controller routes and probes: the config (apps, clusters, probes) and the probe
/// jobs it makes. Replaced whole when the config changes (Kubernetes mode).
#[derive(Debug)]
pub(crate) struct Inputs {
    pub(crate) config: Config,
    pub(crate) jobs: Vec<ProbeJob>,
    pub(crate) report_interval: Duration,
}

impl Inputs {
    fn new(config: Config) -> Self {
        let jobs = probe::jobs_from_config(&config);
        let report_interval = jobs
            .iter()
            .map(|j| j.probe.interval)
            .min()
            .unwrap_or(Duration::from_secs(1));
        Self {
            config,
            jobs,
            report_interval,
        }
    }
}

/// Everything the controller's tasks and handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    inputs: RwLock<Arc<Inputs>>,
    /// The controller's own vantage name: no report may speak for it.
    pub(crate) vantage: String,
    /// The origins of pages this controller serves (see `guard`).
    pub(crate) origins: Vec<String>,
    pub(crate) opts: VerdictOptions,
    pub(crate) heartbeat: Duration,
    pub(crate) store: Store,
    pub(crate) state: Mutex<State>,
    /// Serialises recomputes, so versions are numbered in order.
    compute_lock: Mutex<()>,
    pub(crate) publisher: Arc<Publisher>,
    pub(crate) metrics: Metrics,
    pub(crate) tokens: api::Tokens,
    /// How this replica reaches another over TLS (empty without `controller.tls`).
    pub(crate) peer_tls: meridian_subscriber::tls::ClientTls,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Whether this replica leads; only the leader computes, changes and writes.
    pub(crate) leadership: watch::Sender<leadership::Leadership>,
    /// What the member clusters look like (Kubernetes mode), for the API.
    pub(crate) members: RwLock<Arc<BTreeMap<String, meridian_k8s::member::MemberView>>>,
    /// What capacity-first failover decided per app (Kubernetes mode), for the API.
    pub(crate) capacity: RwLock<Arc<Vec<capacity::AppCapacity>>>,
    /// The last hours of per-target rates, for the dashboard's charts (own lock: sampling
    /// and reading it never wait on the state).
    pub(crate) timeline: Mutex<timeline::Timeline>,
    /// Set until the first config arrives (Kubernetes mode): nothing to compute yet.
    config_pending: AtomicBool,
    /// Set when the config changed since the last published table (a version's cause).
    config_changed: AtomicBool,
    wake: Notify,
}

pub(crate) fn now_ms() -> u64 {
    probe::now_ms()
}

impl Shared {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The config and probe jobs in force.
    pub(crate) fn inputs(&self) -> Arc<Inputs> {
        self.inputs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the config: targets keep their votes and verdicts, new ones take the
    /// verdict the published table has for them or start unknown, removed ones are
    /// forgotten. The caller restarts the probes.
    pub(crate) fn set_config(&self, config: Config) -> Arc<Inputs> {
        let inputs = Arc::new(Inputs::new(config));
        {
            let mut st = self.state();
            let added = st
                .verdicts
                .retarget(inputs.config.apps.iter().flat_map(|a| {
                    a.targets
                        .iter()
                        .map(move |t| (a.name.as_str(), t.cluster.as_str()))
                }));
            if let Some(table) = self.publisher.current() {
                seed_from_table(&mut st.verdicts, &table, Some(&added), now_ms());
            }
        }
        *self.inputs.write().unwrap_or_else(|e| e.into_inner()) = inputs.clone();
        self.config_changed.store(true, Ordering::Release);
        self.config_pending.store(false, Ordering::Release);
        self.wake();
        inputs
    }

    /// Records one vantage's observation.
    pub(crate) fn observe(&self, vantage: &str, region: Option<&str>, obs: &Observation) -> bool {
        if !obs.latency_seconds.is_finite() || obs.latency_seconds < 0.0 {
            // Reports are checked where they enter; whatever slips past is ignored here,
            // never carried into a compute.
            self.metrics
                .samples_ignored
                .with_label_values(&["latency"])
                .inc();
            return false;
        }
        let labels = [obs.app.as_str(), obs.cluster.as_str(), vantage];
        let known = {
            let mut st = self.state();
            let known = st.verdicts.record(vantage, obs);
            if known
                && obs.last_ok
                && let Some(region) = region
            {
                // Settled (whole ms, with hysteresis): raw probe latencies jitter, and
                // every change of a published RTT would be a new table version.
                let key = (region.to_string(), obs.cluster.clone());
                let track =
                    compute::settle_rtt(st.rtt.get(&key).copied(), obs.latency_seconds * 1000.0);
                st.rtt.insert(key, track);
            }
            known
        };
        if known {
            let result = if obs.last_ok { "ok" } else { "fail" };
            self.metrics
                .probe_results
                .with_label_values(&[labels[0], labels[1], labels[2], result])
                .inc();
            if obs.last_ok {
                self.metrics
                    .probe_latency
                    .with_label_values(&labels)
                    .observe(obs.latency_seconds);
            }
        }
        known
    }

    /// Admits a report from `vantage` into the bounded registry; `false` when it is full.
    /// Vantages evicted to make room lose their votes, counters and metric labels.
    pub(crate) fn admit_vantage(&self, vantage: &str, now: u64) -> bool {
        let forgotten = {
            let mut st = self.state();
            let Ok(forgotten) = st.vantages.admit(vantage, now, self.opts.forget_after_ms()) else {
                return false;
            };
            for v in &forgotten {
                st.verdicts.forget(v);
                st.traffic.forget(v);
            }
            forgotten
        };
        let inputs = self.inputs();
        for v in &forgotten {
            for job in &inputs.jobs {
                let target = [job.app.as_str(), job.cluster.as_str(), v.as_str()];
                let _ = self.metrics.probe_latency.remove_label_values(&target);
                for result in ["ok", "fail"] {
                    let _ = self
                        .metrics
                        .probe_results
                        .remove_label_values(&[target[0], target[1], target[2], result]);
                }
            }
        }
        true
    }

    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// How old a reported rate may be and still describe the present: older ones describe
    /// traffic that has stopped (a few report intervals).
    pub(crate) fn traffic_max_age_ms(&self) -> u64 {
        (self.inputs().report_interval.as_millis() as u64 * 3).max(3_000)
    }

    /// Request rates per target of `table` that the proxies reported recently, requests/s.
    pub(crate) fn traffic_rates(
        &self,
        table: &RoutingTable,
        now_ms: u64,
    ) -> BTreeMap<(String, String), f64> {
        let max_age_ms = self.traffic_max_age_ms();
        let st = self.state();
        table
            .apps()
            .iter()
            .flat_map(|a| a.targets.iter().map(move |t| (a, t)))
            .filter_map(|(a, t)| {
                st.traffic
                    .target(&a.name, &t.cluster, now_ms, max_age_ms)
                    .map(|v| ((a.name.clone(), t.cluster.clone()), v.requests_per_second))
            })
            .collect()
    }

    /// Adds one reading of every target of the published table to the timeline: traffic
    /// and answer rates as reported, replicas ready as the capacity loop last saw them.
    pub(crate) fn sample_timeline(&self, now_ms: u64) {
        let Some(table) = self.publisher.current() else {
            return;
        };
        let max_age_ms = self.traffic_max_age_ms();
        let capacity = self
            .capacity
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // Keyed once, then looked up per target: a scan of the capacity list per app is
        // quadratic at 10,000 apps.
        let replicas: BTreeMap<(&str, &str), u32> = capacity
            .iter()
            .flat_map(|a| {
                a.clusters
                    .iter()
                    .map(move |c| ((a.app.as_str(), c.cluster.as_str()), c.ready_replicas))
            })
            .collect();
        let samples: Vec<(&str, &str, timeline::Sample)> = {
            let st = self.state();
            table
                .apps()
                .iter()
                .flat_map(|a| {
                    a.targets
                        .iter()
                        .map(move |t| (a.name.as_str(), t.cluster.as_str()))
                })
                .map(|(app, cluster)| {
                    let traffic = st.traffic.target(app, cluster, now_ms, max_age_ms);
                    let sample = timeline::Sample {
                        requests_per_second: traffic.as_ref().map(|t| t.requests_per_second),
                        error_ratio: traffic.as_ref().map(|t| t.error_ratio),
                        latency_p99_seconds: traffic.as_ref().and_then(|t| t.latency_p99_seconds),
                        dns_answers_per_second: st
                            .traffic
                            .answers_per_second(app, cluster, now_ms, max_age_ms),
                        replicas_ready: replicas.get(&(app, cluster)).copied(),
                    };
                    (app, cluster, sample)
                })
                .collect()
        };
        let mut timeline = self.timeline.lock().unwrap_or_else(|e| e.into_inner());
        timeline.record(now_ms, &samples);
        let counted = self.metrics.timeline_refused.get();
        self.metrics
            .timeline_refused
            .inc_by(timeline.refused().saturating_sub(counted));
    }

    /// The charts' last `window_ms`: the timeline's readings and the events of the failover
    /// history and audit log in that window (each read capped, newest kept).
    pub(crate) fn timeline_window(
        &self,
        window_ms: u64,
        now_ms: u64,
    ) -> Result<timeline::TimelineView, Error> {
        /// Most history and audit entries drawn: beyond this the lines would merge anyway.
        const MAX_EVENTS: usize = 500;
        let mut view = self
            .timeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .window(window_ms, now_ms);
        let from_ms = view.times_ms.first().copied().unwrap_or(now_ms);
        let history = self.store.history(MAX_EVENTS)?;
        let audit = self.store.audit(MAX_EVENTS)?;
        view.events = timeline::events(&history, &audit, from_ms);
        Ok(view)
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.leadership.borrow().is_leader
    }

    /// Evaluates verdicts, computes the table and publishes it when it changed. Returns the
    /// current version.
    pub(crate) fn recompute(&self) -> Result<u64, Error> {
        let serial = self.compute_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.recompute_locked(&serial, None)
            .map(|(version, _)| version)
    }

    /// Applies an operator change to the overrides whole or not at all: `change` edits a
    /// copy of them, the table is computed with the copy, and the overrides, the audit entry
    /// and the table are stored in one transaction before any of it is published or put in
    /// force. Returns the entry (numbered) and the table version that carries it.
    pub(crate) fn change_overrides<E: From<Error>>(
        &self,
        change: impl FnOnce(&mut Overrides, u64) -> Result<store::AuditEntry, E>,
    ) -> Result<(store::AuditEntry, u64), E> {
        let serial = self.compute_lock.lock().unwrap_or_else(|e| e.into_inner());
        if !self.is_leader() {
            return Err(Error::NotLeader.into());
        }
        let mut next = self.state().overrides.clone();
        let entry = change(&mut next, now_ms())?;
        let (version, entry) = self.recompute_locked(&serial, Some((next, entry)))?;
        let entry = entry.ok_or_else(|| Error::NotLeader)?;
        Ok((entry, version))
    }

    /// The body of [`Self::recompute`], under the compute lock; with `change`, the new
    /// overrides and their audit entry, committed together with the table they give.
    fn recompute_locked(
        &self,
        _serial: &MutexGuard<'_, ()>,
        change: Option<(Overrides, store::AuditEntry)>,
    ) -> Result<(u64, Option<store::AuditEntry>), Error> {
        let prev = self.publisher.current();
        let current = prev.as_ref().map_or(0, |t| t.version());
        if !self.is_leader() {
            // A follower publishes what it mirrors from the leader, nothing of its own.
            return match change {
                Some(_) => Err(Error::NotLeader),
                None => Ok((current, None)),
            };
        }
        if self.config_pending.load(Ordering::Acquire) {
            // Waiting for its first config, a controller keeps serving the last table; an
            // operator change is stored and applies from the first compute.
            let Some((overrides, entry)) = change else {
                return Ok((current, None));
            };
            let entry = self.store.commit_change(&overrides, entry, None)?;
            self.state().overrides = overrides;
            return Ok((current, Some(entry)));
        }
        let now = now_ms();
        let inputs = self.inputs();
        let (changes, built, elapsed) = {
            let mut st = self.state();
            let changes = st.verdicts.evaluate(now, &self.opts);
            let start = Instant::now();
            let st = &*st;
            let overrides = change.as_ref().map_or(&st.overrides, |(o, _)| o);
            let stats = TrafficStats {
                rtt_ms: st
                    .rtt
                    .iter()
                    .map(|(k, t)| (k.clone(), t.published_ms))
                    .collect(),
            };
            let health = st.verdicts.inputs();
            let built = compute::next_table_contained(prev.as_deref(), || {
                compute::compute(
                    &inputs.config,
                    overrides,
                    &health,
                    &stats,
                    &st.drain_gates,
                    now,
                )
            });
            (changes, built, start.elapsed())
        };
        for change in &changes {
            let state = if change.healthy {
                "healthy"
            } else {
                "unhealthy"
            };
            info!(app = %change.app, cluster = %change.cluster, state, cause = %change.cause, "verdict changed");
            self.metrics
                .verdict_changes
                .with_label_values(&[change.app.as_str(), change.cluster.as_str(), state])
                .inc();
            self.metrics
                .verdict_healthy
                .with_label_values(&[change.app.as_str(), change.cluster.as_str()])
                .set(i64::from(change.healthy));
        }
        if let Err(err) = self.store.append_history(&changes) {
            error!(error = %err, "could not record verdict changes in the history");
        }
        let (table, contained) = built?;
        for c in &contained {
            let (Contained::App(p) | Contained::Rtt(p)) = c;
            warn!(part = c.part(), problem = %p, "contained a bad part of the computed table");
            self.metrics
                .compute_contained
                .with_label_values(&[c.part()])
                .inc();
        }
        let Some(table) = table else {
            // Routing is unchanged; an operator change may still be (a weight equal to the
            // configured one): it is stored all the same.
            let entry = match change {
                Some((overrides, entry)) => {
                    let entry = self.store.commit_change(&overrides, entry, None)?;
                    self.state().overrides = overrides;
                    Some(entry)
                }
                None => None,
            };
            return Ok((current, entry));
        };
        self.metrics.compute_seconds.observe(elapsed.as_secs_f64());
        let table = Arc::new(table);
        // Encoded once, for the store and for every stream. Durable before it is published:
        // a restart serves at least this version.
        let frame = Publisher::encode_frame(&table);
        let encoded = &frame[4..];
        let entry = match change {
            Some((overrides, entry)) => {
                let entry = self.store.commit_change(&overrides, entry, Some(encoded))?;
                self.state().overrides = overrides;
                Some(entry)
            }
            None => {
                self.store.save_table(encoded)?;
                None
            }
        };
        let cause = if entry.is_some() {
            "operator"
        } else if self.config_changed.swap(false, Ordering::AcqRel) {
            "config"
        } else {
            prev.as_ref()
                .map_or("config", |p| compute::version_cause(p.data(), table.data()))
        };
        self.metrics
            .table_versions
            .with_label_values(&[cause])
            .inc();
        self.metrics.table_version.set(table.version() as i64);
        self.metrics.table_bytes.set(encoded.len() as i64);
        self.publisher.publish(table.clone(), frame);
        Ok((table.version(), entry))
    }
}

/// Targets of `table` (all of them, or those in `only`) start with the verdict it published:
/// neither a restart nor a config change sends traffic to a target before probes confirm
/// it, nor takes traffic from one a quorum had found healthy. Targets it lacks stay unknown.
fn seed_from_table(
    verdicts: &mut Verdicts,
    table: &RoutingTable,
    only: Option<&[(String, String)]>,
    now: u64,
) {
    for app in table.apps() {
        for t in &app.targets {
            let wanted =
                only.is_none_or(|only| only.iter().any(|(a, c)| *a == app.name && *c == t.cluster));
            if wanted {
                verdicts.seed(&app.name, &t.cluster, t.health != Health::Unhealthy, now);
            }
        }
    }
}

/// The controller's entry point.
#[derive(Debug)]
pub struct Controller;

/// A started controller: its address, its tables, and how to stop it.
#[derive(Debug)]
pub struct RunningController {
    addr: SocketAddr,
    /// `https` with `controller.tls`, else `http`.
    scheme: &'static str,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    own_probe: Option<Arc<OwnProbe>>,
}

/// The controller's own vantage: its prober, restarted when the probe jobs change.
#[derive(Debug)]
pub(crate) struct OwnProbe {
    vantage: String,
    prober: Mutex<Option<Prober>>,
}

impl OwnProbe {
    fn start(shared: &Arc<Shared>, vantage: String) -> Arc<Self> {
        let own = Arc::new(Self {
            vantage,
            prober: Mutex::new(None),
        });
        own.restart(shared);
        own
    }

    /// (Re)starts probing the current jobs; the previous prober's tasks end when it drops.
    pub(crate) fn restart(&self, shared: &Arc<Shared>) {
        let sink_shared = shared.clone();
        let vantage = self.vantage.clone();
        let sink: Sink = Arc::new(move |obs: Observation| {
            if sink_shared.observe(&vantage, None, &obs) {
                sink_shared.wake();
            }
        });
        let prober = Prober::start(shared.inputs().jobs.clone(), TlsConnectors::new(&[]), sink);
        *self.prober.lock().unwrap_or_else(|e| e.into_inner()) = Some(prober);
    }

    fn stop(&self) {
        self.prober.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl Controller {
    /// Starts a controller from a validated config: opens its store, resumes from the last
    /// published table, binds its HTTP port, starts its probes and its compute loop. Must be
    /// called within a tokio runtime.
    pub async fn start(
        loaded: LoadedConfig,
        options: ControllerOptions,
    ) -> Result<RunningController, Error> {
        let LoadedConfig { file, config } = loaded;
        let base_config = config.clone();
        let section = &config.controller;
        if let Some((path, message)) = section.problems().into_iter().next() {
            return Err(Error::Config {
                file,
                path,
                message,
            });
        }
        let base = file.parent().map(PathBuf::from).unwrap_or_default();
        let tokens = api::Tokens::from_config(section, &base)?;
        let data_dir = options
            .data_dir
            .clone()
            .or_else(|| section.data_dir.as_ref().map(|d| base.join(d)));
        if data_dir.is_none() {
            warn!(
                "controller.data_dir is not set: overrides, audit log and history live in memory only"
            );
        }
        let store = Store::open(data_dir.as_deref())?;
        let overrides = store.overrides()?;
        let last = store.last_table()?;
        let now = now_ms();
        let mut verdicts = Verdicts::new(config.apps.iter().flat_map(|a| {
            a.targets
                .iter()
                .map(move |t| (a.name.as_str(), t.cluster.as_str()))
        }));
        if options.probe {
            verdicts = if section.own_probe_votes {
                verdicts.with_own_vantage(&options.vantage)
            } else {
                verdicts.with_silent_vantage(&options.vantage)
            };
        }
        if let Some(last) = &last {
            seed_from_table(&mut verdicts, last, None, now);
        }
        let metrics = Metrics::new()?;
        let listen = options.listen.unwrap_or(section.listen);
        let admin_listen = section.admin_listen;
        if let Some(message) =
            meridian_config::controller::plain_http_problem(listen, section.tls.is_some())
        {
            return Err(Error::Config {
                file,
                path: "controller.listen".into(),
                message,
            });
        }
        let server_tls = match &section.tls {
            Some(tls) => Some(tls::ServerTls::load(tls, &base)?),
            None => {
                warn!(%listen, "controller.tls is not set: plain HTTP, fit for loopback only");
                None
            }
        };
        let scheme = if server_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|error| Error::Bind {
                addr: listen,
                error,
            })?;
        let addr = listener.local_addr().map_err(|error| Error::Bind {
            addr: listen,
            error,
        })?;
        let identity = options
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{addr}"));
        let origins = guard::own_origins(addr, &identity);
        let kubernetes = options.kubernetes.clone();
        let leadership = match &kubernetes {
            // Elected replicas start as followers: nothing is written before the Lease is won.
            Some(k) if k.leader_election.is_some() => leadership::Leadership {
                is_leader: false,
                identity,
                leader: None,
            },
            _ => leadership::Leadership::alone(identity),
        };
        metrics.leader.set(i64::from(leadership.is_leader));
        let shared = Arc::new(Shared {
            vantage: options.vantage.clone(),
            origins,
            opts: VerdictOptions::from_config(section),
            heartbeat: section.heartbeat,
            store,
            state: Mutex::new(State {
                overrides,
                verdicts,
                rtt: BTreeMap::new(),
                traffic: traffic::Traffic::default(),
                drain_gates: compute::DrainGates::new(),
                vantages: intake::Vantages::default(),
            }),
            compute_lock: Mutex::new(()),
            publisher: Arc::default(),
            metrics,
            tokens,
            peer_tls: server_tls
                .as_ref()
                .map(|t| t.peer_client())
                .unwrap_or_default(),
            shutdown: watch::channel(false).0,
            wake: Notify::new(),
            leadership: watch::channel(leadership).0,
            members: RwLock::default(),
            capacity: RwLock::default(),
            timeline: Mutex::default(),
            // In Kubernetes mode apps and clusters come from resources: nothing is computed
            // until they are read, so a start never publishes an empty table.
            config_pending: AtomicBool::new(kubernetes.is_some()),
            config_changed: AtomicBool::new(false),
            inputs: RwLock::new(Arc::new(Inputs::new(config))),
        });
        if let Some(last) = last {
            info!(
                version = last.version(),
                "resuming from the last published table"
            );
            shared.metrics.table_version.set(last.version() as i64);
            let frame = Publisher::encode_frame(&last);
            shared.publisher.publish(Arc::new(last), frame);
        }
        shared.recompute()?;

        let mut tasks = Vec::new();
        let router = match options.extra_routes.clone() {
            Some(extra) => api::router(shared.clone()).merge(extra.layer(
                axum::middleware::from_fn_with_state(shared.clone(), guard::operator_writes),
            )),
            None => api::router(shared.clone()),
        }
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            guard::guard_writes,
        ));
        let mut stop = shared.shutdown.subscribe();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let app = router.into_make_service_with_connect_info::<tls::Peer>();
        match &server_tls {
            Some(server_tls) => {
                let listener = server_tls
                    .listener(listener)
                    .map_err(|error| Error::Bind { addr, error })?;
                tasks.push(tokio::spawn(async move {
                    let serve = axum::serve(listener, app).with_graceful_shutdown(stopped);
                    if let Err(err) = serve.await {
                        error!(error = %err, "controller HTTPS server failed");
                    }
                }));
                let (reload, mut stop) = (server_tls.clone(), shared.shutdown.subscribe());
                tasks.push(tokio::spawn(async move {
                    tokio::select! {
                        () = reload.reload() => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                }));
            }
            None => tasks.push(tokio::spawn(async move {
                let serve = axum::serve(listener, app).with_graceful_shutdown(stopped);
                if let Err(err) = serve.await {
                    error!(error = %err, "controller HTTP server failed");
                }
            })),
        }
        if let Some(admin) = admin_listen {
            let listener = tokio::net::TcpListener::bind(admin)
                .await
                .map_err(|error| Error::Bind { addr: admin, error })?;
            let router = api::admin_router(shared.clone());
            let mut stop = shared.shutdown.subscribe();
            tasks.push(tokio::spawn(async move {
                let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                });
                if let Err(err) = serve.await {
                    error!(error = %err, "controller admin server failed");
                }
            }));
        }
        let loop_shared = shared.clone();
        let tick = options.tick;
        let mut stop = shared.shutdown.subscribe();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = loop_shared.wake.notified() => {}
                    _ = tokio::time::sleep(tick) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                // The compute and the store's fsync block: off the async workers.
                let shared = loop_shared.clone();
                match tokio::task::spawn_blocking(move || shared.recompute()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(err)) => {
                        error!(error = %err, "table compute failed; still serving the previous table");
                    }
                    Err(err) => error!(error = %err, "table compute task failed"),
                }
            }
        }));
        // The charts' readings: one round a second (the finest tier is 2 s).
        let sampler = shared.clone();
        let mut stop = shared.shutdown.subscribe();
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = every.tick() => sampler.sample_timeline(now_ms()),
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }));
        let own_probe = options
            .probe
            .then(|| OwnProbe::start(&shared, options.vantage.clone()));
        tasks.push(tokio::spawn(leadership::mirror(
            shared.clone(),
            options.peer_token.clone(),
        )));
        if let Some(k) = kubernetes {
            tasks.push(tokio::spawn(kubernetes::run(
                shared.clone(),
                own_probe.clone(),
                base_config,
                k,
            )));
        }
        info!(%addr, scheme, "controller listening");
        Ok(RunningController {
            addr,
            scheme,
            shared,
            tasks,
            own_probe,
        })
    }
}

impl RunningController {
    /// The address the HTTP server is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL of the API, `http://ADDR` (`https://ADDR` with `controller.tls`).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    /// The table being published.
    pub fn table(&self) -> Option<Arc<RoutingTable>> {
        self.shared.publisher.current()
    }

    /// The API router of this controller with its write guard, for embedding. Served
    /// without connection info, an open API (no tokens) refuses every write: the guard
    /// cannot tell a loopback peer.
    pub fn router(&self) -> axum::Router {
        api::router(self.shared.clone()).layer(axum::middleware::from_fn_with_state(
            self.shared.clone(),
            guard::guard_writes,
        ))
    }

    /// Stops serving, ends watch streams and probes, and waits for the tasks to finish.
    pub async fn shutdown(self) {
        self.shared.shutdown.send_replace(true);
        if let Some(own) = &self.own_probe {
            own.stop();
        }
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Waits until the HTTP server ends (it fails, or a shutdown was requested), then
    /// stops everything else.
    pub async fn wait(mut self) {
        if !self.tasks.is_empty() {
            let server = self.tasks.remove(0);
            let _ = server.await;
        }
        self.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use meridian_subscriber::http::ControllerClient;

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

    async fn get(client: &ControllerClient, path: &str) -> serde_json::Value {
        let (_, body) = client.call(Method::GET, path, None).await.unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    async fn wait_healthy(ctl: &RunningController) -> u64 {
        for _ in 0..200 {
            let table = ctl.table().unwrap();
            if table.apps()[0].targets[0].health == Health::Healthy {
                return table.version();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("shop/c1 never became healthy");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_operator_write_leaves_no_trace() {
        let loaded = meridian_config::parse(CONFIG, std::path::Path::new("t.yaml")).unwrap();
        let ctl = Controller::start(
            loaded,
            ControllerOptions {
                probe: false,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let client = ControllerClient::new(&ctl.url(), None).unwrap();
        // A vantage finds c1 up, so a drain changes routing.
        let report = format!(
            r#"{{"vantage":"edge","observations":[{{"app":"shop","cluster":"c1","healthy":true,
            "last_ok":true,"latency_seconds":0.001,"detail":"","at_ms":{}}}]}}"#,
            now_ms()
        );
        client
            .call(Method::POST, "/api/v1/reports", Some(report.into_bytes()))
            .await
            .unwrap();
        let version = wait_healthy(&ctl).await;
        let weight = "/api/v1/apps/shop/targets/c1/weight";

        ctl.shared
            .store
            .fail_table_writes
            .store(true, Ordering::SeqCst);
        let response = client
            .send(Method::PUT, weight, Some(br#"{"weight": 7}"#.to_vec()))
            .await
            .unwrap();
        assert_eq!(response.status(), 500);
        let response = client
            .send(Method::POST, "/api/v1/clusters/c1/drain", None)
            .await
            .unwrap();
        assert_eq!(response.status(), 500);
        assert_eq!(
            get(&client, "/api/v1/overrides").await,
            serde_json::json!({ "weights": {}, "drains": {}, "undrains": {} })
        );
        assert_eq!(get(&client, "/api/v1/audit").await, serde_json::json!([]));
        assert_eq!(ctl.table().unwrap().version(), version, "nothing published");
        assert_eq!(ctl.table().unwrap().apps()[0].targets[0].weight, 100);

        // The same write succeeds once the store does, and lands whole.
        ctl.shared
            .store
            .fail_table_writes
            .store(false, Ordering::SeqCst);
        let (_, body) = client
            .call(Method::PUT, weight, Some(br#"{"weight": 7}"#.to_vec()))
            .await
            .unwrap();
        let change: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(change["audit"]["seq"], 1);
        assert_eq!(change["table_version"], version + 1);
        assert_eq!(ctl.table().unwrap().apps()[0].targets[0].weight, 7);
        assert_eq!(
            ctl.shared.store.last_table().unwrap().unwrap().version(),
            version + 1,
            "the table is stored with the change"
        );
        ctl.shutdown().await;
    }

    /// One async worker thread: if a write's fsync ran on it, nothing else could be served
    /// until the disk answered.
    #[tokio::test(flavor = "current_thread")]
    async fn a_slow_disk_blocks_no_other_request() {
        let loaded = meridian_config::parse(CONFIG, std::path::Path::new("t.yaml")).unwrap();
        let ctl = Controller::start(
            loaded,
            ControllerOptions {
                probe: false,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let client = ControllerClient::new(&ctl.url(), None).unwrap();
        ctl.shared
            .store
            .slow_writes_ms
            .store(1500, Ordering::SeqCst);
        let writer = client.clone();
        let write = tokio::spawn(async move {
            writer
                .call(
                    Method::PUT,
                    "/api/v1/apps/shop/targets/c1/weight",
                    Some(br#"{"weight": 7}"#.to_vec()),
                )
                .await
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let start = Instant::now();
        let (status, _) = client.call(Method::GET, "/livez", None).await.unwrap();
        assert_eq!(status, 200);
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "livez waited {:?} behind a slow write",
            start.elapsed()
        );
        assert!(write.await.unwrap().is_ok(), "the slow write lands");
        ctl.shutdown().await;
    }
}
