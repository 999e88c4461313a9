//! Leader election through a `coordination.k8s.io/v1` Lease, with the semantics of client-go's
//! `leaderelection` package, so that Meridian replicas and Go controllers reason alike.
//!
//! - A replica acquires the Lease when it is absent (create), held by nobody (empty
//!   `holderIdentity`) or expired. Expiry is judged by this replica's own monotonic clock since
//!   it last *observed a change* of the Lease's record, never by comparing `renewTime` with the
//!   local wall clock, so clock skew between replicas cannot produce two leaders.
//! - Every write is a replace carrying the observed `resourceVersion`; a 409 Conflict means
//!   someone else wrote first: the replica re-reads and is not the leader.
//! - The leader renews every `retry_period`. If it cannot renew within `renew_deadline` of its
//!   last successful renewal, it publishes `is_leader = false` at once, before any further
//!   attempt, and becomes a candidate again. Because `renew_deadline < lease_duration` and the
//!   deadline is counted from the moment the last successful write was *sent*, the old leader
//!   has stopped before any other replica can consider the Lease expired.
//!
//! The API calls are `get`, `create` and `update` on leases in one namespace; no `list` or
//! `watch`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};

use crate::Error;

/// The Lease name every Meridian controller replica competes for by default.
pub const DEFAULT_LEASE_NAME: &str = "meridian-controller";

/// Where the Lease lives, who this replica is, and the election's timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseOptions {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease (default [`DEFAULT_LEASE_NAME`]).
    pub name: String,
    /// Unique per replica; the controller puts its advertised URL here, so followers can tell
    /// clients where the leader is.
    pub identity: String,
    /// How long a Lease stays valid after its holder's last observed renewal (default 15 s).
    /// Written into the Lease as whole seconds.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up leadership (default 10 s;
    /// must be shorter than `lease_duration`).
    pub renew_deadline: Duration,
    /// Pause between attempts, of the leader to renew and of candidates to acquire
    /// (default 2 s; must be shorter than `renew_deadline`).
    pub retry_period: Duration,
}

