//! Probes against real servers on loopback: HTTP status and body match and the Host header,
//! TCP connect, HTTPS with SNI and with verification on and off, timeouts, and the runner.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use meridian_config::{ProbeConfig, ProbeKind};
use meridian_subscriber::probe::{Observation, ProbeJob, Prober, TlsConnectors, check};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

#[derive(Default)]
struct Seen {
    hosts: Vec<String>,
    sni: Vec<Option<String>>,
}

/// An HTTP (or, with a certificate, HTTPS) server answering every request with `status`
/// and `body`, recording Host headers and SNI names.
async fn server(
    status: u16,
    body: &'static str,
    tls: Option<(CertificateDer<'static>, PrivateKeyDer<'static>)>,
) -> (SocketAddr, Arc<Mutex<Seen>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let acceptor = tls.map(|(cert, key)| {
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let seen_task = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen_task.clone();
            let seen_sni = seen_task.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let host = req
                            .headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        seen.lock().unwrap().hosts.push(host);
                        let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
                        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(response)
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                    Some(acceptor) => {
                        let Ok(tls) = acceptor.accept(stream).await else {
                            return;
                        };
                        let sni = tls.get_ref().1.server_name().map(str::to_string);
                        seen_sni.lock().unwrap().sni.push(sni);
                        let _ = http.serve_connection(TokioIo::new(tls), service).await;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn probe(kind: ProbeKind) -> ProbeConfig {
    ProbeConfig {
        name: "t".into(),
        kind,
        path: "/healthz".into(),
        host: None,
        expect_status: vec![200],
        expect_body: None,
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        rise: 2,
        fall: 2,
        sni: None,
        tls_verify: true,
    }
}

fn cert(name: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    (
        ck.cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der())),
    )
}

/// A loopback port with nothing listening.
async fn closed_port() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn http_status_body_and_host() {
    let tls = TlsConnectors::new(&[]);
    let (addr, seen) = server(200, "status: all good", None).await;
    let mut p = probe(ProbeKind::Http);
    let out = check(&p, "shop.test", addr, &tls).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(out.detail, "status 200");
    assert_eq!(seen.lock().unwrap().hosts, ["shop.test"]);

    p.expect_body = Some("all good".into());
    assert!(check(&p, "shop.test", addr, &tls).await.ok);
    p.expect_body = Some("degraded".into());
    let out = check(&p, "shop.test", addr, &tls).await;
    assert!(!out.ok);
    assert!(out.detail.contains("lacks \"degraded\""), "{}", out.detail);

    let (addr503, _) = server(503, "down", None).await;
    let out = check(&probe(ProbeKind::Http), "shop.test", addr503, &tls).await;
    assert!(!out.ok);
    assert!(out.detail.contains("status 503"), "{}", out.detail);
    let mut accept_503 = probe(ProbeKind::Http);
    accept_503.expect_status = vec![200, 503];
    assert!(check(&accept_503, "shop.test", addr503, &tls).await.ok);
}

#[tokio::test]
async fn tcp_connect_and_refusal_and_timeout() {
    let tls = TlsConnectors::new(&[]);
    let (addr, _) = server(200, "", None).await;
    let p = probe(ProbeKind::Tcp);
    assert!(check(&p, "x", addr, &tls).await.ok);
    let out = check(&p, "x", closed_port().await, &tls).await;
    assert!(!out.ok);
    assert!(out.detail.starts_with("connect "), "{}", out.detail);

    // A server that accepts but never answers: the probe times out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let mut p = probe(ProbeKind::Http);
    p.timeout = Duration::from_millis(150);
    let out = check(&p, "x", silent_addr, &tls).await;
    assert!(!out.ok);
    assert!(out.detail.contains("timed out"), "{}", out.detail);
    assert!(out.latency < Duration::from_millis(400));
    drop(silent);
}

#[tokio::test]
async fn https_with_sni_and_verification() {
    let (cert_der, key) = cert("probe.test");
    let (addr, seen) = server(200, "tls ok", Some((cert_der.clone(), key))).await;

    // Verification off: a self-signed certificate passes; SNI defaults to the Host.
    let tls = TlsConnectors::new(&[]);
    let mut p = probe(ProbeKind::Https);
    p.tls_verify = false;
    let out = check(&p, "probe.test", addr, &tls).await;
    assert!(out.ok, "{out:?}");
    // An explicit SNI is sent instead.
    p.sni = Some("other.test".into());
    assert!(check(&p, "probe.test", addr, &tls).await.ok);
    assert_eq!(
        seen.lock().unwrap().sni,
        [
            Some("probe.test".to_string()),
            Some("other.test".to_string())
        ]
    );

    // Verification on: refused by the system roots, accepted when the root is trusted,
    // and refused for a name the certificate does not carry.
    let mut p = probe(ProbeKind::Https);
    let out = check(&p, "probe.test", addr, &tls).await;
    assert!(!out.ok);
    assert!(out.detail.contains("TLS handshake"), "{}", out.detail);
    let trusting = TlsConnectors::new(&[cert_der]);
    assert!(check(&p, "probe.test", addr, &trusting).await.ok);
    p.sni = Some("wrong.test".into());
    let out = check(&p, "probe.test", addr, &trusting).await;
    assert!(!out.ok, "{out:?}");
}

#[tokio::test]
async fn the_runner_applies_fall_and_rise_per_target() {
    let (up, _) = server(200, "", None).await;
    let down = closed_port().await;
    let observations: Arc<Mutex<Vec<Observation>>> = Arc::default();
    let sink_obs = observations.clone();
    let job = |cluster: &str, endpoints: Vec<SocketAddr>| ProbeJob {
        app: "shop".into(),
        cluster: cluster.into(),
        probe: probe(ProbeKind::Http),
        host: "shop.test".into(),
        endpoints,
    };
    let prober = Prober::start(
        vec![
            job("up", vec![up]),
            job("down", vec![down]),
            job("mixed", vec![down, up]),
        ],
        TlsConnectors::new(&[]),
        Arc::new(move |o| sink_obs.lock().unwrap().push(o)),
    );
    assert_eq!(prober.len(), 3);
    tokio::time::sleep(Duration::from_millis(650)).await;
    drop(prober);
    let obs = observations.lock().unwrap().clone();
    let of = |c: &str| {
        obs.iter()
            .filter(|o| o.cluster == c)
            .cloned()
            .collect::<Vec<_>>()
    };
    let (up_obs, down_obs, mixed) = (of("up"), of("down"), of("mixed"));
    assert!(up_obs.len() >= 4, "{up_obs:?}");
    assert!(up_obs.iter().all(|o| o.healthy && o.last_ok));
    // Down: never healthy, from the first round on (the first check decides).
    assert!(down_obs.iter().all(|o| !o.healthy), "{down_obs:?}");
    // One endpoint of two answering keeps the target healthy.
    assert!(mixed.iter().all(|o| o.healthy && o.last_ok), "{mixed:?}");
    assert!(mixed[0].detail.contains("status 200") && mixed[0].detail.contains("connect"));
}
