//! Shared parts of the proxy suites: real upstream HTTP servers on loopback that say which
//! cluster answered, routing tables over them, a proxy in-process, and an HTTP client.

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meridian_config::proxy::ProxyConfig;
use meridian_dataplane::{Proxy, RunningProxy};
use meridian_routing::{
    App, Cluster, FailureMode, Health, Location, Policy, Region, RoutingTable, TableData, Target,
};
use meridian_subscriber::TableCell;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// One stand-in cluster ingress: answers with its name, counts what it served.
pub struct Upstream {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// Requests received, by "METHOD path".
    pub hits: Arc<Mutex<HashMap<String, usize>>>,
    pub total: Arc<AtomicUsize>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// The last request's headers.
    pub last_headers: Arc<Mutex<Option<http::HeaderMap>>>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl Upstream {
    /// Starts a server on 127.0.0.1:0. Paths: `/slow/MS` answers after MS milliseconds,
    /// `/status/CODE` answers CODE, `/fail-here/CODE` answers CODE from this upstream only
    /// when its name is in the `x-fail` request header; anything else 200.
    pub async fn start(name: &'static str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let total = Arc::new(AtomicUsize::new(0));
        let last_headers: Arc<Mutex<Option<http::HeaderMap>>> = Arc::default();
        let tasks: Arc<Mutex<JoinSet<()>>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let c = connections.clone();
        let (h, t, l, ts) = (
            hits.clone(),
            total.clone(),
            last_headers.clone(),
            tasks.clone(),
        );
        tasks.lock().unwrap().spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (h, t, l) = (h.clone(), t.clone(), l.clone());
                let service = service_fn(move |mut req: Request<Incoming>| {
                    let (h, t, l) = (h.clone(), t.clone(), l.clone());
                    async move {
                        if req.uri().path() == "/upgrade" && req.headers().contains_key("upgrade") {
                            // Echoes what it receives after the 101, prefixed with its name.
                            let on = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                if let Ok(upgraded) = on.await {
                                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                                    let mut io = TokioIo::new(upgraded);
                                    let mut buf = [0u8; 1024];
                                    while let Ok(n) = io.read(&mut buf).await {
                                        if n == 0 {
                                            break;
                                        }
                                        let mut out = format!("{name}:").into_bytes();
                                        out.extend_from_slice(&buf[..n]);
                                        if io.write_all(&out).await.is_err() {
                                            break;
                                        }
                                    }
                                }
                            });
                            let mut response = Response::new(Full::new(Bytes::new()));
                            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                            response
                                .headers_mut()
                                .insert("upgrade", http::HeaderValue::from_static("echo"));
                            response
                                .headers_mut()
                                .insert("connection", http::HeaderValue::from_static("upgrade"));
                            return Ok::<_, Infallible>(response);
                        }
                        let key = format!("{} {}", req.method(), req.uri().path());
                        *h.lock().unwrap().entry(key).or_default() += 1;
                        t.fetch_add(1, Ordering::SeqCst);
                        *l.lock().unwrap() = Some(req.headers().clone());
                        let path = req.uri().path().to_string();
                        let fail_here = req
                            .headers()
                            .get("x-fail")
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|v| v.split(',').any(|n| n == name));
                        // Read the whole body so keep-alive works for requests with one.
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let mut status = StatusCode::OK;
                        if let Some(ms) = path.strip_prefix("/slow/") {
                            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0)))
                                .await;
                        } else if let Some(code) = path.strip_prefix("/status/") {
                            status = StatusCode::from_u16(code.parse().unwrap()).unwrap();
                        } else if let Some(code) = path.strip_prefix("/fail-here/")
                            && fail_here
                        {
                            status = StatusCode::from_u16(code.parse().unwrap()).unwrap();
                        }
                        let len = body.map(|b| b.len()).unwrap_or(0);
                        let mut response =
                            Response::new(Full::new(Bytes::from(format!("{name} {len}"))));
                        *response.status_mut() = status;
                        response
                            .headers_mut()
                            .insert("x-cluster", http::HeaderValue::from_static(name));
                        Ok::<_, Infallible>(response)
                    }
                });
                ts.lock().unwrap().spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Upstream {
            name,
            addr,
            hits,
            total,
            connections,
            last_headers,
            tasks,
        }
    }

    /// Kills the server abruptly: the listener and every open connection are dropped.
    pub fn kill(&self) {
        self.tasks.lock().unwrap().abort_all();
    }

    pub fn hits(&self, key: &str) -> usize {
        self.hits.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

/// A stand-in ingress that reads whatever it is sent and never answers: it logs the
/// connections it accepted and the bytes it received, to show what reached an upstream.
pub struct Sink {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    /// Connections open now (the peer has not closed them).
    pub open: Arc<AtomicUsize>,
    pub bytes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    pub async fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let bytes = Arc::new(AtomicUsize::new(0));
        let (c, o, b) = (connections.clone(), open.clone(), bytes.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let (o, b) = (o.clone(), b.clone());
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n) = stream.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        b.fetch_add(n, Ordering::SeqCst);
                    }
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Sink {
            addr,
            connections,
            open,
            bytes,
            task,
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A table with one region, a cluster per upstream and one app `shop` served under
/// `shop.test` and `*.wild.test`, one target per `(upstream, weight, health)`.
pub fn table(
    version: u64,
    targets: &[(&Upstream, u32, Health)],
    failure_mode: FailureMode,
) -> Arc<RoutingTable> {
    let targets: Vec<_> = targets
        .iter()
        .map(|(u, weight, health)| (u.name, u.addr, *weight, *health))
        .collect();
    table_of(version, &targets, failure_mode)
}

/// [`table`] over any ingress addresses: one target per `(cluster, address, weight, health)`.
pub fn table_of(
    version: u64,
    targets: &[(&str, SocketAddr, u32, Health)],
    failure_mode: FailureMode,
) -> Arc<RoutingTable> {
    let location = Location {
        lat: 50.0,
        lon: 8.0,
    };
    let data = TableData {
        version,
        generated_at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
        regions: vec![Region {
            name: "eu".into(),
            location,
        }],
        clusters: targets
            .iter()
            .map(|(name, addr, _, _)| Cluster {
                name: (*name).into(),
                region: "eu".into(),
                provider: "onprem".into(),
                location,
                endpoints: vec![*addr],
            })
            .collect(),
        apps: vec![App {
            name: "shop".into(),
            hostnames: vec!["shop.test".into(), "*.wild.test".into()],
            policy: Policy::Weighted,
            failure_mode,
            dns_ttl: 5,
            geo_preferences: vec![],
            targets: targets
                .iter()
                .map(|(name, _, weight, health)| Target {
                    cluster: (*name).into(),
                    weight: *weight,
                    tier: 0,
                    health: *health,
                })
                .collect(),
        }],
        geo: Default::default(),
        rtt: vec![],
    };
    Arc::new(RoutingTable::new(data).unwrap())
}

/// Proxy settings for tests: ephemeral ports, short timeouts.
pub fn test_config() -> ProxyConfig {
    ProxyConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        connect_timeout: Duration::from_millis(500),
        upstream_timeout: Duration::from_secs(5),
        drain_delay: Duration::ZERO,
        shutdown_grace: Duration::from_secs(5),
        ..ProxyConfig::default()
    }
}

pub async fn start_proxy(
    config: ProxyConfig,
    table: Arc<RoutingTable>,
) -> (RunningProxy, Arc<TableCell>) {
    let cell = Arc::new(TableCell::new());
    cell.store(table);
    let proxy = Proxy::start(config, cell.clone()).await.unwrap();
    (proxy, cell)
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// What a client saw.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub cluster: Option<String>,
    pub body: String,
    pub headers: http::HeaderMap,
}

pub async fn send(
    client: &HttpClient,
    proxy: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> Result<Answer, String> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{proxy}{path}"))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let headers = response.headers().clone();
    let cluster = headers
        .get("x-cluster")
        .map(|v| v.to_str().unwrap().to_string());
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Answer {
        status,
        cluster,
        body: String::from_utf8_lossy(&body).into_owned(),
        headers,
    })
}

