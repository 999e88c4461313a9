//! No vote before evidence, with real processes: a controller, two proxies and a DNS server
//! started together while every backend is down. Each part is a vantage; none may vote
//! "up" for a target it has not probed, and the controller publishes a target it has no
//! quorum on as not up. Every table the watch stream carries from the controller's first
//! one on is read: none may show a target as serving.

mod process_support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use meridian_routing::Health;
use meridian_subscriber::http::ControllerClient;
use process_support::{Kill, TempDir, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_started_together_with_every_backend_down_never_publish_a_target_healthy() {
    let dir = TempDir::new("cold-start");
    // Ports nothing listens on: every probe is refused.
    let (down1, down2) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let config = dir.0.join("meridian.yaml");
    // fall 3: a vantage whose rise/fall started "up" would vote up for its first two rounds.
    std::fs::write(
        &config,
        format!(
            r#"
regions:
  - {{ name: eu, location: {{ lat: 50.0, lon: 8.0 }} }}
clusters:
  - {{ name: c1, region: eu, provider: onprem, endpoints: ["127.0.0.1:{down1}"] }}
  - {{ name: c2, region: eu, provider: onprem, endpoints: ["127.0.0.1:{down2}"] }}
probes:
  - {{ name: tcp, kind: tcp, interval: 200ms, timeout: 100ms, rise: 1, fall: 3 }}
apps:
  - name: shop
    hostnames: [shop.test]
    failure_mode: fail-closed
    probe: tcp
    targets:
      - {{ cluster: c1, weight: 100 }}
      - {{ cluster: c2, weight: 100 }}
controller:
  vantage_ttl: 1s
  heartbeat: 100ms
proxy: {{ listen: "127.0.0.1:0", admin_listen: "127.0.0.1:0" }}
dns: {{ listen: "127.0.0.1:2", admin_listen: "127.0.0.1:0" }}
"#
        ),
    )
    .unwrap();

    let mut controller = Command::new(BIN)
        .args(["controller", "-c"])
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.0.join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn meridian controller");
    let mut line = String::new();
    BufReader::new(controller.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _controller = Kill(controller);
    let url = line
        .trim()
        .strip_prefix("controller listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();

    // Follow the watch stream from the first table on.
    let client = ControllerClient::new(&url, None).unwrap();
    let response = client
        .send(http::Method::GET, "/api/v1/watch?version=0", None)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();

    let mut parts = Vec::new();
    for vantage in ["edge-a", "edge-b"] {
        parts.push(Kill(
            Command::new(BIN)
                .args(["proxy", "-c"])
                .arg(&config)
                .args(["--workers", "1", "--controller", &url, "--vantage", vantage])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn meridian proxy"),
        ));
    }
    let dns_port = free_port("127.0.0.1");
    parts.push(Kill(
        Command::new(BIN)
            .args(["dns", "-c"])
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{dns_port}")])
            .args(["--controller", &url, "--vantage", "dns-a"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn meridian dns"),
    ));

    // Several probe rounds of every part: longer than fall × interval.
    let until = Instant::now() + Duration::from_secs(3);
    let mut buffer = Vec::new();
    let mut tables = 0;
    while let Ok(Some(frame)) = tokio::time::timeout_at(until.into(), body.frame()).await {
        buffer.extend_from_slice(&frame.unwrap().into_data().unwrap());
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            if line.len() == 1 {
                continue; // heartbeat
            }
            let table = meridian_routing::wire::decode(&line[..line.len() - 1]).unwrap();
            tables += 1;
            for target in &table.apps()[0].targets {
                assert_eq!(
                    target.health,
                    Health::Unhealthy,
                    "version {} shows {} as {:?}",
                    table.version(),
                    target.cluster,
                    target.health
                );
            }
        }
    }
    assert!(tables >= 1, "the watch stream carried no table");

    // Every part did vote, and the verdict is a known failure.
    let (_, status) = client
        .call(http::Method::GET, "/api/v1/apps/shop", None)
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    for target in status["targets"].as_array().unwrap() {
        let verdict = &target["verdict"];
        let mut voters: Vec<&str> = verdict["votes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["vantage"].as_str().unwrap())
            .collect();
        voters.sort();
        assert_eq!(
            voters,
            ["controller", "dns-a", "edge-a", "edge-b"],
            "{status}"
        );
        assert_eq!(verdict["healthy"], false, "{status}");
        assert_eq!(verdict["known"], true, "{status}");
    }
    drop(parts);
}
