//! Upstream HTTP/1.1 connections, kept alive and reused per ingress endpoint.
//!
//! A connection goes back to its endpoint's idle list when the response body it carried
//! has been read to the end, so the next request finds it ready. The lists are short
//! mutex-guarded stacks per endpoint (most recently used first, which keeps a hot set of
//! connections warm); a request touches only its own endpoint's list, briefly.
//!
//! Two kinds of connection are kept: direct ones (`h1`), which carry every request whose
//! body is buffered and that asks for no upgrade (the hot path), and hyper client
//! connections for streamed request bodies and upgrades, which need hyper's machinery.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HeaderMap;
use http::uri::PathAndQuery;
use http::{Method, Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::forward::UpstreamBody;
use crate::h1;
use crate::idle::IdleTimer;

/// The error a response body read can end with.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Idle connections kept per endpoint; more are closed when they come back.
const MAX_IDLE: usize = 1024;

/// Every this many returns to the pool, idle direct connections are checked for closure.
const SWEEP_EVERY: usize = 1024;

/// A pooled connection used this recently is taken as alive for a request that cannot be
/// replayed. An older one may be meeting the upstream's idle timeout (Node's default is
/// 5 s) just as the request reaches it, and that request could not be resent: it gets a
/// fresh connection instead.
const KNOWN_ALIVE: Duration = Duration::from_secs(1);

/// How upstream connections are opened and how long an idle one is kept.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnOptions {
    /// A pooled connection unused for longer is closed, not reused.
    pub(crate) idle_timeout: Duration,
    /// TCP keepalive idle time (probes a third of it apart, three of them); zero: off.
    pub(crate) keepalive: Duration,
    /// TCP_USER_TIMEOUT: sent bytes unacknowledged this long close the connection; zero:
    /// the kernel's default.
    pub(crate) user_timeout: Duration,
    /// The proxy's workers: each keeps its own idle direct connections (see `workers`).
    pub(crate) workers: usize,
}

impl ConnOptions {
    pub(crate) fn from_config(config: &meridian_config::proxy::ProxyConfig) -> Self {
        ConnOptions {
            idle_timeout: config.upstream_idle_timeout,
            keepalive: config.upstream_keepalive,
            user_timeout: config.upstream_user_timeout,
            workers: 1,
        }
    }

    /// Sets keepalive and the user timeout on a new connection. Failures are logged, not
    /// fatal: the connection works without them, only a dead peer is noticed later.
    fn apply(&self, stream: &TcpStream) {
        let socket = socket2::SockRef::from(stream);
        if !self.keepalive.is_zero() {
            let keepalive = socket2::TcpKeepalive::new()
                .with_time(self.keepalive)
                .with_interval((self.keepalive / 3).max(Duration::from_secs(1)));
            #[cfg(target_os = "linux")]
            let keepalive = keepalive.with_retries(3);
            if let Err(err) = socket.set_tcp_keepalive(&keepalive) {
                tracing::debug!(%err, "could not set TCP keepalive on an upstream connection");
            }
        }
        #[cfg(target_os = "linux")]
        if !self.user_timeout.is_zero()
            && let Err(err) = socket.set_tcp_user_timeout(Some(self.user_timeout))
        {
            tracing::debug!(%err, "could not set TCP_USER_TIMEOUT on an upstream connection");
        }
    }
}

/// One ingress endpoint and its idle connections.
pub(crate) struct Endpoint {
    addr: SocketAddr,
    options: ConnOptions,
    /// Idle hyper connections with when each was last used.
    idle: Mutex<Vec<(SendRequest<UpstreamBody>, Instant)>>,
    /// Idle direct connections, one stack per worker: a connection is registered with the
    /// reactor of the worker that opened it, and used from another its every readiness
    /// would cross threads. Boxed so a connection moves between the pool and a response
    /// body as one pointer.
    #[allow(clippy::vec_box)]
    direct: Box<[Mutex<Vec<Box<h1::Conn>>>]>,
    puts: AtomicUsize,
}

