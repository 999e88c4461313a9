//! What the proxy learns about targets from real traffic, and the per-table view of it the
//! request path reads: consecutive failures and ejections (passive outlier detection),
//! requests in flight (load shedding), and pre-resolved metric handles, so the hot path
//! neither locks nor hashes label sets.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use meridian_config::proxy::OutlierConfig;
use meridian_routing::{RoutingTable, TargetSet};
use prometheus::{Histogram, IntCounter};

use crate::metrics::{CLASSES, Metrics};
use crate::pool::{ConnOptions, Endpoint};

/// One app in one cluster, as seen by this proxy. Kept across table versions (by app and
/// cluster name) so an ejection outlives a table swap.
pub(crate) struct TargetState {
    pub(crate) app: Arc<str>,
    pub(crate) cluster: Arc<str>,
    consecutive_failures: AtomicU32,
    /// Ejections in a row; the next ejection lasts base × 2^this.
    ejections_in_row: AtomicU32,
    /// Until when the target is ejected, ms on the proxy's clock (0: never ejected).
    ejected_until_ms: AtomicU64,
    pub(crate) in_flight: AtomicU32,
    /// Rotates over the cluster's ingress endpoints.
    next_endpoint: AtomicUsize,
    pub(crate) requests: [IntCounter; 5],
    pub(crate) retries: IntCounter,
    pub(crate) hedges: IntCounter,
    pub(crate) failures: IntCounter,
    pub(crate) ejections: IntCounter,
    pub(crate) latency: Histogram,
}

impl TargetState {
    fn new(app: &str, cluster: &str, metrics: &Metrics) -> Self {
        let labels = [app, cluster];
        TargetState {
            app: app.into(),
            cluster: cluster.into(),
            consecutive_failures: AtomicU32::new(0),
            ejections_in_row: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            next_endpoint: AtomicUsize::new(0),
            requests: CLASSES
                .map(|class| metrics.requests.with_label_values(&[app, cluster, class])),
            retries: metrics.retries.with_label_values(&labels),
            hedges: metrics.hedges.with_label_values(&labels),
            failures: metrics.upstream_failures.with_label_values(&labels),
            ejections: metrics.ejections.with_label_values(&labels),
            latency: metrics.upstream_latency.with_label_values(&labels),
        }
    }

    pub(crate) fn is_ejected(&self, now_ms: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// A successful attempt: the failure streak ends; once the target has served well for
    /// a base ejection period after its last ejection, its ejection length starts over.
    pub(crate) fn record_success(&self, now_ms: u64, outlier: &OutlierConfig) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if self.ejections_in_row.load(Ordering::Relaxed) != 0 {
            let until = self.ejected_until_ms.load(Ordering::Relaxed);
            if now_ms >= until + outlier.base_ejection.as_millis() as u64 {
                self.ejections_in_row.store(0, Ordering::Relaxed);
            }
        }
    }
}

/// An app's targets in one table, by position in the app's target list.
pub(crate) struct AppRuntime {
    pub(crate) targets: Vec<Arc<TargetState>>,
    /// Per target, its cluster's ingress endpoints.
    pub(crate) endpoints: Vec<Vec<Arc<Endpoint>>>,
    pub(crate) shed: IntCounter,
}

impl AppRuntime {
    /// The targets ejected now.
    pub(crate) fn ejected(&self, now_ms: u64) -> TargetSet {
        let mut set = TargetSet::EMPTY;
        for (i, t) in self.targets.iter().enumerate() {
            if t.is_ejected(now_ms) {
                set.insert(i);
            }
        }
        set
    }

    /// The next endpoint of a target's cluster (round robin).
    pub(crate) fn endpoint(&self, target: usize) -> &Arc<Endpoint> {
        let endpoints = &self.endpoints[target];
        let n = self.targets[target]
            .next_endpoint
            .fetch_add(1, Ordering::Relaxed);
        &endpoints[n % endpoints.len()]
    }

    /// A failed attempt on `target`. Ejects it when its failure streak reaches the
    /// threshold, unless that would eject more than the allowed share of the app's targets.
    /// Returns true when this call ejected it.
    pub(crate) fn record_failure(
        &self,
        target: usize,
        now_ms: u64,
        outlier: &OutlierConfig,
    ) -> bool {
        self.targets[target].failures.inc();
        self.record_lost_race(target, now_ms, outlier)
    }

    /// An attempt that had no answer after the hedge delay and lost to the hedge: not a
    /// failure to report (the target may only be slow; `failures` is what the controller
    /// sees), but it counts toward the failure streak that ejects. A target that loses three
    /// races in a row is much slower than the others, and ejecting it stops each of its
    /// requests from costing a hedge (and a budget token). True when it is ejected now.
    pub(crate) fn record_lost_race(
        &self,
        target: usize,
        now_ms: u64,
        outlier: &OutlierConfig,
    ) -> bool {
        let state = &self.targets[target];
        let streak = state.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if streak < outlier.consecutive_failures || state.is_ejected(now_ms) {
            return false;
        }
        let allowed = (outlier.max_ejected_share * self.targets.len() as f64).floor() as usize;
        if self.ejected(now_ms).len() >= allowed {
            return false;
        }
        let in_row = state.ejections_in_row.fetch_add(1, Ordering::Relaxed);
        let length = outlier
            .base_ejection
            .saturating_mul(1u32 << in_row.min(16))
            .min(outlier.max_ejection);
        state
            .ejected_until_ms
            .store(now_ms + length.as_millis() as u64, Ordering::Relaxed);
        state.consecutive_failures.store(0, Ordering::Relaxed);
        state.ejections.inc();
        tracing::warn!(
            app = %state.app,
            target = %state.cluster,
            failures = streak,
            ejected_for = ?Duration::from_millis(length.as_millis() as u64),
            "target ejected by outlier detection"
        );
        true
    }
}

