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

/// `1 app`, `2 apps`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
