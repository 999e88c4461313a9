//! The proxy alone, serving a config file's table: what `meridian proxy -c FILE` does
//! without the rest of the binary. Quick to build in release for benchmarks.
//!
//! ```text
//! cargo run --release -p meridian-dataplane --example edge -- CONFIG [WORKERS]
//! ```
//!
//! SIGTERM or Ctrl-C drains gracefully.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use meridian_dataplane::Proxy;
use meridian_routing::RoutingTable;
use meridian_subscriber::TableCell;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args.next().ok_or("usage: edge CONFIG [WORKERS]")?;
    let workers: usize = match args.next() {
        Some(workers) => workers.parse()?,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let loaded =
        meridian_config::load(path.as_ref()).map_err(|err| err.diagnostics().join("\n"))?;
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let cell = Arc::new(TableCell::new());
    cell.store(Arc::new(RoutingTable::new(
        loaded.config.base_table(1, now_ms),
    )?));
    // As `meridian proxy`: this thread's runtime is the first worker.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let proxy = Proxy::start_workers(loaded.config.proxy.clone(), cell, workers.max(1)).await?;
        eprintln!(
            "edge proxy on {} (admin {})",
            proxy.local_addr(),
            proxy.admin_addr()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        proxy.shutdown().await;
        Ok(())
    })
}
