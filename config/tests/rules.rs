//! Every validation rule of `meridian check` has a bad file in `tests/bad/`; each must be
//! rejected with a diagnostic naming file, line, column and field, and the message asserted here.

use std::path::Path;

const CASES: &[(&str, &str)] = &[
    (
        "capacity-bounds-cluster.yaml",
        r#"capacity-bounds-cluster.yaml:17:22: apps[0].placement.bounds[1].cluster: "c3" is not a target cluster of app "web" (c1, c2)"#,
    ),
    (
        "capacity-bounds-min-above-max.yaml",
        "capacity-bounds-min-above-max.yaml:16:57: apps[0].placement.bounds[0].max_replicas: 2 is below min_replicas 4",
    ),
    (
        "capacity-cost.yaml",
        "capacity-cost.yaml:8:58: clusters[0].capacity.cost_per_replica_hour: -0.5 must be a finite number >= 0",
    ),
    (
        "capacity-cron.yaml",
        r#"capacity-cron.yaml:16:19: apps[0].scaling.schedules[0].cron: "0 25 * * *" is not a cron expression: Component error: Number out of bounds."#,
    ),
    (
        "capacity-node-scaling.yaml",
        "capacity-node-scaling.yaml:13:23: clusters[0].capacity.node_scaling.max_machines: 3 is below min_machines 5",
    ),
    (
        "capacity-scale-down-utilisation.yaml",
        "capacity-scale-down-utilisation.yaml:14:33: clusters[0].capacity.node_scaling.scale_down_utilisation: 1.5 is out of range: above 0 and at most 1",
    ),
    (
        "capacity-scaling-min-above-max.yaml",
        "capacity-scaling-min-above-max.yaml:16:21: apps[0].scaling.max_replicas: 4 is below min_replicas 10",
    ),
    (
        "capacity-selector.yaml",
        r#"capacity-selector.yaml:15:7: apps[0].placement.cluster_selector: no target cluster of app "web" has the labels compliance=pci"#,
    ),
    (
        "capacity-strategy-needs-max.yaml",
        "capacity-strategy-needs-max.yaml:15:17: apps[0].placement.strategy: the capacity strategy divides by capacity.max_replicas, which these target clusters do not set: c1, c2",
    ),
    (
        "capacity-target-rps.yaml",
        "capacity-target-rps.yaml:14:31: apps[0].scaling.target_rps_per_replica: 0 must be a finite number above 0",
    ),
    (
        "dns-udp-workers.yaml",
        "dns-udp-workers.yaml:12:16: dns.udp_workers: must be at least 1 (or unset: one per CPU)",
    ),
    (
        "controller-token.yaml",
        "controller-token.yaml:13:44: controller.tokens[0].sha256: must be 64 hexadecimal digits (the SHA-256 of the token)",
    ),
    (
        "controller-plain-http.yaml",
        "controller-plain-http.yaml:12:11: controller.listen: 0.0.0.0:8090 is not a loopback address, and plain HTTP is allowed on loopback only: configure controller.tls (certificates: `meridian certs`, or a cert-manager Secret) or listen on 127.0.0.1",
    ),
    (
        "controller-vantage-twice.yaml",
        r#"controller-vantage-twice.yaml:14:67: controller.tokens[1].vantages[0]: vantage "edge" is already named by token "edge-a""#,
    ),
    (
        "proxy-admin-collision.yaml",
        "proxy-admin-collision.yaml:13:17: proxy.admin_listen: 127.0.0.1:7000 is also proxy.listen",
    ),
    (
        "bad-cidr.yaml",
        r#"bad-cidr.yaml:15:7: geo.subnets[0].cidr: "10.0.0.0/33" is not a CIDR network (address/prefix-length, such as 198.51.100.0/24)"#,
    ),
    (
        "bad-duration.yaml",
        r#"bad-duration.yaml:15:15: probes[0].interval: invalid value: string "fast", expected a duration"#,
    ),
    (
        "bad-endpoint.yaml",
        r#"bad-endpoint.yaml:5:5: clusters[1].endpoints: "localhost:9001" is not an endpoint address:port (IPv6 as [address]:port; names are not resolved)"#,
    ),
    (
        "bad-latitude.yaml",
        "bad-latitude.yaml:2:17: regions[0].location: latitude must be within ±90 and longitude within ±180",
    ),
    (
        "cidr-host-bits.yaml",
        "cidr-host-bits.yaml:15:15: geo.subnets[0].cidr: 10.1.2.3/8 has host bits set; the network is 10.0.0.0/8",
    ),
    (
        "cname-and-other-data.yaml",
        r#"cname-and-other-data.yaml:19:17: zones[0].records[1].name: "ns1.example.com" has a CNAME and other records"#,
    ),
    (
        "cname-loop.yaml",
        "cname-loop.yaml:20:40: zones[0].records[2].value: CNAME loop: a.example.com → b.example.com → c.example.com → a.example.com",
    ),
    (
        "cname-at-apex.yaml",
        "cname-at-apex.yaml:19:28: zones[0].records[1].type: a CNAME cannot be at the zone apex",
    ),
    (
        "country-code.yaml",
        r#"country-code.yaml:14:20: geo.countries.de: "de" is not an ISO 3166-1 alpha-2 country code (two upper-case letters)"#,
    ),
    (
        "dns-ttl.yaml",
        "dns-ttl.yaml:10:14: apps[0].dns_ttl: 0 is out of range 1..=86400 seconds",
    ),
    (
        "duplicate-cluster.yaml",
        r#"duplicate-cluster.yaml:5:13: clusters[1].name: duplicate cluster "c1""#,
    ),
    (
        "duplicate-hostname.yaml",
        r#"duplicate-hostname.yaml:14:17: apps[1].hostnames[0]: hostname "web.example.com" is already served by app "web""#,
    ),
    (
        "duplicate-target-cluster.yaml",
        r#"duplicate-target-cluster.yaml:12:20: apps[0].targets[1].cluster: duplicate target for cluster "c1""#,
    ),
    (
        "duplicate-zone.yaml",
        r#"duplicate-zone.yaml:19:11: zones[1].name: duplicate zone "example.com""#,
    ),
    (
        "geo-preferences-without-geo.yaml",
        "geo-preferences-without-geo.yaml:10:5: apps[0].geo_preferences: only the geo policy uses geo_preferences, but the policy is weighted",
    ),
    (
        "hostname-outside-zone.yaml",
        r#"hostname-outside-zone.yaml:8:34: apps[0].hostnames[1]: "web.example.net" is outside every zone (example.com)"#,
    ),
    (
        "invalid-hostname.yaml",
        r#"invalid-hostname.yaml:8:17: apps[0].hostnames[0]: "web server.example.com" is not a valid lower-case hostname"#,
    ),
    (
        "listener-collision.yaml",
        "listener-collision.yaml:14:11: controller.listen: 127.0.0.1:8080 is also proxy.listen",
    ),
    (
        "max-answers.yaml",
        "max-answers.yaml:14:16: dns.max_answers: 20 is out of range 1..=8",
    ),
    (
        "missing-failure-mode.yaml",
        "missing-failure-mode.yaml:7:5: apps[0]: missing field `failure_mode`",
    ),
    (
        "missing-geo-database.yaml",
        "missing-geo-database.yaml:14:15: geo.databases[0]: GeoLite2-Country.mmdb does not exist or is not a file",
    ),
    (
        "no-endpoints.yaml",
        "no-endpoints.yaml:5:44: clusters[1].endpoints: a cluster needs at least one ingress endpoint",
    ),
    (
        "probe-status.yaml",
        "probe-status.yaml:15:26: probes[0].expect_status[1]: 700 is not an HTTP status code (100-599)",
    ),
    (
        "probe-timeout.yaml",
        "probe-timeout.yaml:16:14: probes[0].timeout: 2s must be above zero and at most the interval (1s)",
    ),
    (
        "record-collides-with-app.yaml",
        r#"record-collides-with-app.yaml:19:17: zones[0].records[1].name: "web.example.com" is a hostname of app "web", which answers for it"#,
    ),
    (
        "record-outside-zone.yaml",
        r#"record-outside-zone.yaml:19:17: zones[0].records[1].name: "www.example.org" is outside zone "example.com""#,
    ),
    (
        "record-value.yaml",
        r#"record-value.yaml:19:38: zones[0].records[1].value: "2001:db8::1" is not an IPv4 address"#,
    ),
    (
        "unknown-cluster.yaml",
        r#"unknown-cluster.yaml:12:20: apps[0].targets[1].cluster: unknown cluster "c9""#,
    ),
    (
        "unknown-field.yaml",
        "unknown-field.yaml:10:5: apps[0].dns_tll: unknown field `dns_tll`, expected one of `name`, `hostnames`, `policy`, `failure_mode`, `dns_ttl`, `probe`, `drain_period`, `slow_start`, `geo_preferences`, `targets`, `placement`, `scaling`",
    ),
    (
        "unknown-policy.yaml",
        "unknown-policy.yaml:10:13: apps[0].policy: unknown variant `nearest`, expected one of `weighted`, `failover`, `geo`, `latency`",
    ),
    (
        "unknown-probe.yaml",
        r#"unknown-probe.yaml:10:12: apps[0].probe: unknown probe "healthz""#,
    ),
    (
        "unknown-region.yaml",
        r#"unknown-region.yaml:5:25: clusters[1].region: unknown region "mars""#,
    ),
    (
        "weight-out-of-range.yaml",
        "weight-out-of-range.yaml:12:32: apps[0].targets[1].weight: 20000 is out of range 0..=10000",
    ),
    (
        "wrong-type.yaml",
        r#"wrong-type.yaml:12:32: apps[0].targets[1].weight: string "heavy", expected a whole number from 0 to 4294967295"#,
    ),
    (
        "yaml-syntax.yaml",
        "yaml-syntax.yaml:9:17: apps[0].hostnames: did not find expected ',' or ']' at line 9 column 17, while parsing a flow sequence",
    ),
];

