//! `meridian proxy`: the L7 edge proxy as its own process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use meridian_dataplane::Proxy;
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
    /// Workers, each a thread with an event loop of its own (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    #[command(flatten)]
    follow: super::FollowArgs,
}

/// Where and as what the proxy probes and reports as a vantage.
struct Vantage {
    client: meridian_subscriber::http::ControllerClient,
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
    let watch = match &args.follow.controller {
        // Tables come from the controller (or the last good one on disk); until one
        // arrives the proxy answers 503 and /readyz says not ready.
        Some(controller) => {
            let token = super::read_token(args.follow.token_file.as_deref())?;
            // Two clients, so a long watch stream and the reports never wait on each other.
            let vantage = Vantage {
                client: args.follow.client(token.clone())?,
                name: args.follow.vantage_name(format!("proxy@{}", config.listen)),
                region: args.follow.region.clone(),
            };
            Some((
                args.follow.client(token.clone())?,
                WatchConfig {
                    controller: controller.clone(),
                    token,
                    state_dir: args.follow.state_dir.clone(),
                    subscriber: format!("proxy@{}", config.listen),
                },
                vantage,
            ))
        }
        None => {
            cell.store(Arc::new(super::static_table(&loaded)?));
            None
        }
    };

    // Thread-per-core, as nginx's worker processes: this thread's runtime is the first
    // worker (and follows the controller), each other worker a thread with a runtime of
    // its own. No work stealing and no wake-ups across threads on the request path; in
    // `bench/proxy.sh` this served more requests per CPU-second than tokio's multi-thread
    // runtime with as many workers (bench/proxy-results.md).
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let proxy = Proxy::start_workers(config, cell.clone(), workers).await?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let follow = async {
            match watch {
                Some((client, watch, vantage)) => {
                    let traffic = proxy.traffic_source();
                    // Probing is secondary to serving: if it stops (a refused token), the
                    // proxy keeps serving and says so in the log.
                    tokio::spawn(async move {
                        let name = vantage.name.clone();
                        // The traffic it sends each target is reported with the probes.
                        if let Err(err) = meridian_subscriber::report::probe_and_report_with(
                            vantage.client,
                            vantage.name,
                            vantage.region,
                            meridian_subscriber::report::Counters {
                                traffic: Some(traffic),
                                answers: None,
                            },
                        )
                        .await
                        {
                            tracing::error!(vantage = %name, error = %err, "stopped probing as a vantage");
                        }
                    });
                    meridian_subscriber::watch::follow_with(client, watch, cell).await
                }
                None => std::future::pending().await,
            }
        };
        // SIGTERM (a service manager, Kubernetes) drains with the drain delay, so a load
        // balancer moves clients away first; an operator's Ctrl-C does not wait for one.
        let mut delay = true;
        let result = tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM: draining");
                Ok(())
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupt: draining");
                delay = false;
                Ok(())
            }
            () = proxy.handed_over() => {
                tracing::info!("a new proxy process took the listening sockets: draining");
                Ok(())
            }
            // `follow` returns only on a fatal error (a bad URL, a refused token).
            result = follow => result.context("following the controller"),
        };
        if delay {
            proxy.shutdown().await;
        } else {
            proxy.shutdown_now().await;
        }
        tracing::info!("proxy stopped");
        result
    })
}
