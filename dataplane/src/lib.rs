//! The L7 edge proxy: it stands in front of the clusters' ingresses and steers every HTTP
//! request by the routing table, failing over to another cluster per request.
//!
//! It owns the request path from the client's socket to an upstream ingress endpoint and
//! back: routing by host, target choice through the shared selection code, per-request
//! failover under a retry budget, passive outlier detection, load shedding, limits against
//! bad input, graceful shutdown, metrics and the access log.
//!
//! What it must not do: compute, change or fetch routing tables (it reads whatever is in
//! its [`TableCell`]; the subscriber crate fills it), talk to Kubernetes or cloud APIs, or
//! keep global state (several proxies can run in one process).
//!
//! # Layout
//!
//! - `listener`: accepting clients (HTTP/1.1 and h2c), connection limits, draining.
//! - `workers`: thread-per-core, each worker a thread with its own runtime.
//! - `clients`: the optional limits per client address (connections, request rate).
//! - `handover`: passing the listening sockets to a new proxy process (seamless restart).
//! - `forward`: one request: framing checks, routing, target choice, retries, hedging.
//! - `retry`: the retry budget (free and budgeted retries, the token bucket).
//! - `headers`: framing rules, hop-by-hop headers, forwarding headers.
//! - `framing`: follows request framing on the wire to spot what hyper folds silently.
//! - `pool`: upstream HTTP/1.1 connections kept alive per ingress endpoint (TCP keepalive,
//!   TCP_USER_TIMEOUT, an idle age limit).
//! - `h1`: the direct HTTP/1.1 client the hot path uses on pooled connections.
//! - `state`: what traffic teaches about targets (ejections, in-flight counts), per table.
//! - `tls`: TLS termination, certificates by SNI, reload of changed certificate files.
//! - `metrics`: the Prometheus registry. `admin`: `/livez`, `/readyz`, `/metrics`.
//!
//! - `access`: the access log, off unless configured: one JSON line per request (ts_ms,
//!   client, method, path, app, target, attempts, status, duration_ms, upstream_ms,
//!   table_version) to a file or stderr, under a rate cap, from a writer thread.

mod access;
mod admin;
mod clients;
mod error;
mod forward;
mod framing;
mod h1;
mod handover;
mod headers;
mod idle;
mod listener;
mod metrics;
mod pool;
mod retry;
mod state;
mod tls;
mod traffic;
mod upload;
mod workers;

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use meridian_config::proxy::ProxyConfig;
use meridian_subscriber::TableCell;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub use error::Error;
pub use forward::ProxyBody;
pub use pool::{BodyError, Pooled};

use forward::Shared;

/// The edge proxy. Start it with [`Proxy::start`].
pub struct Proxy;

/// A proxy serving on its listeners. Dropping it stops accepting without waiting; call
/// [`RunningProxy::shutdown`] to finish requests in flight first.
pub struct RunningProxy {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    /// True once the proxy stops accepting.
    stop: Arc<watch::Sender<bool>>,
    /// Set with `stop`, read on every HTTP/1.1 response (cheaper than the watch).
    closing: Arc<AtomicBool>,
    /// True once a new process serves the listening sockets (see `handover`).
    handed_over: watch::Receiver<bool>,
    server: Option<JoinHandle<()>>,
    /// The other workers' threads: each resolves once it has finished.
    workers: Vec<oneshot::Receiver<()>>,
    admin: JoinHandle<()>,
    /// Reloads changed TLS certificates.
    reload: Option<JoinHandle<()>>,
    /// Offers the listening sockets to a new process, when `handover_socket` is set.
    offer: Option<JoinHandle<()>>,
}

/// What `/readyz` reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Status {
    /// True when the proxy has a table and is not draining.
    pub ready: bool,
    /// True once shutdown has begun.
    pub draining: bool,
    /// The version of the table served, 0 when none.
    pub table_version: u64,
    /// How long ago the controller generated that table.
    pub table_staleness: Option<Duration>,
}

pub(crate) fn status(shared: &Shared) -> Status {
    let draining = shared.draining.load(Ordering::Relaxed);
    let table_version = shared.cell.version();
    Status {
        ready: !draining && table_version > 0,
        draining,
        table_version,
        table_staleness: shared.cell.staleness(),
    }
}

impl Proxy {
    /// Binds the client and admin listeners of `config` (port 0 picks a free port) and
    /// starts serving from whatever table `cell` holds; until it holds one, requests get 503.
    /// Must be called within a tokio runtime, which serves the clients.
    pub async fn start(config: ProxyConfig, cell: Arc<TableCell>) -> Result<RunningProxy, Error> {
        Self::start_workers(config, cell, 1).await
    }