/// Why an attempt on an endpoint failed.
pub(crate) enum SendError {
    /// No connection could be opened (nothing was sent).
    Connect(std::io::Error),
    /// The connection failed after the request may have been sent.
    Broken(BodyError),
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
    pub(crate) fn new(addr: SocketAddr, options: ConnOptions) -> Self {
        Endpoint {
            addr,
            options,
            idle: Mutex::new(Vec::new()),
            direct: (0..options.workers.max(1))
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            puts: AtomicUsize::new(0),
        }
    }

    /// The most recently used idle connection; for a request that cannot be replayed, only
    /// if it was used within [`KNOWN_ALIVE`] (the others are older still). When even the
    /// most recent one has been idle past the idle timeout, all of them have: they are
    /// closed.
    fn pop_direct(&self, replayable: bool) -> Option<Box<h1::Conn>> {
        let mut idle = self.direct_here();
        let age = idle.last()?.idle_since().elapsed();
        if age > self.options.idle_timeout {
            let expired = std::mem::take(&mut *idle);
            drop(idle);
            drop(expired);
            return None;
        }
        if !replayable && age > KNOWN_ALIVE {
            return None;
        }
        idle.pop()
    }

    fn put_direct(&self, mut conn: Box<h1::Conn>) {
        conn.mark_idle();
        let mut idle = self.direct_here();
        // Idle direct connections have no task watching them: one the upstream closed
        // stays open on this side until popped. The stack's bottom may never be popped,
        // so now and then the whole list is checked and closed ones dropped.
        let puts = self.puts.fetch_add(1, Ordering::Relaxed);
        if puts % SWEEP_EVERY == SWEEP_EVERY - 1 {
            let limit = self.options.idle_timeout;
            idle.retain(|c| !c.is_stale() && c.idle_since().elapsed() <= limit);
        }
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// The idle direct connections of the worker this runs on.
    #[allow(clippy::vec_box)]
    fn direct_here(&self) -> std::sync::MutexGuard<'_, Vec<Box<h1::Conn>>> {
        let stack = &self.direct[crate::workers::current() % self.direct.len()];
        stack.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn connect_tcp(&self, timeout: Duration) -> Result<TcpStream, SendError> {
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
        self.options.apply(&stream);
        Ok(stream)
    }

    /// Sends a request whose body is in memory on a direct connection (idle or new), and
    /// reads the response head. The caller's headers are borrowed, not cloned, so a request
    /// that may be retried costs no copy.
    ///
    /// A pooled connection found closed moves the request to another connection before
    /// anything is written. One the upstream closes after the request was written, before
    /// answering a byte, is the keep-alive race, or an upstream that died while processing:
    /// a `replayable` request (idempotent or marked) is then resent on a fresh connection;
    /// any other is never written to a second connection, and the failure is `Broken`.
    pub(crate) async fn send_buffered(
        self: &Arc<Self>,
        method: &Method,
        path: &PathAndQuery,
        headers: &HeaderMap,
        body: &Bytes,
        connect_timeout: Duration,
        replayable: bool,
    ) -> Result<Response<Pooled>, SendError> {
        // True once the request was written somewhere: a later connect failure is then no
        // proof that nothing was sent.
        let mut written = false;
        loop {
            let (mut conn, reused) = match self.pop_direct(replayable) {
                // A request that may be resent trusts the reactor (no syscall); one that
                // may not asks the socket.
                Some(conn) if replayable && conn.looks_stale() => continue,
                Some(conn) if !replayable && conn.is_stale() => continue,
                Some(conn) => (conn, true),
                // Boxed: moving it in and out of the pool and the body stays cheap.
                // The connect future boxed too: it is only needed when the pool is empty,
                // and inline it would grow every request's future.
                None => match Box::pin(self.connect_tcp(connect_timeout)).await {
                    Ok(stream) => (Box::new(h1::Conn::new(stream)), false),
                    Err(SendError::Connect(err)) if written => {
                        return Err(SendError::Broken(Box::new(err)));
                    }
                    Err(err) => return Err(err),
                },
            };
            written = true;
            if let Err(err) = conn.write_request(method, path, headers, body).await {
                if reused && replayable {
                    continue;
                }
                return Err(SendError::Broken(Box::new(err)));
            }
            let head = match conn.read_head(*method == Method::HEAD).await {
                Ok(head) => head,
                Err(h1::ReadError::ClosedBeforeResponse) if reused && replayable => continue,
                Err(err) => return Err(SendError::Broken(Box::new(err))),
            };
            let mut response = Response::new(());
            *response.status_mut() = head.status;
            *response.version_mut() = head.version;
            *response.headers_mut() = head.headers;
            let reader = h1::BodyReader::new(head.framing);
            let keep_alive = head.keep_alive;
            // The common case: the whole body came with the head. Answer from memory and
            // put the connection back at once.
            let body = match reader.remaining() {
                Some(n) => match conn.take_buffered(n) {
                    Some(data) => {
                        if keep_alive && conn.is_clean() {
                            self.put_direct(conn);
                        }
                        Inner::Ready(Some(data).filter(|d| !d.is_empty()))
                    }
                    None => Inner::Direct {
                        conn: Some(conn),
                        reader,
                        keep_alive,
                        endpoint: self.clone(),
                    },
                },
                None => Inner::Direct {
                    conn: Some(conn),
                    reader,
                    keep_alive,
                    endpoint: self.clone(),
                },
            };
            return Ok(response.map(|()| Pooled::new(body)));
        }
    }

    /// As [`Endpoint::pop_direct`], for hyper connections.
    fn pop_idle(&self, replayable: bool) -> Option<SendRequest<UpstreamBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let age = idle.last()?.1.elapsed();
        if age > self.options.idle_timeout {
            let expired = std::mem::take(&mut *idle);
            drop(idle);
            drop(expired);
            return None;
        }
        if !replayable && age > KNOWN_ALIVE {
            return None;
        }
        idle.pop().map(|(sender, _)| sender)
    }

