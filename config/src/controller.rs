//! The controller's section: its HTTP port (API, dashboard, metrics, watch stream).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8090))
}

/// The controller process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    /// Address of the API, dashboard, metrics and watch stream.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            listen: default_listen(),
        }
    }
}
