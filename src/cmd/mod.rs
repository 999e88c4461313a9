//! One module per subcommand: argument types and the call into the owning crate.

pub mod check;
pub mod controller;
pub mod crds;
pub mod demo;
pub mod dns;
pub mod operator;
pub mod plan;
pub mod proxy;
pub mod up;

use std::process::ExitCode;

/// How logs are written.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`); colours only on a terminal, so a
/// log written to a file or a pipe carries no escape codes.
pub fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// For commands that print and exit: a reader that goes away (`meridian status | head -1`)
/// ends the process quietly, as for any Unix filter, instead of a panic on the next print.
/// Rust ignores SIGPIPE by default; servers keep that (a client's closed socket must not
/// kill them), so only the printing commands call this.
#[expect(
    unsafe_code,
    reason = "restoring a signal's default action has no safe wrapper in std"
)]
pub fn die_quietly_on_closed_stdout() {
    // SAFETY: called at the start of main, before any thread is started; SIG_DFL is a
    // valid action for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The process exit: 0 on success; otherwise the error chain on stderr and exit code 1.
pub fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Reads a bearer token from a file (trimmed), for the subscriber and operator commands.
pub fn read_token(file: Option<&std::path::Path>) -> anyhow::Result<Option<String>> {
    use anyhow::Context;
    file.map(|file| {
        std::fs::read_to_string(file)
            .map(|t| t.trim().to_string())
            .with_context(|| format!("reading the token file {}", file.display()))
    })
    .transpose()
}

/// The table a config describes with every target healthy: what `meridian proxy` and
/// `meridian dns` serve when they follow no controller.
pub fn static_table(
    loaded: &meridian_config::LoadedConfig,
) -> anyhow::Result<meridian_routing::RoutingTable> {
    use anyhow::Context;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    meridian_routing::RoutingTable::new(loaded.config.base_table(1, now_ms))
        .with_context(|| format!("{}: building the routing table", loaded.file.display()))
}

/// How `meridian proxy` and `meridian dns` follow a controller: its watch stream for tables,
/// and its probe assignment as a vantage.
#[derive(clap::Args)]
pub struct FollowArgs {
    /// Follow this controller's routing tables (for example `http://127.0.0.1:8090`)
    /// instead of serving the config's own table (every target healthy).
    #[arg(long)]
    pub controller: Option<String>,
    /// File holding the bearer token for the controller (role subscriber).
    #[arg(long, requires = "controller")]
    pub token_file: Option<std::path::PathBuf>,
    /// Directory for the last good table, served at start when the controller is down.
    #[arg(long, requires = "controller")]
    pub state_dir: Option<std::path::PathBuf>,
    /// Name this process reports its probe results under as a vantage (default
    /// `KIND@LISTEN`).
    #[arg(long, requires = "controller")]
    pub vantage: Option<String>,
    /// Region of this vantage, when the controller cannot tell it from the address.
    #[arg(long, requires = "controller")]
    pub region: Option<String>,
}
