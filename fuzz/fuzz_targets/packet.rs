//! Fuzz target over the DNS packet handler: any bytes, over UDP and TCP, must produce no
//! panic and either nothing or a well-formed response with the query's id and QR set.
//! Run: `cargo +nightly fuzz run packet -- -max_total_time=60` (from this folder).
#![no_main]

use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use meridian_dns::geo::GeoDb;
use meridian_dns::snapshot::Zones;
use meridian_dns::{Action, Handler, Metrics, Transport, Worker};
use meridian_routing::RoutingTable;
use meridian_subscriber::TableCell;

const CONFIG: &str = include_str!("../../deploy/examples/demo.yaml");

fn handler() -> &'static Handler {
    static HANDLER: OnceLock<Handler> = OnceLock::new();
    HANDLER.get_or_init(|| {
        let config = meridian_config::parse(CONFIG, Path::new("/nonexistent/demo.yaml"))
            .expect("demo config");
        let cell = Arc::new(TableCell::new());
        cell.store(Arc::new(
            RoutingTable::new(config.config.base_table(1, 0)).expect("table"),
        ));
        let zones = Zones::from_config(&config.config.zones).expect("zones");
        Handler::new(
            zones,
            GeoDb::default(),
            cell,
            config.config.dns.max_answers,
            Arc::new(Metrics::default()),
            None,
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let handler = handler();
    let mut worker = Worker::new(handler, 1);
    let mut out = Vec::new();
    let src: IpAddr = "192.0.2.1".parse().expect("addr");
    for transport in [Transport::Udp, Transport::Tcp] {
        if handler.handle(&mut worker, data, src, transport, &mut out) == Action::Send {
            assert!(out.len() >= 12);
            assert_eq!(out[..2], data[..2]);
            assert!(out[2] & 0x80 != 0);
            if transport == Transport::Udp {
                assert!(out.len() <= 1232);
            }
            hickory_proto::op::Message::from_vec(&out).expect("response parses");
        }
    }
});
