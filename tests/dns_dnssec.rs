//! DNSSEC online signing checked by real validators: a validating unbound anchored at the
//! zone's DS in front of Meridian gives the AD bit for static names, for a geo app name
//! from two client subnets (two differently signed answers), for a name that does not
//! exist and for a type that does not (compact denial), and SERVFAIL when a signature is
//! tampered with on the way; kdig sees the RRSIGs, the DNSKEY and the NXNAME proof.

mod dns_support;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dns_support::{CONFIG, Scratch, Server, Trust, Unbound, kdig};
use meridian_dns::dnssec::{Algorithm, SigningKey};

/// The test config with the zone signed by `key_file` (relative to the config file).
fn signed_config(key_file: &str) -> String {
    CONFIG.replace(
        "      - { name: alias, type: CNAME, value: www.example.test }\n",
        "      - { name: alias, type: CNAME, value: www.example.test }\n      - { name: tampered, type: A, value: 192.0.2.66 }\n",
    ).replace(
        "    ns: [ns1.example.test, ns2.example.test]\n",
        &format!(
            "    ns: [ns1.example.test, ns2.example.test]\n    dnssec: {{ keys: [{{ file: {key_file} }}] }}\n"
        ),
    )
}

/// A signed server with a fresh key of `algorithm` in `dir`; returns it and the key.
fn signed_server(dir: &Scratch, algorithm: Algorithm) -> (Server, SigningKey) {
    let (key, text) = SigningKey::generate("example.test", algorithm, true);
    SigningKey::write_file(&dir.0.join("zone.key"), &text).expect("write key");
    let server = Server::start_in(&signed_config("zone.key"), &dir.0.join("config.yaml"));
    (server, key)
}

/// A UDP relay between unbound and Meridian that, while `tamper` is set, flips the last
/// byte of the signature in answers about `tampered.example.test` (the RRSIG is the last
/// record before the OPT).
fn tampering_relay(upstream: SocketAddr, tamper: Arc<AtomicBool>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("relay bind");
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65535];
        loop {
            let Ok((n, client)) = socket.recv_from(&mut buf) else {
                return;
            };
            let query = buf[..n].to_vec();
            let up = UdpSocket::bind("127.0.0.1:0").expect("relay upstream");
            up.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            if up.send_to(&query, upstream).is_err() {
                continue;
            }
            let mut reply = [0u8; 65535];
            let Ok(m) = up.recv(&mut reply) else { continue };
            let mut reply = reply[..m].to_vec();
            let about = String::from_utf8_lossy(&query).to_ascii_lowercase();
            let answers = u16::from_be_bytes([reply[6], reply[7]]);
            if tamper.load(Ordering::Relaxed) && about.contains("tampered") && answers >= 2 {
                // The OPT record (11 bytes, no options) ends the message.
                let at = reply.len() - 12;
                reply[at] ^= 0x5a;
            }
            let _ = socket.send_to(&reply, client);
        }
    });
    addr
}

/// The header flags line and the answer lines of a kdig reply.
struct Reply {
    text: String,
}

impl Reply {
    fn status(&self) -> &str {
        self.text
            .split("status: ")
            .nth(1)
            .and_then(|rest| rest.split([',', ';', '\n']).next())
            .unwrap_or("")
    }

    fn ad(&self) -> bool {
        self.text
            .lines()
            .find(|l| l.contains(";; Flags:"))
            .is_some_and(|l| {
                l.split_whitespace()
                    .any(|w| w.trim_end_matches(';') == "ad")
            })
    }

