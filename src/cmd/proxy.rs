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
    /// Worker threads (default: one per CPU).
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
