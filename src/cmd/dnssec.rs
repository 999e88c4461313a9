//! `meridian dnssec`: keys for the signed zones. `keygen` writes a key file (0600, never
//! overwritten, the private key never printed); `ds` prints the DS records (and DNSKEYs) the
//! parent zone and validators need, from the keys a config gives a zone or from key files.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use meridian_dns::dnssec::{Algorithm, SigningKey};

/// Arguments of `meridian dnssec`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Create a signing key for a zone and write it to a file readable by its owner only.
    Keygen(KeygenArgs),
    /// Print the DS records for a zone's key-signing keys (and the DNSKEYs with --dnskey).
    Ds(DsArgs),
}

/// Arguments of `meridian dnssec keygen`.
#[derive(clap::Args)]
struct KeygenArgs {
    /// The zone, such as `gslb.example.com`.
    zone: String,
    /// `ecdsap256sha256` (13, the default) or `ed25519` (15).
    #[arg(long, default_value = "ecdsap256sha256")]
    algorithm: String,
    /// A zone-signing key (flags 256), beside a KSK; the default is a key-signing key
    /// (flags 257), which alone is a combined signing key.
    #[arg(long)]
    zsk: bool,
    /// The key file (default: `<zone>.<key tag>.key` in the current directory).
    #[arg(short = 'o', long)]
    out: Option<PathBuf>,
}

/// Arguments of `meridian dnssec ds`.
#[derive(clap::Args)]
struct DsArgs {
    /// The zone.
    zone: String,
    /// Config file whose `zones[].dnssec.keys` give the zone's keys.
    #[arg(short = 'c', long = "config", conflicts_with = "keys")]
    config: Option<PathBuf>,
    /// Key files instead of a config (repeatable).
    #[arg(long = "key", value_name = "FILE")]
    keys: Vec<PathBuf>,
    /// Print the DNSKEY records too (trust anchors for a validator).
    #[arg(long)]
    dnskey: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Keygen(args) => keygen(args),
        Command::Ds(args) => ds(args),
    }
}

fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let Some(algorithm) = Algorithm::parse(&args.algorithm) else {
        bail!(
            "algorithm {:?} is not supported: ecdsap256sha256 (13) or ed25519 (15)",
            args.algorithm
        );
    };
    let zone = args.zone.trim_end_matches('.').to_ascii_lowercase();
    if zone.is_empty() || zone.split('.').any(|l| l.is_empty() || l.len() > 63) {
        bail!("{:?} is not a zone name", args.zone);
    }
    let (key, text) = SigningKey::generate(&zone, algorithm, !args.zsk);
    let path = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("{zone}.{}.key", key.key_tag())));
    SigningKey::write_file(&path, &text)
        .with_context(|| format!("writing the key file {}", path.display()))?;
    println!(
        "{}: {} key {} for {zone}, algorithm {}",
        path.display(),
        if key.is_ksk() { "KSK" } else { "ZSK" },
        key.key_tag(),
        algorithm.number()
    );
    println!("{}", key.dnskey_text());
    if key.is_ksk() {
        println!("{}", key.ds_text());
    }
    Ok(())
}

fn ds(args: DsArgs) -> anyhow::Result<()> {
    let zone = args.zone.trim_end_matches('.').to_ascii_lowercase();
    let files: Vec<PathBuf> = match &args.config {
        Some(config) => {
            let loaded = meridian_config::load(config)
                .map_err(|err| anyhow::anyhow!("{}", err.diagnostics().join("\n")))?;
            let base = config.parent().unwrap_or(Path::new("."));
            let Some(z) = loaded
                .config
                .zones
                .iter()
                .find(|z| z.name.trim_end_matches('.').eq_ignore_ascii_case(&zone))
            else {
                bail!("{}: no zone {zone}", config.display());
            };
            let Some(dnssec) = &z.dnssec else {
                bail!(
                    "{}: zone {zone} is not signed (no dnssec section)",
                    config.display()
                );
            };
            dnssec.keys.iter().map(|k| base.join(&k.file)).collect()
        }
        None => args.keys.clone(),
    };
    if files.is_empty() {
        bail!("no keys: give -c CONFIG or --key FILE");
    }
    let mut printed = 0;
    for file in &files {
        let key = SigningKey::load(file)?;
        if key.zone() != zone {
            bail!(
                "{}: the key is for zone {}, not {zone}",
                file.display(),
                key.zone()
            );
        }
        if key.is_ksk() {
            println!("{}", key.ds_text());
            printed += 1;
        }
        if args.dnskey {
            println!("{}", key.dnskey_text());
        }
    }
    if printed == 0 {
        bail!("zone {zone} has no key-signing key (flags 257), so no DS");
    }
    Ok(())
}
