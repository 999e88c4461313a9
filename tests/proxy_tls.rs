//! TLS termination: the certificate for the client's SNI name, ALPN h2, X-Forwarded-Proto
//! https, and a replaced certificate served without a restart.

mod proxy_support;

use std::sync::Arc;
use std::time::Duration;

use meridian_config::proxy::{CertificateConfig, TlsConfig};
use meridian_routing::{FailureMode, Health};
use proxy_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminates_tls_by_sni_and_reloads_certificates() {
    let dir = std::env::temp_dir().join(format!("meridian-proxy-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let shop = write_cert(&dir, "shop", &["shop.test"]);
    let other = write_cert(&dir, "other", &["*.wild.test"]);
    let a = Upstream::start("alpha").await;
    let table = table(1, &[(&a, 1, Health::Healthy)], FailureMode::FailOpen);
    let config = meridian_config::proxy::ProxyConfig {
        tls: Some(TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            certificates: vec![
                CertificateConfig {
                    names: vec!["shop.test".into()],
                    cert: dir.join("shop.crt"),
                    key: dir.join("shop.key"),
                },
                CertificateConfig {
                    names: vec!["*.wild.test".into()],
                    cert: dir.join("other.crt"),
                    key: dir.join("other.key"),
                },
            ],
            reload_interval: Duration::from_millis(100),
        }),
        ..test_config()
    };
    let (proxy, _cell) = start_proxy(config, table).await;
    let tls_addr = proxy.tls_addr().unwrap();

    // SNI picks the certificate: each name verifies only against its own.
    assert!(handshake(tls_addr, "eu.wild.test", &other).await.is_ok());
    assert!(handshake(tls_addr, "eu.wild.test", &shop).await.is_err());
    let (tls, alpn) = handshake(tls_addr, "shop.test", &shop).await.unwrap();
    assert_eq!(alpn, b"h2");

    // HTTP/2 over TLS, forwarded with X-Forwarded-Proto https.
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri("https://shop.test/secure")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-cluster"], "alpha");
    let seen = a.last_headers.lock().unwrap().clone().unwrap();
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["forwarded"], "for=127.0.0.1;proto=https");

    // Replace shop.test's certificate: new handshakes get the new one, no restart.
    let renewed = write_cert(&dir, "shop", &["shop.test"]);
    let mut reloaded = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if handshake(tls_addr, "shop.test", &renewed).await.is_ok() {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "the renewed certificate was not served");
    assert!(handshake(tls_addr, "shop.test", &shop).await.is_err());

    // A broken replacement keeps the certificate in force.
    std::fs::write(dir.join("shop.crt"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(handshake(tls_addr, "shop.test", &renewed).await.is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_certificate_is_a_start_error_naming_the_file() {
    let a = Upstream::start("alpha").await;
    let table = table(1, &[(&a, 1, Health::Healthy)], FailureMode::FailOpen);
    let config = meridian_config::proxy::ProxyConfig {
        tls: Some(TlsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            certificates: vec![CertificateConfig {
                names: vec!["shop.test".into()],
                cert: "/nonexistent/shop.crt".into(),
                key: "/nonexistent/shop.key".into(),
            }],
            reload_interval: Duration::from_secs(1),
        }),
        ..test_config()
    };
    let cell = Arc::new(meridian_subscriber::TableCell::new());
    cell.store(table);
    let err = match meridian_dataplane::Proxy::start(config, cell).await {
        Ok(_) => panic!("started without its certificate"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("proxy.tls.certificates[0]"), "{err}");
    assert!(err.contains("/nonexistent/shop.crt"), "{err}");
}