#[test]
fn every_bad_file_is_rejected_with_its_message() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    files.sort();
    let mut listed: Vec<String> = CASES.iter().map(|(file, _)| file.to_string()).collect();
    listed.sort();
    assert_eq!(
        files, listed,
        "every bad file needs an expected message, and every case a file"
    );
    for (file, expected) in CASES {
        // Diagnostics name the file as given, so pass the name relative to tests/bad.
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let err = meridian_config::parse(&text, &dir.join(file)).expect_err(file);
        let diagnostics: Vec<String> = err
            .diagnostics()
            .iter()
            .map(|d| d.replace(&format!("{}/", dir.display()), ""))
            .collect();
        assert!(
            diagnostics.iter().any(|d| d == expected),
            "{file}: expected {expected:?}\n got {diagnostics:#?}"
        );
    }
}

#[test]
fn every_example_passes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            meridian_config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            checked += 1;
        }
    }
    assert!(
        checked >= 3,
        "expected the example configs in deploy/examples"
    );
}

#[test]
fn embedded_demo_is_valid_and_matches_the_fixed_interface() {
    let demo =
        meridian_config::parse(meridian_config::DEMO_CONFIG, Path::new("<embedded demo>")).unwrap();
    let c = &demo.config;
    assert_eq!(c.proxy.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.dns.listen.to_string(), "127.0.0.1:8053");
    assert_eq!(c.controller.listen.to_string(), "127.0.0.1:8090");
    assert!(c.zones.iter().any(|z| z.name == "demo.test"));
    assert!(
        c.apps
            .iter()
            .any(|a| a.hostnames.iter().any(|h| h == "shop.demo.test"))
    );
    assert_eq!(c.clusters.len(), 3);
}

#[test]
fn unreadable_file_names_it() {
    let err = meridian_config::load(Path::new("/nonexistent/meridian.yaml")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/meridian.yaml: cannot read:"),
        "{err}"
    );
}

#[test]
fn a_misindented_field_is_pointed_at_where_it_is() {
    let text = "regions:\n  - { name: eu, location: { lat: 50.1, lon: 8.7 } }\nclusters:\n  - { name: c1, region: eu, provider: aws, endpoints: [\"127.0.0.1:9001\"] }\napps:\n  - name: web\n    hostnames: [web.example.com]\n    failure_mode: fail-open\n   targets:\n      - { cluster: c1 }\n";
    let err = meridian_config::parse(text, Path::new("misindented.yaml")).unwrap_err();
    assert_eq!(
        err.diagnostics(),
        [
            "misindented.yaml:6:5: apps[0]: missing field `targets`",
            "misindented.yaml:9:4: apps[0].targets: indented 3 spaces where the other fields of apps[0] are at 4, so it is not read as one of them",
        ]
    );
}
