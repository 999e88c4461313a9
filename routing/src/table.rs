//! The routing table: [`TableData`] is the plain data that is configured, computed and sent;
//! [`RoutingTable`] is a validated, indexed, immutable snapshot of it that selection reads.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::app::{App, MAX_TARGETS_PER_APP, MAX_WEIGHT, Policy};
use crate::cluster::{Cluster, Region};
use crate::digest::{Digest, app_digest, table_digest};
use crate::error::{Problem, TableError};
use crate::geo::{RegionIndex, RegionMap, RegionMatch, SubnetAnswer};

/// Index of an app in a table's [`TableData::apps`]. Only meaningful for the table it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AppId(pub u32);

/// Index of a region in a table's [`TableData::regions`]. Only meaningful for the table it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegionId(pub u16);

/// A measured round-trip time from clients of a region to a cluster, for the `latency` policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RttSample {
    /// The clients' region.
    pub region: String,
    /// The cluster.
    pub cluster: String,
    /// Round-trip time in milliseconds.
    pub rtt_ms: f64,
}

/// Everything the proxy and the DNS server need to route, as plain data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableData {
    /// Version, increasing by one with every table the controller produces; 1 is the first.
    pub version: u64,
    /// When the controller computed it, in milliseconds since the Unix epoch.
    pub generated_at_ms: u64,
    /// Client and cluster regions.
    pub regions: Vec<Region>,
    /// Every cluster.
    pub clusters: Vec<Cluster>,
    /// Every app with its targets and their current health and weights.
    pub apps: Vec<App>,
    /// Client address → region.
    #[serde(default)]
    pub geo: RegionMap,
    /// Measured round-trip times for the `latency` policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rtt: Vec<RttSample>,
}

/// Per-target facts selection needs, precomputed so a pick touches one small array.
#[derive(Clone, Debug)]
pub(crate) struct TargetIndex {
    pub(crate) cluster: u32,
    pub(crate) effective_weight: u32,
    pub(crate) configured_weight: u32,
    pub(crate) tier: u8,
    /// A hash of the cluster name: the same in every table and every process, so affinity
    /// picks stay where they were when other targets change.
    pub(crate) stable_id: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct AppIndex {
    pub(crate) targets: Vec<TargetIndex>,
    /// For `geo` apps: per region id, the set of preferred targets (0 when none).
    pub(crate) geo_preferred: Vec<u64>,
}

/// A validated, immutable routing table with the indexes selection needs.
///
/// Built only through [`RoutingTable::new`] (or deserialisation, which calls it), so every
/// table a subscriber holds has passed validation.
#[derive(Clone, Debug)]
pub struct RoutingTable {
    data: TableData,
    hosts_exact: HashMap<Box<str>, AppId>,
    hosts_wildcard: HashMap<Box<str>, AppId>,
    region_ids: HashMap<String, RegionId>,
    region_index: RegionIndex,
    pub(crate) apps_index: Vec<AppIndex>,
    /// regions × clusters, kilometres.
    distance_km: Vec<f32>,
    /// regions × clusters, milliseconds; NaN when not measured.
    rtt_ms: Vec<f32>,
    /// Per app, in order, the digest of the app; kept so a delta recomputes only its apps.
    app_digests: Vec<Digest>,
    /// The digest of the whole table (see [`crate::digest`]).
    digest: Digest,
}

/// The longest hostname DNS allows, in presentation form without the trailing dot.
const MAX_HOSTNAME_LEN: usize = 253;

impl RoutingTable {
    /// Validates `data` and builds its indexes.
    pub fn new(data: TableData) -> Result<Self, TableError> {
        Self::build(data, &|_, _| None)
    }

