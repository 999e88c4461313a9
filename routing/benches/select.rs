//! ns/op of the hot path: host lookup plus one selection, per policy.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};

use criterion::{Criterion, criterion_group, criterion_main};
use meridian_routing::{
    App, Client, Cluster, FailureMode, GeoPreference, Health, Location, Pick, Policy, Region,
    RoutingTable, TableData, Target, TargetSet,
};

fn table() -> RoutingTable {
    let regions: Vec<Region> = (0..8)
        .map(|i| Region {
            name: format!("r{i}"),
            location: Location {
                lat: -60.0 + 15.0 * i as f64,
                lon: -150.0 + 40.0 * i as f64,
            },
        })
        .collect();
    let clusters: Vec<Cluster> = (0..8)
        .map(|i| Cluster {
            name: format!("c{i}"),
            region: format!("r{i}"),
            provider: "bench".into(),
            location: regions[i].location,
            endpoints: vec![SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16))],
        })
        .collect();
    let targets: Vec<Target> = (0..8)
        .map(|i| Target {
            cluster: format!("c{i}"),
            weight: 100 + 10 * i,
            tier: (i / 3) as u8,
            health: if i == 2 {
                Health::Unhealthy
            } else {
                Health::Healthy
            },
        })
        .collect();
    let app = |name: &str, policy| App {
        name: name.into(),
        hostnames: vec![format!("{name}.example.com")],
        policy,
        failure_mode: FailureMode::FailOpen,
        dns_ttl: 30,
        geo_preferences: if policy == Policy::Geo {
            vec![GeoPreference {
                region: "r1".into(),
                clusters: vec!["c1".into()],
            }]
        } else {
            vec![]
        },
        targets: targets.clone(),
    };
    let mut apps = vec![
        app("weighted", Policy::Weighted),
        app("failover", Policy::Failover),
        app("geo", Policy::Geo),
        app("latency", Policy::Latency),
    ];
    // Many more apps so host lookup is measured on a realistically sized map.
    for i in 0..1000 {
        apps.push(app(&format!("app{i}"), Policy::Weighted));
    }
    RoutingTable::new(TableData {
        version: 1,
        generated_at_ms: 0,
        regions,
        clusters,
        apps,
        geo: Default::default(),
        rtt: (0..8)
            .map(|i| meridian_routing::RttSample {
                region: "r3".into(),
                cluster: format!("c{i}"),
                rtt_ms: 10.0 + i as f64,
            })
            .collect(),
    })
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let table = table();
    let addr: IpAddr = "192.0.2.7".parse().unwrap();
    for (host, region) in [
        ("weighted.example.com", None),
        ("failover.example.com", None),
        ("geo.example.com", Some("r5")),
        ("latency.example.com", Some("r3")),
    ] {
        let client = Client {
            addr,
            region: region.and_then(|r| table.region_id(r)),
        };
        let mut n = 0u64;
        c.bench_function(&format!("host+select/{host}"), |b| {
            b.iter(|| {
                n += 1;
                let app = table.app_for_host(black_box(host)).unwrap();
                table
                    .select(app, &client, Pick::Spread(n), TargetSet::EMPTY)
                    .unwrap()
            })
        });
    }
    let app = table.app_for_host("weighted.example.com").unwrap();
    let client = Client { addr, region: None };
    let mut n = 0u64;
    c.bench_function("select/weighted-affinity", |b| {
        b.iter(|| {
            n = n.wrapping_add(0x9E37_79B9);
            table
                .select(app, &client, Pick::Affinity(black_box(n)), TargetSet::EMPTY)
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