    fn put_idle(&self, sender: SendRequest<UpstreamBody>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((sender, Instant::now()));
        }
    }

    async fn connect(&self, timeout: Duration) -> Result<SendRequest<UpstreamBody>, SendError> {
        let stream = self.connect_tcp(timeout).await?;
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
    /// fresh connection: that is no failure of the target. Once hyper has sent the request
    /// it is never sent again; a request that is not `replayable` is only put on a
    /// connection used within [`KNOWN_ALIVE`], or a fresh one.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut req: Request<UpstreamBody>,
        connect_timeout: Duration,
        replayable: bool,
    ) -> Result<Response<Pooled>, SendError> {
        loop {
            let (mut sender, reused) = match self.pop_idle(replayable) {
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
                    let mut inner = Inner::Hyper {
                        body,
                        sender: Some(sender),
                        endpoint: self.clone(),
                    };
                    if let Inner::Hyper {
                        body,
                        sender,
                        endpoint,
                    } = &mut inner
                        && body.is_end_stream()
                    {
                        release(sender, endpoint);
                    }
                    return Ok(Response::from_parts(head, Pooled::new(inner)));
                }
                Err(mut err) => match err.take_message() {
                    // Not sent: a stale pooled connection; try again on another.
                    Some(back) if reused => req = back,
                    Some(_) => {
                        return Err(SendError::Connect(std::io::Error::other(err.into_error())));
                    }
                    None => return Err(SendError::Broken(Box::new(err.into_error()))),
                },
            }
        }
    }
}

/// An upstream response body that hands its connection back to the pool once read to the
/// end. Dropped earlier, it closes the connection (its framing state is unknown).
pub struct Pooled {
    inner: Inner,
    /// Cuts the body off when the upstream pauses too long; none for a body in memory.
    idle: Option<IdleTimer>,
}