    /// As [`RoutingTable::new`]; `known(position, app)` may give an app's digest when the
    /// caller knows it (an app a delta left as it was), sparing its encoding and hashing.
    pub(crate) fn build(
        data: TableData,
        known: &dyn Fn(usize, &App) -> Option<Digest>,
    ) -> Result<Self, TableError> {
        let problems = validate(&data);
        if !problems.is_empty() {
            return Err(TableError::Invalid(problems));
        }
        let region_ids: HashMap<String, RegionId> = data
            .regions
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), RegionId(i as u16)))
            .collect();
        let cluster_ids: FastMap<&str, u32> = data
            .clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i as u32))
            .collect();
        let stable_ids: Vec<u64> = data
            .clusters
            .iter()
            .map(|c| stable_hash(c.name.as_bytes()))
            .collect();

        let mut hosts_exact = HashMap::new();
        let mut hosts_wildcard = HashMap::new();
        let mut apps_index = Vec::with_capacity(data.apps.len());
        for (app_pos, app) in data.apps.iter().enumerate() {
            let id = AppId(app_pos as u32);
            for host in &app.hostnames {
                match host.strip_prefix("*.") {
                    Some(suffix) => hosts_wildcard.insert(suffix.into(), id),
                    None => hosts_exact.insert(host.as_str().into(), id),
                };
            }
            let targets: Vec<TargetIndex> = app
                .targets
                .iter()
                .map(|t| {
                    let cluster = cluster_ids[t.cluster.as_str()];
                    TargetIndex {
                        cluster,
                        effective_weight: t.effective_weight(),
                        configured_weight: t.weight,
                        tier: t.tier,
                        stable_id: stable_ids[cluster as usize],
                    }
                })
                .collect();
            let mut geo_preferred = Vec::new();
            if app.policy == Policy::Geo && !app.geo_preferences.is_empty() {
                geo_preferred = vec![0u64; data.regions.len()];
                for pref in &app.geo_preferences {
                    let region = region_ids[&pref.region].0 as usize;
                    for cluster in &pref.clusters {
                        if let Some(pos) = app.targets.iter().position(|t| &t.cluster == cluster) {
                            geo_preferred[region] |= 1 << pos;
                        }
                    }
                }
            }
            apps_index.push(AppIndex {
                targets,
                geo_preferred,
            });
        }

        let mut distance_km = Vec::with_capacity(data.regions.len() * data.clusters.len());
        for region in &data.regions {
            for cluster in &data.clusters {
                distance_km.push(region.location.distance_km(&cluster.location) as f32);
            }
        }
        let mut rtt_ms = vec![f32::NAN; data.regions.len() * data.clusters.len()];
        for sample in &data.rtt {
            let r = region_ids[&sample.region].0 as usize;
            let c = cluster_ids[sample.cluster.as_str()] as usize;
            rtt_ms[r * data.clusters.len() + c] = sample.rtt_ms as f32;
        }
        let region_index = RegionIndex::build(&data.geo, |name| region_ids.get(name).copied());
        let mut buf = Vec::new();
        let app_digests: Vec<Digest> = data
            .apps
            .iter()
            .enumerate()
            .map(|(i, app)| known(i, app).unwrap_or_else(|| app_digest(&mut buf, app)))
            .collect();
        let digest = table_digest(&data, &app_digests);
        Ok(RoutingTable {
            data,
            hosts_exact,
            hosts_wildcard,
            region_ids,
            region_index,
            apps_index,
            distance_km,
            rtt_ms,
            app_digests,
            digest,
        })
    }

    /// The digest of this version: equal for equal tables, different when any field differs.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The digest of the app at `position`.
    pub(crate) fn app_digest(&self, position: usize) -> Option<Digest> {
        self.app_digests.get(position).copied()
    }

    /// The table's plain data.
    pub fn data(&self) -> &TableData {
        &self.data
    }

    /// The table's version.
    pub fn version(&self) -> u64 {
        self.data.version
    }

    /// Every app.
    pub fn apps(&self) -> &[App] {
        &self.data.apps
    }

    /// Every cluster.
    pub fn clusters(&self) -> &[Cluster] {
        &self.data.clusters
    }

    /// Every region.
    pub fn regions(&self) -> &[Region] {
        &self.data.regions
    }

    /// One app. Panics if `id` is not from this table.
    pub fn app(&self, id: AppId) -> &App {
        &self.data.apps[id.0 as usize]
    }

    /// The app named `name`.
    pub fn app_by_name(&self, name: &str) -> Option<AppId> {
        self.data
            .apps
            .iter()
            .position(|a| a.name == name)
            .map(|i| AppId(i as u32))
    }

    /// The cluster a target of an app runs in.
    pub fn target_cluster(&self, app: AppId, target: usize) -> &Cluster {
        let cluster = self.apps_index[app.0 as usize].targets[target].cluster;
        &self.data.clusters[cluster as usize]
    }

    /// The region named `name`.
    pub fn region_id(&self, name: &str) -> Option<RegionId> {
        self.region_ids.get(name).copied()
    }

    /// One region. Panics if `id` is not from this table.
    pub fn region(&self, id: RegionId) -> &Region {
        &self.data.regions[id.0 as usize]
    }

    /// The app serving `host`: an exact hostname first, else the most specific wildcard.
    /// Case-insensitive; a trailing dot is ignored. Does not allocate.
    pub fn app_for_host(&self, host: &str) -> Option<AppId> {
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty() || host.len() > MAX_HOSTNAME_LEN {
            return None;
        }
        let mut buf = [0u8; MAX_HOSTNAME_LEN];
        let lower = &mut buf[..host.len()];
        lower.copy_from_slice(host.as_bytes());
        lower.make_ascii_lowercase();
        // Lower-casing ASCII bytes of valid UTF-8 keeps it valid UTF-8.
        let lower = std::str::from_utf8(lower).ok()?;
        if let Some(id) = self.hosts_exact.get(lower) {
            return Some(*id);
        }
        if self.hosts_wildcard.is_empty() {
            return None;
        }
        // Suffixes after each dot, longest (most specific) first.
        lower
            .match_indices('.')
            .find_map(|(dot, _)| self.hosts_wildcard.get(&lower[dot + 1..]).copied())
    }

    /// The region of a client: a CIDR override containing `addr` (most specific first), else
    /// the region mapped to `country` (an ISO code from the caller's geo database).
    pub fn resolve_region(
        &self,
        addr: IpAddr,
        country: Option<&str>,
    ) -> Option<(RegionId, RegionMatch)> {
        self.region_index.resolve(addr, country)
    }

    /// The CIDR overrides' region for `addr` and the prefix length over which that holds
    /// (the ECS scope of an answer that depends on it).
    pub fn resolve_subnet(&self, addr: IpAddr) -> SubnetAnswer {
        self.region_index.subnet(addr)
    }

    pub(crate) fn distance_km(&self, region: RegionId, cluster: u32) -> f32 {
        self.distance_km[region.0 as usize * self.data.clusters.len() + cluster as usize]
    }

    pub(crate) fn rtt_ms(&self, region: RegionId, cluster: u32) -> Option<f32> {
        let rtt = self.rtt_ms[region.0 as usize * self.data.clusters.len() + cluster as usize];
        (!rtt.is_nan()).then_some(rtt)
    }
}

