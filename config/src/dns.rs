//! The DNS server's section: where it listens, how many addresses an answer carries, its
//! worker threads, TCP limits and timeouts, response rate limiting (on by default) and the
//! admin (health, metrics) listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8053))
}
/// The admin listener of a DNS server run on its own when `dns.admin_listen` is unset: the
/// port the Helm chart gives it, on loopback.
pub const STANDALONE_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9054);
fn default_max_answers() -> usize {
    1
}
fn default_tcp_idle_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_tcp_max_connections() -> usize {
    256
}
fn default_tcp_max_connections_per_client() -> usize {
    16
}
fn default_tcp_write_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_rate() -> u32 {
    200
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
    /// More UDP and TCP listeners served the same way, e.g. the IPv6 address beside an
    /// IPv4 `listen` (each its own sockets; a port of 0 picks a free port per address).
    #[serde(default)]
    pub also_listen: Vec<SocketAddr>,
    /// Addresses per GSLB answer (each from a different target, in selection order).
    #[serde(default = "default_max_answers")]
    pub max_answers: usize,
    /// UDP worker threads, each with its own SO_REUSEPORT socket; one per core when unset.
    #[serde(default)]
    pub udp_workers: Option<usize>,
    /// Each query on a TCP connection must arrive whole within this long of the connection's
    /// start or of the previous answer; else the connection is closed. Bytes trickling in
    /// do not extend it.
    #[serde(default = "default_tcp_idle_timeout", with = "humantime_serde")]
    pub tcp_idle_timeout: Duration,
    /// A TCP client that does not take an answer within this long is disconnected.
    #[serde(default = "default_tcp_write_timeout", with = "humantime_serde")]
    pub tcp_write_timeout: Duration,
    /// TCP connections served at once; more are closed on accept. The last quarter is kept
    /// for client addresses that hold no connection yet.
    #[serde(default = "default_tcp_max_connections")]
    pub tcp_max_connections: usize,
    /// TCP connections one client address (IPv6: one /64) may hold at once.
    #[serde(default = "default_tcp_max_connections_per_client")]
    pub tcp_max_connections_per_client: usize,
    /// Response rate limiting per client /24 (/56) over UDP; on by default.
    #[serde(default)]
    pub rrl: RrlConfig,
    /// HTTP listener for `/livez`, `/readyz` and `/metrics`. When unset, `meridian dns`
    /// listens on [`STANDALONE_ADMIN_LISTEN`] (as the proxy's admin listener has a default);
    /// inside `meridian up` there is none, the proxy's and the controller's serve health there.
    #[serde(default)]
    pub admin_listen: Option<SocketAddr>,
    /// Secondaries allowed to transfer the zones (AXFR and IXFR over TCP); nobody when
    /// empty.
    #[serde(default)]
    pub axfr_allow: Vec<IpNet>,
    /// Secondaries (address:port) sent a NOTIFY for every zone whenever a new table
    /// version changes the zones.
    #[serde(default)]
    pub notify: Vec<SocketAddr>,
    /// A TSIG key (RFC 8945, HMAC-SHA256): when set, every transfer must be signed with
    /// it (besides coming from `axfr_allow`), and NOTIFYs are signed with it.
    #[serde(default)]
    pub tsig: Option<TsigConfig>,
    /// Zone versions kept for incremental transfers (IXFR); a secondary further behind
    /// gets the whole zone.
    #[serde(default = "default_ixfr_journal")]
    pub ixfr_journal: usize,
}

fn default_ixfr_journal() -> usize {
    16
}

/// A TSIG key shared with the secondaries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TsigConfig {
    /// The key's name, as the secondaries know it (`transfer-key`).
    pub name: String,
    /// Only `hmac-sha256`.
    #[serde(default = "default_tsig_algorithm")]
    pub algorithm: String,
    /// A file (0600, relative to the config file) holding the secret in base64, as
    /// `tsig-keygen` or `openssl rand -base64 32` prints it.
    pub secret_file: PathBuf,
}

