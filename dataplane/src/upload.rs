//! The client's request body on its way upstream when it is streamed (too large to buffer
//! for replay, or of unknown length): it enforces the body size limit and an idle timeout
//! while streaming, and records when the client is at fault, so the request path answers
//! 400, 413 or 408 and does not blame the target for an attempt the client broke.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::idle::IdleTimer;
use crate::pool::BodyError;

/// How the client broke its request body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientFault {
    /// The body could not be read: bad chunked framing, or the client went away.
    Malformed,
    /// The body grew past `max_body_bytes`.
    TooLarge,
    /// The client paused longer than `body_timeout` inside the body.
    Slow,
}

impl ClientFault {
    pub(crate) fn status(self) -> StatusCode {
        match self {
            ClientFault::Malformed => StatusCode::BAD_REQUEST,
            ClientFault::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ClientFault::Slow => StatusCode::REQUEST_TIMEOUT,
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            ClientFault::Malformed => "request body could not be read\n",
            ClientFault::TooLarge => "request body is too large\n",
            ClientFault::Slow => "request body was not received in time\n",
        }
    }

    /// The `reason` label of `meridian_proxy_refused_total`.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            ClientFault::Malformed => "bad-body",
            ClientFault::TooLarge => "body-too-large",
            ClientFault::Slow => "body-timeout",
        }
    }
}

const STREAMING: u8 = 0;
const COMPLETE: u8 = 1;
const MALFORMED: u8 = 2;
const TOO_LARGE: u8 = 3;
const SLOW: u8 = 4;

/// Where a streamed body stands, shared between the body (owned by the upstream
/// connection) and the request path.
#[derive(Debug, Default)]
pub(crate) struct UploadState(AtomicU8);

impl UploadState {
    /// The client's fault, if the body failed because of it.
    pub(crate) fn fault(&self) -> Option<ClientFault> {
        match self.0.load(Ordering::Relaxed) {
            MALFORMED => Some(ClientFault::Malformed),
            TOO_LARGE => Some(ClientFault::TooLarge),
            SLOW => Some(ClientFault::Slow),
            _ => None,
        }
    }

    /// True once the client sent the whole body.
    pub(crate) fn is_complete(&self) -> bool {
        self.0.load(Ordering::Relaxed) == COMPLETE
    }

    fn set(&self, state: u8) {
        let _ = self
            .0
            .compare_exchange(STREAMING, state, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// A client body streamed upstream; see the module documentation.
pub(crate) struct Upload {
    inner: Incoming,
    /// Bytes the client may still send.
    left: u64,
    idle: IdleTimer,
    state: Arc<UploadState>,
}

impl Upload {
    pub(crate) fn new(inner: Incoming, limit: u64, idle: Duration) -> (Self, Arc<UploadState>) {
        let state = Arc::new(UploadState::default());
        let upload = Upload {
            inner,
            left: limit,
            idle: IdleTimer::new(idle),
            state: state.clone(),
        };
        (upload, state)
    }

    fn fail(
        &mut self,
        state: u8,
        message: &'static str,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.state.set(state);
        Poll::Ready(Some(Err(message.into())))
    }
}

impl Body for Upload {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.idle.progress();
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.left {
                        return this.fail(TOO_LARGE, "request body over the size limit");
                    }
                    this.left -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.state.set(COMPLETE);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(err))) => {
                this.state.set(MALFORMED);
                Poll::Ready(Some(Err(Box::new(err))))
            }
            Poll::Pending => {
                if this.idle.poll_expired(cx) {
                    return this.fail(SLOW, "request body not received in time");
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