impl PartialEq for RoutingTable {
    fn eq(&self, other: &Self) -> bool {
        self.data == other.data
    }
}

impl TryFrom<TableData> for RoutingTable {
    type Error = TableError;
    fn try_from(data: TableData) -> Result<Self, TableError> {
        RoutingTable::new(data)
    }
}

/// FNV-1a as a `Hasher`, for the maps from cluster name to position that validation and
/// indexing look up once per target (500,000 times in a table of 10,000 apps × 50
/// clusters): several times faster than SipHash on short names. The names come from the
/// controller's config, not from clients, so flooding is not a concern.
#[derive(Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A map keyed by names, hashed with [`Fnv`].
pub(crate) type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

/// FNV-1a: stable across processes and versions, unlike `std`'s randomised hasher.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// True for a lower-case DNS hostname, optionally with a leading `*.` wildcard label.
pub fn is_valid_hostname(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    !name.is_empty()
        && host.len() <= MAX_HOSTNAME_LEN
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

/// True for a name of a region, cluster or app: lower-case letters, digits, `-`, `_` and `.`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

/// `path` is made only when there is a problem: the table has one per target.
fn unique<'a>(
    problems: &mut Vec<Problem>,
    seen: &mut HashSet<&'a str>,
    name: &'a str,
    path: impl FnOnce() -> String,
    what: &str,
) {
    if !seen.insert(name) {
        problems.push(Problem::new(path(), format!("duplicate {what} {name:?}")));
    }
}

