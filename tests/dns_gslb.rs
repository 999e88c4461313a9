//! GSLB answers for app hostnames: weighted shares, failover when a new table marks a
//! target unhealthy, fail-closed, geo answers by client subnet (config overrides and mmdb
//! files in both layouts) and the RFC 7871 echo and scope rules, over real sockets.

mod dns_support;

use std::collections::HashMap;
use std::net::IpAddr;

use dns_support::mmdb::{self, Value};
use dns_support::{CONFIG, Opts, Scratch, Server, addrs, ecs, kdig, udp};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use meridian_routing::Health;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn with_ecs(addr: &str, prefix: u8) -> Opts {
    Opts {
        edns: None,
        ecs: Some((ip(addr), prefix)),
    }
}

#[test]
fn weighted_shares_within_tolerance() {
    let server = Server::start(CONFIG);
    let mut first: HashMap<IpAddr, u32> = HashMap::new();
    let n = 2000;
    for _ in 0..n {
        let reply = udp(
            server.addr(),
            "shop.example.test.",
            RecordType::A,
            Opts::default(),
        );
        assert_eq!(reply.answers[0].ttl, 5, "the app's dns_ttl");
        let got = addrs(&reply);
        assert_eq!(got.len(), 2, "max_answers addresses from different targets");
        assert_ne!(got[0], got[1]);
        *first.entry(got[0]).or_default() += 1;
    }
    let eu = f64::from(first[&ip("127.0.1.1")]) / f64::from(n);
    // Weights 300 : 100 → 75 % of first answers to eu1.
    assert!((eu - 0.75).abs() < 0.03, "eu1 share {eu:.3}");
    // AAAA comes from the IPv6 endpoints of the chosen clusters only.
    let v6 = udp(
        server.addr(),
        "shop.example.test.",
        RecordType::AAAA,
        Opts::default(),
    );
    assert_eq!(addrs(&v6), vec![ip("::1")]);
    // A wildcard hostname of the app answers too.
    let wild = udp(
        server.addr(),
        "x.y.shop.example.test.",
        RecordType::A,
        Opts::default(),
    );
    assert_eq!(wild.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addrs(&wild).len(), 2);
}

#[test]
fn failover_follows_a_new_table_and_fail_closed_answers_nodata() {
    let server = Server::start(CONFIG);
    let pay = || {
        udp(
            server.addr(),
            "pay.example.test.",
            RecordType::A,
            Opts::default(),
        )
    };
    // Tier 0 only, even with max_answers 2: a backup never rides along with a healthy primary.
    assert_eq!(addrs(&pay()), vec![ip("127.0.1.1")]);
    server.update(|t| {
        let app = t.apps.iter_mut().find(|a| a.name == "pay").unwrap();
        app.targets[0].health = Health::Unhealthy;
    });
    assert_eq!(addrs(&pay()), vec![ip("127.0.3.1")], "fails over to tier 1");
    server.update(|t| {
        for app in &mut t.apps {
            for target in &mut app.targets {
                target.health = Health::Unhealthy;
            }
        }
    });
    // pay fails closed: NODATA whose negative TTL is capped at the app's TTL (10 s).
    let closed = pay();
    assert_eq!(closed.metadata.response_code, ResponseCode::NoError);
    assert!(closed.answers.is_empty());
    assert_eq!(closed.authorities.len(), 1);
    assert_eq!(closed.authorities[0].ttl, 10);
    // shop fails open: still answered.
    let open = udp(
        server.addr(),
        "shop.example.test.",
        RecordType::A,
        Opts::default(),
    );
    assert_eq!(addrs(&open).len(), 2);
    // Recovery in the next table.
    server.update(|t| {
        for app in &mut t.apps {
            for target in &mut app.targets {
                target.health = Health::Healthy;
            }
        }
    });
    assert_eq!(addrs(&pay()), vec![ip("127.0.1.1")]);
}