fn default_tsig_algorithm() -> String {
    "hmac-sha256".into()
}

/// Response rate limiting, as NSD does it by default: it keeps the server from being used
/// to flood a spoofed source, at a rate no single resolver network reaches in normal use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RrlConfig {
    /// Responses per second per client network; 0 turns rate limiting off.
    #[serde(default = "default_rate")]
    pub rate: u32,
    /// Every `slip`-th limited response is sent truncated instead of dropped (0: never), so
    /// a real client behind a spoofed flood can retry over TCP.
    #[serde(default = "default_slip")]
    pub slip: u32,
    /// Client networks never limited: the resolvers you know send you a lot (a large
    /// ISP's or a public resolver's ranges), monitoring, a local resolver.
    #[serde(default)]
    pub exempt: Vec<IpNet>,
}

impl Default for RrlConfig {
    fn default() -> Self {
        RrlConfig {
            rate: default_rate(),
            slip: default_slip(),
            exempt: Vec::new(),
        }
    }
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: default_listen(),
            also_listen: Vec::new(),
            max_answers: default_max_answers(),
            udp_workers: None,
            tcp_idle_timeout: default_tcp_idle_timeout(),
            tcp_write_timeout: default_tcp_write_timeout(),
            tcp_max_connections: default_tcp_max_connections(),
            tcp_max_connections_per_client: default_tcp_max_connections_per_client(),
            rrl: RrlConfig::default(),
            admin_listen: None,
            axfr_allow: Vec::new(),
            notify: Vec::new(),
            tsig: None,
            ixfr_journal: default_ixfr_journal(),
        }
    }
}

fn default_validity() -> Duration {
    Duration::from_secs(14 * 86_400)
}
fn default_jitter() -> Duration {
    Duration::from_secs(86_400)
}
fn default_inception_offset() -> Duration {
    Duration::from_secs(3_600)
}

/// A zone's online signing (`zones[].dnssec`): every answer, GSLB answers included, is
/// signed when a routing table arrives; denial of existence is compact (RFC 9824).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnssecConfig {
    /// The zone's keys (made by `meridian dnssec keygen`), relative to the config file. One
    /// key with flags 257 is a combined signing key; a 257 and a 256 are a KSK and a ZSK.
    pub keys: Vec<DnssecKeyConfig>,
    /// How long a signature is valid from the moment it is made.
    #[serde(default = "default_validity", with = "humantime_serde")]
    pub validity: Duration,
    /// Up to this much is added at random to each server's expiration, so servers and
    /// zones do not all re-sign at the same moment.
    #[serde(default = "default_jitter", with = "humantime_serde")]
    pub jitter: Duration,
    /// Signatures are dated this far in the past, for validators whose clock is behind.
    #[serde(default = "default_inception_offset", with = "humantime_serde")]
    pub inception_offset: Duration,
}

/// One key of a zone and, for a rollover, the routing-table versions at which it enters
/// and leaves: every DNS server switches at the same version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnssecKeyConfig {
    /// The key file, relative to the config file.
    pub file: PathBuf,
    /// The DNSKEY is published from this table version on (always when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_from_version: Option<u64>,
    /// The key signs from this table version on (always when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_from_version: Option<u64>,
    /// The key no longer signs from this table version on (it stays published).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inactive_from_version: Option<u64>,
    /// The DNSKEY is withdrawn from this table version on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_from_version: Option<u64>,
}

impl DnssecKeyConfig {
    /// Whether the DNSKEY is published at table `version`.
    pub fn published_at(&self, version: u64) -> bool {
        self.publish_from_version.is_none_or(|v| version >= v)
            && self.remove_from_version.is_none_or(|v| version < v)
    }

    /// Whether the key signs at table `version`.
    pub fn active_at(&self, version: u64) -> bool {
        self.published_at(version)
            && self.active_from_version.is_none_or(|v| version >= v)
            && self.inactive_from_version.is_none_or(|v| version < v)
    }
}