/// The proxy's view of one routing table: per app, its targets' state.
pub(crate) struct TableRuntime {
    /// The table this runtime was built for (compared by pointer).
    pub(crate) table: Arc<RoutingTable>,
    pub(crate) apps: Vec<AppRuntime>,
}

/// Target states by (app, cluster) and endpoints (with their idle connections) by address,
/// so both survive table swaps.
#[derive(Default)]
pub(crate) struct Registry {
    targets: HashMap<(Arc<str>, Arc<str>), Arc<TargetState>>,
    endpoints: HashMap<std::net::SocketAddr, Arc<Endpoint>>,
}

impl Registry {
    /// Builds the runtime of `table`, reusing the states of targets already known; new
    /// endpoints open their connections with `options`. When `prune` is set, states of
    /// targets the table no longer has are forgotten.
    pub(crate) fn build(
        &mut self,
        table: Arc<RoutingTable>,
        metrics: &Metrics,
        options: ConnOptions,
        prune: bool,
    ) -> TableRuntime {
        let mut apps = Vec::with_capacity(table.apps().len());
        let mut keep = HashMap::new();
        let mut keep_endpoints = HashMap::new();
        for (a, app) in table.apps().iter().enumerate() {
            let mut targets = Vec::with_capacity(app.targets.len());
            let mut endpoints = Vec::with_capacity(app.targets.len());
            for (t, target) in app.targets.iter().enumerate() {
                let key: (Arc<str>, Arc<str>) =
                    (app.name.as_str().into(), target.cluster.as_str().into());
                let state = self.targets.get(&key).cloned().unwrap_or_else(|| {
                    Arc::new(TargetState::new(&app.name, &target.cluster, metrics))
                });
                keep.insert(key, state.clone());
                targets.push(state);
                let cluster = table.target_cluster(meridian_routing::AppId(a as u32), t);
                endpoints.push(
                    cluster
                        .endpoints
                        .iter()
                        .map(|addr| {
                            let endpoint = self
                                .endpoints
                                .get(addr)
                                .cloned()
                                .unwrap_or_else(|| Arc::new(Endpoint::new(*addr, options)));
                            keep_endpoints.insert(*addr, endpoint.clone());
                            endpoint
                        })
                        .collect(),
                );
            }
            apps.push(AppRuntime {
                targets,
                endpoints,
                shed: metrics.shed.with_label_values(&[&app.name]),
            });
        }
        if prune {
            self.targets = keep;
            self.endpoints = keep_endpoints;
        } else {
            self.targets.extend(keep);
            self.endpoints.extend(keep_endpoints);
        }
        TableRuntime { table, apps }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(n: usize, metrics: &Metrics) -> AppRuntime {
        AppRuntime {
            targets: (0..n)
                .map(|i| Arc::new(TargetState::new("shop", &format!("c{i}"), metrics)))
                .collect(),
            endpoints: vec![Vec::new(); n],
            shed: metrics.shed.with_label_values(&["shop"]),
        }
    }

    fn outlier() -> OutlierConfig {
        OutlierConfig {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(5),
            max_ejection: Duration::from_secs(12),
            max_ejected_share: 0.5,
        }
    }

    #[test]
    fn consecutive_failures_eject_for_a_growing_time() {
        let metrics = Metrics::new().unwrap();
        let app = app(4, &metrics);
        let o = outlier();
        assert!(!app.record_failure(0, 1_000, &o));
        assert!(!app.record_failure(0, 1_000, &o));
        // A success ends the streak.
        app.targets[0].record_success(1_000, &o);
        assert!(!app.record_failure(0, 1_000, &o));
        assert!(!app.record_failure(0, 1_000, &o));
        assert!(app.record_failure(0, 1_000, &o));
        assert!(app.targets[0].is_ejected(5_999));
        assert!(!app.targets[0].is_ejected(6_000));
        assert_eq!(app.ejected(2_000), TargetSet(1));
        // Failing again right after it returns: twice as long (10 s).
        for _ in 0..3 {
            app.record_failure(0, 6_000, &o);
        }
        assert!(app.targets[0].is_ejected(15_999));
        assert!(!app.targets[0].is_ejected(16_000));
        // And capped at the maximum (12 s, not 20 s).
        for _ in 0..3 {
            app.record_failure(0, 16_000, &o);
        }
        assert!(app.targets[0].is_ejected(27_999));
        assert!(!app.targets[0].is_ejected(28_000));
        assert_eq!(app.targets[0].ejections.get(), 3);
    }

    #[test]
    fn never_more_than_the_allowed_share_is_ejected() {
        let metrics = Metrics::new().unwrap();
        let app = app(4, &metrics);
        let o = outlier();
        for target in 0..4 {
            for _ in 0..3 {
                app.record_failure(target, 1_000, &o);
            }
        }
        // Half of four targets.
        assert_eq!(app.ejected(1_000).len(), 2);
        let single = self::app(1, &metrics);
        for _ in 0..10 {
            assert!(!single.record_failure(0, 1_000, &o));
        }
    }
}
