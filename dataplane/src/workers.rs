//! Thread-per-core: a proxy with several workers runs each on a thread of its own with a
//! current-thread runtime, as nginx's worker processes and HAProxy's threads do. Worker 0
//! is the runtime the proxy was started on. Every other worker accepts from a duplicate
//! of the same listening sockets (one accept queue per listener, so a handover still
//! passes one socket each) and serves each connection it accepted on its own thread from
//! start to end: its reads, writes and timers, and the upstream connections it opens and
//! keeps idle, never wake another thread.
//!
//! Shared between the workers is what is counted once for the process: the table, the
//! connection slots, the limits per client address, the retry budget, what traffic
//! taught about targets, the metrics and the access log.

use std::cell::Cell;
use std::future::Future;

use tokio::sync::oneshot;

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// The worker running on this thread: 0 on any thread that is not an extra worker's (the
/// proxy's own runtime, whichever flavour it is).
pub(crate) fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// Makes this thread worker `index`'s.
pub(crate) fn become_worker(index: usize) {
    CURRENT.set(index);
}

/// Starts worker `index` on a thread of its own, running the future `work` makes on
/// `runtime`. The receiver resolves once `work` has finished and the runtime, with every
/// task still on it, is gone.
pub(crate) fn spawn<W, F>(
    index: usize,
    runtime: tokio::runtime::Runtime,
    work: W,
) -> std::io::Result<oneshot::Receiver<()>>
where
    W: FnOnce() -> F + Send + 'static,
    F: Future<Output = ()>,
{
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("proxy-worker-{index}"))
        .spawn(move || {
            become_worker(index);
            // The future is made here: registering sockets needs this runtime's reactor.
            runtime.block_on(async move { work().await });
            drop(runtime);
            let _ = done.send(());
        })?;
    Ok(finished)
}
