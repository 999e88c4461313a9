//! The `meridian` binary: parses the command line and hands over to the crates. Nothing more.

mod cmd;

use clap::{Parser, Subcommand};

/// Meridian: global traffic manager and failover data plane.
#[derive(Parser)]
#[command(name = "meridian", version, about, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "MERIDIAN_LOG_FORMAT"
    )]
    log_format: cmd::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate config files; exit non-zero naming file, line and field of every problem.
    Check(cmd::check::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cmd::init_tracing(cli.log_format);
    let result = match cli.command {
        Command::Check(args) => cmd::check::run(args),
    };
    cmd::exit(result)
}