    /// As [`Proxy::start`], with `workers` workers: the runtime it is called in is the
    /// first, and each other one is a thread of its own with a current-thread runtime,
    /// accepting from the same listening sockets (see `workers`).
    pub async fn start_workers(
        config: ProxyConfig,
        cell: Arc<TableCell>,
        workers: usize,
    ) -> Result<RunningProxy, Error> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(Error::Config(
                problems
                    .into_iter()
                    .map(|(path, message)| format!("{path}: {message}"))
                    .collect(),
            ));
        }
        // A proxy already running at the handover socket gives its listening sockets; the
        // ones it does not have (or that the config moved) are bound here.
        let mut inherited = match &config.handover_socket {
            Some(path) => handover::Inherited::ask(path)
                .await
                .unwrap_or_else(|err| {
                    tracing::warn!(path = %path.display(), %err, "no listening sockets from the handover socket; binding them");
                    handover::Inherited::default()
                }),
            None => handover::Inherited::default(),
        };
        let mut bind = async |what: &'static str, addr: SocketAddr| match inherited.take(what, addr)
        {
            Some(listener) => Ok(listener),
            None => {
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| Error::Bind { what, addr, source })
            }
        };
        let listener = bind("proxy", config.listen).await?;
        let admin_listener = bind("admin", config.admin_listen).await?;
        let local = |l: &TcpListener, what, addr| {
            l.local_addr()
                .map_err(|source| Error::Bind { what, addr, source })
        };
        let addr = local(&listener, "proxy", config.listen)?;
        let admin_addr = local(&admin_listener, "admin", config.admin_listen)?;
        let (tls, tls_addr, reload) = match &config.tls {
            Some(tls_config) => {
                let (acceptor, reload) = tls::acceptor(tls_config)?;
                let tls_listener = bind("tls", tls_config.listen).await?;
                let tls_addr = local(&tls_listener, "tls", tls_config.listen)?;
                (Some((tls_listener, acceptor)), Some(tls_addr), Some(reload))
            }
            None => (None, None, None),
        };
        let metrics = metrics::Metrics::new()?;
        let access_log = config
            .access_log
            .as_ref()
            .map(|log| access::AccessLog::open(log, &metrics))
            .transpose()?;
        // Duplicates of the listening sockets, to offer to the next process.
        let mut offered = Vec::new();
        if config.handover_socket.is_some() {
            let mut dup = |role, addr, fd: std::os::fd::BorrowedFd<'_>| {
                fd.try_clone_to_owned()
                    .map(|fd| offered.push((role, addr, fd)))
                    .map_err(|source| Error::Bind {
                        what: role,
                        addr,
                        source,
                    })
            };
            dup("proxy", addr, listener.as_fd())?;
            dup("admin", admin_addr, admin_listener.as_fd())?;
            if let (Some((tls_listener, _)), Some(tls_addr)) = (&tls, tls_addr) {
                dup("tls", tls_addr, tls_listener.as_fd())?;
            }
        }
        let handover_path = config.handover_socket.clone();
        let shared = Arc::new(Shared::new(config, cell, metrics, access_log).with_workers(workers));
        let (stop, stop_rx) = watch::channel(false);
        let stop = Arc::new(stop);
        let closing = Arc::new(AtomicBool::new(false));
        let slots = listener::slots(&shared);
        let extra = (1..workers)
            .map(|index| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(Error::Worker)?;
                let listener = duplicate(&listener, "proxy", addr)?;
                let tls = match (&tls, tls_addr) {
                    (Some((tls, acceptor)), Some(tls_addr)) => {
                        Some((duplicate(tls, "tls", tls_addr)?, acceptor.clone()))
                    }
                    _ => None,
                };
                let (shared, stop, closing, slots) =
                    (shared.clone(), stop_rx.clone(), closing.clone(), slots.clone());
                workers::spawn(index, runtime, move || async move {
                    let registered = TcpListener::from_std(listener).and_then(|listener| {
                        let tls = tls.map(|(tls, acceptor)| {
                            TcpListener::from_std(tls).map(|tls| (tls, acceptor))
                        });
                        Ok((listener, tls.transpose()?))
                    });
                    match registered {
                        Ok((listener, tls)) => {
                            listener::serve(listener, tls, shared, stop, closing, slots).await;
                        }
                        Err(err) => {
                            tracing::error!(worker = index, %err, "a worker could not register its listening sockets");
                        }
                    }
                })
                .map_err(Error::Worker)
            })
            .collect::<Result<Vec<_>, Error>>();
        let extra = match extra {
            Ok(extra) => extra,
            Err(err) => {
                // The workers already started stop with the proxy they were part of.
                let _ = stop.send(true);
                return Err(err);
            }
        };
        let (handed_over_tx, handed_over) = watch::channel(false);
        let reload = reload.map(tokio::spawn);
        let server = tokio::spawn(listener::serve(
            listener,
            tls,
            shared.clone(),
            stop_rx,
            closing.clone(),
            slots,
        ));
        let admin = tokio::spawn(admin::serve(
            admin_listener,
            shared.clone(),
            handed_over.clone(),
        ));
        tracing::info!(%addr, %admin_addr, ?tls_addr, "proxy listening");
        // Served here now: the previous process may stop accepting.
        inherited.ready();
        let offer = handover_path.map(|path| {
            let (shared, stop, closing) = (shared.clone(), stop.clone(), closing.clone());
            tokio::spawn(handover::offer(path, offered, move || {
                // The next process accepts from the same sockets: stop at once (no drain
                // delay, nobody needs to move away) and let the connections finish.
                shared.draining.store(true, Ordering::Relaxed);
                shared.metrics.draining.set(1);
                stop_accepting(&closing, &stop);
                let _ = handed_over_tx.send(true);
            }))
        });
        Ok(RunningProxy {
            addr,
            admin_addr,
            tls_addr,
            reload,
            shared,
            stop,
            closing,
            handed_over,
            server: Some(server),
            workers: extra,
            admin,
            offer,
        })
    }
}

