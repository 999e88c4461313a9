//! Mutual TLS between the parts, with real processes on loopback: `meridian certs` makes the
//! CA and the certificates; a controller that requires client certificates serves two
//! proxies and a DNS server, each known by its certificate alone; a client without a valid
//! certificate (none, another CA's, an expired one) is refused in the handshake, and a
//! certificate for one vantage cannot report as another. Certificates are reloaded from
//! their files without a restart, on both ends.

mod process_support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::Method;
use http_body_util::BodyExt;
use meridian_subscriber::http::ControllerClient;
use meridian_subscriber::tls::ClientTls;
use process_support::{Kill, TempDir, one_cluster_config, sha256_hex, start_controller};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");

fn certs(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("certs")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

fn tls_dir(dir: &Path, part: &str) -> ClientTls {
    let part = dir.join(part);
    ClientTls {
        ca: Some(part.join("ca.crt")),
        cert: Some(part.join("tls.crt")).filter(|c| c.exists()),
        key: Some(part.join("tls.key")).filter(|k| k.exists()),
    }
}

/// A config whose controller requires client certificates of the CA in `certs`.
fn write_config(dir: &Path, certs: &Path, ingress: std::net::SocketAddr) -> PathBuf {
    let config = dir.join("meridian.yaml");
    let c = certs.display();
    std::fs::write(
        &config,
        one_cluster_config("c1", ingress, true)
            + &format!(
                r#"
controller:
  tls:
    cert: {c}/controller/tls.crt
    key: {c}/controller/tls.key
    client_ca: {c}/ca.crt
    reload_interval: 100ms
  tokens:
    - {{ name: ops, role: operator, sha256: "{}" }}
proxy: {{ listen: "127.0.0.1:0", admin_listen: "127.0.0.1:0" }}
dns: {{ listen: "127.0.0.3:0", admin_listen: "127.0.0.3:0" }}
"#,
                sha256_hex("op-token"),
            ),
    )
    .unwrap();
    config
}

async fn get(client: &ControllerClient, path: &str) -> Result<(u16, String), String> {
    let response = client
        .send(Method::GET, path, None)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn poll<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A client certificate signed by the CA in `certs`, valid until `not_after`.
fn sign_client(certs: &Path, name: &str, not_after: (i32, u8, u8), out: &Path) {
    let ca_pem = std::fs::read_to_string(certs.join("ca.crt")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(certs.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    std::fs::create_dir_all(out).unwrap();
    std::fs::write(out.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(out.join("tls.key"), key.serialize_pem()).unwrap();
    std::fs::write(out.join("ca.crt"), ca_pem).unwrap();
}

#[test]
fn certs_writes_private_keys_and_refuses_to_overwrite() {
    let dir = TempDir::new("mtls-certs");
    let certs_dir = dir.0.join("certs");
    let out = certs(
        &certs_dir,
        &[
            "--controller-name",
            "127.0.0.1",
            "--controller-name",
            "meridian.example.net",
            "--client",
            "proxy-a",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    for key in ["ca.key", "controller/tls.key", "proxy-a/tls.key"] {
        let mode = std::fs::metadata(certs_dir.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    for file in ["controller/ca.crt", "proxy-a/tls.crt", "proxy-a/ca.crt"] {
        assert!(certs_dir.join(file).exists(), "{file}");
    }
    let again = certs(&certs_dir, &["--client", "proxy-a"]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("proxy-a/tls.crt exists already") && err.contains("--force"),
        "{err}"
    );
    // --force replaces it, signed by the same CA (which is reused, not replaced).
    let ca = std::fs::read(certs_dir.join("ca.crt")).unwrap();
    let before = std::fs::read(certs_dir.join("proxy-a/tls.crt")).unwrap();
    let forced = certs(&certs_dir, &["--client", "proxy-a", "--force"]);
    assert!(forced.status.success(), "{forced:?}");
    assert_ne!(
        before,
        std::fs::read(certs_dir.join("proxy-a/tls.crt")).unwrap()
    );
    assert_eq!(ca, std::fs::read(certs_dir.join("ca.crt")).unwrap());
    let bad = certs(&certs_dir, &["--client", "two words"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("is not a vantage name"),
        "{bad:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_two_proxies_and_dns_over_mutual_tls_only() {
    let dir = TempDir::new("mtls-parts");
    let certs_dir = dir.0.join("certs");
    let out = certs(
        &certs_dir,
        &[
            "--controller-name",
            "127.0.0.1",
            "--client",
            "proxy-a",
            "--client",
            "proxy-b",
            "--client",
            "dns-a",
            "--client",
            "operator",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    // The cluster's ingress: a listener the kernel completes TCP probes for.
    let ingress = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = write_config(&dir.0, &certs_dir, ingress.local_addr().unwrap());
    let (_controller, url) = start_controller(&config, &dir.0.join("data"), &["--no-probe"]);
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // Each part presents its own certificate; no token: the certificate is the credential,
    // and its name is the vantage (no --vantage given).
    let part = |command: &str, name: &str| {
        Kill(
            Command::new(BIN)
                .args([command, "-c"])
                .arg(&config)
                .args(["--workers", "1", "--controller", &url, "--tls-dir"])
                .arg(certs_dir.join(name))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let _parts = [
        part("proxy", "proxy-a"),
        part("proxy", "proxy-b"),
        part("dns", "dns-a"),
    ];

    let operator = ControllerClient::with_tls(
        &url,
        Some("op-token".into()),
        &tls_dir(&certs_dir, "operator"),
    )
    .unwrap();
    poll(
        "votes from proxy-a, proxy-b and dns-a",
        Duration::from_secs(30),
        async || {
            let (status, body) = get(&operator, "/api/v1/status").await.ok()?;
            assert_eq!(status, 200, "{body}");
            ["proxy-a", "proxy-b", "dns-a"]
                .iter()
                .all(|v| body.contains(&format!(r#""vantage":"{v}""#)))
                .then_some(())
        },
    )
    .await;
    let (_, metrics) = get(&operator, "/metrics").await.unwrap();
    assert!(
        metrics.contains("meridian_subscribers_connected 3"),
        "{metrics}"
    );

    // A certificate for proxy-a cannot report as proxy-b.
    let proxy_a = ControllerClient::with_tls(&url, None, &tls_dir(&certs_dir, "proxy-a")).unwrap();
    let forged = br#"{"vantage":"proxy-b","observations":[]}"#.to_vec();
    let err = proxy_a
        .call(Method::POST, "/api/v1/reports", Some(forged))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("status 403"), "{err}");
    assert!(err.contains("proxy-a") && err.contains("proxy-b"), "{err}");
    // As itself it may, and a certificate alone is no operator.
    let own = br#"{"vantage":"proxy-a","observations":[]}"#.to_vec();
    proxy_a
        .call(Method::POST, "/api/v1/reports", Some(own))
        .await
        .unwrap();
    let (status, body) = get(&proxy_a, "/api/v1/audit").await.unwrap();
    assert_eq!(status, 403, "{body}");

    // Refused in the handshake: no certificate, another CA's, an expired one of this CA.
    // In TLS 1.3 the client's handshake is over before the server has judged its
    // certificate, so the server's alert and its close race the request: a client may see
    // the connection closed ("connection was not ready") instead of the alert. Every try
    // must be refused; a few tries see the alert that says why.
    let refused = async |tls: ClientTls| {
        let client = ControllerClient::with_tls(&url, None, &tls).unwrap();
        let mut seen = String::new();
        for _ in 0..5 {
            seen = get(&client, "/api/v1/watch?version=0")
                .await
                .expect_err("a client without a valid certificate must be refused");
            if seen.contains("alert") || seen.to_lowercase().contains("certificate") {
                break;
            }
        }
        seen
    };
    let none = refused(ClientTls {
        ca: Some(certs_dir.join("ca.crt")),
        ..Default::default()
    })
    .await;
    assert!(none.to_lowercase().contains("certificate"), "{none}");
    let other_ca = dir.0.join("other");
    assert!(certs(&other_ca, &["--client", "proxy-a"]).status.success());
    let mut foreign = tls_dir(&other_ca, "proxy-a");
    foreign.ca = Some(certs_dir.join("ca.crt"));
    let foreign = refused(foreign).await;
    assert!(foreign.contains("alert"), "{foreign}");
    sign_client(&certs_dir, "proxy-a", (2020, 1, 1), &dir.0.join("expired"));
    let expired = refused(tls_dir(&dir.0, "expired")).await;
    assert!(expired.contains("alert"), "{expired}");
    // And a client that does not trust the controller's CA refuses the controller.
    let distrust = ClientTls {
        ca: Some(other_ca.join("ca.crt")),
        ..tls_dir(&certs_dir, "proxy-a")
    };
    let client = ControllerClient::with_tls(&url, None, &distrust).unwrap();
    let err = get(&client, "/livez").await.unwrap_err();
    assert!(err.contains("invalid peer certificate"), "{err}");

    // The operator command without a certificate gets a clear error, not a hang.
    let status = Command::new(BIN)
        .args(["status", "--controller", &url, "--tls-dir"])
        .arg(&other_ca)
        .output()
        .unwrap();
    assert!(!status.status.success());
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.contains(&url), "{stderr}");
    drop(ingress);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_a_restart() {
    let dir = TempDir::new("mtls-reload");
    let certs_dir = dir.0.join("certs");
    let out = certs(
        &certs_dir,
        &["--controller-name", "127.0.0.1", "--client", "proxy-a"],
    );
    assert!(out.status.success(), "{out:?}");
    let ingress = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = write_config(&dir.0, &certs_dir, ingress.local_addr().unwrap());
    let (_controller, url) = start_controller(&config, &dir.0.join("data"), &["--no-probe"]);

    // Client side: an expired certificate is refused; once the files hold a renewed one,
    // the same client (no restart) is let in.
    let part = dir.0.join("part");
    sign_client(&certs_dir, "proxy-a", (2020, 1, 1), &part);
    let client = ControllerClient::with_tls(&url, None, &tls_dir(&dir.0, "part")).unwrap();
    assert!(get(&client, "/livez").await.is_err());
    for file in ["tls.crt", "tls.key"] {
        std::fs::copy(certs_dir.join("proxy-a").join(file), part.join(file)).unwrap();
    }
    poll(
        "the client to present its renewed certificate",
        Duration::from_secs(10),
        async || get(&client, "/livez").await.ok(),
    )
    .await;

    // Server side: a renewed controller certificate is served to new connections.
    let served = || async {
        let (tcp, trust) = (
            tokio::net::TcpStream::connect(url.trim_start_matches("https://"))
                .await
                .unwrap(),
            certs_dir.join("ca.crt"),
        );
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pki_types::CertificateDer::pem_file_iter(&trust).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let chain: Vec<_> =
            rustls_pki_types::CertificateDer::pem_file_iter(certs_dir.join("proxy-a/tls.crt"))
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(certs_dir.join("proxy-a/tls.key"))
            .unwrap();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    };
    use rustls_pki_types::pem::PemObject;
    let first = served().await;
    let renewed = certs(&certs_dir, &["--controller-name", "127.0.0.1", "--force"]);
    assert!(renewed.status.success(), "{renewed:?}");
    let on_disk =
        rustls_pki_types::CertificateDer::from_pem_file(certs_dir.join("controller/tls.crt"))
            .unwrap()
            .to_vec();
    assert_ne!(first, on_disk);
    poll(
        "the controller to serve its renewed certificate",
        Duration::from_secs(10),
        async || (served().await == on_disk).then_some(()),
    )
    .await;
    drop(ingress);
}

#[test]
fn bad_tls_setups_are_refused_at_start_with_a_clear_error() {
    let dir = TempDir::new("mtls-bad");
    let certs_dir = dir.0.join("certs");
    assert!(
        certs(&certs_dir, &["--controller-name", "127.0.0.1"])
            .status
            .success()
    );
    let config = write_config(&dir.0, &certs_dir, "127.0.0.1:1".parse().unwrap());
    let text = std::fs::read_to_string(&config).unwrap();
    let run = |text: String, extra: &[&str]| {
        std::fs::write(&config, text).unwrap();
        let out = Command::new(BIN)
            .args(["controller", "--no-probe", "-c"])
            .arg(&config)
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let missing = run(
        text.replace("controller/tls.key", "controller/nope.key"),
        &[],
    );
    assert!(
        missing.contains("controller.tls.key") && missing.contains("nope.key"),
        "{missing}"
    );
    // Plain HTTP on a non-loopback address is refused, whether from the file or --listen.
    let (head, rest) = text.split_once("  tls:").unwrap();
    let plain = format!("{head}  tokens:{}", rest.split_once("  tokens:").unwrap().1);
    let err = run(
        plain.replace("controller:\n", "controller:\n  listen: 0.0.0.0:0\n"),
        &[],
    );
    assert!(
        err.contains("controller.listen") && err.contains("not a loopback address"),
        "{err}"
    );
    let err = run(plain, &["--listen", "0.0.0.0:0"]);
    assert!(
        err.contains("plain HTTP is allowed on loopback only"),
        "{err}"
    );
    // A subscriber whose TLS directory holds no CA says so.
    let out = Command::new(BIN)
        .args(["proxy", "-c"])
        .arg(&config)
        .args(["--controller", "https://127.0.0.1:1", "--tls-dir"])
        .arg(dir.0.join("nowhere"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reading the controller CA") && err.contains("nowhere/ca.crt"),
        "{err}"
    );
}
