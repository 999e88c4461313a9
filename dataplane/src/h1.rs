//! A direct HTTP/1.1 client on one upstream connection: the request is written in one
//! buffer and the response head parsed from the same read buffer the body comes from.
//!
//! Why not hyper's client: its dispatcher runs each connection as a task of its own and
//! hands every request and response across channels, two task switches per request on the
//! hot path. Here the request's own task writes and reads the socket. It serves requests
//! whose body is already buffered and that ask for no upgrade; streamed bodies and
//! upgrades still go through hyper (see `pool`).

use std::future::{Future, poll_fn};
use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest response head accepted (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// The most response headers accepted.
const MAX_HEADERS: usize = 100;
/// The longest chunk-size or trailer line accepted in a chunked body.
const MAX_LINE: usize = 4096;
/// How much room a read asks for.
const READ_CHUNK: usize = 16 * 1024;

/// One upstream connection with its read buffer (bytes received but not consumed yet) and
/// a write buffer kept for the next request.
pub(crate) struct Conn {
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// When it last went back to the pool.
    idle_since: Instant,
}

/// How a response body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Exactly this many bytes (0 for HEAD, 1xx, 204 and 304 answers).
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

/// A parsed response head.
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    pub(crate) framing: Framing,
    /// False when the connection cannot carry another request after this response.
    pub(crate) keep_alive: bool,
}

/// Why reading a response failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(io::Error),
    /// The upstream closed the connection before sending a byte of the response.
    ClosedBeforeResponse,
    Invalid(&'static str),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(err) => write!(f, "upstream read: {err}"),
            ReadError::ClosedBeforeResponse => {
                f.write_str("upstream closed the connection before answering")
            }
            ReadError::Invalid(what) => write!(f, "invalid upstream response: {what}"),
        }
    }
}

impl std::error::Error for ReadError {}

impl From<io::Error> for ReadError {
    fn from(err: io::Error) -> Self {
        ReadError::Io(err)
    }
}