#[test]
fn geo_answers_by_client_subnet_with_scope() {
    let server = Server::start(CONFIG);
    let maps = |opts| udp(server.addr(), "maps.example.test.", RecordType::A, opts);

    // us-east by the /24 override: us1, scope 25 (its upper half is the /25 override's).
    let us = maps(with_ecs("198.51.100.0", 24));
    assert_eq!(addrs(&us)[0], ip("127.0.3.1"));
    assert_eq!(ecs(&us), Some((ip("198.51.100.0"), 24, 25)));
    // The more specific /25 override inside it: eu-west → eu2, scope 25.
    let eu = maps(with_ecs("198.51.100.128", 25));
    assert_eq!(addrs(&eu)[0], ip("127.0.1.2"));
    assert_eq!(ecs(&eu), Some((ip("198.51.100.128"), 25, 25)));
    // A /32 source placed by the /24 override: scope 25, not 24, since the other half of
    // the /24 is the /25 override's (a resolver must not hand this answer to it).
    let host = maps(with_ecs("198.51.100.7", 32));
    assert_eq!(addrs(&host)[0], ip("127.0.3.1"));
    assert_eq!(ecs(&host).map(|e| e.2), Some(25));
    // A /23 source over both: the scope is longer than the source (RFC 7871 §7.2.1), so
    // the resolver keeps the answer for the /25 it holds for, not the whole /23.
    let wide = maps(with_ecs("198.51.100.0", 23));
    assert_eq!(ecs(&wide).map(|e| (e.1, e.2)), Some((23, 25)));
    // eu-west by 192.0.2.0/24.
    let ie = maps(with_ecs("192.0.2.0", 24));
    assert_eq!(addrs(&ie)[0], ip("127.0.1.2"));
    // A private ECS address no override maps falls back to the resolver's address; the
    // answer is scoped to the client's own network, so a cache never gives it to others.
    let private = maps(with_ecs("10.1.2.0", 24));
    assert_eq!(ecs(&private), Some((ip("10.1.2.0"), 24, 24)));
    // An answer that does not depend on location: scope 0.
    let shop = udp(
        server.addr(),
        "shop.example.test.",
        RecordType::A,
        with_ecs("198.51.100.0", 24),
    );
    assert_eq!(ecs(&shop), Some((ip("198.51.100.0"), 24, 0)));
    let www = udp(
        server.addr(),
        "www.example.test.",
        RecordType::A,
        with_ecs("198.51.100.0", 24),
    );
    assert_eq!(ecs(&www).map(|e| e.2), Some(0));
    // No ECS in the query: none in the reply.
    let plain = maps(Opts {
        edns: Some(1232),
        ecs: None,
    });
    assert!(plain.edns.is_some());
    assert_eq!(ecs(&plain), None);
    // IPv6 ECS with an unknown location: no IPv6 override exists, so every IPv6 client
    // gets this answer; scope 1, never 0, which resolvers would cache for IPv4 clients too.
    let v6 = maps(with_ecs("2001:db8:1::", 48));
    assert_eq!(ecs(&v6), Some((ip("2001:db8:1::"), 48, 1)));

    // kdig shows the same echo and scope.
    let text = kdig(
        server.addr(),
        &["+subnet=198.51.100.0/24", "maps.example.test", "A"],
    );
    assert!(text.contains("CLIENT-SUBNET: 198.51.100.0/24/25"), "{text}");
    assert!(text.contains("127.0.3.1"), "{text}");
    let text = kdig(
        server.addr(),
        &["+subnet=192.0.2.0/24", "maps.example.test", "A"],
    );
    assert!(text.contains("127.0.1.2"), "{text}");
}

