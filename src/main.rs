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
    /// Run controller, DNS and proxy in one process (the embedded demo config by default).
    Up(cmd::up::Args),
    /// Validate config files; exit non-zero naming file, line and field of every problem.
    Check(cmd::check::Args),
    /// Run the controller: probes, verdicts, routing tables, watch streams, operator API.
    Controller(cmd::controller::Args),
    /// Show clusters and apps with live health, weights and vantage votes.
    Status(cmd::operator::StatusArgs),
    /// Set (or --reset) a target's weight.
    Weight(cmd::operator::WeightArgs),
    /// Drain a cluster (or one app's target in it) gradually out of traffic.
    Drain(cmd::operator::DrainArgs),
    /// End a drain: the targets ramp back in over their slow start.
    Undrain(cmd::operator::DrainArgs),
    /// Which target the current table chooses for a hostname and a client address, and why.
    Explain(cmd::operator::ExplainArgs),
    /// Failover history: verdict changes with cause and vantage votes.
    History(cmd::operator::LogArgs),
    /// The audit log: every operator change, who and when.
    Audit(cmd::operator::LogArgs),
    /// What if a cluster fails, is drained or a peak arrives: weights, traffic, replicas, cost.
    Plan(cmd::plan::Args),
    /// Make a stand-in cluster of `meridian up --demo` fail or recover.
    Demo(cmd::demo::Args),
    /// Create a small CA and certificates for mutual TLS between controller, proxies and DNS.
    Certs(cmd::certs::Args),
    /// DNSSEC keys: `keygen` a zone's signing key, print the `ds` record for the parent.
    Dnssec(cmd::dnssec::Args),
    /// Print the CustomResourceDefinitions (Kubernetes mode) as YAML.
    Crds(cmd::crds::Args),
    /// Run the authoritative GeoDNS server (UDP and TCP) for the config's zones.
    Dns(cmd::dns::Args),
    /// Run the L7 edge proxy, serving the config's table (SIGTERM drains gracefully).
    Proxy(cmd::proxy::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let server = matches!(
        cli.command,
        Command::Up(_) | Command::Controller(_) | Command::Dns(_) | Command::Proxy(_)
    );
    if !server {
        cmd::die_quietly_on_closed_stdout();
    }
    cmd::init_tracing(cli.log_format);
    let result = match cli.command {
        Command::Up(args) => cmd::up::run(args),
        Command::Check(args) => cmd::check::run(args),
        Command::Controller(args) => cmd::controller::run(args),
        Command::Status(args) => cmd::operator::status(args),
        Command::Weight(args) => cmd::operator::weight(args),
        Command::Drain(args) => cmd::operator::drain(args, true),
        Command::Undrain(args) => cmd::operator::drain(args, false),
        Command::Explain(args) => cmd::operator::explain(args),
        Command::History(args) => cmd::operator::history(args),
        Command::Audit(args) => cmd::operator::audit(args),
        Command::Plan(args) => cmd::plan::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Certs(args) => cmd::certs::run(args),
        Command::Crds(args) => cmd::crds::run(args),
        Command::Dnssec(args) => cmd::dnssec::run(args),
        Command::Dns(args) => cmd::dns::run(args),
        Command::Proxy(args) => cmd::proxy::run(args),
    };
    cmd::exit(result)
}
