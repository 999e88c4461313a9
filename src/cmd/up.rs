//! `meridian up`: controller, DNS and proxy in one process on the embedded store — the main
//! job on one machine. The proxy and the DNS server follow the controller's watch stream over
//! HTTP exactly as separate processes do, so what works here works split.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use meridian_config::LoadedConfig;
use meridian_controller::{Controller, ControllerOptions};
use meridian_dataplane::Proxy;
use meridian_dns::DnsServer;
use meridian_subscriber::TableCell;
use meridian_subscriber::report::{Counters, probe_and_report_counters};
use meridian_subscriber::watch::{WatchConfig, follow};

/// Arguments of `meridian up`.
#[derive(clap::Args)]
pub struct Args {
    /// Config file; without one, the embedded demo config (deploy/examples/demo.yaml).
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Also start stand-in cluster ingresses on the clusters' endpoints, to see steering and
    /// failover with nothing else running.
    #[arg(long)]
    demo: bool,
    /// Proxy listener, overriding `proxy.listen`.
    #[arg(long)]
    proxy_listen: Option<SocketAddr>,
    /// DNS listener (UDP and TCP), overriding `dns.listen`.
    #[arg(long)]
    dns_listen: Option<SocketAddr>,
    /// Controller listener (API, dashboard, metrics), overriding `controller.listen`.
    #[arg(long)]
    controller_listen: Option<SocketAddr>,
    /// Proxy admin listener (`/metrics`, `/livez`, `/readyz`), overriding `proxy.admin_listen`.
    #[arg(long)]
    proxy_admin_listen: Option<SocketAddr>,
    /// Where durable state lives (the controller's store, the subscribers' last good tables),
    /// overriding `controller.data_dir`. Default: `meridian-data` in the current directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A token with the subscriber role, for the in-process proxy and DNS server when the
    /// config has `controller.tokens` (or env MERIDIAN_TOKEN); it must name their vantages
    /// (`vantages: [proxy, dns]`). Without one, `up` gives its own parts a credential of
    /// their own for this run.
    #[arg(long, env = "MERIDIAN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut loaded = match &args.config {
        Some(file) => meridian_config::load(file),
        None => meridian_config::parse(meridian_config::DEMO_CONFIG, Path::new("<embedded demo>")),
    }
    .map_err(|err| anyhow::anyhow!("{}", err.diagnostics().join("\n")))?;
    let c = &mut loaded.config;
    if let Some(addr) = args.proxy_listen {
        c.proxy.listen = addr;
    }
    if let Some(addr) = args.proxy_admin_listen {
        c.proxy.admin_listen = addr;
    }
    if let Some(path) = c.proxy.handover_socket.take() {
        // The controller and DNS server in this process cannot hand over their sockets.
        tracing::warn!(path = %path.display(), "proxy.handover_socket applies to `meridian proxy` only; ignored by `up`");
    }
    if let Some(addr) = args.dns_listen {
        c.dns.listen = addr;
    }
    if let Some(addr) = args.controller_listen {
        c.controller.listen = addr;
    }
    // One process on one host: its parts talk over loopback, where plain HTTP is allowed;
    // TLS between the parts is for a split deployment.
    if c.controller.tls.take().is_some() {
        tracing::warn!(
            "meridian up ignores controller.tls: its controller serves plain HTTP on loopback"
        );
        if let Some(problem) =
            meridian_config::controller::plain_http_problem(c.controller.listen, false)
        {
            anyhow::bail!("controller.listen (or --controller-listen): {problem}");
        }
    }
    let mut args = args;
    if args.token.is_none() && !c.controller.tokens.is_empty() {
        args.token = Some(in_process_credential(&mut c.controller));
    }
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| {
            let base = loaded.file.parent().filter(|p| !p.as_os_str().is_empty());
            loaded
                .config
                .controller
                .data_dir
                .as_ref()
                .map(|d| base.map_or(d.clone(), |b| b.join(d)))
        })
        .unwrap_or_else(|| PathBuf::from("meridian-data"));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(loaded, args, data_dir))
}

