//! `meridian crds`: print the CustomResourceDefinitions generated from the code.

/// Arguments of `meridian crds`.
#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    print!("{}", meridian_k8s::crds_yaml()?);
    Ok(())
}