#[test]
fn geo_from_mmdb_files_in_both_layouts() {
    let dir = Scratch::new("dns-mmdb");
    // GeoIP2 layout (country.iso_code), an IPv4 database.
    let geoip2 = mmdb::build(
        4,
        &[(
            ip("203.0.113.0"),
            24,
            Value::map([("country", Value::map([("iso_code", Value::str("US"))]))]),
        )],
    );
    // Flat layout (country_code), an IPv6 database.
    let flat = mmdb::build(
        6,
        &[(
            ip("2001:db8:100::"),
            48,
            Value::map([("country_code", Value::str("IE"))]),
        )],
    );
    std::fs::write(dir.0.join("geoip2.mmdb"), geoip2).unwrap();
    std::fs::write(dir.0.join("flat.mmdb"), flat).unwrap();
    let yaml = CONFIG.replace(
        "geo:\n",
        "geo:\n  databases: [geoip2.mmdb, flat.mmdb]\n",
    ).replace(
        "    - { cidr: 192.0.2.0/24, region: eu-west }\n",
        "    - { cidr: 192.0.2.0/24, region: eu-west }\n    - { cidr: 203.0.113.128/25, region: eu-west }\n",
    );
    let server = Server::start_in(&yaml, &dir.0.join("config.yaml"));
    let maps = |opts| udp(server.addr(), "maps.example.test.", RecordType::A, opts);

    let us = maps(with_ecs("203.0.113.0", 24));
    assert_eq!(addrs(&us)[0], ip("127.0.3.1"), "US by the GeoIP2 layout");
    assert_eq!(
        ecs(&us).map(|e| e.2),
        Some(25),
        "the database's /24, narrowed to the half without the /25 override"
    );
    let ie = maps(with_ecs("2001:db8:100::", 56));
    assert_eq!(addrs(&ie)[0], ip("127.0.1.2"), "IE by the flat layout");
    assert_eq!(ecs(&ie).map(|e| e.2), Some(48));
    // The more specific config override beats the database's /24.
    let over = maps(with_ecs("203.0.113.200", 32));
    assert_eq!(addrs(&over)[0], ip("127.0.1.2"));
    assert_eq!(ecs(&over).map(|e| e.2), Some(25));
}

#[test]
fn configured_subnets_place_private_ecs_addresses() {
    // On-premises clients behind a resolver that forwards their private address.
    let server = Server::start(&CONFIG.replace(
        "    - { cidr: 192.0.2.0/24, region: eu-west }\n",
        "    - { cidr: 192.0.2.0/24, region: eu-west }\n    - { cidr: 10.0.0.0/8, region: us-east }\n    - { cidr: 100.64.0.0/10, region: eu-west }\n    - { cidr: \"fc00::/7\", region: us-east }\n",
    ));
    let maps = |opts| udp(server.addr(), "maps.example.test.", RecordType::A, opts);
    let onprem = maps(with_ecs("10.20.30.0", 24));
    assert_eq!(addrs(&onprem)[0], ip("127.0.3.1"), "us-east by 10.0.0.0/8");
    assert_eq!(ecs(&onprem).map(|e| e.2), Some(8));
    let cgnat = maps(with_ecs("100.64.5.0", 24));
    assert_eq!(
        addrs(&cgnat)[0],
        ip("127.0.1.2"),
        "eu-west by 100.64.0.0/10"
    );
    assert_eq!(ecs(&cgnat).map(|e| e.2), Some(10));
    let ula = maps(with_ecs("fd12:3456::", 48));
    assert_eq!(addrs(&ula)[0], ip("127.0.3.1"), "us-east by fc00::/7");
    assert_eq!(ecs(&ula).map(|e| e.2), Some(7));
}

#[test]
fn answer_counters_stay_with_their_app_when_a_table_reorders_apps() {
    let server = Server::start(CONFIG);
    let ask = |name: &str| udp(server.addr(), name, RecordType::A, Opts::default());
    let m = server.dns.metrics();
    for _ in 0..10 {
        ask("pay.example.test.");
    }
    assert_eq!(m.answers("pay", "eu1"), 10);
    // The next table lists the apps in another order (and pay's targets too).
    server.update(|t| {
        t.apps.reverse();
        for app in &mut t.apps {
            app.targets.reverse();
        }
    });
    for _ in 0..4 {
        ask("pay.example.test.");
    }
    assert_eq!(
        m.answers("pay", "eu1"),
        14,
        "counted under pay, not a neighbour"
    );
    assert_eq!(m.answers("maps", "eu2") + m.answers("maps", "us1"), 0);
    let text = server.dns.render_metrics();
    assert!(
        text.contains("meridian_dns_answers_total{app=\"pay\",cluster=\"eu1\"} 14"),
        "{text}"
    );
}
