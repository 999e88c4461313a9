//! The configuration file's schema. Field names are snake_case; enum values kebab-case.
//! Every struct refuses unknown fields, so a typo is an error, not a silent default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use meridian_routing::{FailureMode, GeoPreference, Location, Policy, Region};
use serde::{Deserialize, Serialize};

use crate::controller::ControllerConfig;
use crate::dns::DnsConfig;
use crate::proxy::ProxyConfig;

/// The whole file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Client and cluster regions, each with a representative location.
    pub regions: Vec<Region>,
    /// How clients are mapped to regions.
    #[serde(default)]
    pub geo: GeoConfig,
    /// Every cluster.
    pub clusters: Vec<ClusterConfig>,
    /// Named health-check definitions that apps refer to.
    #[serde(default)]
    pub probes: Vec<ProbeConfig>,
    /// Every app.
    pub apps: Vec<AppConfig>,
    /// DNS zones Meridian is authoritative for.
    #[serde(default)]
    pub zones: Vec<ZoneConfig>,
    /// The controller process.
    #[serde(default)]
    pub controller: ControllerConfig,
    /// The proxy process.
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// The DNS process.
    #[serde(default)]
    pub dns: DnsConfig,
}

/// Client address → region.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoConfig {
    /// MaxMind-format databases (GeoIP2/GeoLite2 Country or City, or any mmdb with a
    /// `country_code` field), relative to the config file.
    #[serde(default)]
    pub databases: Vec<PathBuf>,
    /// ISO country code → region.
    #[serde(default)]
    pub countries: BTreeMap<String, String>,
    /// CIDR overrides; the most specific prefix wins over the databases.
    #[serde(default)]
    pub subnets: Vec<SubnetConfig>,
}

/// One CIDR → region override.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetConfig {
    /// The client network, such as `198.51.100.0/24`.
    #[serde(deserialize_with = "cidr")]
    pub cidr: IpNet,
    /// Its region.
    pub region: String,
}

fn cidr<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<IpNet, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not a CIDR network (address/prefix-length, such as 198.51.100.0/24)"
        ))
    })
}

fn endpoints<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<SocketAddr>, D::Error> {
    let texts = Vec::<String>::deserialize(deserializer)?;
    texts
        .iter()
        .map(|text| {
            text.parse().map_err(|_| {
                serde::de::Error::custom(format!(
                    "{text:?} is not an endpoint address:port (IPv6 as [address]:port; names are not resolved)"
                ))
            })
        })
        .collect()
}

/// A cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Unique name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// `aws`, `gcp`, `azure`, `onprem`, …
    pub provider: String,
    /// Where it is; defaults to its region's location.
    #[serde(default)]
    pub location: Option<Location>,
    /// Ingress endpoints, `address:port` (IPv6 as `[addr]:port`).
    #[serde(deserialize_with = "endpoints")]
    pub endpoints: Vec<SocketAddr>,
    /// Labels, matched by apps' `placement.cluster_selector`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// What it can carry and costs, for placement and the planner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<crate::capacity::ClusterCapacity>,
}

/// What a probe speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeKind {
    /// An HTTP request; healthy when the status (and body, if set) match.
    #[default]
    Http,
    /// An HTTP request over TLS.
    Https,
    /// A TCP connect.
    Tcp,
}

fn default_probe_path() -> String {
    "/".into()
}
fn default_expect_status() -> Vec<u16> {
    vec![200]
}
fn default_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_probe_timeout() -> Duration {
    Duration::from_millis(800)
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}
fn default_true() -> bool {
    true
}

