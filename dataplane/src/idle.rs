//! Timers for peers that stall: what a connection has been doing (bytes moved, requests in
//! flight), a watch that says when it went silent or idle, and a resettable timer for a
//! body whose peer stops sending.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What one connection has been doing. Updated by its I/O and its request path; read by
/// its watch, a few times per idle period.
#[derive(Debug, Default)]
pub(crate) struct Activity {
    /// Reads and writes that moved bytes.
    io: AtomicU64,
    /// Requests being handled.
    requests: AtomicU32,
    /// True once a request head arrived.
    requested: AtomicBool,
    /// True once an HTTP/2 request arrived (the connection speaks HTTP/2).
    h2: AtomicBool,
}

impl Activity {
    /// A request arrived; it counts as in flight until the guard drops.
    pub(crate) fn request(&self) -> RequestGuard<'_> {
        if !self.requested.load(Ordering::Relaxed) {
            self.requested.store(true, Ordering::Relaxed);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        RequestGuard(self)
    }

    /// The connection carries HTTP/2.
    pub(crate) fn mark_h2(&self) {
        if !self.h2.load(Ordering::Relaxed) {
            self.h2.store(true, Ordering::Relaxed);
        }
    }

    pub(crate) fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Relaxed)
    }

    fn busy_marker(&self) -> Option<u64> {
        (self.requests.load(Ordering::Relaxed) == 0).then(|| self.io.load(Ordering::Relaxed))
    }
}

pub(crate) struct RequestGuard<'a>(&'a Activity);

impl Drop for RequestGuard<'_> {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a connection's watch fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Quiet {
    /// No request head arrived within the header timeout: close at once.
    Silent,
    /// Nothing in flight and no byte moved for the idle timeout: close gracefully.
    Idle,
}

/// Resolves when the connection has completed no request head within `header_timeout`
/// of the call, or when it has been idle for `idle` (whichever comes first).
pub(crate) async fn watch(activity: &Activity, header_timeout: Duration, idle: Duration) -> Quiet {
    let silent = async {
        tokio::time::sleep(header_timeout).await;
        if activity.requested.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        () = silent => Quiet::Silent,
        () = idle_for(activity, idle) => Quiet::Idle,
    }
}

/// Resolves once no request was in flight and no byte moved for `timeout` (to within a
/// quarter of it: the activity is sampled four times per period rather than timestamped
/// on every read and write).
pub(crate) async fn idle_for(activity: &Activity, timeout: Duration) {
    const SAMPLES: u32 = 4;
    let tick = timeout / SAMPLES;
    let mut last = activity.busy_marker();
    let mut quiet = 0;
    loop {
        tokio::time::sleep(tick).await;
        let now = activity.busy_marker();
        if now.is_some() && now == last {
            quiet += 1;
            if quiet >= SAMPLES {
                return;
            }
        } else {
            quiet = 0;
            last = now;
        }
    }
}

/// An I/O stream that counts its reads and writes in an [`Activity`].
pub(crate) struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Tracked<T> {
    pub(crate) fn new(inner: T, activity: Arc<Activity>) -> Self {
        Tracked { inner, activity }
    }

    fn moved(&self) {
        self.activity.io.fetch_add(1, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() != before {
            this.moved();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.moved();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.moved();
        }
        result
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

/// A timer for a body whose peer may stop sending: armed while waiting on the peer,
/// disarmed by progress. The sleep is allocated on the first wait only, so bodies that
/// arrive whole cost nothing.
pub(crate) struct IdleTimer {
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl IdleTimer {
    pub(crate) fn new(timeout: Duration) -> Self {
        IdleTimer {
            timeout,
            sleep: None,
            armed: false,
        }
    }

    /// The peer made progress.
    pub(crate) fn progress(&mut self) {
        self.armed = false;
    }

    /// The peer has nothing for us now: true once it has had nothing for the whole timeout.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = Instant::now() + self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            sleep.as_mut().reset(deadline);
            self.armed = true;
        }
        sleep.as_mut().poll(cx).is_ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn watch_closes_silent_connections_then_idle_ones() {
        let activity = Activity::default();
        let t = Duration::from_secs(10);
        assert_eq!(watch(&activity, t, 2 * t).await, Quiet::Silent);

        let activity = Arc::new(Activity::default());
        let started = Instant::now();
        let request = activity.request();
        let busy = {
            let activity = activity.clone();
            tokio::spawn(async move { watch(&activity, t, Duration::from_secs(8)).await })
        };
        // A request in flight for 30 s keeps the connection open…
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!busy.is_finished());
        drop(request);
        // …and so do bytes moving.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(4)).await;
            activity.io.fetch_add(1, Ordering::Relaxed);
        }
        let last_io = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!busy.is_finished());
        assert_eq!(busy.await.unwrap(), Quiet::Idle);
        // Idle for 8 s, found within a quarter period more.
        let idle_for = last_io.elapsed();
        assert!(
            idle_for >= Duration::from_secs(8) && idle_for <= Duration::from_secs(10),
            "{idle_for:?}"
        );
        assert!(started.elapsed() > Duration::from_secs(50));
    }
}
