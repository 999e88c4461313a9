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
                    "{}: ok ({} regions, {} clusters, {} apps, {} zones)",
                    file.display(),
                    c.regions.len(),
                    c.clusters.len(),
                    c.apps.len(),
                    c.zones.len()
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
