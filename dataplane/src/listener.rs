//! The client listener: accepts connections up to the configured maximum, serves HTTP/1.1
//! and h2c on each (hyper-util's auto builder), and drains them on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::IntGauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::clients::Admitted;
use crate::forward::{ClientConnection, Shared, handle};
use crate::framing::{FramingWatch, Watched};
use crate::headers::ForwardedFor;
use crate::idle::{self, Activity, Quiet, Tracked};

pub(crate) fn builder(shared: &Shared) -> auto::Builder<TokioExecutor> {
    let config = &shared.config;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        // hyper's read buffer bounds the request head (431 past it); it refuses less than
        // 8 KiB. Room for a long request line is added, so a target over max_uri_bytes
        // reaches the request path and gets 414 (hyper itself answers 414 past 64 KiB).
        .max_buf_size((config.max_header_bytes + config.max_uri_bytes).max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(
            u32::try_from(config.max_header_bytes + config.max_uri_bytes).unwrap_or(u32::MAX),
        );
    builder
}

/// After the proxy stops accepting, an HTTP/1.1 connection idle this long (at most the
/// idle timeout) is closed. A busy client gets `Connection: close` on its next response
/// instead, which cannot race a request it is sending; one quiet this long is most likely
/// between bursts, and an idle close is the race every keep-alive client handles.
const DRAIN_IDLE: Duration = Duration::from_secs(1);

/// Serves clients on the plain listener (and the TLS one, if any) until `stop` turns
/// true, then lets in-flight requests finish for up to the shutdown grace period. From
/// `closing` on, HTTP/1.1 responses carry `Connection: close`.
///
/// A plain connection that has sent nothing yet waits in this task's waiting room (a
/// `FuturesUnordered` of small futures: its readiness and its header deadline) rather than
/// in a task of its own: a silent connection then costs a few hundred bytes, as in
/// HAProxy, not a task sized for everything a served connection does. Its own task is
/// spawned when its first bytes arrive.
///
/// Each worker runs one of these on its own copy of the listeners; `slots` are the
/// process's, shared by all. Returns once every connection of the process has ended (or
/// the grace period is over), so a worker's runtime, and the connections' tasks on it, is
/// dropped only then.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<(TcpListener, TlsAcceptor)>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    closing: Arc<AtomicBool>,
    slots: Arc<Semaphore>,
) {
    // Shared, not cloned per connection: each connection's task holds a pointer.
    let builder = Arc::new(builder(&shared));
    let header_timeout = shared.config.header_timeout;
    let accepted_here = shared
        .metrics
        .worker_connections
        .with_label_values(&[&crate::workers::current().to_string()]);
    let mut waiting = FuturesUnordered::new();
    let mut permit = None;
    loop {
        // Waiting for a free slot before accepting leaves excess clients in the kernel's
        // accept queue instead of accepting and dropping them.
        let (accepted, acceptor) = tokio::select! {
            Some(arrived) = waiting.next(), if !waiting.is_empty() => {
                if let Some(arrived) = arrived {
                    spawn_served(arrived, &builder, &shared, &stop, &closing);
                }
                continue;
            }
            free = slots.clone().acquire_owned(), if permit.is_none() => match free {
                Ok(free) => {
                    permit = Some(free);
                    continue;
                }
                Err(_) => break,
            },
            accepted = listener.accept(), if permit.is_some() => (accepted, None),
            accepted = accept_tls(&tls), if permit.is_some() => {
                (accepted, tls.as_ref().map(|(_, a)| a.clone()))
            }
            _ = stopped(&mut stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Over its address's connection limit: closed before anything is read.
        let admitted = match &shared.clients {
            Some(limits) => match limits.connect(peer.ip(), Instant::now()) {
                Some(admitted) => Some(admitted),
                None => {
                    shared
                        .metrics
                        .refused
                        .with_label_values(&["client-connections"])
                        .inc();
                    tracing::debug!(%peer, "client address over its connection limit; closing");
                    continue;
                }
            },
            None => None,
        };
        accepted_here.inc();
        let _ = stream.set_nodelay(true);
        let slot = Slot::new(permit.take().expect("accepted with a permit"), &shared);
        let accepted_at = tokio::time::Instant::now();
        match acceptor {
            None => waiting.push(first_bytes(Accepted {
                stream,
                peer,
                admitted,
                slot,
                header_deadline: accepted_at + header_timeout,
            })),
            // The handshake starts at once: its own task.
            Some(acceptor) => {
                let (builder, shared) = (builder.clone(), shared.clone());
                let end = Ending {
                    stop: stop.clone(),
                    closing: closing.clone(),
                    admitted,
                };
                tokio::spawn(async move {
                    serve_tls(acceptor, stream, peer, &builder, shared, end).await;
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    drop(tls);
    tracing::info!("proxy stopped accepting; finishing requests in flight");
    // Silent connections get what an idle HTTP/1.1 connection gets when draining: bytes
    // arriving within DRAIN_IDLE are served, the rest are closed.
    let drain_idle = shared.config.idle_timeout.min(DRAIN_IDLE);
    let until = tokio::time::sleep(drain_idle);
    let mut until = std::pin::pin!(until);
    while !waiting.is_empty() {
        tokio::select! {
            Some(arrived) = waiting.next() => {
                if let Some(arrived) = arrived {
                    spawn_served(arrived, &builder, &shared, &stop, &closing);
                }
            }
            () = until.as_mut() => break,
        }
    }
    drop(waiting);
    drop(permit);
    all_closed(&shared, &slots).await;
}

/// The connection slots of a proxy: `max_connections` of them, shared by its workers.
pub(crate) fn slots(shared: &Shared) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(max_connections(shared) as usize))
}

fn max_connections(shared: &Shared) -> u32 {
    u32::try_from(shared.config.max_connections).unwrap_or(u32::MAX)
}

/// Resolves once every client connection of the process has ended, or the shutdown grace
/// period is over.
async fn all_closed(shared: &Shared, slots: &Semaphore) {
    // Every connection holds a slot until it ends: holding them all means all have ended.
    // Given back at once, so each worker's wait can take them in turn.
    tokio::select! {
        _ = slots.acquire_many(max_connections(shared)) => tracing::debug!("all client connections closed"),
        _ = tokio::time::sleep(shared.config.shutdown_grace) => {
            tracing::warn!(grace = ?shared.config.shutdown_grace, "shutdown grace period over; closing remaining connections");
        }
    }
}

/// A client connection's hold on a connection slot, counted in the connections gauge;
/// both are given back when it is dropped, wherever the connection ends.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: IntGauge,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, shared: &Shared) -> Self {
        let open = shared.metrics.connections.clone();
        open.inc();
        Slot {
            _permit: permit,
            open,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

/// A plain connection accepted and not served yet.
struct Accepted {
    stream: TcpStream,
    peer: SocketAddr,
    admitted: Option<Admitted>,
    slot: Slot,
    /// The first request head must be complete by then (counted from the accept).
    header_deadline: tokio::time::Instant,
}

/// Spawns the task that serves a connection whose first bytes arrived.
fn spawn_served(
    arrived: Accepted,
    builder: &Arc<auto::Builder<TokioExecutor>>,
    shared: &Arc<Shared>,
    stop: &watch::Receiver<bool>,
    closing: &Arc<AtomicBool>,
) {
    let (builder, shared) = (builder.clone(), shared.clone());
    let end = Ending {
        stop: stop.clone(),
        closing: closing.clone(),
        admitted: arrived.admitted,
    };
    let left = arrived
        .header_deadline
        .saturating_duration_since(tokio::time::Instant::now());
    let (stream, peer, slot) = (arrived.stream, arrived.peer, arrived.slot);
    tokio::spawn(async move {
        serve_connection(stream, peer, "http", &builder, shared, end, left).await;
        drop(slot);
    });
}

/// How a connection learns that the proxy stopped accepting.
struct Ending {
    stop: watch::Receiver<bool>,
    closing: Arc<AtomicBool>,
    /// The connection's hold on its client address's limits, when there are any.
    admitted: Option<Admitted>,
}

/// Serves one client connection until it closes. It is closed at once when it completes
/// no request head within the header timeout, and gracefully (after the response in
/// flight; GOAWAY on HTTP/2) when it sits idle; one still idle a period after that (a
/// client that stopped reading a response) is closed at once. When the proxy stops
/// accepting, HTTP/2 gets GOAWAY at once; HTTP/1.1 gets `Connection: close` on its next
/// response, or is closed once idle for [`DRAIN_IDLE`].
async fn serve_connection<T>(
    io: T,
    peer: SocketAddr,
    proto: &'static str,
    builder: &auto::Builder<TokioExecutor>,
    shared: Arc<Shared>,
    end: Ending,
    first_head_within: Duration,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let framing = Arc::new(FramingWatch::default());
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Tracked::new(
        Watched::new(io, framing.clone()),
        activity.clone(),
    ));
    let (header_timeout, idle_timeout) = (shared.config.header_timeout, shared.config.idle_timeout);
    let drain_idle = idle_timeout.min(DRAIN_IDLE);
    let watched = activity.clone();
    let Ending {
        mut stop,
        closing,
        admitted,
    } = end;
    let client = Arc::new(ClientConnection {
        shared,
        peer,
        framing,
        forwarded: ForwardedFor::new(peer.ip(), proto),
        activity,
        closing,
        admitted,
    });
    // Boxed: the request's future is ≈ 2 KiB, and hyper moves the service's future
    // several times per request (into its h1 slot; into each h2 stream's task as it is
    // spawned and finished). Those copies were most of the proxy's memmove (9 % of its
    // time under h2c); boxed, each is a pointer and the state is written once.
    let service = service_fn(move |req| Box::pin(handle(client.clone(), req)));
    let conn = builder.serve_connection_with_upgrades(io, service);
    let mut conn = std::pin::pin!(conn);
    let quiet = idle::watch(&watched, first_head_within, idle_timeout);
    let mut quiet = std::pin::pin!(quiet);
    let mut closing = false;
    let mut draining = false;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            why = quiet.as_mut() => match why {
                Quiet::Silent => {
                    tracing::debug!(%peer, "no request head within the header timeout; closing");
                    return;
                }
                // Still idle a period after the graceful close: a response nobody reads
                // (the client stopped reading) holds the connection; close it.
                Quiet::Idle if closing => {
                    tracing::debug!(%peer, "client stopped reading; closing");
                    return;
                }
                Quiet::Idle => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                    quiet.set(idle::watch(&watched, header_timeout, idle_timeout));
                }
            },
            _ = stopped(&mut stop), if !draining => {
                draining = true;
                if watched.is_h2() {
                    conn.as_mut().graceful_shutdown();
                } else {
                    quiet.set(idle::watch(&watched, header_timeout, drain_idle));
                }
            }
        }
    };
    if let Err(err) = result {
        tracing::debug!(%peer, %err, "client connection ended with an error");
    }
}

/// Serves one client connection on the TLS listener: the handshake, bounded like a request
/// head (a slow client must not hold a connection slot), then the connection.
async fn serve_tls(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    builder: &auto::Builder<TokioExecutor>,
    shared: Arc<Shared>,
    end: Ending,
) {
    let timeout = shared.config.header_timeout;
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => serve_connection(tls, peer, "https", builder, shared, end, timeout).await,
        Ok(Err(err)) => tracing::debug!(%peer, %err, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// A silent connection in the waiting room: `Some` once its first bytes (or its close)
/// arrive, `None` when none arrive by its header deadline (the connection is then dropped,
/// closed, and its slot given back).
async fn first_bytes(accepted: Accepted) -> Option<Accepted> {
    let deadline = accepted.header_deadline;
    tokio::select! {
        arrived = arrival(&accepted.stream) => arrived.is_ok(),
        () = tokio::time::sleep_until(deadline) => false,
    }
    .then_some(accepted)
}

/// Resolves once bytes (or the end) can be read from `stream`. tokio reports a newly
/// registered socket readable before anything arrived (it cannot know what an
/// edge-triggered registration missed), so `readable()` alone returned at once and every
/// idle connection built hyper's state: a peek checks, and one that would block clears
/// that readiness. `readable()` and a peek through socket2 rather than tokio's `peek`,
/// whose future is twice the size, in every waiting connection's future.
async fn arrival(stream: &TcpStream) -> std::io::Result<()> {
    let mut first = [std::mem::MaybeUninit::<u8>::uninit()];
    loop {
        stream.readable().await?;
        match stream.try_io(tokio::io::Interest::READABLE, || {
            socket2::SockRef::from(stream).peek(&mut first)
        }) {
            Ok(_) => return Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(err) => return Err(err),
        }
    }
}

/// Accepts on the TLS listener; never resolves when there is none.
async fn accept_tls(
    tls: &Option<(TcpListener, TlsAcceptor)>,
) -> std::io::Result<(TcpStream, SocketAddr)> {
    match tls {
        Some((listener, _)) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Resolves once `stop` is true (or its sender is gone). The guard `wait_for` returns is
/// dropped here, since it must not be held across an await.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A connection accepted from a real client on loopback, waiting for at most
    /// `timeout`, and the client's end.
    async fn accepted(timeout: Duration) -> (Accepted, std::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let slot = Slot {
            _permit: Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap(),
            open: IntGauge::new("open", "open").unwrap(),
        };
        let accepted = Accepted {
            stream,
            peer,
            admitted: None,
            slot,
            header_deadline: tokio::time::Instant::now() + timeout,
        };
        (accepted, client)
    }

    #[tokio::test]
    async fn a_silent_connection_waits_for_its_first_bytes_until_its_header_deadline() {
        let timeout = Duration::from_millis(300);
        // Silent: no bytes, so nothing is built, until the header deadline closes it.
        let (silent, _client) = accepted(timeout).await;
        assert!(first_bytes(silent).await.is_none());
        // A byte arrives: served.
        let (speaking, mut client) = accepted(timeout).await;
        client.write_all(b"G").unwrap();
        assert!(first_bytes(speaking).await.is_some());
        // The client closes: served too (hyper sees the end and finishes).
        let (closed, client) = accepted(timeout).await;
        drop(client);
        assert!(first_bytes(closed).await.is_some());
    }
}
