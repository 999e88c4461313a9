//! TLS on the controller's port (`controller.tls`): the certificate it presents, and with
//! `client_ca` mutual TLS, where every client must present a certificate of that CA and the
//! certificate's names become the vantages its holder may report as.
//!
//! The files are checked every `reload_interval`; changed files build a new server config
//! that every later connection uses (connections already open keep theirs), so a renewed
//! certificate needs no restart. Handshakes run in tasks of their own, with a deadline, so
//! a client that stalls in its handshake holds up no other.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use axum::extract::connect_info::Connected;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use axum::serve::IncomingStream;
use meridian_config::controller::ControllerTlsConfig;
use meridian_subscriber::tls::ClientTls;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

use crate::error::Error;

/// How long a client has for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of a connection: its address and, over mutual TLS, the names of
/// its verified client certificate.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The TCP peer.
    pub addr: SocketAddr,
    /// The subject common name(s) and DNS names of the verified client certificate; `None`
    /// when the client presented none (plain HTTP, or TLS without `client_ca`).
    pub cert_names: Option<Arc<[String]>>,
    /// The client presented a certificate with this controller's own names: another
    /// replica (they share one certificate), which may forward the names of the client it
    /// forwards for (see `leadership::forward`).
    pub replica: bool,
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            cert_names: None,
            replica: false,
        }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// The header a replica forwarding a request to the leader sets to the names of the client
/// certificate it verified (a JSON array); taken only from another replica.
pub(crate) const FORWARDED_NAMES: &str = "meridian-forwarded-client-names";

/// Who calls: the request's headers (for its bearer token) and its connection.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The request headers.
    pub headers: HeaderMap,
    /// The connection; `None` when the router is served without connection info.
    pub peer: Option<Peer>,
}

impl Caller {
    /// The caller of a request.
    pub(crate) fn of(parts: &Parts) -> Self {
        Self {
            headers: parts.headers.clone(),
            peer: parts
                .extensions
                .get::<axum::extract::ConnectInfo<Peer>>()
                .map(|c| c.0.clone()),
        }
    }

    /// The names of the client certificate this request speaks with: the connection's, or,
    /// from another replica, the ones it forwards for (none when it forwards none).
    pub(crate) fn certificate_names(&self) -> Option<Vec<String>> {
        let peer = self.peer.as_ref()?;
        let forwarded = peer
            .replica
            .then(|| self.headers.get(FORWARDED_NAMES))
            .flatten()
            .and_then(|v| serde_json::from_slice(v.as_bytes()).ok());
        forwarded.or_else(|| peer.cert_names.as_ref().map(|names| names.to_vec()))
    }
}

impl std::ops::Deref for Caller {
    type Target = HeaderMap;
    fn deref(&self) -> &Self::Target {
        &self.headers
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Caller::of(parts))
    }
}

/// The names a certificate gives its holder: every subject common name and every DNS
/// subject alternative name. A certificate that cannot be parsed names nobody.
pub fn certificate_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(str::to_string)
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push((*dns).to_string());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// The files of `controller.tls`, resolved against the config file's directory.
#[derive(Clone, Debug)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

impl Files {
    fn stamps(&self) -> Vec<Option<SystemTime>> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
            .collect()
    }
}

