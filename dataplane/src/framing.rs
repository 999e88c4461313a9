//! A watch on the raw bytes of an HTTP/1.1 connection that spots ambiguous request
//! framing hyper resolves silently.
//!
//! hyper accepts a request with both Transfer-Encoding and Content-Length (it drops the
//! length and closes the connection afterwards, as RFC 9112 §6.3 allows) and folds repeated
//! equal Content-Length headers into one. Either shape is how request smuggling starts, so
//! the proxy refuses them outright; since the parsed request no longer shows them, this
//! reader follows the request framing on the wire (heads, fixed and chunked bodies) and
//! records which request heads were ambiguous. The request path asks by request index.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the reader found, shared with the connection's request path.
#[derive(Debug, Default)]
pub(crate) struct FramingWatch {
    /// 1 + the index of the first ambiguous request head on the connection; 0: none.
    first_ambiguous: AtomicU64,
    /// Requests the request path has seen on this connection.
    served: AtomicU64,
    /// Set when a request was answered 101: what follows is no longer HTTP/1.
    upgraded: AtomicBool,
}

impl FramingWatch {
    /// Called once per HTTP/1 request, in order: true when that request's head was ambiguous.
    pub(crate) fn next_request_is_ambiguous(&self) -> bool {
        let index = self.served.fetch_add(1, Ordering::Relaxed);
        self.first_ambiguous.load(Ordering::Relaxed) == index + 1
    }

    /// The connection switches protocols after the response being sent: stop following
    /// HTTP/1 framing. Only a 101 does this; a request that merely asks for an upgrade
    /// and is answered otherwise keeps the connection HTTP/1, and so keeps the checks.
    pub(crate) fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In a request head: the request line (`line == 0`) or a header line.
    Head,
    /// A body of known length.
    Fixed(u64),
    /// A chunk-size line.
    ChunkSize,
    /// Chunk data and its CRLF.
    ChunkData(u64),
    /// Trailer lines after the last chunk.
    Trailers,
    /// Not HTTP/1 framing any more (h2c, an upgrade, or something this reader cannot
    /// follow): stop looking.
    Off,
}

/// A reader that follows request framing; see the module documentation.
pub(crate) struct Watched<T> {
    inner: T,
    watch: Arc<FramingWatch>,
    state: State,
    /// Heads begun on this connection.
    heads: u64,
    line_no: u32,
    /// The current line's first bytes, as sent (enough for the names looked for and a
    /// length value).
    line: [u8; 48],
    line_len: usize,
    lengths: u32,
    chunked: bool,
    length: Option<u64>,
    chunk_size: u64,
    chunk_digits: bool,
    chunk_ext: bool,
}

impl<T> Watched<T> {
    pub(crate) fn new(inner: T, watch: Arc<FramingWatch>) -> Self {
        Watched {
            inner,
            watch,
            state: State::Head,
            heads: 0,
            line_no: 0,
            line: [0; 48],
            line_len: 0,
            lengths: 0,
            chunked: false,
            length: None,
            chunk_size: 0,
            chunk_digits: false,
            chunk_ext: false,
        }
    }