impl RunningProxy {
    /// The client listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The TLS listener's address, when TLS is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Readiness, table version and staleness, as `/readyz` reports them.
    pub fn status(&self) -> Status {
        status(&self.shared)
    }

    /// The metrics in Prometheus text format, as `/metrics` serves them.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics.render()
    }

    /// The traffic counters this proxy reports to the controller as a vantage, per target.
    pub fn traffic_source(&self) -> meridian_subscriber::report::TrafficSource {
        let shared = self.shared.clone();
        Arc::new(move || traffic::samples(&shared.metrics.registry))
    }

    /// Begins a graceful shutdown without the drain delay: `/readyz` turns 503, the
    /// listener stops accepting, and connections close once their requests in flight are
    /// answered.
    pub fn begin_drain(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
        self.shared.metrics.draining.set(1);
        if let Some(offer) = &self.offer {
            offer.abort();
        }
        stop_accepting(&self.closing, &self.stop);
    }

    /// Resolves once a new process serves the listening sockets (a handover through
    /// `handover_socket`); this proxy has stopped accepting then, and its owner should
    /// call [`RunningProxy::shutdown`] to finish what is in flight. Never resolves
    /// without a handover.
    pub async fn handed_over(&self) {
        handed_over(self.handed_over.clone()).await;
    }

    /// Shuts down gracefully: `/readyz` turns 503, the listener keeps accepting for the
    /// configured drain delay (cut short by a handover), then stops; in-flight requests
    /// get at most the grace period; then the admin listener closes.
    pub async fn shutdown(self) {
        let delay = self.shared.config.drain_delay;
        self.shutdown_after(delay).await;
    }

    /// As [`RunningProxy::shutdown`], with no drain delay (an operator's Ctrl-C).
    pub async fn shutdown_now(self) {
        self.shutdown_after(Duration::ZERO).await;
    }

    async fn shutdown_after(mut self, delay: Duration) {
        self.shared.draining.store(true, Ordering::Relaxed);
        self.shared.metrics.draining.set(1);
        if !delay.is_zero() && !*self.stop.borrow() {
            tracing::info!(
                ?delay,
                "draining: /readyz answers 503; accepting for the drain delay"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = handed_over(self.handed_over.clone()) => {}
            }
        }
        self.begin_drain();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        for worker in self.workers.drain(..) {
            let _ = worker.await;
        }
        self.admin.abort();
        if let Some(reload) = &self.reload {
            reload.abort();
        }
    }
}

/// Stops accepting: HTTP/1.1 responses from now on carry `Connection: close`, and the
/// listener closes (see `listener::serve`).
fn stop_accepting(closing: &AtomicBool, stop: &watch::Sender<bool>) {
    closing.store(true, Ordering::Relaxed);
    let _ = stop.send(true);
}

/// A duplicate of a listening socket, for another worker: the same socket (one accept
/// queue), registered with that worker's reactor.
fn duplicate(
    listener: &TcpListener,
    what: &'static str,
    addr: SocketAddr,
) -> Result<std::net::TcpListener, Error> {
    let fd = listener
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| Error::Bind { what, addr, source })?;
    Ok(std::net::TcpListener::from(fd))
}

/// Resolves once `handed_over` turns true; never when its sender goes without.
async fn handed_over(mut handed_over: watch::Receiver<bool>) {
    if handed_over.wait_for(|done| *done).await.is_err() {
        std::future::pending::<()>().await;
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.admin.abort();
        if let Some(reload) = &self.reload {
            reload.abort();
        }
        if let Some(offer) = &self.offer {
            offer.abort();
        }
    }
}
