//! `meridian demo`: make a stand-in cluster of `meridian up --demo` fail, and recover.

use anyhow::Context;
use http::Method;
use meridian_subscriber::http::ControllerClient;

/// Arguments of `meridian demo`.
#[derive(clap::Args)]
pub struct Args {
    /// The controller of the running demo.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8090",
        env = "MERIDIAN_CONTROLLER"
    )]
    controller: String,
    /// Bearer token with the operator role, when the controller has tokens (or env MERIDIAN_TOKEN).
    #[arg(long, env = "MERIDIAN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    tls: super::TlsArgs,
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Make a stand-in cluster fail: stop answering (listener closed), or answer 503.
    Fail {
        /// The cluster.
        cluster: String,
        /// Answer every request with 503 instead of going silent.
        #[arg(long = "503")]
        http_503: bool,
    },
    /// Make a stand-in cluster answer again.
    Recover {
        /// The cluster.
        cluster: String,
    },
    /// List the stand-in clusters and their modes.
    List,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = ControllerClient::with_tls(
            &args.controller,
            args.token.clone(),
            &args.tls.client_tls(),
        )?;
        let (cluster, mode) = match &args.action {
            Action::Fail { cluster, http_503: true } => (cluster, "http-503"),
            Action::Fail { cluster, http_503: false } => (cluster, "down"),
            Action::Recover { cluster } => (cluster, "up"),
            Action::List => {
                let (_, body) = client.call(Method::GET, "/api/v1/demo/clusters", None).await?;
                let list: serde_json::Value = serde_json::from_slice(&body)?;
                for c in list.as_array().into_iter().flatten() {
                    println!("{:<20} {:<10} {:>8} served  {}", c["cluster"].as_str().unwrap_or("?"), c["mode"].as_str().unwrap_or("?"), c["requests_served"], c["addr"].as_str().unwrap_or(""));
                }
                return Ok(());
            }
        };
        let body = serde_json::to_vec(&serde_json::json!({ "mode": mode }))?;
        let path = format!("/api/v1/demo/clusters/{cluster}");
        client
            .call(Method::PUT, &path, Some(body))
            .await
            .with_context(|| format!("setting stand-in cluster {cluster} to {mode} (is `meridian up --demo` running?)"))?;
        println!("{cluster}: {mode}");
        anyhow::Ok(())
    })
}
