//! A real recursive resolver in front of Meridian: unbound with its subnet cache module and
//! a stub zone pointing at the server on loopback. Clients of different subnets (ECS sent
//! to unbound, which forwards it) get the geo answer for their subnet, each cached for its
//! own scope.

mod dns_support;

use dns_support::{CONFIG, Scratch, Server, Trust, Unbound, kdig};

#[test]
fn unbound_resolves_app_names_and_sees_the_geo_answer_per_subnet() {
    let server = Server::start(CONFIG);
    let dir = Scratch::new("dns-unbound");
    let unbound = Unbound::start(&dir, server.addr(), Trust::Insecure);
    let resolver = unbound.addr;

    let short = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["+short"];
        all.extend_from_slice(args);
        kdig(resolver, &all)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    };
    // An app hostname through the resolver.
    let shop = short(&["shop.example.test", "A"]);
    assert_eq!(shop.len(), 2, "{shop:?}");
    // Geo: each subnet gets its own answer, also when the other is already cached.
    for _ in 0..2 {
        let us = short(&["+subnet=198.51.100.0/24", "maps.example.test", "A"]);
        assert_eq!(us.first().map(String::as_str), Some("127.0.3.1"), "{us:?}");
        let eu = short(&["+subnet=192.0.2.0/24", "maps.example.test", "A"]);
        assert_eq!(eu.first().map(String::as_str), Some("127.0.1.2"), "{eu:?}");
    }
    // The authority saw the subnets unbound forwarded.
    assert!(
        server
            .dns
            .metrics()
            .ecs_seen
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
    // A CNAME into an app, resolved through the chain.
    let docs = short(&["docs.example.test", "A"]);
    assert_eq!(
        docs.first().map(String::as_str),
        Some("shop.example.test."),
        "{docs:?}"
    );
}

#[test]
fn a_private_client_subnet_does_not_poison_the_resolvers_cache() {
    // 10.0.0.0/8 is an on-premises network placed in us-east; 172.16.0.0/12 is placed
    // nowhere. Whatever a private client gets, the next public clients get their own answer.
    let config = CONFIG.replace(
        "    - { cidr: 192.0.2.0/24, region: eu-west }\n",
        "    - { cidr: 192.0.2.0/24, region: eu-west }\n    - { cidr: 10.0.0.0/8, region: us-east }\n",
    );
    let server = Server::start(&config);
    let dir = Scratch::new("dns-unbound-private");
    let unbound = Unbound::start(&dir, server.addr(), Trust::Insecure);
    let resolver = unbound.addr;
    let first = |subnet: &str| -> Option<String> {
        kdig(
            resolver,
            &[
                "+short",
                &format!("+subnet={subnet}"),
                "maps.example.test",
                "A",
            ],
        )
        .lines()
        .map(|l| l.trim().to_string())
        .find(|l| !l.is_empty())
    };
    assert_eq!(
        first("10.20.30.4/32").as_deref(),
        Some("127.0.3.1"),
        "on-prem: us-east"
    );
    assert_eq!(
        first("192.0.2.0/24").as_deref(),
        Some("127.0.1.2"),
        "public eu-west client"
    );
    let _ = first("172.16.5.0/24");
    assert_eq!(
        first("192.0.2.0/24").as_deref(),
        Some("127.0.1.2"),
        "still eu-west"
    );
    assert_eq!(
        first("198.51.100.0/24").as_deref(),
        Some("127.0.3.1"),
        "public us-east client"
    );
}
