//! TLS towards the controller: the CA its certificate must chain to, and the client
//! certificate a subscriber (or an operator command) presents when the controller asks for
//! one (mutual TLS). The files are read again when they change, so a renewed certificate is
//! used from the next connection on without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::ClientConfig;
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

use crate::error::Error;

/// How often, at most, the files are checked for changes (on a new connection).
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The PEM files of a TLS client of the controller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// CA certificate(s) the controller's certificate must chain to (cert-manager's
    /// `ca.crt`). Needed for an `https://` controller.
    pub ca: Option<PathBuf>,
    /// Client certificate chain presented to the controller (`tls.crt`).
    pub cert: Option<PathBuf>,
    /// Its private key (`tls.key`).
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// True when nothing is configured.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    fn files(&self) -> impl Iterator<Item = &Path> {
        [&self.ca, &self.cert, &self.key]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }

    /// The modification time of every file, to notice a change.
    fn stamps(&self) -> Vec<Option<SystemTime>> {
        self.files()
            .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
            .collect()
    }

    /// A rustls client config from the files.
    pub(crate) fn build(&self) -> Result<ClientConfig, Error> {
        let Some(ca) = &self.ca else {
            return Err(tls_error(
                "an https:// controller needs the CA that signed its certificate (--controller-ca)",
            ));
        };
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certs(ca, "the controller CA")? {
            roots
                .add(cert)
                .map_err(|e| tls_error(format!("the controller CA {}: {e}", ca.display())))?;
        }
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(e.to_string()))?
            .with_root_certificates(roots);
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = read_certs(cert, "the client certificate")?;
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                    tls_error(format!("reading the client key {}: {e}", key.display()))
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| tls_error(format!("client certificate and key: {e}")))
            }
            (None, None) => Ok(builder.with_no_client_auth()),
            _ => Err(tls_error(
                "a client certificate needs both its certificate and its key file",
            )),
        }
    }
}

fn tls_error(message: impl Into<String>) -> Error {
    Error::Tls(message.into())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate of a PEM file; an empty file is an error.
pub(crate) fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls_error(format!("reading {what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(tls_error(format!(
            "{what} {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// A client config that follows its files: checked at most once a second, when a
/// connection is opened; a change that fails to load keeps the previous config.
#[derive(Debug)]
pub(crate) struct ReloadingClientConfig {
    files: ClientTls,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    checked: Instant,
    stamps: Vec<Option<SystemTime>>,
    config: Arc<ClientConfig>,
}

impl ReloadingClientConfig {
    /// Loads the files; an error here is the caller's to report (a bad path, a wrong key).
    pub(crate) fn new(files: ClientTls) -> Result<Self, Error> {
        let stamps = files.stamps();
        let config = Arc::new(files.build()?);
        Ok(Self {
            files,
            state: Mutex::new(Loaded {
                checked: Instant::now(),
                stamps,
                config,
            }),
        })
    }

    /// The config for a new connection.
    pub(crate) fn current(&self) -> Arc<ClientConfig> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.checked.elapsed() >= RELOAD_CHECK {
            state.checked = Instant::now();
            let stamps = self.files.stamps();
            if stamps != state.stamps {
                match self.files.build() {
                    Ok(config) => {
                        state.config = Arc::new(config);
                        state.stamps = stamps;
                        info!("controller TLS files reloaded");
                    }
                    // A writer may be half-way through replacing the files: try again on
                    // the next change, meanwhile keep what worked.
                    Err(err) => warn!(%err, "controller TLS files not reloaded"),
                }
            }
        }
        state.config.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn missing_and_half_configured_files_are_clear_errors() {
        let dir = std::env::temp_dir().join(format!("meridian-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let no_ca = ClientTls::default().build().unwrap_err().to_string();
        assert!(no_ca.contains("--controller-ca"), "{no_ca}");
        let missing = ClientTls {
            ca: Some(dir.join("nope.crt")),
            ..Default::default()
        }
        .build()
        .unwrap_err()
        .to_string();
        assert!(missing.contains("reading the controller CA"), "{missing}");
        assert!(missing.contains("nope.crt"), "{missing}");
        let empty = write(&dir, "empty.crt", "");
        let err = ClientTls {
            ca: Some(empty),
            ..Default::default()
        }
        .build()
        .unwrap_err()
        .to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let ca = write(&dir, "ca.crt", &ca.cert.pem());
        let half = ClientTls {
            ca: Some(ca),
            cert: Some(dir.join("client.crt")),
            key: None,
        }
        .build()
        .unwrap_err()
        .to_string();
        assert!(half.contains("both its certificate and its key"), "{half}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
