//! The DNS server's section: where it listens, how many addresses an answer carries, its
//! worker threads, TCP limits, response rate limiting and the admin (health, metrics)
//! listener.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8053))
}
fn default_max_answers() -> usize {
    1
}
fn default_tcp_idle_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_tcp_max_connections() -> usize {
    256
}
fn default_slip() -> u32 {
    2
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
    /// UDP worker threads, each with its own SO_REUSEPORT socket; one per core when unset.
    #[serde(default)]
    pub udp_workers: Option<usize>,
    /// A TCP connection with no query for this long is closed.
    #[serde(default = "default_tcp_idle_timeout", with = "humantime_serde")]
    pub tcp_idle_timeout: Duration,
    /// TCP connections served at once; more are closed on accept.
    #[serde(default = "default_tcp_max_connections")]
    pub tcp_max_connections: usize,
    /// Response rate limiting per client /24 (/56); off when unset.
    #[serde(default)]
    pub rrl: Option<RrlConfig>,
    /// HTTP listener for `/livez`, `/readyz` and `/metrics`; none when unset.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// Secondaries allowed to transfer the zones (AXFR over TCP); nobody when empty.
    #[serde(default)]
    pub axfr_allow: Vec<IpNet>,
}

/// Response rate limiting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RrlConfig {
    /// Responses per second per client network.
    pub rate: u32,
    /// Every `slip`-th limited response is sent truncated instead of dropped (0: never).
    #[serde(default = "default_slip")]
    pub slip: u32,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: default_listen(),
            max_answers: default_max_answers(),
            udp_workers: None,
            tcp_idle_timeout: default_tcp_idle_timeout(),
            tcp_max_connections: default_tcp_max_connections(),
            rrl: None,
            admin_listen: None,
            axfr_allow: Vec::new(),
        }
    }
}
