//! Property tests of deltas: a subscriber that starts from a snapshot and applies the delta
//! of every version after it holds, at each step, the very table the controller computed
//! (equal data, equal digest), whatever the sequence of changes.

use std::net::SocketAddr;

use meridian_routing::delta::TableDelta;
use meridian_routing::digest::digest_of;
use meridian_routing::{
    App, Cluster, FailureMode, GeoPreference, Health, Location, Policy, Region, RoutingTable,
    RttSample, SubnetRegion, TableData, Target,
};
use proptest::prelude::*;

const REGIONS: [&str; 3] = ["eu", "us", "ap"];
const COUNTRIES: [&str; 4] = ["DE", "US", "JP", "FR"];

fn cluster(i: usize) -> Cluster {
    Cluster {
        name: format!("c{i}"),
        region: REGIONS[i % 3].into(),
        provider: "test".into(),
        location: Location {
            lat: (i % 90) as f64,
            lon: (i % 180) as f64 - 90.0,
        },
        endpoints: vec![SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16))],
    }
}

fn app(i: usize, clusters: &[Cluster], mask: u8) -> App {
    let mut targets: Vec<Target> = clusters
        .iter()
        .enumerate()
        .filter(|(j, _)| mask & (1 << (j % 8)) != 0)
        .map(|(j, c)| Target {
            cluster: c.name.clone(),
            weight: (i * 7 + j * 13) as u32 % 100,
            tier: (j % 3) as u8,
            health: Health::Healthy,
        })
        .collect();
    if targets.is_empty() {
        targets.push(Target {
            cluster: clusters[0].name.clone(),
            weight: 1,
            tier: 0,
            health: Health::Healthy,
        });
    }
    App {
        name: format!("a{i}"),
        hostnames: vec![format!("a{i}.example.com"), format!("*.a{i}.example.com")],
        policy: Policy::Weighted,
        failure_mode: FailureMode::FailOpen,
        dns_ttl: 30,
        geo_preferences: vec![],
        targets,
    }
}

fn base(apps: usize, masks: &[u8]) -> TableData {
    let clusters: Vec<Cluster> = (0..6).map(cluster).collect();
    TableData {
        version: 1,
        generated_at_ms: 1_000,
        regions: REGIONS
            .iter()
            .enumerate()
            .map(|(i, r)| Region {
                name: (*r).into(),
                location: Location {
                    lat: 10.0 * i as f64,
                    lon: 20.0 * i as f64,
                },
            })
            .collect(),
        apps: (0..apps)
            .map(|i| app(i, &clusters, masks[i % masks.len()]))
            .collect(),
        clusters,
        geo: Default::default(),
        rtt: vec![],
    }
}

/// One change the controller might make between two versions; indices are taken modulo
/// the lengths they index.
#[derive(Clone, Debug)]
enum Change {
    Weight(usize, usize, u32),
    Health(usize, usize, u8, f64),
    Ttl(usize, u32),
    GeoPolicy(usize, usize),
    AddApp(u8),
    RemoveApp(usize),
    SwapApps(usize, usize),
    AddTarget(usize, usize),
    RemoveTarget(usize, usize),
    SwapTargets(usize, usize, usize),
    AddCluster,
    RemoveCluster(usize),
    Country(usize, Option<usize>),
    Subnet(u8, Option<usize>),
    Rtt(usize, usize, Option<u16>),
    Hostname(usize, u8),
}

fn change_strategy() -> impl Strategy<Value = Change> {
    let i = || 0usize..64;
    prop_oneof![
        6 => (i(), i(), 0u32..10_000).prop_map(|(a, t, w)| Change::Weight(a, t, w)),
        6 => (i(), i(), 0u8..4, 0.0..=1.0f64).prop_map(|(a, t, h, p)| Change::Health(a, t, h, p)),
        1 => (i(), 1u32..3600).prop_map(|(a, ttl)| Change::Ttl(a, ttl)),
        1 => (i(), i()).prop_map(|(a, r)| Change::GeoPolicy(a, r)),
        1 => any::<u8>().prop_map(Change::AddApp),
        1 => i().prop_map(Change::RemoveApp),
        1 => (i(), i()).prop_map(|(a, b)| Change::SwapApps(a, b)),
        1 => (i(), i()).prop_map(|(a, c)| Change::AddTarget(a, c)),
        1 => (i(), i()).prop_map(|(a, t)| Change::RemoveTarget(a, t)),
        1 => (i(), i(), i()).prop_map(|(a, x, y)| Change::SwapTargets(a, x, y)),
        1 => Just(Change::AddCluster),
        1 => i().prop_map(Change::RemoveCluster),
        1 => (i(), proptest::option::of(i())).prop_map(|(c, r)| Change::Country(c, r)),
        1 => (any::<u8>(), proptest::option::of(i())).prop_map(|(n, r)| Change::Subnet(n, r)),
        1 => (i(), i(), proptest::option::of(0u16..500)).prop_map(|(r, c, ms)| Change::Rtt(r, c, ms)),
        1 => (i(), any::<u8>()).prop_map(|(a, n)| Change::Hostname(a, n)),
    ]
}