    /// Records of `rtype` in the answer section, as their data fields.
    fn answers(&self, rtype: &str) -> Vec<String> {
        let mut section = false;
        let mut out = Vec::new();
        for line in self.text.lines() {
            if line.starts_with(";; ANSWER SECTION") {
                section = true;
                continue;
            }
            if line.starts_with(";;") {
                section = false;
            }
            if !section {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() > 4 && fields[3] == rtype {
                out.push(fields[4..].join(" "));
            }
        }
        out
    }
}

fn ask(server: SocketAddr, args: &[&str]) -> Reply {
    Reply {
        text: kdig(server, args),
    }
}

#[test]
fn a_validating_resolver_accepts_every_kind_of_answer_and_refuses_a_tampered_one() {
    let dir = Scratch::new("dns-dnssec");
    let (server, key) = signed_server(&dir, Algorithm::EcdsaP256Sha256);
    let tamper = Arc::new(AtomicBool::new(false));
    let relay = tampering_relay(server.addr(), tamper.clone());
    let anchor = key.ds_text();
    let unbound = Unbound::start(&dir, relay, Trust::Anchor(&anchor));
    let resolver = unbound.addr;

    // A static name, validated.
    let www = ask(resolver, &["+adflag", "www.example.test", "A"]);
    assert_eq!(www.status(), "NOERROR", "{}", www.text);
    assert!(www.ad(), "AD for a static name: {}", www.text);
    assert_eq!(www.answers("A"), vec!["192.0.2.10"]);

    // A CNAME chain into a static name.
    let chain = ask(resolver, &["+adflag", "chain.example.test", "A"]);
    assert!(chain.ad(), "AD through a CNAME chain: {}", chain.text);

    // A geo app name from two client subnets: two answers, each validated.
    let us = ask(
        resolver,
        &[
            "+adflag",
            "+subnet=198.51.100.0/24",
            "maps.example.test",
            "A",
        ],
    );
    let eu = ask(
        resolver,
        &["+adflag", "+subnet=192.0.2.0/24", "maps.example.test", "A"],
    );
    assert!(us.ad() && eu.ad(), "AD for both: {}\n{}", us.text, eu.text);
    assert_eq!(us.answers("A"), vec!["127.0.3.1"]);
    assert_eq!(eu.answers("A"), vec!["127.0.1.2"]);
    // The weighted app with two addresses per answer, validated as well.
    let shop = ask(resolver, &["+adflag", "shop.example.test", "A"]);
    assert!(shop.ad(), "AD for a weighted answer: {}", shop.text);
    assert_eq!(shop.answers("A").len(), 2, "{}", shop.text);
    // A wildcard app name, signed as the name asked.
    let wild = ask(resolver, &["+adflag", "deep.er.shop.example.test", "A"]);
    assert!(wild.ad(), "AD for a wildcard app name: {}", wild.text);

    // A name that does not exist: compact denial, proven (NOERROR, empty, AD).
    let missing = ask(resolver, &["+adflag", "nothing-here.example.test", "A"]);
    assert!(missing.ad(), "AD for a denied name: {}", missing.text);
    assert!(missing.answers("A").is_empty());
    // A type that does not exist at a name, and at an app name.
    for (name, qtype) in [("www.example.test", "MX"), ("maps.example.test", "TXT")] {
        let nodata = ask(resolver, &["+adflag", name, qtype]);
        assert_eq!(nodata.status(), "NOERROR", "{}", nodata.text);
        assert!(nodata.ad(), "AD for NODATA {name} {qtype}: {}", nodata.text);
        assert!(nodata.answers(qtype).is_empty());
    }

    // The record is signed (asked of Meridian directly); tampered with on the way, the
    // resolver refuses it.
    let direct = ask(server.addr(), &["+dnssec", "tampered.example.test", "A"]);
    assert_eq!(direct.answers("RRSIG").len(), 1, "{}", direct.text);
    tamper.store(true, Ordering::Relaxed);
    let bad = ask(resolver, &["+adflag", "tampered.example.test", "A"]);
    assert_eq!(bad.status(), "SERVFAIL", "{}", bad.text);
    tamper.store(false, Ordering::Relaxed);

    // Signing cost and cache size are in the metrics.
    let metrics = server.dns.render_metrics();
    for name in [
        "meridian_dns_dnssec_table_signatures_total",
        "meridian_dns_dnssec_last_table_signing_seconds",
        "meridian_dns_dnssec_cache_entries",
    ] {
        assert!(metrics.contains(name), "{name} in\n{metrics}");
    }
}

#[test]
fn kdig_sees_signatures_keys_and_the_compact_denial() {
    let dir = Scratch::new("dns-dnssec-kdig");
    let (server, key) = signed_server(&dir, Algorithm::Ed25519);
    let addr = server.addr();

    let dnskey = ask(addr, &["+dnssec", "example.test", "DNSKEY"]);
    assert_eq!(dnskey.answers("DNSKEY").len(), 1, "{}", dnskey.text);
    assert!(dnskey.answers("DNSKEY")[0].starts_with("257 3 15"));
    assert_eq!(dnskey.answers("RRSIG").len(), 1);
    let cds = ask(addr, &["+dnssec", "example.test", "CDS"]);
    let ds = key.ds_text();
    let ds_fields = ds.split_whitespace().skip(3).collect::<Vec<_>>().join(" ");
    assert_eq!(cds.answers("CDS"), vec![ds_fields], "{}", cds.text);

    let www = ask(addr, &["+dnssec", "www.example.test", "A"]);
    let sig = www.answers("RRSIG");
    assert_eq!(sig.len(), 1, "{}", www.text);
    assert!(
        sig[0].starts_with("A 15 3 300 ") && sig[0].contains(&key.key_tag().to_string()),
        "{}",
        sig[0]
    );
    // Without DO, no DNSSEC records.
    let plain = ask(addr, &["www.example.test", "A"]);
    assert!(plain.answers("RRSIG").is_empty());

    // Two subnets, two differently signed geo answers.
    let us = ask(
        addr,
        &[
            "+dnssec",
            "+subnet=198.51.100.0/24",
            "maps.example.test",
            "A",
        ],
    );
    let eu = ask(
        addr,
        &["+dnssec", "+subnet=192.0.2.0/24", "maps.example.test", "A"],
    );
    assert_ne!(us.answers("A"), eu.answers("A"));
    assert_eq!(us.answers("RRSIG").len(), 1);
    assert_ne!(us.answers("RRSIG"), eu.answers("RRSIG"));
    // The same subnet again gets the signature made when the table arrived.
    let again = ask(
        addr,
        &[
            "+dnssec",
            "+subnet=198.51.100.0/24",
            "maps.example.test",
            "A",
        ],
    );
    assert_eq!(again.answers("RRSIG"), us.answers("RRSIG"));
    assert_eq!(
        server
            .dns
            .metrics()
            .dnssec_inline_signatures
            .load(Ordering::Relaxed),
        0,
        "the geo answers were signed ahead"
    );

    // NXDOMAIN as compact denial: NOERROR with an NSEC at the name holding NXNAME.
    let missing = ask(addr, &["+dnssec", "nothing-here.example.test", "A"]);
    assert_eq!(missing.status(), "NOERROR", "{}", missing.text);
    assert!(
        missing.text.contains("nothing-here.example.test.")
            && missing.text.contains("NSEC")
            && missing.text.contains("\\000.nothing-here.example.test."),
        "{}",
        missing.text
    );
    assert!(
        missing.text.contains("NXNAME") || missing.text.contains("TYPE128"),
        "{}",
        missing.text
    );
    // Without DO the same name is NXDOMAIN, as before.
    assert_eq!(
        ask(addr, &["nothing-here.example.test", "A"]).status(),
        "NXDOMAIN"
    );
    // NODATA lists the types that are there.
    let nodata = ask(addr, &["+dnssec", "www.example.test", "MX"]);
    assert!(
        nodata.text.contains("A AAAA RRSIG NSEC"),
        "NSEC bitmap of www: {}",
        nodata.text
    );
}

fn meridian(args: &[&str], dir: &Scratch) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .current_dir(&dir.0)
        .output()
        .expect("run meridian")
}