/// A health-check definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Unique name, referred to by apps.
    pub name: String,
    /// Protocol.
    #[serde(default)]
    pub kind: ProbeKind,
    /// HTTP path, starting with `/`.
    #[serde(default = "default_probe_path")]
    pub path: String,
    /// HTTP Host header; defaults to the app's first hostname.
    #[serde(default)]
    pub host: Option<String>,
    /// Status codes that count as healthy.
    #[serde(default = "default_expect_status")]
    pub expect_status: Vec<u16>,
    /// A substring the body must contain, when set.
    #[serde(default)]
    pub expect_body: Option<String>,
    /// Time between probes (jittered so probes do not synchronise).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Time one probe may take; at most the interval.
    #[serde(default = "default_probe_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy endpoint healthy.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that make a healthy endpoint unhealthy.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// TLS server name for `https`; defaults to the Host.
    #[serde(default)]
    pub sni: Option<String>,
    /// Verify the server certificate for `https`.
    #[serde(default = "default_true")]
    pub tls_verify: bool,
}

impl ProbeConfig {
    /// The probe used by apps that name none: a TCP connect to each endpoint.
    pub fn default_tcp() -> Self {
        ProbeConfig {
            name: "tcp".into(),
            kind: ProbeKind::Tcp,
            path: default_probe_path(),
            host: None,
            expect_status: default_expect_status(),
            expect_body: None,
            interval: default_interval(),
            timeout: default_probe_timeout(),
            rise: default_rise(),
            fall: default_fall(),
            sni: None,
            tls_verify: true,
        }
    }
}

fn default_weight() -> u32 {
    100
}
fn default_dns_ttl() -> u32 {
    30
}
fn default_drain_period() -> Duration {
    Duration::from_secs(30)
}
fn default_slow_start() -> Duration {
    Duration::from_secs(30)
}

/// One app in one cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The cluster.
    pub cluster: String,
    /// Relative weight, 0 to 10000.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Failover tier, 0 = primary.
    #[serde(default)]
    pub tier: u8,
}

/// An app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// Unique name.
    pub name: String,
    /// Hostnames, exact or `*.` wildcard; case-insensitive.
    pub hostnames: Vec<String>,
    /// Steering policy.
    #[serde(default)]
    pub policy: Policy,
    /// `fail-open` or `fail-closed`: required, so the choice is never an accident.
    pub failure_mode: FailureMode,
    /// TTL of DNS answers, seconds.
    #[serde(default = "default_dns_ttl")]
    pub dns_ttl: u32,
    /// The probe that checks its targets; a TCP connect when unset.
    #[serde(default)]
    pub probe: Option<String>,
    /// How long a drain ramps the weight down.
    #[serde(default = "default_drain_period", with = "humantime_serde")]
    pub drain_period: Duration,
    /// How long a recovered target ramps back up.
    #[serde(default = "default_slow_start", with = "humantime_serde")]
    pub slow_start: Duration,
    /// Per-region preferences of the `geo` policy.
    #[serde(default)]
    pub geo_preferences: Vec<GeoPreference>,
    /// The app in each of its clusters.
    pub targets: Vec<TargetConfig>,
    /// Where its replicas run (capacity-first failover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<crate::capacity::PlacementConfig>,
    /// How its replicas follow traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<crate::capacity::ScalingConfig>,
}

/// A DNS zone served authoritatively.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneConfig {
    /// The apex, such as `demo.test`.
    pub name: String,
    /// The SOA record's fields.
    pub soa: SoaConfig,
    /// Name servers for the apex NS record (absolute names).
    pub ns: Vec<String>,
    /// Static records.
    #[serde(default)]
    pub records: Vec<RecordConfig>,
    /// Online DNSSEC signing of everything the zone answers; unsigned when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dnssec: Option<crate::dns::DnssecConfig>,
}

fn default_refresh() -> u32 {
    3600
}
fn default_retry() -> u32 {
    600
}
fn default_expire() -> u32 {
    604_800
}
fn default_negative_ttl() -> u32 {
    60
}
fn default_record_ttl() -> u32 {
    300
}

