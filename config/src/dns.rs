//! The DNS server's section: where it listens and how many addresses an answer carries.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8053))
}
fn default_max_answers() -> usize {
    1
}

/// The DNS process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// UDP and TCP listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Addresses per GSLB answer (each from a different target, in selection order).
    #[serde(default = "default_max_answers")]
    pub max_answers: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: default_listen(),
            max_answers: default_max_answers(),
        }
    }
}
