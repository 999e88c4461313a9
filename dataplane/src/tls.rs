//! TLS termination: certificates chosen by SNI name, ALPN h2 and http/1.1, and reloading
//! of changed certificate files without a restart.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use meridian_config::proxy::TlsConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::Error;

/// The certificates in force, by SNI name.
#[derive(Debug, Default)]
struct Certs {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Wildcards by the suffix after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

/// Picks a certificate by SNI name; swapped whole on reload, so a handshake sees one set.
#[derive(Debug)]
pub(crate) struct CertResolver {
    certs: ArcSwap<Certs>,
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let certs = self.certs.load();
        let Some(name) = hello.server_name() else {
            return certs.default.clone();
        };
        let name = name.to_ascii_lowercase();
        if let Some(cert) = certs.exact.get(&name) {
            return Some(cert.clone());
        }
        name.match_indices('.')
            .find_map(|(dot, _)| certs.wildcard.get(&name[dot + 1..]).cloned())
            .or_else(|| certs.default.clone())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(config: &TlsConfig, provider: &CryptoProvider) -> Result<Certs, Error> {
    let mut certs = Certs::default();
    for (i, entry) in config.certificates.iter().enumerate() {
        let what = |message: String| {
            Error::Tls(format!(
                "proxy.tls.certificates[{i}] ({}): {message}",
                entry.cert.display()
            ))
        };
        let chain = CertificateDer::pem_file_iter(&entry.cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|err| what(format!("reading the certificate chain: {err}")))?;
        if chain.is_empty() {
            return Err(what("the file holds no certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_file(&entry.key)
            .map_err(|err| what(format!("reading the key {}: {err}", entry.key.display())))?;
        let key = Arc::new(
            CertifiedKey::from_der(chain, key, provider)
                .map_err(|err| what(format!("certificate and key: {err}")))?,
        );
        if certs.default.is_none() {
            certs.default = Some(key.clone());
        }
        for name in &entry.names {
            let name = name.to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(suffix) => certs.wildcard.insert(suffix.to_string(), key.clone()),
                None => certs.exact.insert(name, key.clone()),
            };
        }
    }
    Ok(certs)
}

/// The modification times of every certificate and key file, to notice changes.
fn stamps(config: &TlsConfig) -> Vec<Option<SystemTime>> {
    config
        .certificates
        .iter()
        .flat_map(|c| [&c.cert, &c.key])
        .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
        .collect()
}

/// The acceptor for the TLS listener, and a task that reloads changed certificates.
pub(crate) fn acceptor(
    config: &TlsConfig,
) -> Result<(tokio_rustls::TlsAcceptor, impl Future<Output = ()> + use<>), Error> {
    let provider = provider();
    let resolver = Arc::new(CertResolver {
        certs: ArcSwap::from_pointee(load(config, &provider)?),
    });
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|err| Error::Tls(err.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let config = config.clone();
    let reload = async move {
        let mut seen = stamps(&config);
        let mut tick = tokio::time::interval(config.reload_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = stamps(&config);
            if now == seen {
                continue;
            }
            match load(&config, &provider) {
                Ok(certs) => {
                    resolver.certs.store(Arc::new(certs));
                    seen = now;
                    tracing::info!("TLS certificates reloaded");
                }
                // Keep serving the previous certificates; try again on the next change
                // (a writer may be half-way through replacing the files).
                Err(err) => tracing::warn!(%err, "TLS certificates not reloaded"),
            }
        }
    };
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(server)), reload))
}