impl LeaseOptions {
    /// Options with client-go's default timing and the default Lease name.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> LeaseOptions {
        LeaseOptions {
            namespace: namespace.into(),
            name: DEFAULT_LEASE_NAME.to_string(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Checks the options as client-go does before an election starts.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |reason: String| Err(Error::LeaseOptions(reason));
        if self.namespace.is_empty() {
            return bad("namespace is empty".into());
        }
        if self.name.is_empty() {
            return bad("name is empty".into());
        }
        if self.identity.is_empty() {
            return bad("identity is empty: every replica needs a unique one".into());
        }
        if self.lease_duration < Duration::from_secs(1)
            || self.lease_duration.subsec_nanos() != 0
            || self.lease_duration.as_secs() > i32::MAX as u64
        {
            return bad(format!(
                "lease_duration {:?} must be a whole number of seconds, at least 1 s \
                 (the Lease stores leaseDurationSeconds)",
                self.lease_duration
            ));
        }
        if self.renew_deadline >= self.lease_duration {
            return bad(format!(
                "renew_deadline {:?} must be shorter than lease_duration {:?}",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return bad(format!(
                "retry_period {:?} must be above zero and shorter than renew_deadline {:?}",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }
}

/// What one replica knows about the election at a moment.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Leadership {
    /// This replica holds the Lease and may write.
    pub is_leader: bool,
    /// The Lease's current `holderIdentity` as last observed (`None` when nobody holds it).
    pub holder: Option<String>,
}

/// A running election for one replica. Dropping it ends the loop without releasing the Lease
/// (as a crash would: the Lease simply expires); [`LeaderElector::release`] hands it over at once.
pub struct LeaderElector {
    shared: Arc<Shared>,
    leadership: watch::Receiver<Leadership>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl LeaderElector {
    /// Checks the options and spawns the election loop on the current tokio runtime. The
    /// receivers start at not-leader with no known holder.
    pub fn start(client: kube::Client, options: LeaseOptions) -> Result<LeaderElector, Error> {
        options.validate()?;
        let (tx, leadership) = watch::channel(Leadership::default());
        let shared = Arc::new(Shared {
            tx,
            stopped: AtomicBool::new(false),
        });
        let (stop, stop_rx) = oneshot::channel();
        let election = Election {
            api: Api::namespaced(client, &options.namespace),
            options,
            shared: shared.clone(),
            observed: None,
            observed_at: Instant::now(),
            leading: false,
            renewed_at: Instant::now(),
        };
        let task = tokio::spawn(election.run_until(stop_rx));
        Ok(LeaderElector {
            shared,
            leadership,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// A receiver of every change of this replica's leadership.
    pub fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// Graceful stop: publishes `is_leader = false`, then, if this replica led, releases the
    /// Lease (empty holder) so another replica takes over at once instead of after
    /// `lease_duration`, and ends the loop.
    pub async fn release(mut self) {
        self.shared.stop_leading();
        if let Some(stop) = self.stop.take() {
            // The loop may already have ended if its runtime is shutting down; then there is
            // nothing left to release from here.
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            tracing::warn!(%error, "leader election loop ended abnormally");
        }
    }
}

impl Drop for LeaderElector {
    fn drop(&mut self) {
        // Receivers see not-leader before `drop` returns, even while the loop is mid-attempt
        // on another thread; dropping `stop` then wakes the loop, which ends without writing.
        self.shared.stop_leading();
        self.stop.take();
    }
}

/// What the handle and the loop share.
struct Shared {
    tx: watch::Sender<Leadership>,
    /// Set once the handle is released or dropped: from then on nothing may publish
    /// `is_leader = true`, whatever the loop was doing at that moment.
    stopped: AtomicBool,
}

impl Shared {
    fn stop_leading(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.tx
            .send_if_modified(|seen| std::mem::replace(&mut seen.is_leader, false));
    }
}

/// Why one attempt to acquire or renew did not make us the leader.
enum Miss {
    /// Someone else holds a valid Lease (or won a race for it).
    HeldByOther,
    /// The API server could not be reached or refused the call.
    Failed(kube::Error),
}

/// The state of the election loop; owned by its task.
struct Election {
    api: Api<Lease>,
    options: LeaseOptions,
    shared: Arc<Shared>,
    /// The Lease as last read or written (its `resourceVersion` guards our next write).
    observed: Option<Lease>,
    /// When `observed`'s record last changed, by this replica's monotonic clock.
    observed_at: Instant,
    leading: bool,
    /// When the last successful write while leading was sent.
    renewed_at: Instant,
}

impl Election {
    async fn run_until(mut self, stop: oneshot::Receiver<()>) {
        let released = tokio::select! {
            () = self.run() => false,
            signal = stop => signal.is_ok(),
        };
        let was_leading = self.leading;
        // Not-leader is published before the Lease is released, so that by the time another
        // replica can acquire it, this one has already stopped writing.
        self.set_leading(false);
        if released && was_leading {
            let limit = self.options.renew_deadline;
            if timeout(limit, self.release_lease()).await.is_err() {
                tracing::warn!(lease = %self.options.name, "releasing the Lease timed out; it will expire instead");
            }
        }
        tracing::debug!(lease = %self.options.name, released, "leader election stopped");
    }

    /// The election loop proper; it never returns (the caller stops it by dropping it).
    async fn run(&mut self) {
        let retry = self.options.retry_period;
        loop {
            if self.leading {
                let deadline = self.renewed_at + self.options.renew_deadline;
                if Instant::now() >= deadline {
                    tracing::warn!(lease = %self.options.name, "could not renew the Lease within the renew deadline");
                    self.set_leading(false);
                    continue;
                }
                let sent = Instant::now();
                match timeout_at(deadline, self.try_acquire_or_renew()).await {
                    Ok(Ok(())) => {
                        self.renewed_at = sent;
                        self.publish();
                        sleep(retry).await;
                    }
                    Ok(Err(Miss::HeldByOther)) => {
                        self.set_leading(false);
                        sleep(retry).await;
                    }
                    Ok(Err(Miss::Failed(error))) => {
                        tracing::warn!(lease = %self.options.name, %error, "renewing the Lease failed");
                        sleep_until(deadline.min(Instant::now() + retry)).await;
                    }
                    // The deadline passed during the call: the loop's top gives up leadership.
                    Err(_) => {}
                }
            } else {
                let sent = Instant::now();
                match timeout(self.options.renew_deadline, self.try_acquire_or_renew()).await {
                    Ok(Ok(())) => {
                        self.renewed_at = sent;
                        self.set_leading(true);
                    }
                    Ok(Err(Miss::HeldByOther)) => self.publish(),
                    Ok(Err(Miss::Failed(error))) => {
                        tracing::warn!(lease = %self.options.name, %error, "acquiring the Lease failed");
                    }
                    Err(_) => {
                        tracing::warn!(lease = %self.options.name, "acquiring the Lease timed out");
                    }
                }
                sleep(retry).await;
            }
        }
    }

    /// One attempt: read the Lease (unless we lead and hold its latest version), decide, write.
    async fn try_acquire_or_renew(&mut self) -> Result<(), Miss> {
        let name = self.options.name.clone();
        // The leader writes over the version it wrote last; anyone else's write in between
        // turns that into a 409 and a fresh read.
        let mut current = if self.leading {
            self.observed.clone()
        } else {
            None
        };
        for pass in 0..2 {
            let lease = match current.take() {
                Some(lease) => lease,
                None => match self.api.get_opt(&name).await.map_err(Miss::Failed)? {
                    Some(lease) => {
                        self.observe(lease.clone());
                        lease
                    }
                    None => return self.create().await,
                },
            };
            let record = lease.spec.clone().unwrap_or_default();
            let holder = record.holder_identity.as_deref().filter(|h| !h.is_empty());
            let ours = holder == Some(self.options.identity.as_str());
            if holder.is_some() && !ours && !self.observed_expired(&record) {
                return Err(Miss::HeldByOther);
            }
            let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
            let mut next = lease.clone();
            next.spec = Some(LeaseSpec {
                holder_identity: Some(self.options.identity.clone()),
                lease_duration_seconds: Some(self.lease_seconds()),
                renew_time: Some(now.clone()),
                acquire_time: if ours {
                    record.acquire_time.clone()
                } else {
                    Some(now)
                },
                lease_transitions: Some(if ours {
                    record.lease_transitions.unwrap_or(0)
                } else {
                    record.lease_transitions.unwrap_or(0).saturating_add(1)
                }),
                ..record
            });
            match self.api.replace(&name, &PostParams::default(), &next).await {
                Ok(written) => {
                    self.observe(written);
                    return Ok(());
                }
                Err(error) if is_conflict(&error) => {
                    tracing::debug!(lease = %name, pass, "Lease changed under us; reading it again");
                    self.observed = None;
                }
                Err(error) => {
                    if matches!(&error, kube::Error::Api(status) if status.code == 404) {
                        // Deleted under us: the next attempt reads, finds nothing, creates.
                        self.observed = None;
                    }
                    return Err(Miss::Failed(error));
                }
            }
        }
        // Two conflicts in a row: someone else is writing. Learn who, and follow.
        if let Some(lease) = self.api.get_opt(&name).await.map_err(Miss::Failed)? {
            self.observe(lease);
        }
        Err(Miss::HeldByOther)
    }

    async fn create(&mut self) -> Result<(), Miss> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.options.name.clone()),
                namespace: Some(self.options.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.options.identity.clone()),
                lease_duration_seconds: Some(self.lease_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(created) => {
                self.observe(created);
                Ok(())
            }
            Err(error) if is_conflict(&error) => {
                // Another replica created it first (AlreadyExists is a 409 too).
                if let Some(lease) = self
                    .api
                    .get_opt(&self.options.name)
                    .await
                    .map_err(Miss::Failed)?
                {
                    self.observe(lease);
                }
                Err(Miss::HeldByOther)
            }
            Err(error) => Err(Miss::Failed(error)),
        }
    }

    /// Hands the Lease over: empty holder, one-second duration (as client-go writes it).
    async fn release_lease(&mut self) {
        let name = self.options.name.clone();
        let mut current = self.observed.clone();
        for _ in 0..2 {
            let lease = match current.take() {
                Some(lease) => lease,
                None => match self.api.get_opt(&name).await {
                    Ok(Some(lease)) => lease,
                    Ok(None) => return,
                    Err(error) => {
                        tracing::warn!(lease = %name, %error, "reading the Lease to release it failed");
                        return;
                    }
                },
            };
            let record = lease.spec.clone().unwrap_or_default();
            if record.holder_identity.as_deref() != Some(self.options.identity.as_str()) {
                return;
            }
            let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
            let mut next = lease;
            next.spec = Some(LeaseSpec {
                holder_identity: Some(String::new()),
                lease_duration_seconds: Some(1),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..record
            });
            match self.api.replace(&name, &PostParams::default(), &next).await {
                Ok(written) => {
                    self.observe(written);
                    tracing::info!(lease = %name, identity = %self.options.identity, "released the Lease");
                    return;
                }
                // A renewal cut short by the stop may have moved the version on: re-read once.
                Err(error) if is_conflict(&error) => {}
                Err(error) => {
                    tracing::warn!(lease = %name, %error, "releasing the Lease failed; it will expire instead");
                    return;
                }
            }
        }
    }

    /// Records what we read or wrote, restarting the expiry clock only when the record changed.
    fn observe(&mut self, lease: Lease) {
        let changed = self.observed.as_ref().map(|old| &old.spec) != Some(&lease.spec);
        if changed {
            self.observed_at = Instant::now();
        }
        self.observed = Some(lease);
    }

    fn observed_expired(&self, record: &LeaseSpec) -> bool {
        let duration = record
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.options.lease_duration, Duration::from_secs);
        Instant::now() >= self.observed_at + duration
    }

    fn lease_seconds(&self) -> i32 {
        // `validate` bounds it to 1..=i32::MAX.
        i32::try_from(self.options.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    fn holder(&self) -> Option<String> {
        self.observed
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty())
    }

    fn set_leading(&mut self, leading: bool) {
        if self.leading != leading {
            self.leading = leading;
            if leading {
                tracing::info!(lease = %self.options.name, identity = %self.options.identity, "became the leader");
            } else {
                tracing::info!(lease = %self.options.name, identity = %self.options.identity, holder = ?self.holder(), "lost leadership");
            }
        }
        self.publish();
    }

    /// Publishes the current view, waking receivers only when it changed.
    fn publish(&self) {
        let holder = self.holder();
        self.shared.tx.send_if_modified(|seen| {
            // Checked under the channel's lock, which `stop_leading` also takes: once it has
            // run, no `true` from a late attempt can overwrite its `false`.
            let now = Leadership {
                is_leader: self.leading && !self.shared.stopped.load(Ordering::SeqCst),
                holder,
            };
            if *seen == now {
                return false;
            }
            if !now.is_leader && seen.holder != now.holder {
                tracing::info!(lease = %self.options.name, holder = ?now.holder, "the Lease has a new holder");
            }
            *seen = now;
            true
        });
    }
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}
