//! `meridian certs`: a small CA and the certificates of the parts, for mutual TLS between
//! the controller and its proxies and DNS servers where no cert-manager issues them.
//!
//! Layout (cert-manager's Secret keys, so a directory can become a Secret as it is):
//!
//! ```text
//! DIR/ca.crt, DIR/ca.key                      the CA (created once, then reused)
//! DIR/controller/{tls.crt,tls.key,ca.crt}     the controller's server certificate
//! DIR/NAME/{tls.crt,tls.key,ca.crt}           a client certificate per --client NAME
//! ```
//!
//! Keys are written 0600. An existing certificate is not overwritten without `--force`.

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Arguments of `meridian certs`.
#[derive(clap::Args)]
pub struct Args {
    /// Directory the files go to (created if missing).
    #[arg(long)]
    dir: PathBuf,
    /// A name or address clients reach the controller at (repeatable): a subject
    /// alternative name of its certificate, such as `controller.example.net` or
    /// `10.0.0.5`. With at least one, the controller's certificate is written.
    #[arg(long = "controller-name", value_name = "NAME")]
    controller_names: Vec<String>,
    /// A client certificate for this vantage (repeatable): its subject common name, which
    /// is the `--vantage` its holder may report as (a name ending in `*` lets it report as
    /// every name with that prefix, for pods sharing one Secret).
    #[arg(long = "client", value_name = "VANTAGE")]
    clients: Vec<String>,
    /// Validity of the new certificates, in days (the CA's, when created, is ten times
    /// this).
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Overwrite certificates that exist already (the CA is always reused when present).
    #[arg(long)]
    force: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.controller_names.is_empty() && args.clients.is_empty() {
        bail!("nothing to do: give --controller-name NAME and/or --client VANTAGE");
    }
    if args.days == 0 {
        bail!("--days must be at least 1");
    }
    for name in &args.clients {
        check_vantage(name)?;
    }
    let mut parts = Vec::new();
    if !args.controller_names.is_empty() {
        parts.push("controller".to_string());
    }
    parts.extend(args.clients.iter().map(|name| name.replace('*', "_")));
    for part in &parts {
        let dir = args.dir.join(part);
        if !args.force
            && let Some(existing) = ["tls.crt", "tls.key"]
                .iter()
                .map(|f| dir.join(f))
                .find(|f| f.exists())
        {
            bail!(
                "{} exists already; not overwriting it (--force replaces it)",
                existing.display()
            );
        }
    }
    create_dir(&args.dir)?;
    let (ca_pem, issuer) = ca(&args.dir, args.days)?;
    if !args.controller_names.is_empty() {
        let mut params = leaf_params(args.days, "meridian-controller");
        params.subject_alt_names = args
            .controller_names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(name.clone().try_into().with_context(
                    || format!("--controller-name {name:?} is not a DNS name or IP address"),
                )?)),
            })
            .collect::<anyhow::Result<_>>()?;
        // Server, and client too: a follower replica presents it to the leader.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        write_leaf(&args.dir.join("controller"), &params, &issuer, &ca_pem)?;
    }
    for name in &args.clients {
        let mut params = leaf_params(args.days, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let dir = args.dir.join(name.replace('*', "_"));
        write_leaf(&dir, &params, &issuer, &ca_pem)?;
    }
    println!("CA: {}", args.dir.join("ca.crt").display());
    for part in &parts {
        println!(
            "{part}: {} (tls.crt, tls.key, ca.crt)",
            args.dir.join(part).display()
        );
    }
    Ok(())
}

/// A vantage name as `controller.tokens[].vantages` takes it.
fn check_vantage(name: &str) -> anyhow::Result<()> {
    let stem = name.strip_suffix('*').unwrap_or(name);
    if stem.is_empty()
        || stem.len() > 128
        || stem
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '*' || c == '/')
    {
        bail!(
            "--client {name:?} is not a vantage name (1 to 128 characters, no whitespace or `/`, `*` only at the end)"
        );
    }
    Ok(())
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Writes a file; keys (`secret`) are created 0600, and nothing else can read them even
/// for a moment.
fn write_file(path: &Path, text: &str, secret: bool) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // A little in the past: a host whose clock is slightly behind still accepts it.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

fn leaf_params(days: u32, common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, days);
    params
}

/// The CA in `dir`: loaded when `ca.crt` and `ca.key` exist, else created.
fn ca(dir: &Path, days: u32) -> anyhow::Result<(String, Issuer<'static, KeyPair>)> {
    let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
    if cert_path.exists() || key_path.exists() {
        let pem = std::fs::read_to_string(&cert_path)
            .with_context(|| format!("reading the CA {}", cert_path.display()))?;
        let key = std::fs::read_to_string(&key_path)
            .with_context(|| format!("reading the CA key {}", key_path.display()))?;
        let key = KeyPair::from_pem(&key)
            .with_context(|| format!("the CA key {}", key_path.display()))?;
        let issuer = Issuer::from_ca_cert_pem(&pem, key)
            .with_context(|| format!("the CA {}", cert_path.display()))?;
        println!("reusing the CA in {}", dir.display());
        return Ok((pem, issuer));
    }
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "Meridian CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, days.saturating_mul(10));
    let key = KeyPair::generate().context("generating the CA key")?;
    let cert = params.self_signed(&key).context("signing the CA")?;
    write_file(&key_path, &key.serialize_pem(), true)?;
    write_file(&cert_path, &cert.pem(), false)?;
    Ok((cert.pem(), Issuer::new(params, key)))
}

fn write_leaf(
    dir: &Path,
    params: &CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
    ca_pem: &str,
) -> anyhow::Result<()> {
    create_dir(dir)?;
    let key = KeyPair::generate().context("generating a key")?;
    let cert = params
        .signed_by(&key, issuer)
        .context("signing a certificate")?;
    write_file(&dir.join("tls.key"), &key.serialize_pem(), true)?;
    write_file(&dir.join("tls.crt"), &cert.pem(), false)?;
    write_file(&dir.join("ca.crt"), ca_pem, false)?;
    Ok(())
}