/// SOA fields; the serial follows the routing table's version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SoaConfig {
    /// Primary name server.
    pub mname: String,
    /// Responsible mailbox as a name (`hostmaster.demo.test`).
    pub rname: String,
    /// Seconds.
    #[serde(default = "default_refresh")]
    pub refresh: u32,
    /// Seconds.
    #[serde(default = "default_retry")]
    pub retry: u32,
    /// Seconds.
    #[serde(default = "default_expire")]
    pub expire: u32,
    /// Negative-answer TTL (RFC 2308), seconds.
    #[serde(default = "default_negative_ttl")]
    pub minimum: u32,
    /// TTL of the SOA and apex NS records, seconds.
    #[serde(default = "default_record_ttl")]
    pub ttl: u32,
}

/// Static record types the zone file accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RecordType {
    /// IPv4 address.
    A,
    /// IPv6 address.
    Aaaa,
    /// Alias: `target.name.`
    Cname,
    /// Mail exchanger: `PREFERENCE EXCHANGE`.
    Mx,
    /// Text.
    Txt,
    /// Certification authority authorisation: `FLAGS TAG "VALUE"`.
    Caa,
    /// Service: `PRIORITY WEIGHT PORT TARGET`.
    Srv,
    /// Delegation below the apex: `nameserver.name.`
    Ns,
}

/// A static record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    /// Owner name relative to the zone (`www`, `@` for the apex) or absolute with a trailing dot.
    pub name: String,
    /// Record type.
    #[serde(rename = "type")]
    pub rtype: RecordType,
    /// TTL, seconds.
    #[serde(default = "default_record_ttl")]
    pub ttl: u32,
    /// Record data in presentation format.
    pub value: String,
}

impl Config {
    /// The routing table the config describes before any health verdict or operator
    /// override: every target healthy at its configured weight. Hostnames are lower-cased
    /// and a cluster without a location takes its region's.
    pub fn base_table(&self, version: u64, generated_at_ms: u64) -> meridian_routing::TableData {
        use meridian_routing::{App, Cluster, Health, RegionMap, SubnetRegion, TableData, Target};
        let region_location = |name: &str| {
            self.regions
                .iter()
                .find(|r| r.name == name)
                .map(|r| r.location)
                .unwrap_or(Location { lat: 0.0, lon: 0.0 })
        };
        TableData {
            version,
            generated_at_ms,
            regions: self.regions.clone(),
            clusters: self
                .clusters
                .iter()
                .map(|c| Cluster {
                    name: c.name.clone(),
                    region: c.region.clone(),
                    provider: c.provider.clone(),
                    location: c.location.unwrap_or_else(|| region_location(&c.region)),
                    endpoints: c.endpoints.clone(),
                })
                .collect(),
            apps: self
                .apps
                .iter()
                .map(|a| App {
                    name: a.name.clone(),
                    hostnames: a.hostnames.iter().map(|h| normalize_host(h)).collect(),
                    policy: a.policy,
                    failure_mode: a.failure_mode,
                    dns_ttl: a.dns_ttl,
                    geo_preferences: a.geo_preferences.clone(),
                    targets: a
                        .targets
                        .iter()
                        .map(|t| Target {
                            cluster: t.cluster.clone(),
                            weight: t.weight,
                            tier: t.tier,
                            health: Health::Healthy,
                        })
                        .collect(),
                })
                .collect(),
            geo: RegionMap {
                countries: self.geo.countries.clone(),
                subnets: self
                    .geo
                    .subnets
                    .iter()
                    .map(|s| SubnetRegion {
                        cidr: s.cidr,
                        region: s.region.clone(),
                    })
                    .collect(),
            },
            rtt: Vec::new(),
        }
    }

    /// The probe that checks an app's targets (the default TCP connect when it names none).
    pub fn probe_for(&self, app: &AppConfig) -> ProbeConfig {
        app.probe
            .as_ref()
            .and_then(|name| self.probes.iter().find(|p| &p.name == name))
            .cloned()
            .unwrap_or_else(ProbeConfig::default_tcp)
    }
}

/// A hostname as the routing table keeps it: lower case, no trailing dot.
pub fn normalize_host(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}
