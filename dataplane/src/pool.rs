//! Upstream HTTP/1.1 connections, kept alive and reused per ingress endpoint.
//!
//! A connection goes back to its endpoint's idle list when the response body it carried
//! has been read to the end, so the next request finds it ready. The lists are short
//! mutex-guarded stacks per endpoint (most recently used first, which keeps a hot set of
//! connections warm); a request touches only its own endpoint's list, briefly.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::forward::UpstreamBody;

/// Idle connections kept per endpoint; more are closed when they come back.
const MAX_IDLE: usize = 1024;

/// One ingress endpoint and its idle connections.
pub(crate) struct Endpoint {
    addr: SocketAddr,
    idle: Mutex<Vec<SendRequest<UpstreamBody>>>,
}

/// Why an attempt on an endpoint failed.
pub(crate) enum SendError {
    /// No connection could be opened (nothing was sent).
    Connect(std::io::Error),
    /// The connection failed after the request may have been sent.
    Broken(hyper::Error),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Connect(err) => write!(f, "connect: {err}"),
            SendError::Broken(err) => write!(f, "{err}"),
        }
    }
}

impl Endpoint {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn pop_idle(&self) -> Option<SendRequest<UpstreamBody>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn put_idle(&self, sender: SendRequest<UpstreamBody>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(sender);
        }
    }

    async fn connect(&self, timeout: Duration) -> Result<SendRequest<UpstreamBody>, SendError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(self.addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => return Err(SendError::Connect(err)),
            Err(_) => {
                return Err(SendError::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect timed out",
                )));
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| SendError::Connect(std::io::Error::other(err)))?;
        tokio::spawn(async move {
            // With upgrades, a 101 answer hands the connection to the tunnel.
            if let Err(err) = conn.with_upgrades().await {
                tracing::debug!(%err, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Sends `req` on an idle connection, or a new one. A pooled connection the upstream
    /// closed while idle is noticed before anything is sent, and the request moves to a
    /// fresh connection: that is no failure of the target.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut req: Request<UpstreamBody>,
        connect_timeout: Duration,
    ) -> Result<Response<Pooled>, SendError> {
        loop {
            let (mut sender, reused) = match self.pop_idle() {
                Some(sender) if sender.is_closed() => continue,
                Some(sender) => (sender, true),
                None => (self.connect(connect_timeout).await?, false),
            };
            if !sender.is_ready() && sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(SendError::Connect(std::io::Error::other(
                    "new upstream connection closed",
                )));
            }
            match sender.try_send_request(req).await {
                Ok(response) => {
                    let (head, body) = response.into_parts();
                    let mut pooled = Pooled {
                        body,
                        sender: Some(sender),
                        endpoint: self.clone(),
                    };
                    if pooled.body.is_end_stream() {
                        pooled.release();
                    }
                    return Ok(Response::from_parts(head, pooled));
                }
                Err(mut err) => match err.take_message() {
                    // Not sent: a stale pooled connection; try again on another.
                    Some(back) if reused => req = back,
                    Some(_) => {
                        return Err(SendError::Connect(std::io::Error::other(err.into_error())));
                    }
                    None => return Err(SendError::Broken(err.into_error())),
                },
            }
        }
    }
}

/// An upstream response body that hands its connection back to the pool once read to the
/// end. Dropped earlier, it closes the connection (its framing state is unknown).
pub struct Pooled {
    body: Incoming,
    sender: Option<SendRequest<UpstreamBody>>,
    endpoint: Arc<Endpoint>,
}

impl Pooled {
    fn release(&mut self) {
        if let Some(sender) = self.sender.take()
            && !sender.is_closed()
        {
            self.endpoint.put_idle(sender);
        }
    }
}

impl Body for Pooled {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.body.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => self.sender = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
