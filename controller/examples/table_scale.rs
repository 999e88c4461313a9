//! Table-scale benchmark (run by `bench/table-scale.sh`, not a test): 10,000 apps × 50
//! clusters. Reports the time of the pure compute, of validation and indexing
//! (`RoutingTable::new`), of encoding and decoding the wire format (binary, and JSON as it
//! was before), the encoded size, the size of a one-weight and a one-verdict delta and the
//! time a subscriber takes to apply it, and the longest time a reader waited on a
//! `TableCell` while tables were being swapped in.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use meridian_config::{AppConfig, ClusterConfig, Config, TargetConfig};
use meridian_controller::compute::{
    HealthInput, Overrides, TrafficStats, VerdictInputs, compute, next_table,
};
use meridian_routing::{FailureMode, Location, Policy, Region, wire};
use meridian_subscriber::TableCell;

fn arg(name: &str, default: usize) -> usize {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config(apps: usize, clusters: usize) -> Config {
    let regions: Vec<Region> = (0..10)
        .map(|i| Region {
            name: format!("region-{i}"),
            location: Location {
                lat: -60.0 + 12.0 * i as f64,
                lon: -170.0 + 34.0 * i as f64,
            },
        })
        .collect();
    let clusters: Vec<ClusterConfig> = (0..clusters)
        .map(|i| ClusterConfig {
            name: format!("cluster-{i}"),
            region: format!("region-{}", i % 10),
            provider: ["aws", "gcp", "azure", "onprem"][i % 4].into(),
            location: None,
            endpoints: vec![SocketAddr::from((
                [127, 0, (i / 250) as u8, (i % 250) as u8 + 1],
                443,
            ))],
            labels: Default::default(),
            capacity: None,
        })
        .collect();
    let policies = [
        Policy::Weighted,
        Policy::Failover,
        Policy::Geo,
        Policy::Latency,
    ];
    let apps: Vec<AppConfig> = (0..apps)
        .map(|i| AppConfig {
            name: format!("app-{i}"),
            hostnames: vec![
                format!("app-{i}.example.com"),
                format!("*.app-{i}.example.com"),
            ],
            policy: policies[i % 4],
            failure_mode: if i % 2 == 0 {
                FailureMode::FailOpen
            } else {
                FailureMode::FailClosed
            },
            dns_ttl: 30,
            probe: None,
            drain_period: Duration::from_secs(30),
            slow_start: Duration::from_secs(30),
            geo_preferences: Vec::new(),
            placement: None,
            scaling: None,
            targets: clusters
                .iter()
                .enumerate()
                .map(|(j, c)| TargetConfig {
                    cluster: c.name.clone(),
                    weight: 1 + ((i + j) % 100) as u32,
                    tier: (j % 3) as u8,
                })
                .collect(),
        })
        .collect();
    let yaml = "regions: []\nclusters: []\napps: []\nproxy: { listen: \"127.0.0.1:1\" }\ndns: { listen: \"127.0.0.1:2\" }\n";
    let mut config = meridian_config::parse(yaml, std::path::Path::new("<scale>"))
        .expect("an empty config is valid")
        .config;
    config.regions = regions;
    config.clusters = clusters;
    config.apps = apps;
    config
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let apps = arg("--apps", 10_000);
    let clusters = arg("--clusters", 50);
    let runs = arg("--runs", 5);
    let cfg = config(apps, clusters);
    // Some live state, so compute does real work: every 7th target unhealthy, a drain and
    // weight overrides on some.
    let mut verdicts = VerdictInputs::default();
    let mut overrides = Overrides::default();
    for (i, app) in cfg.apps.iter().enumerate() {
        for (j, t) in app.targets.iter().enumerate() {
            if (i + j) % 7 == 0 {
                verdicts.insert(
                    &app.name,
                    &t.cluster,
                    HealthInput {
                        healthy: false,
                        recovered_at_ms: None,
                    },
                );
            }
            if (i + j) % 11 == 0 {
                let key = meridian_controller::compute::target_key(&app.name, &t.cluster);
                overrides.weights.insert(key, 5);
            }
        }
    }
    overrides
        .drains
        .insert("cluster:cluster-3".into(), 1_000_000);
    let stats = TrafficStats::default();

    let mut base_t = Vec::new();
    let mut compute_t = Vec::new();
    let mut build_t = Vec::new();
    let mut encode_t = Vec::new();
    let mut decode_t = Vec::new();
    let mut json_encode_t = Vec::new();
    let mut json_decode_t = Vec::new();
    let mut size = 0;
    let mut json_size = 0;
    let mut tables = Vec::new();
    for run in 0..runs {
        let now = 1_010_000 + run as u64 * 1000;
        let t = Instant::now();
        let base = cfg.base_table(1, now);
        base_t.push(t.elapsed());
        drop(base);
        let t = Instant::now();
        let data = compute(
            &cfg,
            &overrides,
            &verdicts,
            &stats,
            &Default::default(),
            now,
        );
        compute_t.push(t.elapsed());
        let t = Instant::now();
        let table = next_table(None, data).expect("valid").expect("a table");
        build_t.push(t.elapsed());
        let t = Instant::now();
        let bytes = wire::encode(&table);
        encode_t.push(t.elapsed());
        size = bytes.len();
        let t = Instant::now();
        let back = wire::decode(&bytes).expect("decodes");
        decode_t.push(t.elapsed());
        if run < 2 {
            let t = Instant::now();
            let json = wire::encode_json(&table);
            json_encode_t.push(t.elapsed());
            json_size = json.len();
            let t = Instant::now();
            let _ = wire::decode(&json).expect("decodes");
            json_decode_t.push(t.elapsed());
        }
        tables.push(Arc::new(back));
    }

    // One change to one app: a weight, then a verdict. The delta's size on the wire and
    // what a subscriber spends to apply it (decode, apply, validate, digest).
    let base = tables[0].clone();
    let mut changes = Vec::new();
    for (what, change) in [("one weight", 0usize), ("one verdict", 1)] {
        let mut data = base.data().clone();
        data.version += 1;
        let app = 4321 % data.apps.len();
        let target = &mut data.apps[app].targets[7 % clusters];
        if change == 0 {
            target.weight = target.weight % 100 + 1;
        } else {
            target.health = match target.health {
                meridian_routing::Health::Unhealthy => meridian_routing::Health::Healthy,
                _ => meridian_routing::Health::Unhealthy,
            };
        }
        let t = Instant::now();
        let next = meridian_routing::RoutingTable::new(data).expect("valid");
        let build = t.elapsed();
        let t = Instant::now();
        let delta = meridian_routing::TableDelta::between(&base, &next);
        let bytes = wire::encode_delta(&delta);
        let diff = t.elapsed();
        let mut apply_t = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let wire::Message::Delta(d) = wire::decode_message(&bytes).expect("decodes") else {
                panic!("a delta")
            };
            let applied = base.apply(&d).expect("applies");
            apply_t.push(t.elapsed());
            assert_eq!(applied.digest(), next.digest());
        }
        changes.push((what, bytes.len(), build, diff, median(apply_t)));
    }

    // Readers loop on the cell while tables are swapped in; the slowest read is the stall.
    let cell = Arc::new(TableCell::new());
    cell.store(tables[0].clone());
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (cell, stop) = (cell.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let table = cell.load().expect("a table");
                let _ = table.app_for_host("app-77.example.com");
                worst = worst.max(t.elapsed());
                reads += 1;
            }
            (worst, reads)
        })
    };
    for i in 0..200 {
        cell.store(tables[i % tables.len()].clone());
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    let (worst, reads) = reader.join().unwrap();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "before (JSON): encode {:.1} ms, decode+validate {:.1} ms, size {:.1} MiB",
        ms(median(json_encode_t)),
        ms(median(json_decode_t)),
        json_size as f64 / (1024.0 * 1024.0),
    );
    for (what, bytes, build, diff, apply) in changes {
        println!(
            "{what}: delta {bytes} bytes on the wire; controller: validate+index+digest {:.1} ms, diff+encode {:.2} ms; subscriber: decode+apply+validate+digest {:.1} ms",
            ms(build),
            ms(diff),
            ms(apply),
        );
    }
    println!(
        "table scale: {apps} apps x {clusters} clusters ({} targets), median of {runs} runs:\n  \
         compute {:.1} ms (of which the config's base table {:.1} ms), validate+index (RoutingTable::new) {:.1} ms, encode {:.1} ms, decode+validate {:.1} ms\n  \
         encoded size {:.1} MiB ({size} bytes)\n  \
         200 swaps under a reading thread: {reads} reads, slowest read {:.3} ms",
        apps * clusters,
        ms(median(compute_t)),
        ms(median(base_t)),
        ms(median(build_t)),
        ms(median(encode_t)),
        ms(median(decode_t)),
        size as f64 / (1024.0 * 1024.0),
        ms(worst),
    );
}