fn tls_error(message: String) -> Error {
    Error::Tls(message)
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
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

fn build(files: &Files, provider: &Arc<CryptoProvider>) -> Result<Loaded, Error> {
    let chain = read_certs(&files.cert, "controller.tls.cert")?;
    let own_names = certificate_names(&chain[0]);
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        tls_error(format!(
            "reading controller.tls.key {}: {e}",
            files.key.display()
        ))
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca, "controller.tls.client_ca")? {
                roots.add(cert).map_err(|e| {
                    tls_error(format!("controller.tls.client_ca {}: {e}", ca.display()))
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| {
                        tls_error(format!("controller.tls.client_ca {}: {e}", ca.display()))
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        tls_error(format!(
            "controller.tls.cert {} with controller.tls.key {}: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        own_names,
    })
}

/// A server config with the names of the certificate it presents.
#[derive(Debug)]
struct Loaded {
    config: Arc<ServerConfig>,
    own_names: Vec<String>,
}

/// The server config in force, replaced whole when the files change.
#[derive(Debug)]
pub(crate) struct ServerTls {
    files: Files,
    reload_interval: Duration,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<Loaded>,
}

impl ServerTls {
    /// Loads `controller.tls`; paths are relative to `base`, the config file's directory.
    pub(crate) fn load(tls: &ControllerTlsConfig, base: &Path) -> Result<Arc<Self>, Error> {
        let files = Files {
            cert: base.join(&tls.cert),
            key: base.join(&tls.key),
            client_ca: tls.client_ca.as_ref().map(|ca| base.join(ca)),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = build(&files, &provider)?;
        if files.client_ca.is_none() {
            warn!(
                "controller.tls has no client_ca: clients are not asked for certificates, so only tokens tell vantages apart"
            );
        }
        Ok(Arc::new(Self {
            files,
            reload_interval: tls.reload_interval,
            provider,
            current: ArcSwap::from_pointee(loaded),
        }))
    }

    /// How this replica reaches another (a follower the leader): its own certificate as
    /// the client certificate, checked against `client_ca` (replicas share one
    /// certificate, so the CA of its clients is the CA of its peers).
    pub(crate) fn peer_client(&self) -> ClientTls {
        ClientTls {
            ca: self.files.client_ca.clone(),
            cert: Some(self.files.cert.clone()),
            key: Some(self.files.key.clone()),
        }
    }

    /// Checks the files every `reload_interval` and swaps in a new config when they
    /// changed and load; runs until dropped.
    pub(crate) async fn reload(self: Arc<Self>) {
        let mut seen = self.files.stamps();
        let mut tick = tokio::time::interval(self.reload_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = self.files.stamps();
            if now == seen {
                continue;
            }
            match build(&self.files, &self.provider) {
                Ok(loaded) => {
                    self.current.store(Arc::new(loaded));
                    seen = now;
                    info!("controller TLS certificates reloaded");
                }
                // Keep the previous files in force; try again on the next change (a
                // writer may be half-way through replacing them).
                Err(err) => warn!(%err, "controller TLS certificates not reloaded"),
            }
        }
    }

    /// A listener that hands axum only connections whose handshake succeeded.
    pub(crate) fn listener(self: &Arc<Self>, tcp: TcpListener) -> std::io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(accept_loop(tcp, self.clone(), tx));
        Ok(TlsListener { rx, local })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    tls: Arc<ServerTls>,
    tx: mpsc::Sender<(TlsStream<TcpStream>, Peer)>,
) {
    loop {
        let (stream, addr) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    warn!(error = %err, "controller: accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            // The server stopped: release the port.
            () = tx.closed() => return,
        };
        let _ = stream.set_nodelay(true);
        let loaded = tls.current.load_full();
        let acceptor = tokio_rustls::TlsAcceptor::from(loaded.config.clone());
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(conn)) => {
                    let names = conn
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|leaf| certificate_names(leaf));
                    let replica = names
                        .as_ref()
                        .is_some_and(|n| !n.is_empty() && *n == loaded.own_names);
                    let peer = Peer {
                        addr,
                        cert_names: names.map(Arc::from),
                        replica,
                    };
                    let _ = tx.send((conn, peer)).await;
                }
                // A client without a valid certificate ends here, refused in the handshake.
                Ok(Err(err)) => {
                    warn!(peer = %addr, error = %err, "controller: TLS handshake refused")
                }
                Err(_) => debug!(peer = %addr, "controller: TLS handshake timed out"),
            }
        });
    }
}

/// Connections that completed their TLS handshake, for `axum::serve`.
pub(crate) struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(accepted) => accepted,
            // The accept loop only ends once this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            cert_names: None,
            replica: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_names_are_the_common_name_and_dns_names() {
        let mut params = rcgen::CertificateParams::new(vec!["proxy-eu-1.meridian".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "proxy-eu-1");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            certificate_names(cert.der()),
            vec!["proxy-eu-1".to_string(), "proxy-eu-1.meridian".to_string()]
        );
        assert!(certificate_names(b"not a certificate").is_empty());
    }
}