/// Makes `change` to `d`; it may leave the table invalid, and then the version is skipped.
fn make(d: &mut TableData, change: &Change, fresh: &mut usize) {
    if d.apps.iter().any(|a| a.targets.is_empty()) {
        // An earlier change of this version left an app without targets: the version is
        // invalid and skipped whatever follows.
        return;
    }
    let apps = d.apps.len();
    match *change {
        Change::Weight(a, t, w) if apps > 0 => {
            let app = &mut d.apps[a % apps];
            let n = app.targets.len();
            app.targets[t % n].weight = w;
        }
        Change::Health(a, t, h, p) if apps > 0 => {
            let app = &mut d.apps[a % apps];
            let n = app.targets.len();
            app.targets[t % n].health = match h {
                0 => Health::Healthy,
                1 => Health::Unhealthy,
                2 => Health::Draining { progress: p },
                _ => Health::SlowStart { progress: p },
            };
        }
        Change::Ttl(a, ttl) if apps > 0 => d.apps[a % apps].dns_ttl = ttl,
        Change::GeoPolicy(a, r) if apps > 0 => {
            let app = &mut d.apps[a % apps];
            app.policy = Policy::Geo;
            app.geo_preferences = vec![GeoPreference {
                region: REGIONS[r % 3].into(),
                clusters: vec![app.targets[0].cluster.clone()],
            }];
        }
        Change::AddApp(mask) => {
            *fresh += 1;
            let mut new = app(*fresh, &d.clusters, mask);
            new.name = format!("new{fresh}");
            new.hostnames = vec![format!("new{fresh}.example.org")];
            d.apps.push(new);
        }
        Change::RemoveApp(a) if apps > 1 => {
            d.apps.remove(a % apps);
        }
        Change::SwapApps(a, b) if apps > 0 => d.apps.swap(a % apps, b % apps),
        Change::AddTarget(a, c) if apps > 0 => {
            let cluster = d.clusters[c % d.clusters.len()].name.clone();
            let app = &mut d.apps[a % apps];
            if app.targets.iter().all(|t| t.cluster != cluster) {
                app.targets.insert(
                    a % (app.targets.len() + 1),
                    Target {
                        cluster,
                        weight: 5,
                        tier: 1,
                        health: Health::Unhealthy,
                    },
                );
            }
        }
        Change::RemoveTarget(a, t) if apps > 0 => {
            let app = &mut d.apps[a % apps];
            if app.targets.len() > 1 {
                let gone = app.targets.remove(t % app.targets.len());
                for pref in &mut app.geo_preferences {
                    pref.clusters.retain(|c| *c != gone.cluster);
                }
            }
        }
        Change::SwapTargets(a, x, y) if apps > 0 => {
            let app = &mut d.apps[a % apps];
            let n = app.targets.len();
            app.targets.swap(x % n, y % n);
        }
        Change::AddCluster => {
            *fresh += 1;
            let mut c = cluster(*fresh % 40);
            c.name = format!("extra{fresh}");
            d.clusters.push(c);
        }
        Change::RemoveCluster(c) if d.clusters.len() > 1 => {
            let gone = d.clusters.remove(c % d.clusters.len()).name;
            d.rtt.retain(|s| s.cluster != gone);
            for app in &mut d.apps {
                app.targets.retain(|t| t.cluster != gone);
                for pref in &mut app.geo_preferences {
                    pref.clusters.retain(|c| *c != gone);
                }
            }
            // An app left without targets makes the version invalid: it is skipped.
        }
        Change::Country(c, region) => {
            let country = COUNTRIES[c % COUNTRIES.len()].to_string();
            match region {
                Some(r) => d.geo.countries.insert(country, REGIONS[r % 3].into()),
                None => d.geo.countries.remove(&country),
            };
        }
        Change::Subnet(n, region) => {
            let cidr = format!("10.{n}.0.0/16").parse().unwrap();
            d.geo.subnets.retain(|s| s.cidr != cidr);
            if let Some(r) = region {
                d.geo.subnets.push(SubnetRegion {
                    cidr,
                    region: REGIONS[r % 3].into(),
                });
            }
        }
        Change::Rtt(r, c, ms) => {
            let region = REGIONS[r % 3].to_string();
            let cluster = d.clusters[c % d.clusters.len()].name.clone();
            d.rtt
                .retain(|s| !(s.region == region && s.cluster == cluster));
            if let Some(ms) = ms {
                d.rtt.push(RttSample {
                    region,
                    cluster,
                    rtt_ms: f64::from(ms) / 3.0,
                });
            }
        }
        Change::Hostname(a, n) if apps > 0 => {
            d.apps[a % apps].hostnames[0] = format!("h{n}.example.net");
        }
        _ => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn snapshot_plus_deltas_is_the_full_table(
        apps in 1usize..12,
        masks in proptest::collection::vec(any::<u8>(), 1..6),
        versions in proptest::collection::vec(
            proptest::collection::vec(change_strategy(), 1..4), 1..24),
    ) {
        let mut controller = RoutingTable::new(base(apps, &masks)).unwrap();
        // The subscriber starts from the snapshot and from then on gets deltas only.
        let mut held = RoutingTable::new(controller.data().clone()).unwrap();
        let mut fresh = 100;
        for changes in &versions {
            let mut data = controller.data().clone();
            data.version += 1;
            data.generated_at_ms += 1_000;
            for change in changes {
                make(&mut data, change, &mut fresh);
            }
            let Ok(next) = RoutingTable::new(data) else { continue };
            let delta = TableDelta::between(&controller, &next);
            // Through the binary encoding, as on the wire.
            let bytes = postcard::to_allocvec(&delta).unwrap();
            let delta: TableDelta = postcard::from_bytes(&bytes).unwrap();
            held = held.apply(&delta).unwrap();
            prop_assert_eq!(held.data(), next.data());
            prop_assert_eq!(held.digest(), next.digest());
            prop_assert_eq!(held.digest(), digest_of(next.data()));
            controller = next;
        }
    }
}
