//! `meridian dns`: the authoritative GeoDNS server as its own process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use meridian_dns::DnsServer;
use meridian_subscriber::TableCell;

/// Arguments of `meridian dns`.
#[derive(clap::Args)]
pub struct Args {
    /// Config file: its zones, geo databases and `dns:` section; without `--controller`
    /// its apps and clusters make the table served (every target healthy).
    #[arg(short = 'c', long = "config")]
    config: PathBuf,
    /// UDP and TCP listener, overriding `dns.listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin listener (`/livez`, `/readyz`, `/metrics`), overriding `dns.admin_listen`
    /// (default 127.0.0.1:9054).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// UDP worker threads, overriding `dns.udp_workers` (default: one per CPU).
    #[arg(long)]
    workers: Option<usize>,
    #[command(flatten)]
    follow: super::FollowArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut loaded = meridian_config::load(&args.config)
        .map_err(|err| anyhow::anyhow!("{}", err.diagnostics().join("\n")))?;
    let dns = &mut loaded.config.dns;
    if let Some(listen) = args.listen {
        dns.listen = listen;
    }
    // A server on its own gets health and metrics by default, as the proxy does.
    dns.admin_listen = args
        .admin_listen
        .or(dns.admin_listen)
        .or(Some(meridian_config::dns::STANDALONE_ADMIN_LISTEN));
    if let Some(workers) = args.workers {
        dns.udp_workers = Some(workers);
    }
    let cell = Arc::new(TableCell::new());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut tasks = Vec::new();
        // Without a controller the config's table is served from the first query; with one,
        // serving starts at once and the table arrives through the cell. The answers given
        // are counted into the vantage reports.
        if args.follow.controller.is_none() {
            cell.store(Arc::new(super::static_table(&loaded)?));
        }
        let server = DnsServer::start(&loaded, cell.clone())?;
        if let Some(controller) = args.follow.controller.clone() {
            let token = super::read_token(args.follow.token_file.as_deref())?;
            let subscriber = format!("dns@{}", loaded.config.dns.listen);
            let name = args.follow.vantage_name(subscriber.clone());
            // Two clients, so a long watch stream and the reports never wait on each other.
            let (watch_client, report_client) = (
                args.follow.client(token.clone())?,
                args.follow.client(token.clone())?,
            );
            let region = args.follow.region.clone();
            let watch = meridian_subscriber::watch::WatchConfig {
                controller,
                token,
                state_dir: args.follow.state_dir.clone(),
                subscriber,
            };
            let follow_cell = cell.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(err) =
                    meridian_subscriber::watch::follow_with(watch_client, watch, follow_cell).await
                {
                    tracing::error!(error = %err, "dns: following the controller failed");
                }
            }));
            // The DNS server is a vantage too: it runs the probes the controller assigns.
            let answers = server.answer_source();
            tasks.push(tokio::spawn(async move {
                let result = meridian_subscriber::report::probe_and_report_with(
                    report_client,
                    name,
                    region,
                    meridian_subscriber::report::Counters {
                        traffic: None,
                        answers: Some(answers),
                    },
                )
                .await;
                if let Err(err) = result {
                    tracing::error!(error = %err, "dns: probing as a vantage failed");
                }
            }));
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: stopping"),
        }
        for task in tasks {
            task.abort();
        }
        tokio::task::spawn_blocking(move || server.shutdown())
            .await
            .context("stopping the DNS server")?;
        tracing::info!("dns stopped");
        anyhow::Ok(())
    })
}
