//! Starting the server with bad settings fails with an error that names what is wrong.

use std::path::Path;
use std::sync::Arc;

use meridian_dns::{DnsError, DnsServer};
use meridian_subscriber::TableCell;

const BASE: &str = r#"
regions: [{ name: eu, location: { lat: 50.0, lon: 8.0 } }]
clusters: [{ name: a, region: eu, provider: aws, endpoints: ["127.0.1.1:443"] }]
apps: [{ name: w, hostnames: [w.z.test], failure_mode: fail-open, targets: [{ cluster: a }] }]
zones: [{ name: z.test, soa: { mname: ns.z.test, rname: h.z.test }, ns: [ns.z.test] }]
"#;

fn start(extra: &str, file: &Path) -> Result<meridian_dns::RunningDns, DnsError> {
    let config = meridian_config::parse(&format!("{BASE}{extra}"), file)
        .unwrap_or_else(|e| panic!("{}", e.diagnostics().join("\n")));
    DnsServer::start(&config, Arc::new(TableCell::new()))
}

#[test]
fn zero_workers_is_refused_by_name() {
    // `meridian check` refuses this in a file; a config built in memory meets the server's
    // own check.
    let mut config = meridian_config::parse(
        &format!("{BASE}dns: {{ listen: 127.0.0.1:0 }}\n"),
        Path::new("/x/c.yaml"),
    )
    .unwrap();
    config.config.dns.udp_workers = Some(0);
    let err = DnsServer::start(&config, Arc::new(TableCell::new()))
        .err()
        .expect("an error");
    assert!(
        err.to_string()
            .contains("dns.udp_workers must be at least 1"),
        "{err}"
    );
}

#[test]
fn a_geo_database_that_is_not_mmdb_is_named() {
    let dir = std::env::temp_dir().join(format!("meridian-dns-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bad.mmdb"), b"not a database").unwrap();
    let result = start(
        "geo: { databases: [bad.mmdb] }\ndns: { listen: 127.0.0.1:0 }\n",
        &dir.join("c.yaml"),
    );
    std::fs::remove_dir_all(&dir).unwrap();
    let err = result.err().expect("an error");
    assert!(matches!(err, DnsError::GeoDatabase { .. }), "{err}");
    assert!(err.to_string().contains("bad.mmdb"), "{err}");
}

#[test]
fn a_port_in_use_is_named() {
    let first = start("dns: { listen: 127.0.0.1:0 }\n", Path::new("/x/c.yaml")).unwrap();
    let addr = first.udp_addr();
    let err = start(
        &format!("dns: {{ listen: \"{addr}\" }}\n"),
        Path::new("/x/c.yaml"),
    )
    .err()
    .expect("the second server must not share the port");
    let text = err.to_string();
    assert!(
        text.contains(&addr.to_string()) && text.contains("tcp"),
        "{text}"
    );
    first.shutdown();
}
