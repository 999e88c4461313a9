//! Deltas on the watch stream, with a real proxy process following a scripted controller:
//! a delta that would build a table other than the controller's (corrupt) and one made for
//! a version the proxy does not hold (out of order) are refused, and each time the proxy
//! comes back asking for a snapshot and goes on from it; a good delta is applied in place.

mod process_support;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_routing::delta::ListDelta;
use meridian_routing::{
    App, Cluster, FailureMode, Health, Location, Policy, Region, RoutingTable, TableData,
    TableDelta, Target, wire,
};
use process_support::{Kill, TempDir, free_port, http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BIN: &str = env!("CARGO_BIN_EXE_meridian");

fn table(version: u64, weight: u32) -> RoutingTable {
    let location = Location {
        lat: 50.0,
        lon: 8.0,
    };
    RoutingTable::new(TableData {
        version,
        generated_at_ms: 1_000 * version,
        regions: vec![Region {
            name: "eu".into(),
            location,
        }],
        clusters: (1..=2)
            .map(|i| Cluster {
                name: format!("c{i}"),
                region: "eu".into(),
                provider: "onprem".into(),
                location,
                endpoints: vec![SocketAddr::from(([127, 0, 0, 1], 9))],
            })
            .collect(),
        apps: vec![App {
            name: "shop".into(),
            hostnames: vec!["shop.test".into()],
            policy: Policy::Weighted,
            failure_mode: FailureMode::FailOpen,
            dns_ttl: 30,
            geo_preferences: vec![],
            targets: (1..=2)
                .map(|i| Target {
                    cluster: format!("c{i}"),
                    weight: weight * i,
                    tier: 0,
                    health: Health::Healthy,
                })
                .collect(),
        }],
        geo: Default::default(),
        rtt: vec![],
    })
    .unwrap()
}

fn frame(message: Vec<u8>) -> Vec<u8> {
    let mut out = (message.len() as u32).to_be_bytes().to_vec();
    out.extend(message);
    out
}

/// Writes one chunk of a chunked HTTP/1.1 body.
async fn chunk(stream: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    stream
        .write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await?;
    stream.write_all(data).await?;
    stream.write_all(b"\r\n").await
}

/// Reads a request head and returns its target (path and query).
async fn request_target(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    text.split_whitespace().nth(1).map(str::to_string)
}

/// A controller that answers the n-th watch request with `script[n]` (frames), then
/// heartbeats until the subscriber hangs up. Records every watch request's target.
async fn scripted_controller(
    listener: TcpListener,
    script: Vec<Vec<u8>>,
    seen: Arc<Mutex<Vec<String>>>,
) {
    let script = Arc::new(script);
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let (script, seen) = (script.clone(), seen.clone());
        tokio::spawn(async move {
            let Some(target) = request_target(&mut stream).await else {
                return;
            };
            if !target.starts_with("/api/v1/watch") {
                let _ = stream
                    .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    .await;
                return;
            }
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push(target);
                seen.len() - 1
            };
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/vnd.meridian.table-frames\r\n\
                        meridian-heartbeat-ms: 100\r\ntransfer-encoding: chunked\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            if let Some(frames) = script.get(n)
                && chunk(&mut stream, frames).await.is_err()
            {
                return;
            }
            while chunk(&mut stream, &[0, 0, 0, 0]).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
}

fn version_served(admin: SocketAddr) -> Option<u64> {
    let (_, body) = http(admin, "GET", "localhost", "/readyz").ok()?;
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    json["table_version"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_or_out_of_order_delta_is_refused_and_the_proxy_recovers_by_snapshot() {
    let (v1, v2, v3, v4, v5) = (
        table(1, 10),
        table(2, 20),
        table(3, 30),
        table(4, 40),
        table(5, 50),
    );
    // A delta from v1 whose target weight was changed on the way: its result is not v2.
    let mut corrupt = TableDelta::between(&v1, &v2);
    let ListDelta::Edit { upsert, .. } = &mut corrupt.targets[0].targets else {
        panic!("a weight change is a target edit: {corrupt:?}")
    };
    upsert[0].weight += 1;
    // A delta for v3 → v4, sent to a proxy that holds v2.
    let out_of_order = TableDelta::between(&v3, &v4);
    let script = vec![
        [
            frame(wire::encode(&v1)),
            frame(wire::encode_delta(&corrupt)),
        ]
        .concat(),
        [
            frame(wire::encode(&v2)),
            frame(wire::encode_delta(&out_of_order)),
        ]
        .concat(),
        [
            frame(wire::encode(&v4)),
            frame(wire::encode_delta(&TableDelta::between(&v4, &v5))),
        ]
        .concat(),
    ];
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(scripted_controller(listener, script, seen.clone()));

    let dir = TempDir::new("watch-deltas");
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port("127.0.0.1"))
        .parse()
        .unwrap();
    let config = dir.0.join("meridian.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
regions:
  - {{ name: eu, location: {{ lat: 50.0, lon: 8.0 }} }}
clusters:
  - {{ name: c1, region: eu, provider: onprem, endpoints: ["127.0.0.1:9"] }}
apps:
  - name: shop
    hostnames: [shop.test]
    failure_mode: fail-open
    targets:
      - {{ cluster: c1, weight: 1 }}
proxy: {{ listen: "127.0.0.1:0", admin_listen: "{admin}" }}
dns: {{ listen: "127.0.0.1:2" }}
"#
        ),
    )
    .unwrap();
    let _proxy = Kill(
        Command::new(BIN)
            .args(["proxy", "-c"])
            .arg(&config)
            .args(["--workers", "1", "--controller", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn meridian proxy"),
    );

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut served = None;
    while Instant::now() < deadline {
        served = tokio::task::spawn_blocking(move || version_served(admin))
            .await
            .unwrap();
        if served == Some(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        served,
        Some(5),
        "the proxy serves {served:?}; requests: {seen:?}"
    );
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(!seen[0].contains("snapshot=1"), "{seen:?}");
    assert!(
        seen[1].contains("version=1&") && seen[1].contains("snapshot=1"),
        "after the corrupt delta: {seen:?}"
    );
    assert!(
        seen[1].contains(&format!("digest={}", v1.digest())),
        "{seen:?}"
    );
    assert!(
        seen[2].contains("version=2&") && seen[2].contains("snapshot=1"),
        "after the out-of-order delta: {seen:?}"
    );
}