fn check_name(problems: &mut Vec<Problem>, name: &str, path: String) {
    if !is_valid_name(name) {
        problems.push(Problem::new(
            path,
            format!("{name:?} is not a valid name (1-63 of a-z, 0-9, '-', '_', '.')"),
        ));
    }
}

/// Every rule a table must satisfy; each problem names the path of the offending field.
fn validate(data: &TableData) -> Vec<Problem> {
    let mut problems = Vec::new();
    let p = &mut problems;
    if data.version == 0 {
        p.push(Problem::new("version", "must be at least 1"));
    }

    let mut regions = HashSet::new();
    for (i, region) in data.regions.iter().enumerate() {
        check_name(p, &region.name, format!("regions[{i}].name"));
        unique(
            p,
            &mut regions,
            &region.name,
            || format!("regions[{i}].name"),
            "region",
        );
        if !region.location.is_valid() {
            p.push(Problem::new(
                format!("regions[{i}].location"),
                "latitude must be within ±90 and longitude within ±180",
            ));
        }
    }
    if data.regions.len() > usize::from(u16::MAX) {
        p.push(Problem::new("regions", "too many regions"));
    }

    let mut clusters = HashSet::new();
    // Cluster name → position (the first, when a name is duplicated).
    let mut cluster_pos: FastMap<&str, usize> = FastMap::default();
    for (i, cluster) in data.clusters.iter().enumerate() {
        check_name(p, &cluster.name, format!("clusters[{i}].name"));
        unique(
            p,
            &mut clusters,
            &cluster.name,
            || format!("clusters[{i}].name"),
            "cluster",
        );
        cluster_pos.entry(cluster.name.as_str()).or_insert(i);
        if !regions.contains(cluster.region.as_str()) {
            p.push(Problem::new(
                format!("clusters[{i}].region"),
                format!("unknown region {:?}", cluster.region),
            ));
        }
        if !cluster.location.is_valid() {
            p.push(Problem::new(
                format!("clusters[{i}].location"),
                "latitude must be within ±90 and longitude within ±180",
            ));
        }
        if cluster.endpoints.is_empty() {
            p.push(Problem::new(
                format!("clusters[{i}].endpoints"),
                "a cluster needs at least one ingress endpoint",
            ));
        }
        let mut endpoints = HashSet::new();
        for (j, endpoint) in cluster.endpoints.iter().enumerate() {
            if !endpoints.insert(endpoint) {
                p.push(Problem::new(
                    format!("clusters[{i}].endpoints[{j}]"),
                    format!("duplicate endpoint {endpoint}"),
                ));
            }
        }
    }

    let mut seen = vec![0usize; data.clusters.len()];
    let mut apps = HashSet::new();
    let mut hostnames: HashMap<&str, &str> = HashMap::new();
    for (i, app) in data.apps.iter().enumerate() {
        check_name(p, &app.name, format!("apps[{i}].name"));
        unique(p, &mut apps, &app.name, || format!("apps[{i}].name"), "app");
        if app.hostnames.is_empty() {
            p.push(Problem::new(
                format!("apps[{i}].hostnames"),
                "an app needs at least one hostname",
            ));
        }
        for (j, host) in app.hostnames.iter().enumerate() {
            let path = || format!("apps[{i}].hostnames[{j}]");
            if !is_valid_hostname(host) {
                p.push(Problem::new(
                    path(),
                    format!("{host:?} is not a valid lower-case hostname"),
                ));
            } else if let Some(other) = hostnames.insert(host, &app.name) {
                p.push(Problem::new(
                    path(),
                    format!("hostname {host:?} is already served by app {other:?}"),
                ));
            }
        }
        if !(1..=86_400).contains(&app.dns_ttl) {
            p.push(Problem::new(
                format!("apps[{i}].dns_ttl"),
                format!("{} is out of range 1..=86400 seconds", app.dns_ttl),
            ));
        }
        if app.targets.is_empty() {
            p.push(Problem::new(
                format!("apps[{i}].targets"),
                "an app needs at least one target",
            ));
        }
        if app.targets.len() > MAX_TARGETS_PER_APP {
            p.push(Problem::new(
                format!("apps[{i}].targets"),
                format!(
                    "{} targets; at most {MAX_TARGETS_PER_APP} are allowed",
                    app.targets.len()
                ),
            ));
        }
        // The clusters this app has a target in: `seen[cluster] == stamp` (one pass per
        // target, no set per app).
        let stamp = i + 1;
        for (j, target) in app.targets.iter().enumerate() {
            let path = || format!("apps[{i}].targets[{j}]");
            match cluster_pos.get(target.cluster.as_str()) {
                None => p.push(Problem::new(
                    format!("{}.cluster", path()),
                    format!("unknown cluster {:?}", target.cluster),
                )),
                Some(&c) if seen[c] == stamp => p.push(Problem::new(
                    format!("{}.cluster", path()),
                    format!("duplicate target for cluster {:?}", target.cluster),
                )),
                Some(&c) => seen[c] = stamp,
            }
            if target.weight > MAX_WEIGHT {
                p.push(Problem::new(
                    format!("{}.weight", path()),
                    format!("{} is out of range 0..={MAX_WEIGHT}", target.weight),
                ));
            }
            if let Some(progress) = target.health.progress()
                && !(0.0..=1.0).contains(&progress)
            {
                p.push(Problem::new(
                    format!("{}.health.progress", path()),
                    format!("{progress} is out of range 0.0..=1.0"),
                ));
            }
        }
        if !app.geo_preferences.is_empty() && app.policy != Policy::Geo {
            p.push(Problem::new(
                format!("apps[{i}].geo_preferences"),
                format!(
                    "only the geo policy uses geo_preferences, but the policy is {}",
                    app.policy.name()
                ),
            ));
        }
        let mut pref_regions = HashSet::new();
        for (j, pref) in app.geo_preferences.iter().enumerate() {
            let path = format!("apps[{i}].geo_preferences[{j}]");
            if !regions.contains(pref.region.as_str()) {
                p.push(Problem::new(
                    format!("{path}.region"),
                    format!("unknown region {:?}", pref.region),
                ));
            }
            unique(
                p,
                &mut pref_regions,
                &pref.region,
                || format!("{path}.region"),
                "preference for region",
            );
            for (k, cluster) in pref.clusters.iter().enumerate() {
                let is_target = cluster_pos
                    .get(cluster.as_str())
                    .is_some_and(|&c| seen[c] == stamp);
                if !is_target {
                    p.push(Problem::new(
                        format!("{path}.clusters[{k}]"),
                        format!("cluster {cluster:?} is not a target of app {:?}", app.name),
                    ));
                }
            }
        }
    }

    for (country, region) in &data.geo.countries {
        let path = format!("geo.countries.{country}");
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
            p.push(Problem::new(
                path.clone(),
                format!(
                    "{country:?} is not an ISO 3166-1 alpha-2 country code (two upper-case letters)"
                ),
            ));
        }
        if !regions.contains(region.as_str()) {
            p.push(Problem::new(path, format!("unknown region {region:?}")));
        }
    }
    let mut cidrs = HashSet::new();
    for (i, subnet) in data.geo.subnets.iter().enumerate() {
        let path = format!("geo.subnets[{i}]");
        if subnet.cidr.trunc() != subnet.cidr {
            p.push(Problem::new(
                format!("{path}.cidr"),
                format!(
                    "{} has host bits set; the network is {}",
                    subnet.cidr,
                    subnet.cidr.trunc()
                ),
            ));
        }
        if !cidrs.insert(subnet.cidr.trunc()) {
            p.push(Problem::new(
                format!("{path}.cidr"),
                format!("duplicate subnet {}", subnet.cidr),
            ));
        }
        if !regions.contains(subnet.region.as_str()) {
            p.push(Problem::new(
                format!("{path}.region"),
                format!("unknown region {:?}", subnet.region),
            ));
        }
    }
    for (i, sample) in data.rtt.iter().enumerate() {
        let path = format!("rtt[{i}]");
        if !regions.contains(sample.region.as_str()) {
            p.push(Problem::new(
                format!("{path}.region"),
                format!("unknown region {:?}", sample.region),
            ));
        }
        if !clusters.contains(sample.cluster.as_str()) {
            p.push(Problem::new(
                format!("{path}.cluster"),
                format!("unknown cluster {:?}", sample.cluster),
            ));
        }
        if !sample.rtt_ms.is_finite() || sample.rtt_ms < 0.0 {
            p.push(Problem::new(
                format!("{path}.rtt_ms"),
                format!("{} is not a non-negative duration", sample.rtt_ms),
            ));
        }
    }
    problems
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::app::{FailureMode, GeoPreference, Target};
    use crate::cluster::Location;
    use crate::health::Health;

    /// A small table: regions eu and us, clusters eu-1 (eu), eu-2 (eu), us-1 (us).
    pub(crate) fn sample() -> TableData {
        let region = |name: &str, lat, lon| Region {
            name: name.into(),
            location: Location { lat, lon },
        };
        let cluster = |name: &str, region: &str, lat, lon, port| Cluster {
            name: name.into(),
            region: region.into(),
            provider: "test".into(),
            location: Location { lat, lon },
            endpoints: vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))],
        };
        let target = |cluster: &str, weight, tier| Target {
            cluster: cluster.into(),
            weight,
            tier,
            health: Health::Healthy,
        };
        TableData {
            version: 1,
            generated_at_ms: 0,
            regions: vec![region("eu", 50.1, 8.7), region("us", 39.0, -77.5)],
            clusters: vec![
                cluster("eu-1", "eu", 53.3, -6.3, 8001),
                cluster("eu-2", "eu", 50.1, 8.7, 8002),
                cluster("us-1", "us", 39.0, -77.5, 8003),
            ],
            apps: vec![
                App {
                    name: "shop".into(),
                    hostnames: vec!["shop.example.com".into(), "*.shop.example.com".into()],
                    policy: Policy::Weighted,
                    failure_mode: FailureMode::FailOpen,
                    dns_ttl: 30,
                    geo_preferences: vec![],
                    targets: vec![
                        target("eu-1", 100, 0),
                        target("eu-2", 100, 0),
                        target("us-1", 200, 1),
                    ],
                },
                App {
                    name: "maps".into(),
                    hostnames: vec!["maps.example.com".into(), "*.example.com".into()],
                    policy: Policy::Geo,
                    failure_mode: FailureMode::FailClosed,
                    dns_ttl: 5,
                    geo_preferences: vec![GeoPreference {
                        region: "us".into(),
                        clusters: vec!["us-1".into()],
                    }],
                    targets: vec![
                        target("eu-1", 100, 0),
                        target("eu-2", 100, 0),
                        target("us-1", 100, 0),
                    ],
                },
            ],
            geo: RegionMap::default(),
            rtt: vec![],
        }
    }

    fn problems(data: TableData) -> Vec<String> {
        match RoutingTable::new(data) {
            Err(TableError::Invalid(problems)) => {
                problems.into_iter().map(|p| p.to_string()).collect()
            }
            other => panic!("expected invalid table, got {other:?}"),
        }
    }

    #[test]
    fn sample_is_valid() {
        RoutingTable::new(sample()).unwrap();
    }

    #[test]
    fn host_lookup_exact_wildcard_and_case() {
        let table = RoutingTable::new(sample()).unwrap();
        assert_eq!(table.app_for_host("shop.example.com"), Some(AppId(0)));
        assert_eq!(table.app_for_host("SHOP.Example.COM."), Some(AppId(0)));
        assert_eq!(table.app_for_host("eu.shop.example.com"), Some(AppId(0)));
        assert_eq!(table.app_for_host("a.b.shop.example.com"), Some(AppId(0)));
        assert_eq!(table.app_for_host("other.example.com"), Some(AppId(1)));
        assert_eq!(table.app_for_host("example.com"), None);
        assert_eq!(table.app_for_host("example.org"), None);
        assert_eq!(table.app_for_host(""), None);
        assert_eq!(table.app_for_host(&"a".repeat(300)), None);
    }

    #[test]
    fn each_rule_names_its_field() {
        type Breakage = fn(&mut TableData);
        let cases: Vec<(Breakage, &str)> = vec![
            (|d| d.version = 0, "version: must be at least 1"),
            (
                |d| d.clusters[1].name = "eu-1".into(),
                "clusters[1].name: duplicate cluster \"eu-1\"",
            ),
            (
                |d| d.clusters[0].region = "mars".into(),
                "clusters[0].region: unknown region \"mars\"",
            ),
            (
                |d| d.clusters[0].endpoints.clear(),
                "clusters[0].endpoints: a cluster needs at least one ingress endpoint",
            ),
            (
                |d| d.clusters[0].location.lat = 91.0,
                "clusters[0].location: latitude",
            ),
            (
                |d| d.apps[0].targets[1].cluster = "nope".into(),
                "apps[0].targets[1].cluster: unknown cluster \"nope\"",
            ),
            (
                |d| d.apps[0].targets[1].weight = MAX_WEIGHT + 1,
                "apps[0].targets[1].weight: 10001 is out of range",
            ),
            (
                |d| d.apps[1].hostnames[0] = "shop.example.com".into(),
                "apps[1].hostnames[0]: hostname \"shop.example.com\" is already served by app \"shop\"",
            ),
            (
                |d| d.apps[0].hostnames[0] = "Shop.example.com".into(),
                "apps[0].hostnames[0]: \"Shop.example.com\" is not a valid lower-case hostname",
            ),
            (
                |d| d.apps[0].dns_ttl = 0,
                "apps[0].dns_ttl: 0 is out of range",
            ),
            (
                |d| d.apps[0].targets.clear(),
                "apps[0].targets: an app needs at least one target",
            ),
            (
                |d| d.apps[0].targets[2].cluster = "eu-1".into(),
                "apps[0].targets[2].cluster: duplicate target for cluster \"eu-1\"",
            ),
            (
                |d| d.apps[0].targets[0].health = Health::Draining { progress: 2.0 },
                "apps[0].targets[0].health.progress: 2 is out of range",
            ),
            (
                |d| d.apps[1].geo_preferences[0].clusters[0] = "x".into(),
                "apps[1].geo_preferences[0].clusters[0]: cluster \"x\" is not a target",
            ),
            (
                |d| d.apps[1].geo_preferences[0].region = "mars".into(),
                "apps[1].geo_preferences[0].region: unknown region \"mars\"",
            ),
            (
                |d| d.apps[1].policy = Policy::Weighted,
                "apps[1].geo_preferences: only the geo policy uses geo_preferences",
            ),
            (
                |d| d.apps[0].name = "Shop!".into(),
                "apps[0].name: \"Shop!\" is not a valid name",
            ),
            (
                |d| {
                    d.geo
                        .countries
                        .insert("de".into(), "eu".into())
                        .map(drop)
                        .unwrap_or(())
                },
                "geo.countries.de: \"de\" is not an ISO 3166-1",
            ),
            (
                |d| {
                    d.geo.subnets.push(crate::geo::SubnetRegion {
                        cidr: "10.1.2.3/8".parse().unwrap(),
                        region: "eu".into(),
                    })
                },
                "geo.subnets[0].cidr: 10.1.2.3/8 has host bits set; the network is 10.0.0.0/8",
            ),
            (
                |d| {
                    d.rtt.push(RttSample {
                        region: "eu".into(),
                        cluster: "zz".into(),
                        rtt_ms: 1.0,
                    })
                },
                "rtt[0].cluster: unknown cluster \"zz\"",
            ),
        ];
        for (break_it, expected) in cases {
            let mut data = sample();
            break_it(&mut data);
            let found = problems(data);
            assert!(
                found.iter().any(|p| p.starts_with(expected)),
                "expected {expected:?} in {found:?}"
            );
        }
    }
}
