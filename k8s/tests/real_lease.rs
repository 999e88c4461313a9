//! Leader election through a real Lease on a real kube-apiserver, as the controller's
//! service account with only the hub RBAC (`deploy/rbac/hub.yaml`): three replicas, exactly one
//! leader; a leader that dies without releasing is replaced within lease_duration +
//! retry_period; a released Lease is taken at once; and never two leaders at any sample.
//!
//! Ignored by a plain `cargo test` (it needs the API server binary); `scripts/test-all`
//! builds or reuses it and runs these with `--ignored`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use meridian_k8s::lease::{LeaderElector, Leadership, LeaseOptions};
use support::{ApiServer, apply_yaml, delete_namespace, in_namespace, test_namespace};
use tokio::sync::watch;

const LEASE_DURATION: Duration = Duration::from_secs(3);
const RENEW_DEADLINE: Duration = Duration::from_secs(2);
const RETRY_PERIOD: Duration = Duration::from_millis(500);
/// Room for the API calls themselves (a read and a write on loopback, each a few ms) on top of
/// the election's own timing, so a slow shared machine does not fail a correct elector.
const API_SLACK: Duration = Duration::from_millis(300);

fn leaders(replicas: &[watch::Receiver<Leadership>]) -> Vec<usize> {
    (0..replicas.len())
        .filter(|&i| replicas[i].borrow().is_leader)
        .collect()
}

/// Waits (bounded) until exactly one replica leads and returns it.
async fn one_leader(replicas: &[watch::Receiver<Leadership>], within: Duration) -> usize {
    let start = Instant::now();
    loop {
        if let [leader] = leaders(replicas)[..] {
            return leader;
        }
        assert!(
            start.elapsed() < within,
            "no single leader within {within:?}: {:?}",
            replicas
                .iter()
                .map(|r| r.borrow().clone())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kube-apiserver: run through scripts/test-all"]
async fn one_leader_takeover_on_death_and_on_release() {
    let hub = ApiServer::start("lease");
    let admin = hub.client().await;
    // A namespace of its own, so a run against a shared cluster (MERIDIAN_TEST_KUBECONFIG)
    // never meets a Lease left by another run.
    let ns = test_namespace(&admin, "t-lease").await;
    let ns = ns.as_str();
    let _cleanup = hub.cleanup_on_panic(&[ns]);
    apply_yaml(
        &admin,
        &in_namespace(include_str!("../../deploy/rbac/hub.yaml"), ns),
    )
    .await;
    let lease_name = "meridian-controller".to_string();

    let mut electors = Vec::new();
    let mut replicas = Vec::new();
    for identity in ["replica-a", "replica-b", "replica-c"] {
        // Each replica has its own client, as the controller's service account: the hub RBAC
        // (leases get/create/update) must be all the election needs.
        let client = hub
            .client_as(Some(&format!(
                "system:serviceaccount:{ns}:meridian-controller"
            )))
            .await;
        let options = LeaseOptions {
            name: lease_name.clone(),
            lease_duration: LEASE_DURATION,
            renew_deadline: RENEW_DEADLINE,
            retry_period: RETRY_PERIOD,
            ..LeaseOptions::new(ns, identity)
        };
        let elector = LeaderElector::start(client, options).unwrap();
        replicas.push(elector.subscribe());
        electors.push(Some(elector));
    }

    // Samples every replica's view every 2 ms for the whole test: never two leaders.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let replicas = replicas.clone();
        let stop = stop.clone();
        async move {
            let mut samples = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let now = leaders(&replicas);
                assert!(now.len() <= 1, "two leaders at once: {now:?}");
                samples += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            samples
        }
    });

    // 1. Exactly one leader, and the others name it as the holder.
    let first = one_leader(&replicas, Duration::from_secs(10)).await;
    let first_identity = replicas[first].borrow().holder.clone().unwrap();
    let started = Instant::now();
    for (i, replica) in replicas.iter_mut().enumerate().filter(|(i, _)| *i != first) {
        let seen = tokio::time::timeout(
            LEASE_DURATION,
            replica.wait_for(|l| l.holder.as_deref() == Some(&first_identity)),
        )
        .await
        .unwrap_or_else(|_| panic!("replica {i} never saw the holder"))
        .unwrap()
        .clone();
        assert!(!seen.is_leader);
    }
    // Let a few renewals pass: the leader keeps the Lease while it renews.
    tokio::time::sleep((LEASE_DURATION * 2).saturating_sub(started.elapsed())).await;
    assert_eq!(
        leaders(&replicas),
        [first],
        "leadership moved while renewing"
    );

    // 2. The leader dies without releasing: another takes over once the Lease expires.
    let died = Instant::now();
    drop(electors[first].take());
    let second = one_leader(&replicas, Duration::from_secs(10)).await;
    let takeover = died.elapsed();
    assert_ne!(second, first);
    println!("takeover after the leader died: {takeover:?}");
    assert!(
        takeover <= LEASE_DURATION + RETRY_PERIOD + API_SLACK,
        "took {takeover:?}, more than lease_duration + retry_period"
    );
    // And not before the Lease could have expired: the others waited out its duration.
    assert!(
        takeover >= LEASE_DURATION - RETRY_PERIOD - API_SLACK,
        "took over after only {takeover:?}, before the Lease expired"
    );

    // 3. A graceful stop hands the Lease over at once.
    let released = Instant::now();
    electors[second].take().unwrap().release().await;
    let third = one_leader(&replicas, Duration::from_secs(10)).await;
    let handover = released.elapsed();
    println!("takeover after release: {handover:?}");
    assert!(![first, second].contains(&third));
    assert!(
        handover <= RETRY_PERIOD * 2,
        "took {handover:?} after a release, more than two retry periods"
    );

    // The Lease as the API server holds it: the third replica, after two changes of holder.
    let third_identity = replicas[third].borrow().holder.clone().unwrap();
    let lease: Lease = Api::namespaced(admin.clone(), ns)
        .get(&lease_name)
        .await
        .unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(
        spec.holder_identity.as_deref(),
        Some(third_identity.as_str())
    );
    assert_eq!(spec.lease_transitions, Some(2));
    assert_eq!(spec.lease_duration_seconds, Some(3));

    electors[third].take().unwrap().release().await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    assert!(samples > 1000, "only {samples} samples");
    assert!(leaders(&replicas).is_empty());
    delete_namespace(&admin, ns).await;
}
