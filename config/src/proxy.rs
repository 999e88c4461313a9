//! The proxy's section: where it listens.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// The proxy process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Plain HTTP (HTTP/1.1 and h2c) listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: default_listen(),
        }
    }
}