pub async fn get(
    client: &HttpClient,
    proxy: SocketAddr,
    host: &str,
    path: &str,
) -> Result<Answer, String> {
    send(client, proxy, "GET", host, path, &[], "").await
}

/// Reads a counter or gauge from the proxy's metrics text (summing matching series).
pub fn metric(text: &str, name: &str, label_filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(label_filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A steady stream of GETs from `clients` concurrent clients until [`SteadyLoad::finish`]:
/// what a failover or a table swap must not disturb.
pub struct SteadyLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    ok: Arc<AtomicUsize>,
    workers: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl SteadyLoad {
    pub fn start(addr: SocketAddr, host: &'static str, path: &'static str, clients: usize) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let workers = (0..clients)
            .map(|_| {
                let (stop, ok) = (stop.clone(), ok.clone());
                tokio::spawn(async move {
                    let client = client();
                    let mut errors = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        match get(&client, addr, host, path).await {
                            Ok(answer) if answer.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(answer) => errors.push(format!("status {}", answer.status)),
                            Err(err) => errors.push(err),
                        }
                    }
                    errors
                })
            })
            .collect();
        SteadyLoad { stop, ok, workers }
    }

    /// Requests answered 200 so far.
    pub fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the clients; returns the 200s and every client error.
    pub async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Vec::new();
        for worker in self.workers {
            errors.extend(worker.await.unwrap());
        }
        (self.ok.load(Ordering::Relaxed), errors)
    }
}

/// Writes `request` and reads until the response head is complete, the peer closes, or
/// 3 s pass. Returns what was read and whether the peer closed.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> (String, bool) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, request)
        .await
        .unwrap();
    read_head(&mut stream, Duration::from_secs(3)).await
}

pub async fn read_head(stream: &mut tokio::net::TcpStream, limit: Duration) -> (String, bool) {
    let deadline = std::time::Instant::now() + limit;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match tokio::time::timeout(left, tokio::io::AsyncReadExt::read(stream, &mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&buf).into(), true),
            Ok(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    return (String::from_utf8_lossy(&buf).into(), false);
                }
            }
            Err(_) => return (String::from_utf8_lossy(&buf).into(), false),
        }
    }
}

/// A self-signed certificate for `names`, written as PEM files under `dir`.
pub fn write_cert(
    dir: &std::path::Path,
    stem: &str,
    names: &[&str],
) -> rustls_pki_types::CertificateDer<'static> {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let generated = rcgen::generate_simple_self_signed(names).unwrap();
    std::fs::write(dir.join(format!("{stem}.crt")), generated.cert.pem()).unwrap();
    std::fs::write(
        dir.join(format!("{stem}.key")),
        generated.signing_key.serialize_pem(),
    )
    .unwrap();
    generated.cert.der().clone()
}

/// Connects trusting only `trusted`, with SNI `name`; the negotiated ALPN protocol.
pub async fn handshake(
    addr: SocketAddr,
    name: &'static str,
    trusted: &rustls_pki_types::CertificateDer<'static>,
) -> Result<
    (
        tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        Vec<u8>,
    ),
    String,
> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(rustls_pki_types::ServerName::try_from(name).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let alpn = tls.get_ref().1.alpn_protocol().unwrap_or_default().to_vec();
    Ok((tls, alpn))
}
