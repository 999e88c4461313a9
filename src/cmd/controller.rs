//! `meridian controller`: the controller as its own process, from a config file or (with
//! `--kubernetes`) from the Meridian resources on a hub cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use meridian_controller::kubernetes::{KubernetesOptions, LeaseTiming};
use meridian_controller::{Controller, ControllerOptions};
use meridian_k8s::member::MemberOptions;

/// Arguments of `meridian controller`.
#[derive(clap::Args)]
pub struct Args {
    /// Config file; its `controller:` section sets the port, data directory and tokens.
    /// In Kubernetes mode it gives regions, geo data and zones; apps and clusters come from
    /// the resources.
    #[arg(short = 'c', long = "config")]
    config: PathBuf,
    /// Listener of the API, metrics and watch stream, overriding `controller.listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Directory of the embedded store, overriding `controller.data_dir`.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Do not probe from the controller: only subscribers' reports make verdicts.
    #[arg(long)]
    no_probe: bool,
    /// Kubernetes mode: read MeridianCluster and MeridianApp resources from the hub cluster
    /// (in-cluster service account, `--kubeconfig` or `KUBECONFIG`), observe member
    /// clusters, write status back.
    #[arg(long)]
    kubernetes: bool,
    /// Namespace of the resources, the member kubeconfig Secrets and the Lease.
    #[arg(
        long,
        env = "MERIDIAN_NAMESPACE",
        default_value = "meridian",
        requires = "kubernetes"
    )]
    namespace: String,
    /// Kubeconfig of the hub cluster (default: in-cluster, then `KUBECONFIG`, then
    /// `~/.kube/config`).
    #[arg(long, requires = "kubernetes")]
    kubeconfig: Option<PathBuf>,
    /// Elect one leader among replicas through the Lease `meridian-controller`; only the
    /// leader writes. Needed with more than one replica.
    #[arg(long, requires = "kubernetes")]
    leader_elect: bool,
    /// The URL other replicas reach this one at (its identity in the Lease; followers
    /// forward writes to the leader there). Default `http://LISTEN`.
    #[arg(long, env = "MERIDIAN_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// Token a follower presents to the leader to mirror its tables (role subscriber);
    /// needed when `controller.tokens` is set.
    #[arg(long)]
    peer_token_file: Option<PathBuf>,
    /// How long the Lease holds without renewal.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
    /// How long the leader tries to renew before it stops writing.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    lease_renew_deadline: Duration,
    /// How often replicas try to take or renew the Lease.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    lease_retry_period: Duration,
    /// How often each member cluster is polled (reachability, ingress, inventory).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    member_poll_interval: Duration,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let loaded = meridian_config::load(&args.config)
        .map_err(|err| anyhow::anyhow!("{}", err.diagnostics().join("\n")))?;
    let peer_token = super::read_token(args.peer_token_file.as_deref())?;
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let kubernetes = if args.kubernetes {
            Some(kubernetes_options(&args).await?)
        } else {
            None
        };
        let controller = Controller::start(
            loaded,
            ControllerOptions {
                listen: args.listen,
                data_dir: args.data_dir,
                probe: !args.no_probe,
                advertise_url: args.advertise_url,
                peer_token,
                kubernetes,
                extra_routes: Some(meridian_dashboard::router()),
                ..Default::default()
            },
        )
        .await
        .context("starting the controller")?;
        // One line on stdout that scripts and tests can wait for.
        println!("controller listening on {}", controller.url());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
        }
        controller.shutdown().await;
        Ok(())
    })
}

async fn kubernetes_options(args: &Args) -> anyhow::Result<KubernetesOptions> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("using the kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("finding the hub cluster (in-cluster, KUBECONFIG or ~/.kube/config)")?,
    };
    let client = kube::Client::try_from(config).context("building the hub cluster's client")?;
    Ok(KubernetesOptions {
        client,
        namespace: args.namespace.clone(),
        leader_election: args.leader_elect.then_some(LeaseTiming {
            lease_duration: args.lease_duration,
            renew_deadline: args.lease_renew_deadline,
            retry_period: args.lease_retry_period,
        }),
        members: MemberOptions {
            poll_interval: args.member_poll_interval,
            ..MemberOptions::default()
        },
        resync: Duration::from_secs(30),
    })
}
