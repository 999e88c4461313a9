//! `meridian check`: validate config files in the spirit of `nginx -t`.

use std::path::PathBuf;

use anyhow::bail;

/// Arguments of `meridian check`.
#[derive(clap::Args)]
pub struct Args {
    /// Config files to check.
    #[arg(short = 'c', long = "config", required = true, num_args = 1..)]
    files: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut failed = 0;
    for file in &args.files {
        match meridian_config::load(file) {
            Ok(loaded) => {
                let c = &loaded.config;
                let problems = dnssec_problems(&loaded);
                if !problems.is_empty() {
                    failed += 1;
                    for line in problems {
                        eprintln!("{}: {line}", file.display());
                    }
                    continue;
                }
                println!(
                    "{}: ok ({}, {}, {}, {})",
                    file.display(),
                    count(c.regions.len(), "region"),
                    count(c.clusters.len(), "cluster"),
                    count(c.apps.len(), "app"),
                    count(c.zones.len(), "zone"),
                );
            }
            Err(err) => {
                failed += 1;
                for line in err.diagnostics() {
                    eprintln!("{line}");
                }
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} config files failed the check",
            args.files.len()
        );
    }
    Ok(())
}

/// The signed zones' key files: readable, owner-only, a supported algorithm, for this
/// zone, and at least one key-signing key (the parent's DS points at one); the TSIG
/// secret: readable, owner-only, base64 of at least 16 bytes.
fn dnssec_problems(loaded: &meridian_config::LoadedConfig) -> Vec<String> {
    let base = loaded.file.parent().unwrap_or(std::path::Path::new("."));
    let mut problems = Vec::new();
    if let Some(tsig) = &loaded.config.dns.tsig
        && let Err(err) =
            meridian_dns::tsig::TsigKey::load(&tsig.name, &base.join(&tsig.secret_file))
    {
        problems.push(format!("dns.tsig.secret_file: {err}"));
    }
    for (i, zone) in loaded.config.zones.iter().enumerate() {
        let Some(dnssec) = &zone.dnssec else { continue };
        let apex = zone.name.trim_end_matches('.').to_ascii_lowercase();
        let mut ksk = false;
        for (k, key) in dnssec.keys.iter().enumerate() {
            let field = format!("zones[{i}].dnssec.keys[{k}].file");
            match meridian_dns::dnssec::SigningKey::load(&base.join(&key.file)) {
                Ok(loaded) if loaded.zone() != apex => problems.push(format!(
                    "{field}: the key is for zone {}, not {apex}",
                    loaded.zone()
                )),
                Ok(loaded) => ksk |= loaded.is_ksk(),
                Err(err) => problems.push(format!("{field}: {err}")),
            }
        }
        if !ksk && !dnssec.keys.is_empty() && problems.is_empty() {
            problems.push(format!(
                "zones[{i}].dnssec.keys: no key-signing key (flags 257); make one with `meridian dnssec keygen {apex}`"
            ));
        }
    }
    problems
}

/// `1 app`, `2 apps`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
