//! `meridian proxy`: the L7 edge proxy as its own process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use meridian_dataplane::Proxy;
use meridian_routing::RoutingTable;
use meridian_subscriber::TableCell;
use meridian_subscriber::watch::WatchConfig;

/// Arguments of `meridian proxy`.
#[derive(clap::Args)]
pub struct Args {
    /// Config file; its `proxy:` section sets listeners and limits, and its apps and
    /// clusters make the table served (every target healthy).
    #[arg(short = 'c', long = "config")]
    config: PathBuf,
    /// Client listener, overriding `proxy.listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin listener (`/livez`, `/readyz`, `/metrics`), overriding `proxy.admin_listen`.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// Worker threads (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    /// Follow this controller's routing tables (for example `http://127.0.0.1:8090`)
    /// instead of serving the config's own table.
    #[arg(long)]
    controller: Option<String>,
    /// File holding the bearer token for the controller.
    #[arg(long, requires = "controller")]
    token_file: Option<PathBuf>,
    /// Directory for the last good table, served at start when the controller is down.
    #[arg(long, requires = "controller")]
    state_dir: Option<PathBuf>,
    /// Name this proxy reports its probe results under as a vantage (default
    /// `proxy@LISTEN`). With `--controller` the proxy runs the controller's probe
    /// assignment and reports, as `meridian up` and the DNS server do.
    #[arg(long, requires = "controller")]
    vantage: Option<String>,
    /// Region of this vantage, when the controller cannot tell it from the address.
    #[arg(long, requires = "controller")]
    region: Option<String>,
}

/// Where and as what the proxy probes and reports as a vantage.
struct Vantage {
    controller: String,
    token: Option<String>,
    name: String,
    region: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let loaded = meridian_config::load(&args.config)
        .map_err(|err| anyhow::anyhow!("{}", err.diagnostics().join("\n")))?;
    let mut config = loaded.config.proxy.clone();
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(admin) = args.admin_listen {
        config.admin_listen = admin;
    }
    // Certificate paths are relative to the config file, as every path in it.
    if let Some(tls) = &mut config.tls {
        let base = args.config.parent().unwrap_or(std::path::Path::new("."));
        for cert in &mut tls.certificates {
            cert.cert = base.join(&cert.cert);
            cert.key = base.join(&cert.key);
        }
    }
    let cell = Arc::new(TableCell::new());
    let watch = match &args.controller {
        // Tables come from the controller (or the last good one on disk); until one
        // arrives the proxy answers 503 and /readyz says not ready.
        Some(controller) => {
            let token = match &args.token_file {
                Some(file) => Some(
                    std::fs::read_to_string(file)
                        .with_context(|| format!("reading the token file {}", file.display()))?
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            let vantage = Vantage {
                controller: controller.clone(),
                token: token.clone(),
                name: args
                    .vantage
                    .clone()
                    .unwrap_or_else(|| format!("proxy@{}", config.listen)),
                region: args.region.clone(),
            };
            Some((
                WatchConfig {
                    controller: controller.clone(),
                    token,
                    state_dir: args.state_dir.clone(),
                    subscriber: format!("proxy@{}", config.listen),
                },
                vantage,
            ))
        }
        None => {
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let table =
                RoutingTable::new(loaded.config.base_table(1, now_ms)).with_context(|| {
                    format!("{}: building the routing table", args.config.display())
                })?;
            cell.store(Arc::new(table));
            None
        }
    };

    // One worker runs on the current thread: no work-stealing overhead, as nginx's
    // single worker process.
    let mut runtime = match args.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers.max(1));
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all();
    let runtime = runtime.build().context("starting the async runtime")?;
    runtime.block_on(async move {
        let proxy = Proxy::start(config, cell.clone()).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let follow = async {
            match watch {
                Some((watch, vantage)) => {
                    let traffic = proxy.traffic_source();
                    // Probing is secondary to serving: if it stops (a refused token), the
                    // proxy keeps serving and says so in the log.
                    tokio::spawn(async move {
                        let name = vantage.name.clone();
                        // The traffic it sends each target is reported with the probes.
                        if let Err(err) = meridian_subscriber::report::probe_and_report_traffic(
                            &vantage.controller,
                            vantage.token,
                            vantage.name,
                            vantage.region,
                            Some(traffic),
                        )
                        .await
                        {
                            tracing::error!(vantage = %name, error = %err, "stopped probing as a vantage");
                        }
                    });
                    meridian_subscriber::watch::follow(watch, cell).await
                }
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: draining");
                Ok(())
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupt: draining");
                Ok(())
            }
            // `follow` returns only on a fatal error (a bad URL, a refused token).
            result = follow => result.context("following the controller"),
        };
        proxy.shutdown().await;
        tracing::info!("proxy stopped");
        result
    })
}
