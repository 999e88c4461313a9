//! Serves a config's zones and base table: the same server `meridian dns -c FILE` runs,
//! built on its own (`cargo run --release -p meridian-dns --example serve -- FILE`) so the
//! DNS benchmark does not wait on the whole binary. Stops on SIGTERM or SIGINT (default
//! signal action). `serve keygen ZONE FILE` writes a DNSSEC key as `meridian dnssec keygen`
//! does, for the signed runs of the benchmark.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use meridian_dns::DnsServer;
use meridian_routing::RoutingTable;
use meridian_subscriber::TableCell;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(file) = std::env::args().nth(1) else {
        return Err("usage: serve CONFIG.yaml | serve keygen ZONE FILE".into());
    };
    if file == "keygen" {
        let (Some(zone), Some(out)) = (std::env::args().nth(2), std::env::args().nth(3)) else {
            return Err("usage: serve keygen ZONE FILE".into());
        };
        let (key, text) = meridian_dns::dnssec::SigningKey::generate(
            &zone,
            meridian_dns::dnssec::Algorithm::EcdsaP256Sha256,
            true,
        );
        meridian_dns::dnssec::SigningKey::write_file(out.as_ref(), &text)?;
        println!("{}", key.ds_text());
        return Ok(());
    }
    let loaded =
        meridian_config::load(file.as_ref()).map_err(|err| err.diagnostics().join("\n"))?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let cell = Arc::new(TableCell::new());
    cell.store(Arc::new(RoutingTable::new(
        loaded.config.base_table(1, now_ms),
    )?));
    let server = DnsServer::start(&loaded, cell)?;
    eprintln!("serving on {} (udp and tcp)", server.udp_addr());
    loop {
        std::thread::park();
    }
}