async fn serve(loaded: LoadedConfig, args: Args, data_dir: PathBuf) -> anyhow::Result<()> {
    let config = loaded.config.clone();
    let stand_ins = if args.demo {
        Some(
            meridian_demo::StandIns::start(&config)
                .await
                .context("starting the demo's stand-in clusters")?,
        )
    } else {
        None
    };
    let mut extra = meridian_dashboard::router();
    if let Some(stand_ins) = &stand_ins {
        extra = extra.merge(meridian_demo::router(stand_ins.clone()));
    }
    let controller = Controller::start(
        loaded.clone(),
        ControllerOptions {
            data_dir: Some(data_dir.join("controller")),
            vantage: "controller".into(),
            extra_routes: Some(extra),
            ..Default::default()
        },
    )
    .await
    .context("starting the controller")?;

    // The proxy and the DNS server are subscribers like any other: each follows the watch
    // stream into its own cell, keeps its last good table on disk, and probes as a vantage
    // (the proxy also reports the traffic it sends to each target).
    let follow_into = |name: &str| {
        let cell = Arc::new(TableCell::new());
        let watch = WatchConfig {
            controller: controller.url(),
            token: args.token.clone(),
            state_dir: Some(data_dir.join(name)),
            subscriber: format!("{name}@up"),
        };
        let (follow_cell, what) = (cell.clone(), name.to_string());
        tokio::spawn(async move {
            if let Err(err) = follow(watch, follow_cell).await {
                tracing::error!(subscriber = %what, error = %err, "stopped following the controller");
            }
        });
        cell
    };
    let vantage = |name: &str, counters: Counters| {
        let (url, token, vantage) = (controller.url(), args.token.clone(), name.to_string());
        tokio::spawn(async move {
            if let Err(err) =
                probe_and_report_counters(&url, token, vantage.clone(), None, counters).await
            {
                tracing::error!(%vantage, error = %err, "stopped probing as a vantage");
            }
        });
    };
    let proxy_cell = follow_into("proxy");
    let dns_cell = follow_into("dns");
    for (part, cell) in [("proxy", &proxy_cell), ("DNS server", &dns_cell)] {
        if !wait_for_table(cell).await {
            anyhow::bail!(
                "the in-process {part} got no routing table from the controller within {} s \
                 (see the log above; with controller.tokens set, --token must be a token \
                 with the subscriber role)",
                FIRST_TABLE.as_secs()
            );
        }
    }

    let proxy = Proxy::start(config.proxy.clone(), proxy_cell)
        .await
        .context("starting the proxy")?;
    let dns = DnsServer::start(&loaded, dns_cell).context("starting the DNS server")?;
    vantage(
        "proxy",
        Counters {
            traffic: Some(proxy.traffic_source()),
            answers: None,
        },
    );
    vantage(
        "dns",
        Counters {
            traffic: None,
            answers: Some(dns.answer_source()),
        },
    );
    print_welcome(
        &loaded,
        controller.addr(),
        proxy.local_addr(),
        dns.udp_addr(),
        stand_ins.is_some(),
        args.config.is_none(),
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let delay = tokio::select! {
        _ = term.recv() => {
            tracing::info!("SIGTERM: shutting down");
            true
        }
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupt: shutting down");
            false
        }
    };
    // The proxy first, so requests in flight finish while the table is still served; on
    // SIGTERM after its drain delay (load balancers move clients away), on Ctrl-C at once.
    if delay {
        proxy.shutdown().await;
    } else {
        proxy.shutdown_now().await;
    }
    dns.shutdown();
    controller.shutdown().await;
    if let Some(stand_ins) = stand_ins {
        stand_ins.shutdown().await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// How long the in-process parts may take to get their first table: the controller is in
/// the same process, so only a refused credential or a broken config takes longer.
const FIRST_TABLE: Duration = Duration::from_secs(10);

/// Waits for the first table, so the proxy and DNS do not start by refusing; false when
/// none came within [`FIRST_TABLE`].
async fn wait_for_table(cell: &TableCell) -> bool {
    let deadline = tokio::time::Instant::now() + FIRST_TABLE;
    while tokio::time::Instant::now() < deadline {
        if cell.load().is_some() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A subscriber token for this run's own proxy and DNS server, added (as its digest) to
/// the controller's tokens; it exists only in this process.
fn in_process_credential(controller: &mut meridian_config::controller::ControllerConfig) -> String {
    use sha2::Digest;
    let token = hex::encode(rand::random::<[u8; 32]>());
    controller
        .tokens
        .push(meridian_config::controller::TokenConfig {
            name: "meridian-up".into(),
            role: meridian_config::controller::Role::Subscriber,
            sha256: Some(hex::encode(sha2::Sha256::digest(token.as_bytes()))),
            file: None,
            // The vantages `up` runs in this process (see `vantage(…)` in `run`).
            vantages: vec!["proxy".into(), "dns".into()],
        });
    token
}

fn print_welcome(
    loaded: &LoadedConfig,
    controller: SocketAddr,
    proxy: SocketAddr,
    dns: SocketAddr,
    demo: bool,
    embedded: bool,
) {
    let c = &loaded.config;
    let host = c
        .apps
        .iter()
        .flat_map(|a| a.hostnames.iter())
        .find(|h| !h.starts_with("*."))
        .cloned()
        .unwrap_or_else(|| "app.example.com".into());
    // The command as it was called (`target/debug/meridian` after `cargo build`), since
    // `meridian` is often not on the PATH.
    let bin = std::env::args()
        .next()
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "meridian".into());
    let mut text = format!(
        "\nMeridian is up ({}).\n\n  dashboard   http://{controller}/\n  API         http://{controller}/api/v1/status   (OpenAPI: /openapi.json, metrics: /metrics)\n  proxy       http://{proxy}/\n  DNS         {dns} (UDP and TCP)\n",
        loaded.file.display(),
    );
    if demo {
        let cluster = c.clusters.first().map_or("CLUSTER", |c| c.name.as_str());
        text.push_str(&format!(
            "\nTry:\n  curl -s -H 'Host: {host}' http://{proxy}/\n  kdig @{ip} -p {port} {host} A\n  kdig @{ip} -p {port} {host} A +subnet=198.51.100.0/24\n  curl -s 'http://{controller}/api/v1/explain?host={host}&client=198.51.100.7'\n",
            ip = dns.ip(),
            port = dns.port(),
        ));
        text.push_str(&format!(
            "\nWatch failover (the stand-in clusters say which one answered):\n  \
             while true; do curl -s -H 'Host: {host}' http://{proxy}/ | head -1; sleep 0.2; done\n  \
             {bin} demo fail {cluster}          # stop answering, like a lost cloud region\n  \
             {bin} demo fail {cluster} --503    # answer 503 instead\n  \
             {bin} demo recover {cluster}\n  \
             {bin} drain {cluster}              # take it out of traffic gradually\n  \
             {bin} undrain {cluster}\n  \
             {bin} status                       # clusters, health per vantage, weights\n  \
             (or use the buttons on the dashboard)\n"
        ));
    } else {
        text.push_str(&format!(
            "\nThe proxy and DNS send clients to the clusters' ingress endpoints in {}; \
             `{bin} status` shows their health.\n",
            loaded.file.display()
        ));
        if embedded {
            text.push_str(&format!(
                "The embedded demo config's clusters are stand-ins that only `{bin} up --demo` starts: \
                 without them every request gets 502.\n"
            ));
        }
    }
    text.push_str("\nCtrl-C stops everything.\n");
    println!("{text}");
}