impl Conn {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Conn {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: Vec::with_capacity(1024),
            idle_since: Instant::now(),
        }
    }

    pub(crate) fn mark_idle(&mut self) {
        self.idle_since = Instant::now();
    }

    pub(crate) fn idle_since(&self) -> Instant {
        self.idle_since
    }

    /// As [`Conn::is_stale`], without a syscall when the reactor has seen nothing arrive
    /// since the last read drained the socket. A close that the reactor has not yet
    /// noticed passes as alive: for requests that may be sent again (the pool resends
    /// them on a fresh connection when the first closes unanswered), not for the others.
    pub(crate) fn looks_stale(&self) -> bool {
        let mut quiet = Context::from_waker(std::task::Waker::noop());
        match self.stream.poll_read_ready(&mut quiet) {
            Poll::Pending => false,
            Poll::Ready(_) => self.is_stale(),
        }
    }

    /// True when an idle connection can no longer be used: the upstream closed it, reset
    /// it, or sent bytes nobody asked for. Does not wait.
    pub(crate) fn is_stale(&self) -> bool {
        let mut probe = [0u8; 1];
        match self.stream.try_read(&mut probe) {
            Err(err) => err.kind() != io::ErrorKind::WouldBlock,
            Ok(_) => true,
        }
    }

    /// Writes one request with a body already in memory. The headers are written as they
    /// are (the caller removed hop-by-hop ones); Content-Length is set from the body.
    pub(crate) async fn write_request(
        &mut self,
        method: &Method,
        path: &PathAndQuery,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> io::Result<()> {
        let w = &mut self.wbuf;
        w.clear();
        w.extend_from_slice(method.as_str().as_bytes());
        w.push(b' ');
        w.extend_from_slice(path.as_str().as_bytes());
        w.extend_from_slice(b" HTTP/1.1\r\n");
        let mut had_length = false;
        for (name, value) in headers {
            if name == header::CONTENT_LENGTH {
                had_length = true;
                continue;
            }
            if name == header::TRANSFER_ENCODING {
                // The body is sent whole with its length; no other framing may be claimed.
                continue;
            }
            w.extend_from_slice(name.as_str().as_bytes());
            w.extend_from_slice(b": ");
            w.extend_from_slice(value.as_bytes());
            w.extend_from_slice(b"\r\n");
        }
        if had_length || !body.is_empty() || expects_body(method) {
            // Formatting into the Vec directly: no String for the digits.
            let _ = write!(w, "content-length: {}\r\n", body.len());
        }
        w.extend_from_slice(b"\r\n");
        // Small bodies go in the same write as the head (one segment on the wire).
        if body.len() <= 16 * 1024 {
            w.extend_from_slice(body);
            self.stream.write_all(w).await
        } else {
            self.stream.write_all(w).await?;
            self.stream.write_all(body).await
        }
    }

    /// Reads the response head, skipping interim (1xx) answers other than 101.
    pub(crate) async fn read_head(&mut self, head_request: bool) -> Result<Head, ReadError> {
        let mut answered = false;
        loop {
            if !self.rbuf.is_empty() {
                answered = true;
                if let Some(head) = self.parse_head(head_request)? {
                    if head.status.is_informational()
                        && head.status != StatusCode::SWITCHING_PROTOCOLS
                    {
                        continue;
                    }
                    return Ok(head);
                }
                if self.rbuf.len() > MAX_HEAD {
                    return Err(ReadError::Invalid("response head too large"));
                }
            }
            let n = match poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(n) => n,
                // A reset before any answer reads as a close before the response: the
                // keep-alive race, or an upstream that died (the caller decides what that
                // allows).
                Err(err) if !answered && err.kind() == io::ErrorKind::ConnectionReset => 0,
                Err(err) => return Err(err.into()),
            };
            if n == 0 {
                return Err(if answered {
                    ReadError::Invalid("connection closed inside the response head")
                } else {
                    ReadError::ClosedBeforeResponse
                });
            }
        }
    }

    /// Parses a complete head at the front of the read buffer and consumes it; None when
    /// more bytes are needed.
    fn parse_head(&mut self, head_request: bool) -> Result<Option<Head>, ReadError> {
        // Uninitialised: httparse writes the slots it fills (writing all hundred first
        // cost more than parsing a short head).
        let mut slots = [MaybeUninit::<httparse::Header<'_>>::uninit(); MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let used = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            &self.rbuf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(used)) => used,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ReadError::Invalid("too many response headers"));
            }
            Err(_) => return Err(ReadError::Invalid("malformed response head")),
        };
        let status = response
            .code
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or(ReadError::Invalid("bad status code"))?;
        let version = if response.version == Some(1) {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        let mut headers = HeaderMap::with_capacity(response.headers.len());
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut transfer_coded = false;
        let mut close = version != Version::HTTP_11;
        for h in response.headers.iter() {
            let name = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| ReadError::Invalid("bad header name"))?;
            let value = HeaderValue::from_bytes(h.value)
                .map_err(|_| ReadError::Invalid("bad header value"))?;
            if name == header::CONTENT_LENGTH {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or(ReadError::Invalid("bad Content-Length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(ReadError::Invalid("conflicting Content-Length"));
                }
                length = Some(n);
            } else if name == header::TRANSFER_ENCODING {
                transfer_coded = true;
                // Only a final "chunked" coding delimits the body; anything else runs to close.
                chunked = h
                    .value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if name == header::CONNECTION {
                for token in h.value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive")
                        && version == Version::HTTP_10
                    {
                        close = false;
                    }
                }
            }
            headers.append(name, value);
        }
        let bodiless = head_request
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let framing = if bodiless {
            Framing::Length(0)
        } else if transfer_coded {
            if chunked {
                Framing::Chunked
            } else {
                Framing::Close
            }
        } else {
            match length {
                Some(n) => Framing::Length(n),
                None => Framing::Close,
            }
        };
        if transfer_coded && length.is_some() {
            // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3); the length must not
            // travel on with a body decoded from chunks, or the client would frame it wrong.
            headers.remove(header::CONTENT_LENGTH);
        }
        if framing == Framing::Close || status == StatusCode::SWITCHING_PROTOCOLS {
            close = true;
        }
        self.rbuf.advance(used);
        Ok(Some(Head {
            status,
            version,
            headers,
            framing,
            keep_alive: !close,
        }))
    }

    /// Reads what the socket has into the read buffer; Ok(0) at end of stream.
    ///
    /// Through tokio's `poll_read`, which takes a read that did not fill the buffer as
    /// proof the socket is drained and clears its readiness: the next request then waits
    /// for the reactor instead of first trying a read that returns EAGAIN (one syscall per
    /// request less, issue 15), and [`Conn::looks_stale`] can tell an idle connection is
    /// quiet without a syscall.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.rbuf.reserve(READ_CHUNK);
        // The future holds nothing but its borrows: polling a new one each time loses
        // nothing.
        let read = self.stream.read_buf(&mut self.rbuf);
        std::pin::pin!(read).poll(cx)
    }

    /// True when nothing beyond the response just read has arrived: the connection can
    /// carry the next request.
    pub(crate) fn is_clean(&self) -> bool {
        self.rbuf.is_empty()
    }

    /// Takes `n` buffered bytes when that many have arrived (a body that came with its head).
    pub(crate) fn take_buffered(&mut self, n: u64) -> Option<Bytes> {
        let n = usize::try_from(n).ok()?;
        (self.rbuf.len() >= n).then(|| self.rbuf.split_to(n).freeze())
    }
}

