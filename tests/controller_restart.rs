//! The real `meridian controller` process: operator commands through the CLI, then a
//! kill -9 and a restart that serves the same table with the same overrides, audit log and
//! failover history.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use meridian_subscriber::http::ControllerClient;

const BIN: &str = env!("CARGO_BIN_EXE_meridian");

/// A controller process, killed when dropped.
struct Running {
    child: Child,
    url: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(config: &Path, data: &Path) -> Running {
    let mut child = Command::new(BIN)
        .args(["controller", "-c"])
        .arg(config)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn meridian controller");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("controller listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    Running { child, url }
}

fn cli(url: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(args)
        .args(["--controller", url])
        .env("MERIDIAN_TOKEN", "op-token")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn get(url: &str, path: &str) -> serde_json::Value {
    let client = ControllerClient::new(url, Some("op-token".into())).unwrap();
    let response = client.send(http::Method::GET, path, None).await.unwrap();
    assert_eq!(response.status(), 200, "GET {path}");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "meridian-controller-restart-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn health(table: &serde_json::Value, cluster: &str) -> String {
    table["table"]["apps"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["cluster"] == cluster)
        .map(|t| t["health"]["state"].as_str().unwrap().to_string())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_and_the_table_survive_kill_9() {
    let dir = temp_dir();
    // c1's ingress: a listener the kernel completes connections for; c2's: nothing listens.
    let up = TcpListener::bind("127.0.0.1:0").unwrap();
    let down = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = dir.join("meridian.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
regions:
  - {{ name: eu, location: {{ lat: 50.0, lon: 8.0 }} }}
clusters:
  - {{ name: c1, region: eu, provider: aws, endpoints: ["{}"] }}
  - {{ name: c2, region: eu, provider: gcp, endpoints: ["{down}"] }}
  - {{ name: c3, region: eu, provider: onprem, endpoints: ["{}"] }}
probes:
  - {{ name: tcp, kind: tcp, interval: 100ms, timeout: 80ms, rise: 2, fall: 2 }}
apps:
  - name: shop
    hostnames: [shop.test]
    failure_mode: fail-closed
    probe: tcp
    drain_period: 1h
    targets:
      - {{ cluster: c1, weight: 100 }}
      - {{ cluster: c2, weight: 100 }}
      - {{ cluster: c3, weight: 100 }}
controller:
  tokens:
    - {{ name: ops, role: operator, sha256: "{}" }}
proxy: {{ listen: "127.0.0.1:1" }}
dns: {{ listen: "127.0.0.1:2" }}
"#,
            up.local_addr().unwrap(),
            up.local_addr().unwrap(),
            sha256_hex("op-token"),
        ),
    )
    .unwrap();
    let data = dir.join("data");
    let ctl = start(&config, &data);

    let (ok, out) = cli(&ctl.url, &["weight", "shop", "c1", "42"]);
    assert!(ok, "{out}");
    assert!(out.contains("set-weight target:shop/c1"), "{out}");
    let (ok, out) = cli(&ctl.url, &["drain", "c3", "--app", "shop"]);
    assert!(ok, "{out}");
    let (ok, out) = cli(&ctl.url, &["weight", "shop", "c9", "1"]);
    assert!(!ok, "an unknown cluster fails: {out}");
    assert!(out.contains("cluster"), "{out}");

    // Wait for the probes: c2 found down, c3 found up (so draining). Until a vantage has
    // probed them, targets are not up.
    let start_wait = Instant::now();
    let before = loop {
        let table = get(&ctl.url, "/api/v1/table").await;
        if health(&table, "c2") == "unhealthy" && health(&table, "c3") == "draining" {
            break table;
        }
        assert!(
            start_wait.elapsed() < Duration::from_secs(5),
            "c2 never failed: {table}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(health(&before, "c3"), "draining");
    assert_eq!(before["table"]["apps"][0]["targets"][0]["weight"], 42);

    let (ok, status) = cli(&ctl.url, &["status"]);
    assert!(ok, "{status}");
    assert!(
        status.contains("42*") && status.contains("unhealthy") && status.contains("draining"),
        "{status}"
    );
    let (ok, explain) = cli(&ctl.url, &["explain", "shop.test", "192.0.2.1"]);
    assert!(ok, "{explain}");
    assert!(explain.starts_with("shop → cluster c"), "{explain}");
    assert!(explain.contains("unhealthy (not a candidate)"), "{explain}");
    // c2 is published not up while still unknown; its failure enters the history once a
    // vantage's probe has judged it.
    let start_wait = Instant::now();
    loop {
        let (ok, history) = cli(&ctl.url, &["history"]);
        assert!(ok, "{history}");
        if history.contains("shop/c2 → unhealthy") {
            break;
        }
        assert!(start_wait.elapsed() < Duration::from_secs(5), "{history}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // What a restart must bring back: the table as it stands once the verdicts settled.
    let before = get(&ctl.url, "/api/v1/table").await;

    // kill -9, then start again on the same data directory.
    drop(ctl);
    let ctl = start(&config, &data);
    let after = get(&ctl.url, "/api/v1/table").await;
    assert_eq!(
        after["table"]["version"], before["table"]["version"],
        "the same version"
    );
    assert_eq!(
        after["table"]["apps"], before["table"]["apps"],
        "the same routing"
    );
    let status = get(&ctl.url, "/api/v1/status").await;
    assert_eq!(status["apps"][0]["targets"][0]["weight_override"], 42);
    let audit = get(&ctl.url, "/api/v1/audit").await;
    assert_eq!(audit.as_array().unwrap().len(), 2, "{audit}");
    assert_eq!(audit[0]["action"], "drain");
    assert_eq!(audit[0]["who"], "ops");
    let history = get(&ctl.url, "/api/v1/history").await;
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["cluster"] == "c2" && h["healthy"] == false)
    );
    drop(ctl);
    drop(up);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn sha256_hex(token: &str) -> String {
    // The CLI never needs the digest; compute it with the system's sha256sum, as an operator would.
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
