//! Propagation benchmark (run by `bench/propagation.sh`, not a test): the time from a
//! weight change through the API until every one of N subscribers on loopback holds the
//! new table version.
//!
//! One process: a controller (no probes) and N `follow` tasks, each with its own cell and a
//! real HTTP watch stream. Each round sets a weight with a real HTTP request, then polls the
//! cells every 200 µs until all hold the version the API answered with.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_controller::client::ApiClient;
use meridian_controller::{Controller, ControllerOptions};
use meridian_subscriber::TableCell;
use meridian_subscriber::watch::{WatchConfig, follow};

const CONFIG: &str = r#"
regions:
  - { name: eu, location: { lat: 50.0, lon: 8.0 } }
  - { name: us, location: { lat: 39.0, lon: -77.0 } }
clusters:
  - { name: c1, region: eu, provider: aws, endpoints: ["127.0.0.1:9"] }
  - { name: c2, region: us, provider: gcp, endpoints: ["127.0.0.1:9"] }
apps:
  - name: shop
    hostnames: [shop.test]
    failure_mode: fail-open
    targets:
      - { cluster: c1, weight: 100 }
      - { cluster: c2, weight: 100 }
controller:
  listen: 127.0.0.1:0
proxy: { listen: "127.0.0.1:1" }
dns: { listen: "127.0.0.1:2" }
"#;

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let subscribers = arg("--subscribers", 100);
    let rounds = arg("--rounds", 200);
    let loaded = meridian_config::parse(CONFIG, std::path::Path::new("<propagation bench>"))
        .expect("the bench config is valid");
    let controller = Controller::start(
        loaded,
        ControllerOptions {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            probe: false,
            ..Default::default()
        },
    )
    .await
    .expect("controller starts");
    let url = controller.url();
    let cells: Vec<Arc<TableCell>> = (0..subscribers)
        .map(|i| {
            let cell = Arc::new(TableCell::new());
            let config = WatchConfig {
                controller: url.clone(),
                token: None,
                state_dir: None,
                subscriber: format!("bench-{i}@loopback"),
            };
            tokio::spawn(follow(config, cell.clone()));
            cell
        })
        .collect();
    let all_hold = |version: u64| cells.iter().all(|c| c.version() >= version);
    let start = Instant::now();
    while !all_hold(1) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "subscribers never connected"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let api = ApiClient::new(&url, None).unwrap();
    let mut times = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let weight = 1 + (round % 2) as u32;
        let t0 = Instant::now();
        let change = api
            .set_weight("shop", "c1", weight)
            .await
            .expect("weight change");
        while !all_hold(change.table_version) {
            tokio::time::sleep(Duration::from_micros(200)).await;
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "round {round} never propagated"
            );
        }
        times.push(t0.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "propagation: {subscribers} subscribers, {rounds} weight changes via the API: \
         p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms (API call to all holding the version)",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.9)),
        ms(percentile(&times, 0.99)),
        ms(*times.last().unwrap()),
    );
    controller.shutdown().await;
}
