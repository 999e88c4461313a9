//! The client listener: accepts connections up to the configured maximum, serves HTTP/1.1
//! and h2c on each (hyper-util's auto builder), and drains them on shutdown.

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::forward::{Shared, handle};
use crate::framing::{FramingWatch, Watched};
use crate::headers::ForwardedFor;

pub(crate) fn builder(shared: &Shared) -> auto::Builder<TokioExecutor> {
    let config = &shared.config;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        // hyper's read buffer bounds the request head; it refuses less than 8 KiB.
        .max_buf_size(config.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Serves clients on the plain listener (and the TLS one, if any) until `stop` turns
/// true, then lets in-flight requests finish for up to the shutdown grace period.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<(TcpListener, TlsAcceptor)>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let builder = builder(&shared);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(shared.config.max_connections));
    loop {
        // Waiting for a free slot before accepting leaves excess clients in the kernel's
        // accept queue instead of accepting and dropping them.
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stopped(&mut stop) => break,
        };
        let (accepted, acceptor) = tokio::select! {
            accepted = listener.accept() => (accepted, None),
            accepted = accept_tls(&tls) => (accepted, tls.as_ref().map(|(_, a)| a.clone())),
            _ = stopped(&mut stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // EMFILE and friends: back off briefly rather than spin.
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let metrics = shared.metrics.connections.clone();
        metrics.inc();
        let shared_conn = shared.clone();
        let framing = Arc::new(FramingWatch::default());
        match acceptor {
            None => {
                let io = TokioIo::new(Watched::new(stream, framing.clone()));
                let forwarded = Arc::new(ForwardedFor::new(peer.ip(), "http"));
                let service = service_fn(move |req| {
                    handle(
                        shared_conn.clone(),
                        req,
                        peer,
                        framing.clone(),
                        forwarded.clone(),
                    )
                });
                let conn = graceful.watch(
                    builder
                        .serve_connection_with_upgrades(io, service)
                        .into_owned(),
                );
                tokio::spawn(async move {
                    if let Err(err) = conn.await {
                        tracing::debug!(%peer, %err, "client connection ended with an error");
                    }
                    metrics.dec();
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let watcher = graceful.watcher();
                let builder = builder.clone();
                let handshake_timeout = shared.config.header_timeout;
                tokio::spawn(async move {
                    // The handshake is bounded like a request head: a slow client must not
                    // hold a connection slot.
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let io = TokioIo::new(Watched::new(tls, framing.clone()));
                            let forwarded = Arc::new(ForwardedFor::new(peer.ip(), "https"));
                            let service = service_fn(move |req| {
                                handle(
                                    shared_conn.clone(),
                                    req,
                                    peer,
                                    framing.clone(),
                                    forwarded.clone(),
                                )
                            });
                            let conn = builder.serve_connection_with_upgrades(io, service);
                            if let Err(err) = watcher.watch(conn.into_owned()).await {
                                tracing::debug!(%peer, %err, "TLS client connection ended with an error");
                            }
                        }
                        Ok(Err(err)) => tracing::debug!(%peer, %err, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                    metrics.dec();
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    drop(tls);
    tracing::info!("proxy stopped accepting; finishing requests in flight");
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all client connections closed"),
        _ = tokio::time::sleep(shared.config.shutdown_grace) => {
            tracing::warn!(grace = ?shared.config.shutdown_grace, "shutdown grace period over; closing remaining connections");
        }
    }
}

/// Accepts on the TLS listener; never resolves when there is none.
async fn accept_tls(
    tls: &Option<(TcpListener, TlsAcceptor)>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
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