impl Pooled {
    fn new(inner: Inner) -> Self {
        Pooled { inner, idle: None }
    }

    /// Ends the body with an error, closing its connection, when the upstream sends
    /// nothing for `timeout`.
    pub(crate) fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        if !matches!(self.inner, Inner::Ready(_)) {
            self.idle = Some(IdleTimer::new(timeout));
        }
        self
    }

    /// A body already in memory, for tests of what handles responses.
    #[cfg(test)]
    pub(crate) fn ready(data: &'static [u8]) -> Self {
        Pooled::new(Inner::Ready(Some(Bytes::from_static(data))))
    }

    /// Forgets the connection: it will not go back to the pool.
    fn abandon(&mut self) {
        match &mut self.inner {
            Inner::Hyper { sender, .. } => *sender = None,
            Inner::Direct { conn, .. } => *conn = None,
            Inner::Ready(_) => {}
        }
    }
}

enum Inner {
    /// From a hyper client connection.
    Hyper {
        body: Incoming,
        sender: Option<SendRequest<UpstreamBody>>,
        endpoint: Arc<Endpoint>,
    },
    /// Read whole with the head; the connection is back in the pool already.
    Ready(Option<Bytes>),
    /// Being read off a direct connection.
    Direct {
        conn: Option<Box<h1::Conn>>,
        reader: h1::BodyReader,
        keep_alive: bool,
        endpoint: Arc<Endpoint>,
    },
}

fn release(sender: &mut Option<SendRequest<UpstreamBody>>, endpoint: &Endpoint) {
    if let Some(sender) = sender.take()
        && !sender.is_closed()
    {
        endpoint.put_idle(sender);
    }
}