#[test]
fn keygen_ds_and_check_from_the_command_line() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = Scratch::new("dns-dnssec-cli");
    let made = meridian(
        &["dnssec", "keygen", "Example.Test.", "-o", "zone.key"],
        &dir,
    );
    assert!(made.status.success(), "{made:?}");
    let out = String::from_utf8_lossy(&made.stdout).into_owned();
    let text = std::fs::read_to_string(dir.0.join("zone.key")).unwrap();
    let secret = text
        .lines()
        .find_map(|l| l.strip_prefix("private-key: "))
        .expect("private key in the file");
    assert!(!out.contains(secret), "the private key is never printed");
    let mode = std::fs::metadata(dir.0.join("zone.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Never overwritten.
    assert!(
        !meridian(
            &["dnssec", "keygen", "example.test", "-o", "zone.key"],
            &dir
        )
        .status
        .success()
    );
    let ed = meridian(
        &[
            "dnssec",
            "keygen",
            "example.test",
            "--algorithm",
            "ed25519",
            "--zsk",
            "-o",
            "zsk.key",
        ],
        &dir,
    );
    assert!(
        String::from_utf8_lossy(&ed.stdout).contains("256 3 15"),
        "{ed:?}"
    );
    let rsa = meridian(
        &[
            "dnssec",
            "keygen",
            "example.test",
            "--algorithm",
            "rsasha256",
        ],
        &dir,
    );
    assert!(!rsa.status.success());

    std::fs::write(
        dir.0.join("config.yaml"),
        signed_config("zone.key").replace(
            "{ file: zone.key }",
            "{ file: zone.key }, { file: zsk.key }",
        ),
    )
    .unwrap();
    let ds = meridian(&["dnssec", "ds", "example.test", "-c", "config.yaml"], &dir);
    assert!(ds.status.success(), "{ds:?}");
    let ds = String::from_utf8_lossy(&ds.stdout).into_owned();
    let expected = SigningKey::load(&dir.0.join("zone.key")).unwrap().ds_text();
    assert_eq!(ds.trim(), expected, "one DS, for the KSK");
    let check = meridian(&["check", "-c", "config.yaml"], &dir);
    assert!(check.status.success(), "{check:?}");

    // A key others may read is refused, and `meridian check` says which one.
    std::fs::set_permissions(
        dir.0.join("zsk.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let check = meridian(&["check", "-c", "config.yaml"], &dir);
    assert!(!check.status.success());
    let err = String::from_utf8_lossy(&check.stderr).into_owned();
    assert!(
        err.contains("zones[0].dnssec.keys[1].file") && err.contains("must be 0600"),
        "{err}"
    );
    // A ZSK alone: no DS for the parent.
    std::fs::set_permissions(
        dir.0.join("zsk.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(dir.0.join("config.yaml"), signed_config("zsk.key")).unwrap();
    let check = meridian(&["check", "-c", "config.yaml"], &dir);
    let err = String::from_utf8_lossy(&check.stderr).into_owned();
    assert!(err.contains("no key-signing key"), "{err}");
}

/// The key tags of the RRSIGs over `rtype` in a reply, sorted.
fn rrsig_tags(reply: &Reply, rtype: &str) -> Vec<u16> {
    let mut tags: Vec<u16> = reply
        .answers("RRSIG")
        .iter()
        .filter(|sig| sig.starts_with(&format!("{rtype} ")))
        .filter_map(|sig| sig.split_whitespace().nth(6)?.parse().ok())
        .collect();
    tags.sort_unstable();
    tags
}

/// Every kind of answer (static, geo from two subnets, weighted, NXDOMAIN, NODATA, the key
/// set) validates through `resolver` at rollover step `phase`.
fn all_validate(resolver: SocketAddr, phase: u64) {
    for args in [
        &["+adflag", "www.example.test", "A"][..],
        &[
            "+adflag",
            "+subnet=198.51.100.0/24",
            "maps.example.test",
            "A",
        ],
        &["+adflag", "+subnet=192.0.2.0/24", "maps.example.test", "A"],
        &["+adflag", "shop.example.test", "A"],
        &["+adflag", &format!("gone-{phase}.example.test"), "A"],
        &["+adflag", "www.example.test", "MX"],
        &["+adflag", "example.test", "DNSKEY"],
    ] {
        let reply = ask(resolver, args);
        assert!(reply.ad(), "version {phase}, {args:?}: {}", reply.text);
    }
}

/// Waits until `resolver` holds a validated key set of `want` keys (the DNSKEY TTL is short
/// in the rollover tests, so it refetches after each step).
fn wait_for_key_set(resolver: SocketAddr, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let keys = ask(resolver, &["+adflag", "example.test", "DNSKEY"]);
        if keys.ad() && keys.answers("DNSKEY").len() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the resolver never held {want} keys: {}",
            keys.text
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The CDS records at the apex, as the DS text a parent would hold (without owner, class
/// and type).
fn published_cds(server: SocketAddr) -> Vec<String> {
    let mut cds = ask(server, &["example.test", "CDS"]).answers("CDS");
    cds.sort();
    cds
}

fn ds_rdata(key: &SigningKey) -> String {
    key.ds_text()
        .split_whitespace()
        .skip(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A rollover config: the test zone with `keys` (a YAML flow list) and a 1 s DNSKEY TTL.
fn rollover_config(keys: &str) -> String {
    signed_config("ksk.key")
        .replace("{ file: ksk.key }", keys)
        .replace("minimum: 60, ttl: 300", "minimum: 1, ttl: 1")
}

/// Writes a new key for the test zone to `dir/name`.
fn new_key(dir: &Scratch, name: &str, ksk: bool) -> SigningKey {
    let (key, text) = SigningKey::generate("example.test", Algorithm::EcdsaP256Sha256, ksk);
    SigningKey::write_file(&dir.0.join(name), &text).expect("write key");
    key
}

#[test]
fn a_pre_published_zsk_rollover_by_table_version_never_fails_validation() {
    // A KSK (the parent's DS, unchanged throughout) and two ZSKs: the new one is published
    // at version 2, signs from version 3, and the old one leaves at version 4. Each step
    // waits until the resolver holds the key set the step needs.
    let dir = Scratch::new("dns-dnssec-roll");
    let ksk = new_key(&dir, "ksk.key", true);
    let old = new_key(&dir, "old.key", false);
    let new = new_key(&dir, "new.key", false);
    let config = rollover_config(
        "{ file: ksk.key }, { file: old.key, inactive_from_version: 3, remove_from_version: 4 }, { file: new.key, publish_from_version: 2, active_from_version: 3 }",
    );
    let server = Server::start_in(&config, &dir.0.join("config.yaml"));
    let unbound = Unbound::start(&dir, server.addr(), Trust::Anchor(&ksk.ds_text()));
    let resolver = unbound.addr;

    // Version 1: KSK and the old ZSK; the old ZSK signs the data, the KSK the keys.
    let direct = ask(server.addr(), &["+dnssec", "www.example.test", "A"]);
    assert_eq!(rrsig_tags(&direct, "A"), vec![old.key_tag()]);
    let keys = ask(server.addr(), &["+dnssec", "example.test", "DNSKEY"]);
    assert_eq!(keys.answers("DNSKEY").len(), 2);
    assert_eq!(rrsig_tags(&keys, "DNSKEY"), vec![ksk.key_tag()]);
    all_validate(resolver, 1);

    // Version 2: the new ZSK is published, not yet signing.
    server.update(|_| {});
    wait_for_key_set(resolver, 3);
    let direct = ask(server.addr(), &["+dnssec", "www.example.test", "A"]);
    assert_eq!(rrsig_tags(&direct, "A"), vec![old.key_tag()]);
    all_validate(resolver, 2);

    // Version 3: the new ZSK signs; the old one is still published for cached signatures.
    server.update(|_| {});
    let direct = ask(server.addr(), &["+dnssec", "www.example.test", "A"]);
    assert_eq!(rrsig_tags(&direct, "A"), vec![new.key_tag()]);
    all_validate(resolver, 3);

    // Version 4: the old ZSK is withdrawn.
    server.update(|_| {});
    wait_for_key_set(resolver, 2);
    let keys = ask(server.addr(), &["+dnssec", "example.test", "DNSKEY"]);
    assert_eq!(keys.answers("DNSKEY").len(), 2, "{}", keys.text);
    all_validate(resolver, 4);
    // The DS the parent holds never changed.
    assert_eq!(published_cds(server.addr()), vec![ds_rdata(&ksk)]);
}

#[test]
fn a_double_signature_ksk_rollover_keeps_the_old_and_the_new_ds_valid() {
    // A ZSK signs the data throughout; the old KSK signs the key set alone at version 1, both
    // KSKs sign it at version 2 (double signature: a resolver holding either DS validates,
    // so the parent's DS can be swapped at any moment of this step), and from version 3 the
    // new KSK alone. A resolver anchored at the old DS stands for the parent before the swap,
    // one anchored at the new DS for the parent after it.
    let dir = Scratch::new("dns-dnssec-ksk-roll");
    let old = new_key(&dir, "ksk.key", true);
    let new = new_key(&dir, "new-ksk.key", true);
    let zsk = new_key(&dir, "zsk.key", false);
    let config = rollover_config(
        "{ file: ksk.key, remove_from_version: 3 }, { file: new-ksk.key, publish_from_version: 2 }, { file: zsk.key }",
    );
    let server = Server::start_in(&config, &dir.0.join("config.yaml"));
    let old_parent = Unbound::start(&dir, server.addr(), Trust::Anchor(&old.ds_text()));
    let before_swap = old_parent.addr;

    // Version 1: the old KSK signs the key set; the CDS names it alone.
    let keys = ask(server.addr(), &["+dnssec", "example.test", "DNSKEY"]);
    assert_eq!(rrsig_tags(&keys, "DNSKEY"), vec![old.key_tag()]);
    let direct = ask(server.addr(), &["+dnssec", "www.example.test", "A"]);
    assert_eq!(rrsig_tags(&direct, "A"), vec![zsk.key_tag()]);
    assert_eq!(published_cds(server.addr()), vec![ds_rdata(&old)]);
    all_validate(before_swap, 1);

    // Version 2: both KSKs sign the key set and the CDS offers both DS.
    server.update(|_| {});
    let keys = ask(server.addr(), &["+dnssec", "example.test", "DNSKEY"]);
    let mut both = vec![old.key_tag(), new.key_tag()];
    both.sort_unstable();
    assert_eq!(rrsig_tags(&keys, "DNSKEY"), both);
    let direct = ask(server.addr(), &["+dnssec", "www.example.test", "A"]);
    assert_eq!(rrsig_tags(&direct, "A"), vec![zsk.key_tag()]);
    let mut cds = vec![ds_rdata(&old), ds_rdata(&new)];
    cds.sort();
    assert_eq!(published_cds(server.addr()), cds);
    wait_for_key_set(before_swap, 3);
    all_validate(before_swap, 2);
    let new_dir = Scratch::new("dns-dnssec-ksk-roll-new");
    let new_parent = Unbound::start(&new_dir, server.addr(), Trust::Anchor(&new.ds_text()));
    let after_swap = new_parent.addr;
    all_validate(after_swap, 2);

    // Version 3: the old KSK is gone; the new DS carries the whole zone.
    server.update(|_| {});
    let keys = ask(server.addr(), &["+dnssec", "example.test", "DNSKEY"]);
    assert_eq!(rrsig_tags(&keys, "DNSKEY"), vec![new.key_tag()]);
    assert_eq!(published_cds(server.addr()), vec![ds_rdata(&new)]);
    wait_for_key_set(after_swap, 2);
    all_validate(after_swap, 3);
    // A parent still holding only the old DS now fails: the anchors above are what carried
    // the chain, not a resolver that accepts anything.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let keys = ask(before_swap, &["example.test", "DNSKEY"]);
        if keys.status() == "SERVFAIL" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a resolver anchored at the withdrawn KSK still answers: {}",
            keys.text
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_transfer_of_the_signed_zone_verifies_with_ldns() {
    // What a secondary receives: every RRset signed, a real NSEC chain, the keys; checked
    // by ldns-verify-zone, an independent implementation.
    let dir = Scratch::new("dns-dnssec-xfr");
    let (key, text) = SigningKey::generate("example.test", Algorithm::EcdsaP256Sha256, true);
    SigningKey::write_file(&dir.0.join("zone.key"), &text).expect("write key");
    let config = format!("{}  axfr_allow: [127.0.0.0/8]\n", signed_config("zone.key"));
    let server = Server::start_in(&config, &dir.0.join("config.yaml"));
    let axfr = kdig(server.dns.tcp_addr(), &["+tcp", "example.test", "AXFR"]);
    assert!(axfr.contains("NSEC") && axfr.contains("RRSIG"), "{axfr}");
    let zone: String = axfr
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect();
    let anchor = dir.0.join("anchor.ds");
    std::fs::write(&anchor, format!("{}\n", key.ds_text())).unwrap();
    let verify = |zone: &str| {
        let file = dir.0.join("transfer.zone");
        std::fs::write(&file, zone).unwrap();
        Command::new("ldns-verify-zone")
            .arg("-k")
            .arg(&anchor)
            .arg(&file)
            .output()
            .unwrap_or_else(|err| {
                panic!(
                    "ldns-verify-zone could not run ({err}); install it: apt-get install ldnsutils"
                )
            })
    };
    let verified = verify(&zone);
    assert!(
        verified.status.success(),
        "ldns-verify-zone: {}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    // The check can fail: one signature changed, and ldns refuses the zone.
    let line = zone
        .lines()
        .find(|l| l.starts_with("www.example.test.") && l.contains("RRSIG\tA "))
        .expect("the RRSIG of www A");
    let mut bad = line.to_string();
    let last = bad.pop().unwrap();
    bad.push(if last == 'A' { 'B' } else { 'A' });
    assert!(!verify(&zone.replace(line, &bad)).status.success());
}
