//! One module per subcommand: argument types and the call into the owning crate.

pub mod certs;
pub mod check;
pub mod controller;
pub mod crds;
pub mod demo;
pub mod dns;
pub mod dnssec;
pub mod operator;
pub mod plan;
pub mod proxy;
pub mod table;
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
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl FollowArgs {
    /// A client of the controller (`--controller` must be set), with the TLS files.
    pub fn client(
        &self,
        token: Option<String>,
    ) -> anyhow::Result<meridian_subscriber::http::ControllerClient> {
        use anyhow::Context;
        let controller = self.controller.as_deref().unwrap_or_default();
        meridian_subscriber::http::ControllerClient::with_tls(
            controller,
            token,
            &self.tls.client_tls(),
        )
        .with_context(|| format!("the controller {controller}"))
    }

    /// The vantage name: `--vantage`, else the client certificate's name (the one the
    /// controller lets it report as), else `fallback`.
    pub fn vantage_name(&self, fallback: String) -> String {
        self.vantage
            .clone()
            .or_else(|| self.tls.certificate_name())
            .unwrap_or(fallback)
    }
}

/// TLS towards an `https://` controller.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// Directory with the controller's CA (`ca.crt`) and, when the controller asks for a
    /// client certificate, this part's certificate and key (`tls.crt`, `tls.key`): the
    /// layout of a cert-manager Secret and of `meridian certs`. Re-read when the files
    /// change.
    #[arg(long, env = "MERIDIAN_TLS_DIR")]
    pub tls_dir: Option<std::path::PathBuf>,
}

impl TlsArgs {
    /// The files in `--tls-dir`; a missing `tls.crt` means no client certificate.
    pub fn client_tls(&self) -> meridian_subscriber::tls::ClientTls {
        let Some(dir) = &self.tls_dir else {
            return Default::default();
        };
        let cert = dir.join("tls.crt");
        let with_cert = cert.exists() || dir.join("tls.key").exists();
        meridian_subscriber::tls::ClientTls {
            ca: Some(dir.join("ca.crt")),
            cert: with_cert.then_some(cert),
            key: with_cert.then(|| dir.join("tls.key")),
        }
    }

    /// The first name of the client certificate, unless it is a pattern (`proxy-*`).
    pub fn certificate_name(&self) -> Option<String> {
        use rustls_pki_types::pem::PemObject;
        let cert = self.client_tls().cert?;
        let der = rustls_pki_types::CertificateDer::from_pem_file(cert).ok()?;
        meridian_controller::tls::certificate_names(&der)
            .into_iter()
            .find(|name| !name.ends_with('*'))
    }
}
