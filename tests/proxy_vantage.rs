//! `meridian proxy --controller` is a vantage too: it runs the controller's probe
//! assignment and reports under its own name, which shows up in the targets' votes.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use meridian_subscriber::http::ControllerClient;

const BIN: &str = env!("CARGO_BIN_EXE_meridian");

/// A child process, killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sha256_hex(token: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(token.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meridian-proxy-vantage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

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
    let dir = temp_dir();
    // The cluster's ingress: a listener the kernel completes TCP probes for.
    let ingress = TcpListener::bind("127.0.0.1:0").unwrap();
    let config = dir.join("meridian.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
regions:
  - {{ name: eu, location: {{ lat: 50.0, lon: 8.0 }} }}
clusters:
  - {{ name: c1, region: eu, provider: onprem, endpoints: ["{}"] }}
probes:
  - {{ name: tcp, kind: tcp, interval: 100ms, timeout: 80ms, rise: 1, fall: 1 }}
apps:
  - name: shop
    hostnames: [shop.test]
    failure_mode: fail-open
    probe: tcp
    targets:
      - {{ cluster: c1, weight: 100 }}
controller:
  tokens:
    - {{ name: ops, role: operator, sha256: "{}" }}
    - {{ name: edge, role: subscriber, sha256: "{}", vantages: [edge-test] }}
proxy: {{ listen: "127.0.0.1:0", admin_listen: "127.0.0.1:0" }}
dns: {{ listen: "127.0.0.1:2" }}
"#,
            ingress.local_addr().unwrap(),
            sha256_hex("op-token"),
            sha256_hex("edge-token"),
        ),
    )
    .unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "edge-token\n").unwrap();

    let mut controller = Command::new(BIN)
        .args(["controller", "-c"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn meridian controller");
    let mut line = String::new();
    BufReader::new(controller.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let controller = Killed(controller);
    let url = line
        .trim()
        .strip_prefix("controller listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();

    let proxy = Killed(
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
    std::fs::remove_dir_all(&dir).unwrap();
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
