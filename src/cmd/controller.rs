//! `meridian controller`: the controller as its own process.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use meridian_controller::{Controller, ControllerOptions};

/// Arguments of `meridian controller`.
#[derive(clap::Args)]
pub struct Args {
    /// Config file; its `controller:` section sets the port, data directory and tokens.
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
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let loaded = meridian_config::load(&args.config)
        .map_err(|err| anyhow::anyhow!("{}", err.diagnostics().join("\n")))?;
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let controller = Controller::start(
            loaded,
            ControllerOptions {
                listen: args.listen,
                data_dir: args.data_dir,
                probe: !args.no_probe,
                ..Default::default()
            },
        )
        .await
        .context("starting the controller")?;
        // One line on stdout that scripts and tests can wait for.
        println!("controller listening on http://{}", controller.addr());
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