fn expects_body(method: &Method) -> bool {
    *method == Method::POST || *method == Method::PUT || *method == Method::PATCH
}

/// Where a chunked body's decoding stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
}

/// Reads a response body off its connection, frame by frame.
pub(crate) struct BodyReader {
    state: State,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Length(u64),
    Chunked(Chunk),
    Close,
    Done,
}

/// What one step of body reading produced.
pub(crate) enum Step {
    Data(Bytes),
    /// The body is complete; the connection may carry another request if it is clean.
    End {
        reusable: bool,
    },
}

impl BodyReader {
    pub(crate) fn new(framing: Framing) -> Self {
        BodyReader {
            state: match framing {
                Framing::Length(0) => State::Done,
                Framing::Length(n) => State::Length(n),
                Framing::Chunked => State::Chunked(Chunk::Size),
                Framing::Close => State::Close,
            },
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Bytes left when the length is known.
    pub(crate) fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// The next piece of the body from `conn`.
    pub(crate) fn poll_step(
        &mut self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Step, ReadError>> {
        loop {
            match self.state {
                State::Done => return Poll::Ready(Ok(Step::End { reusable: true })),
                State::Length(left) => {
                    if !conn.rbuf.is_empty() {
                        let take = (conn.rbuf.len() as u64).min(left) as usize;
                        let data = conn.rbuf.split_to(take).freeze();
                        self.state = match left - take as u64 {
                            0 => State::Done,
                            n => State::Length(n),
                        };
                        return Poll::Ready(Ok(Step::Data(data)));
                    }
                    if ready!(conn.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(ReadError::Invalid(
                            "connection closed before the body ended",
                        )));
                    }
                }
                State::Close => {
                    if !conn.rbuf.is_empty() {
                        let data = conn.rbuf.split().freeze();
                        return Poll::Ready(Ok(Step::Data(data)));
                    }
                    if ready!(conn.poll_fill(cx))? == 0 {
                        self.state = State::Done;
                        return Poll::Ready(Ok(Step::End { reusable: false }));
                    }
                }
                State::Chunked(chunk) => {
                    if let Some(step) = self.chunk_step(chunk, conn)? {
                        return Poll::Ready(Ok(step));
                    }
                    if matches!(self.state, State::Chunked(_))
                        && self.needs_bytes(conn)
                        && ready!(conn.poll_fill(cx))? == 0
                    {
                        return Poll::Ready(Err(ReadError::Invalid(
                            "connection closed inside a chunked body",
                        )));
                    }
                }
            }
        }
    }

    /// True when the chunked state cannot advance with what is buffered.
    fn needs_bytes(&self, conn: &Conn) -> bool {
        match self.state {
            State::Chunked(Chunk::Data(_)) => conn.rbuf.is_empty(),
            State::Chunked(Chunk::DataEnd) => conn.rbuf.len() < 2,
            State::Chunked(Chunk::Size | Chunk::Trailers) => find_crlf(&conn.rbuf).is_none(),
            _ => false,
        }
    }

    /// Advances the chunked decoder over buffered bytes. Returns a step when one is ready;
    /// None when the state moved on (or more bytes are needed, see `needs_bytes`).
    fn chunk_step(&mut self, chunk: Chunk, conn: &mut Conn) -> Result<Option<Step>, ReadError> {
        match chunk {
            Chunk::Size => {
                let Some(end) = find_crlf(&conn.rbuf) else {
                    if conn.rbuf.len() > MAX_LINE {
                        return Err(ReadError::Invalid("chunk size line too long"));
                    }
                    return Ok(None);
                };
                let line = &conn.rbuf[..end];
                // Chunk extensions after ';' are ignored.
                let digits = line
                    .split(|b| *b == b';')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii();
                if digits.is_empty() || digits.len() > 15 {
                    return Err(ReadError::Invalid("bad chunk size"));
                }
                let mut size: u64 = 0;
                for d in digits {
                    let v = (*d as char)
                        .to_digit(16)
                        .ok_or(ReadError::Invalid("bad chunk size"))?;
                    size = size * 16 + u64::from(v);
                }
                conn.rbuf.advance(end + 2);
                self.state = State::Chunked(if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                });
                Ok(None)
            }
            Chunk::Data(left) => {
                if conn.rbuf.is_empty() {
                    return Ok(None);
                }
                let take = (conn.rbuf.len() as u64).min(left) as usize;
                let data = conn.rbuf.split_to(take).freeze();
                self.state = State::Chunked(match left - take as u64 {
                    0 => Chunk::DataEnd,
                    n => Chunk::Data(n),
                });
                Ok(Some(Step::Data(data)))
            }
            Chunk::DataEnd => {
                if conn.rbuf.len() < 2 {
                    return Ok(None);
                }
                if &conn.rbuf[..2] != b"\r\n" {
                    return Err(ReadError::Invalid("chunk data not followed by CRLF"));
                }
                conn.rbuf.advance(2);
                self.state = State::Chunked(Chunk::Size);
                Ok(None)
            }
            Chunk::Trailers => {
                let Some(end) = find_crlf(&conn.rbuf) else {
                    if conn.rbuf.len() > MAX_LINE {
                        return Err(ReadError::Invalid("trailer line too long"));
                    }
                    return Ok(None);
                };
                // Trailers are not forwarded (the downstream may not have asked for them).
                conn.rbuf.advance(end + 2);
                if end == 0 {
                    self.state = State::Done;
                    return Ok(Some(Step::End { reusable: true }));
                }
                Ok(None)
            }
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A connection to a loopback server that writes `reply` after reading a request.
    async fn conn_with_reply(reply: &'static [u8]) -> (Conn, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = vec![0u8; 4096];
            let n = s.read(&mut got).await.unwrap();
            got.truncate(n);
            s.write_all(reply).await.unwrap();
            s.shutdown().await.unwrap();
            got
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        (Conn::new(stream), server)
    }

    /// Writes `GET /` with no headers and no body.
    async fn send_get(conn: &mut Conn) {
        conn.write_request(
            &Method::GET,
            &PathAndQuery::from_static("/"),
            &HeaderMap::new(),
            &Bytes::new(),
        )
        .await
        .unwrap();
    }

    async fn body_of(conn: &mut Conn, framing: Framing) -> Result<(Vec<u8>, bool), ReadError> {
        let mut reader = BodyReader::new(framing);
        let mut out = Vec::new();
        loop {
            match poll_fn(|cx| reader.poll_step(conn, cx)).await? {
                Step::Data(d) => out.extend_from_slice(&d),
                Step::End { reusable } => return Ok((out, reusable)),
            }
        }
    }

    #[tokio::test]
    async fn writes_request_with_length_and_reads_length_body() {
        let (mut conn, server) =
            conn_with_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello").await;
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("app.test"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        let path = PathAndQuery::from_static("/p?q=1");
        conn.write_request(&Method::POST, &path, &headers, &Bytes::from_static(b"abc"))
            .await
            .unwrap();
        let head = conn.read_head(false).await.unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        assert_eq!(head.headers["x-a"], "b");
        assert_eq!(conn.take_buffered(5).unwrap(), Bytes::from_static(b"hello"));
        let sent = String::from_utf8(server.await.unwrap()).unwrap();
        assert_eq!(
            sent,
            "POST /p?q=1 HTTP/1.1\r\nhost: app.test\r\ncontent-length: 3\r\n\r\nabc"
        );
    }

    #[tokio::test]
    async fn decodes_chunked_body_with_extensions_and_trailers() {
        let (mut conn, _server) = conn_with_reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n",
        )
        .await;
        send_get(&mut conn).await;
        let head = conn.read_head(false).await.unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        let (body, reusable) = body_of(&mut conn, head.framing).await.unwrap();
        assert_eq!(body, b"abc0123456789");
        assert!(reusable);
    }

    #[tokio::test]
    async fn chunked_wins_over_a_length_which_is_dropped() {
        let (mut conn, _server) = conn_with_reply(
            b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        )
        .await;
        send_get(&mut conn).await;
        let head = conn.read_head(false).await.unwrap();
        assert_eq!(head.framing, Framing::Chunked);
        assert!(!head.headers.contains_key(header::CONTENT_LENGTH));
        let (body, _) = body_of(&mut conn, head.framing).await.unwrap();
        assert_eq!(body, b"ok");
    }

    #[tokio::test]
    async fn skips_interim_answers_and_reads_close_delimited_body() {
        let (mut conn, _server) =
            conn_with_reply(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\nto the end")
                .await;
        send_get(&mut conn).await;
        let head = conn.read_head(false).await.unwrap();
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(head.framing, Framing::Close);
        assert!(!head.keep_alive);
        let (body, reusable) = body_of(&mut conn, head.framing).await.unwrap();
        assert_eq!(body, b"to the end");
        assert!(!reusable);
    }

    #[tokio::test]
    async fn refuses_bad_responses_with_a_reason() {
        for (reply, want) in [
            (
                &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
                "conflicting Content-Length",
            ),
            (
                &b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"[..],
                "bad Content-Length",
            ),
            (&b"NOT HTTP\r\n\r\n"[..], "malformed response head"),
        ] {
            let reply: &'static [u8] = Box::leak(reply.to_vec().into_boxed_slice());
            let (mut conn, _server) = conn_with_reply(reply).await;
            send_get(&mut conn).await;
            let err = conn.read_head(false).await.err().expect("must fail");
            assert!(err.to_string().contains(want), "{err} lacks {want}");
        }
        let (mut conn, _server) = conn_with_reply(b"").await;
        send_get(&mut conn).await;
        assert!(matches!(
            conn.read_head(false).await,
            Err(ReadError::ClosedBeforeResponse)
        ));
    }

    #[tokio::test]
    async fn header_values_survive_the_next_response_read_on_the_connection() {
        // Names in any case frame the body, and reading the next response into the same
        // buffer leaves the first one's header values as they were.
        let (mut conn, _server) = conn_with_reply(
            b"HTTP/1.1 200 OK\r\nX-Case: First\r\nCONTENT-LENGTH: 1\r\n\r\na\
              HTTP/1.1 201 Created\r\nx-case: second\r\nTransfer-Encoding: gzip, CHUNKED\r\n\r\n\
              2\r\nok\r\n0\r\n\r\n",
        )
        .await;
        send_get(&mut conn).await;
        let first = conn.read_head(false).await.unwrap();
        assert_eq!(first.framing, Framing::Length(1));
        assert_eq!(conn.take_buffered(1).unwrap(), Bytes::from_static(b"a"));
        let second = conn.read_head(false).await.unwrap();
        assert_eq!(second.status, StatusCode::CREATED);
        assert_eq!(second.framing, Framing::Chunked);
        let (body, _) = body_of(&mut conn, second.framing).await.unwrap();
        assert_eq!(body, b"ok");
        assert_eq!(first.headers["x-case"], "First");
        assert_eq!(first.headers[header::CONTENT_LENGTH], "1");
        assert_eq!(second.headers["x-case"], "second");
        assert_eq!(second.headers[header::TRANSFER_ENCODING], "gzip, CHUNKED");
    }

    #[tokio::test]
    async fn truncated_length_body_is_an_error() {
        let (mut conn, _server) =
            conn_with_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").await;
        send_get(&mut conn).await;
        let head = conn.read_head(false).await.unwrap();
        assert!(body_of(&mut conn, head.framing).await.is_err());
    }
}
