//! `meridian proxy --controller` is a vantage too: it runs the controller's probe
//! assignment and reports under its own name, which shows up in the targets' votes.

mod process_support;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use meridian_subscriber::http::ControllerClient;
use process_support::{Kill, TempDir, one_cluster_config, sha256_hex, start_controller};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");

async fn status_text(url: &str) -> String {
    let client = ControllerClient::new(url, Some("op-token".into())).unwrap();
    let response = client
        .send(http::Method::GET, "/api/v1/status", None)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_with_a_controller_probes_and_reports_as_a_vantage() {
    let temp = TempDir::new("proxy-vantage");
    let dir = &temp.0;
    // The cluster's ingress: a listener the kernel completes TCP probes for.
    let ingress = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = dir.join("meridian.yaml");
    std::fs::write(
        &config,
        one_cluster_config("c1", ingress.local_addr().unwrap(), true)
            + &format!(
                r#"
controller:
  tokens:
    - {{ name: ops, role: operator, sha256: "{}" }}
    - {{ name: edge, role: subscriber, sha256: "{}", vantages: [edge-test] }}
proxy: {{ listen: "127.0.0.1:0", admin_listen: "127.0.0.1:0" }}
dns: {{ listen: "127.0.0.1:2" }}
"#,
                sha256_hex("op-token"),
                sha256_hex("edge-token"),
            ),
    )
    .unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "edge-token\n").unwrap();

    let (controller, url) = start_controller(&config, &dir.join("data"), &[]);

    let proxy = Kill(
        Command::new(BIN)
            .args(["proxy", "-c"])
            .arg(&config)
            .args(["--workers", "1", "--controller", &url, "--token-file"])
            .arg(&token_file)
            .args(["--vantage", "edge-test", "--region", "eu"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn meridian proxy"),
    );

    // The vote appears once the proxy has fetched its assignment, probed and reported.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    while Instant::now() < deadline {
        last = status_text(&url).await;
        if last.contains(r#""vantage":"edge-test""#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        last.contains(r#""vantage":"edge-test""#),
        "no vote from the proxy's vantage in {last}"
    );
    drop(proxy);
    drop(controller);
    drop(ingress);
}

#[test]
fn vantage_flags_need_a_controller() {
    let out = Command::new(BIN)
        .args(["proxy", "-c", "/nonexistent.yaml", "--vantage", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--controller"), "{err}");
}