impl Body for Pooled {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = self.poll_inner(cx);
        let this = self.get_mut();
        if let Some(idle) = &mut this.idle {
            if polled.is_ready() {
                idle.progress();
            } else if idle.poll_expired(cx) {
                this.abandon();
                this.inner = Inner::Ready(None);
                return Poll::Ready(Some(Err("upstream response body stalled".into())));
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Pooled {
    fn poll_inner(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match &mut self.inner {
            Inner::Hyper {
                body,
                sender,
                endpoint,
            } => {
                let polled = Pin::new(&mut *body).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => release(sender, endpoint),
                    Poll::Ready(Some(Ok(_))) if body.is_end_stream() => release(sender, endpoint),
                    Poll::Ready(Some(Err(_))) => *sender = None,
                    _ => {}
                }
                polled.map(|frame| frame.map(|r| r.map_err(BodyError::from)))
            }
            Inner::Ready(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Inner::Direct {
                conn,
                reader,
                keep_alive,
                endpoint,
            } => {
                let Some(c) = conn.as_mut() else {
                    return Poll::Ready(None);
                };
                match std::task::ready!(reader.poll_step(c, cx)) {
                    Ok(h1::Step::Data(data)) => {
                        if reader.is_done() {
                            finish(conn, *keep_alive, endpoint);
                        }
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    Ok(h1::Step::End { reusable }) => {
                        finish(conn, *keep_alive && reusable, endpoint);
                        Poll::Ready(None)
                    }
                    Err(err) => {
                        *conn = None;
                        Poll::Ready(Some(Err(Box::new(err))))
                    }
                }
            }
        }
    }
}

impl Inner {
    fn is_end_stream(&self) -> bool {
        match self {
            Inner::Hyper { body, .. } => body.is_end_stream(),
            Inner::Ready(data) => data.is_none(),
            Inner::Direct { conn, reader, .. } => conn.is_none() || reader.is_done(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Inner::Hyper { body, .. } => body.size_hint(),
            Inner::Ready(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Inner::Direct { reader, .. } => match reader.remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}

/// Puts a direct connection whose response was read to the end back in the pool, when
/// it can carry another request.
fn finish(conn: &mut Option<Box<h1::Conn>>, reusable: bool, endpoint: &Endpoint) {
    if let Some(c) = conn.take()
        && reusable
        && c.is_clean()
    {
        endpoint.put_direct(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn options() -> ConnOptions {
        ConnOptions {
            idle_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(10),
            user_timeout: Duration::from_secs(10),
            workers: 1,
        }
    }

    /// An upstream that answers `per_conn` requests on each connection, then closes it
    /// (though every answer claims keep-alive), counting the connections it accepted.
    async fn upstream(per_conn: usize, body: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    for _ in 0..per_conn {
                        let mut got = Vec::new();
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    async fn get(endpoint: &Arc<Endpoint>) -> Result<String, String> {
        request(endpoint, Method::GET).await
    }

    /// Sends `method` (replayable when idempotent, as the request path decides).
    async fn request(endpoint: &Arc<Endpoint>, method: Method) -> Result<String, String> {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, http::HeaderValue::from_static("t"));
        let response = endpoint
            .send_buffered(
                &method,
                &PathAndQuery::from_static("/"),
                &headers,
                &Bytes::new(),
                Duration::from_secs(1),
                crate::headers::is_idempotent(&method),
            )
            .await
            .map_err(|e| e.to_string())?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(String::from_utf8(body.to_bytes().to_vec()).unwrap())
    }

    #[tokio::test]
    async fn reuses_one_connection_for_sequential_requests() {
        let (addr, accepted) = upstream(usize::MAX, "hello").await;
        let endpoint = Arc::new(Endpoint::new(addr, options()));
        for _ in 0..20 {
            assert_eq!(get(&endpoint).await.unwrap(), "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_upstream_closed_is_replaced_without_error() {
        let (addr, accepted) = upstream(1, "once").await;
        let endpoint = Arc::new(Endpoint::new(addr, options()));
        for _ in 0..5 {
            assert_eq!(get(&endpoint).await.unwrap(), "once");
            // Let the upstream's close reach this side, as on an idle keep-alive connection.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
        // Back to back, the close may still be in flight when the next request is written.
        for _ in 0..50 {
            assert_eq!(get(&endpoint).await.unwrap(), "once");
        }
    }

    /// An upstream that answers the first request on each connection and takes the second
    /// without answering, closing the connection (as one killed mid-request would).
    /// Counts request heads received and connections accepted; accepts `max_conns`.
    async fn dies_on_second(max_conns: usize) -> (SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (h, a) = (heads.clone(), accepted.clone());
        tokio::spawn(async move {
            for _ in 0..max_conns {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let h = h.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    for answer in [true, false] {
                        let mut got = Vec::new();
                        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => got.extend_from_slice(&buf[..n]),
                            }
                        }
                        h.fetch_add(1, Ordering::SeqCst);
                        if answer {
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                                .await;
                        }
                    }
                });
            }
        });
        (addr, heads, accepted)
    }

    #[tokio::test]
    async fn a_request_that_cannot_be_replayed_is_never_written_twice() {
        let (addr, heads, accepted) = dies_on_second(usize::MAX).await;
        let endpoint = Arc::new(Endpoint::new(addr, options()));
        assert_eq!(request(&endpoint, Method::POST).await.unwrap(), "ok");
        // The second POST goes on the kept-alive connection; the upstream takes it and closes
        // without answering. It may have processed it: the POST fails, and is not resent.
        let err = request(&endpoint, Method::POST).await.unwrap_err();
        assert!(!err.starts_with("connect:"), "{err}");
        assert_eq!(heads.load(Ordering::SeqCst), 2);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // A GET in the same spot is resent on a fresh connection.
        assert_eq!(get(&endpoint).await.unwrap(), "ok");
        assert_eq!(get(&endpoint).await.unwrap(), "ok");
        assert_eq!(heads.load(Ordering::SeqCst), 5);
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_failed_reconnect_after_a_written_attempt_is_not_a_connect_failure() {
        // One connection only: the GET's resend finds the listener gone.
        let (addr, heads, _) = dies_on_second(1).await;
        let endpoint = Arc::new(Endpoint::new(addr, options()));
        assert_eq!(get(&endpoint).await.unwrap(), "ok");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let err = get(&endpoint).await.unwrap_err();
        assert!(!err.starts_with("connect:"), "{err}");
        assert_eq!(heads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_request_that_cannot_be_replayed_skips_connections_idle_too_long() {
        let (addr, accepted) = upstream(usize::MAX, "hi").await;
        let endpoint = Arc::new(Endpoint::new(addr, options()));
        assert_eq!(get(&endpoint).await.unwrap(), "hi");
        assert_eq!(request(&endpoint, Method::POST).await.unwrap(), "hi");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "a fresh idle connection is used"
        );
        tokio::time::sleep(KNOWN_ALIVE + Duration::from_millis(100)).await;
        assert_eq!(request(&endpoint, Method::POST).await.unwrap(), "hi");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "an old idle connection is not"
        );
        tokio::time::sleep(KNOWN_ALIVE + Duration::from_millis(100)).await;
        assert_eq!(get(&endpoint).await.unwrap(), "hi");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "but a GET may use it");
    }

    #[tokio::test]
    async fn an_idle_connection_past_the_idle_timeout_is_closed_not_reused() {
        let (addr, accepted) = upstream(usize::MAX, "hi").await;
        let endpoint = Arc::new(Endpoint::new(
            addr,
            ConnOptions {
                idle_timeout: Duration::from_millis(200),
                ..options()
            },
        ));
        assert_eq!(get(&endpoint).await.unwrap(), "hi");
        assert_eq!(get(&endpoint).await.unwrap(), "hi");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(get(&endpoint).await.unwrap(), "hi");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(endpoint.direct_here().len(), 1, "the old one is gone");
    }

    #[tokio::test]
    async fn each_worker_reuses_only_the_connections_it_opened() {
        let (addr, accepted) = upstream(usize::MAX, "hi").await;
        let endpoint = Arc::new(Endpoint::new(
            addr,
            ConnOptions {
                workers: 2,
                ..options()
            },
        ));
        assert_eq!(get(&endpoint).await.unwrap(), "hi");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // Worker 1, on a thread and runtime of its own, finds none of worker 0's: it
        // opens one, and then reuses that one.
        let other = endpoint.clone();
        // A blocking-pool thread: this runtime must go on serving the upstream.
        tokio::task::spawn_blocking(move || {
            crate::workers::become_worker(1);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                assert_eq!(get(&other).await.unwrap(), "hi");
                assert_eq!(get(&other).await.unwrap(), "hi");
            });
        })
        .await
        .unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // Worker 0's own is still there for it.
        assert_eq!(get(&endpoint).await.unwrap(), "hi");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(endpoint.direct_here().len(), 1);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn upstream_connections_carry_keepalive_and_a_user_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = Endpoint::new(listener.local_addr().unwrap(), options());
        let Ok(stream) = endpoint.connect_tcp(Duration::from_secs(1)).await else {
            panic!("connect failed");
        };
        let socket = socket2::SockRef::from(&stream);
        assert!(socket.keepalive().unwrap());
        assert_eq!(
            socket.tcp_keepalive_time().unwrap(),
            Duration::from_secs(10)
        );
        assert_eq!(socket.tcp_keepalive_retries().unwrap(), 3);
        assert_eq!(
            socket.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(10))
        );
    }

    #[tokio::test]
    async fn connect_failure_is_reported_as_such() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let endpoint = Arc::new(Endpoint::new(addr, options()));
        let err = get(&endpoint).await.unwrap_err();
        assert!(err.starts_with("connect:"), "{err}");
    }
}