    fn scan(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                State::Off => return,
                State::Fixed(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    self.state = if left == n {
                        self.begin_head()
                    } else {
                        State::Fixed(left - n)
                    };
                }
                State::ChunkData(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    self.state = if left == n {
                        State::ChunkSize
                    } else {
                        State::ChunkData(left - n)
                    };
                }
                State::ChunkSize => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    match b {
                        b'\n' if !self.chunk_digits => {} // the CRLF after chunk data
                        b'\n' => {
                            self.state = if self.chunk_size == 0 {
                                State::Trailers
                            } else {
                                State::ChunkData(self.chunk_size)
                            };
                            self.chunk_size = 0;
                            self.chunk_digits = false;
                            self.chunk_ext = false;
                            self.line_len = 0;
                        }
                        b'\r' => {}
                        _ if self.chunk_ext => {}
                        b';' | b' ' | b'\t' => self.chunk_ext = true,
                        _ => match (b as char).to_digit(16) {
                            Some(d) if self.chunk_size >> 60 == 0 => {
                                self.chunk_size = self.chunk_size * 16 + u64::from(d);
                                self.chunk_digits = true;
                            }
                            // hyper refuses this chunk size itself.
                            _ => self.state = State::Off,
                        },
                    }
                }
                State::Head | State::Trailers => {
                    // A line at a time: find its end and keep its first bytes. (Byte by
                    // byte, this reader was 5 % of the proxy's instructions per request.)
                    let (part, rest, ended) = match memchr::memchr(b'\n', bytes) {
                        Some(end) => (&bytes[..end], &bytes[end + 1..], true),
                        None => (bytes, &[][..], false),
                    };
                    let keep = part.len().min(self.line.len() - self.line_len);
                    self.line[self.line_len..self.line_len + keep].copy_from_slice(&part[..keep]);
                    self.line_len += keep;
                    bytes = rest;
                    if ended {
                        self.end_line();
                    }
                }
            }
        }
    }

    fn begin_head(&mut self) -> State {
        self.line_no = 0;
        self.line_len = 0;
        self.lengths = 0;
        self.chunked = false;
        self.length = None;
        State::Head
    }

    fn end_line(&mut self) {
        let mut line = &self.line[..self.line_len];
        while let [rest @ .., b'\r'] = line {
            line = rest;
        }
        self.line_len = 0;
        if self.state == State::Trailers {
            if line.is_empty() {
                self.state = self.begin_head();
            }
            return;
        }
        if self.line_no == 0 {
            if line.is_empty() {
                // Blank lines before a request line are tolerated (RFC 9112 §2.2).
                return;
            }
            self.heads += 1;
            self.line_no = 1;
            // The h2c preface switches away from HTTP/1 framing. (CONNECT and Upgrade do
            // only once answered with success: see `FramingWatch::upgraded`.)
            if starts_with_ignoring_case(line, b"pri * http/2") {
                self.state = State::Off;
            }
            return;
        }
        self.line_no += 1;
        if !line.is_empty() {
            if starts_with_ignoring_case(line, b"content-length:") {
                self.lengths += 1;
                self.length = parse_length(&line[b"content-length:".len()..]);
            } else if starts_with_ignoring_case(line, b"transfer-encoding:") {
                // hyper refuses a Transfer-Encoding whose last coding is not chunked.
                self.chunked = true;
            }
            return;
        }
        // The blank line ending the head.
        if self.lengths > 1 || (self.lengths > 0 && self.chunked) {
            let _ = self.watch.first_ambiguous.compare_exchange(
                0,
                self.heads,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        if self.state == State::Off {
            return;
        }
        self.state = if self.chunked {
            self.chunk_size = 0;
            self.chunk_digits = false;
            self.chunk_ext = false;
            State::ChunkSize
        } else {
            match self.length {
                Some(n) if n > 0 => State::Fixed(n),
                Some(_) => self.begin_head(),
                None if self.lengths > 0 => State::Off,
                None => self.begin_head(),
            }
        };
    }
}

fn starts_with_ignoring_case(line: &[u8], prefix: &[u8]) -> bool {
    line.get(..prefix.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(prefix))
}

/// A Content-Length value (digits between optional whitespace), without allocating.
fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    value.iter().try_fold(0u64, |n, b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.state != State::Off && this.watch.upgraded.load(Ordering::Relaxed) {
            this.state = State::Off;
        }
        if let Poll::Ready(Ok(())) = result
            && this.state != State::Off
        {
            let filled = &buf.filled()[before..];
            this.scan(filled);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` in pieces of `step` bytes; returns the ambiguous head index (1-based).
    fn ambiguous(wire: &[u8], step: usize) -> u64 {
        let watch = Arc::new(FramingWatch::default());
        let mut w = Watched::new((), watch.clone());
        for piece in wire.chunks(step) {
            w.scan(piece);
        }
        watch.first_ambiguous.load(Ordering::Relaxed)
    }

    #[test]
    fn finds_ambiguous_heads_after_bodies_of_every_kind() {
        let ok_fixed = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nTE:xx";
        let ok_chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n7;x=1\r\nContent\r\n0\r\nX-T: 1\r\n\r\n";
        let bad = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let dup = b"POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc";
        for step in [1, 3, 7, 1000] {
            let mut wire = Vec::new();
            wire.extend_from_slice(ok_fixed);
            wire.extend_from_slice(ok_chunked);
            wire.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(ambiguous(&wire, step), 0, "step {step}");
            wire.extend_from_slice(bad);
            assert_eq!(ambiguous(&wire, step), 4, "step {step}");
            assert_eq!(ambiguous(dup, step), 1, "step {step}");
        }
    }

    #[test]
    fn asking_for_an_upgrade_does_not_switch_the_checks_off() {
        let wire = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(ambiguous(wire, 4), 2);
        let connect = b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(ambiguous(connect, 4), 2);
    }

    #[test]
    fn body_text_that_looks_like_headers_is_not_a_head() {
        let wire = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n24\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n0\r\n\r\n";
        assert_eq!(ambiguous(wire, 5), 0);
    }

    #[test]
    fn lines_are_read_in_any_case_with_bare_line_ends_and_past_what_is_kept() {
        let long = format!("X-Long: {}\r\n", "a".repeat(200));
        let wire = [
            b"POST / HTTP/1.1\nHOST: a\n".as_slice(),
            long.as_bytes(),
            b"CONTENT-LENGTH: 2\nTransfer-Encoding: chunked\n\n0\r\n\r\n",
        ]
        .concat();
        for step in [1, 2, 5, 1000] {
            assert_eq!(ambiguous(&wire, step), 1, "step {step}");
        }
        // The h2c preface, in any case, switches the watch off: what follows is not HTTP/1.
        let h2c = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(ambiguous(h2c, 3), 0);
        assert_eq!(ambiguous(&h2c[4..], 3), 3);
    }

    #[test]
    fn request_index_matches() {
        let watch = FramingWatch::default();
        watch.first_ambiguous.store(2, Ordering::Relaxed);
        assert!(!watch.next_request_is_ambiguous());
        assert!(watch.next_request_is_ambiguous());
        assert!(!watch.next_request_is_ambiguous());
    }
}
