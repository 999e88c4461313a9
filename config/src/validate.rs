//! Every rule a config must satisfy beyond its types. The routing table's own rules are
//! applied by building the base table, so they are written once, in the routing crate.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use meridian_routing::{Problem, RoutingTable, TableError};

use crate::schema::{Config, RecordType, normalize_host};
use crate::zone::{in_zone, normalize_name};

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

pub(crate) fn validate(config: &Config, file: &Path) -> Vec<Problem> {
    let mut p = Problems(Vec::new());
    if let Err(TableError::Invalid(problems)) = RoutingTable::new(config.base_table(1, 0)) {
        // A cluster without a location inherits its region's; a bad one is reported there.
        let inherited = |path: &str| {
            config
                .clusters
                .iter()
                .enumerate()
                .any(|(i, c)| c.location.is_none() && path == format!("clusters[{i}].location"))
        };
        p.0.extend(
            problems
                .into_iter()
                .filter(|problem| !inherited(&problem.path)),
        );
    }
    probes(config, &mut p);
    zones(config, &mut p);
    geo_databases(config, file, &mut p);
    listeners(config, &mut p);
    capacity(config, &mut p);
    // Each process section's own rules, written beside the section.
    for (path, message) in config
        .controller
        .problems()
        .into_iter()
        .chain(config.proxy.problems())
    {
        p.add(path, message);
    }
    p.0
}

fn probes(config: &Config, p: &mut Problems) {
    let mut names = HashSet::new();
    for (i, probe) in config.probes.iter().enumerate() {
        let path = format!("probes[{i}]");
        if !names.insert(probe.name.as_str()) {
            p.add(
                format!("{path}.name"),
                format!("duplicate probe {:?}", probe.name),
            );
        }
        if !probe.path.starts_with('/') {
            p.add(
                format!("{path}.path"),
                format!("{:?} must start with '/'", probe.path),
            );
        }
        if probe.expect_status.is_empty() {
            p.add(
                format!("{path}.expect_status"),
                "needs at least one status code",
            );
        }
        for (j, status) in probe.expect_status.iter().enumerate() {
            if !(100..=599).contains(status) {
                p.add(
                    format!("{path}.expect_status[{j}]"),
                    format!("{status} is not an HTTP status code (100-599)"),
                );
            }
        }
        if probe.interval < Duration::from_millis(100) {
            p.add(format!("{path}.interval"), "must be at least 100ms");
        }
        if probe.timeout.is_zero() || probe.timeout > probe.interval {
            p.add(
                format!("{path}.timeout"),
                format!(
                    "{} must be above zero and at most the interval ({})",
                    humantime::format_duration(probe.timeout),
                    humantime::format_duration(probe.interval)
                ),
            );
        }
        if probe.rise == 0 {
            p.add(format!("{path}.rise"), "must be at least 1");
        }
        if probe.fall == 0 {
            p.add(format!("{path}.fall"), "must be at least 1");
        }
    }
    for (i, app) in config.apps.iter().enumerate() {
        if let Some(probe) = &app.probe
            && !names.contains(probe.as_str())
        {
            p.add(
                format!("apps[{i}].probe"),
                format!("unknown probe {probe:?}"),
            );
        }
    }
}

fn zones(config: &Config, p: &mut Problems) {
    let mut apexes = HashSet::new();
    // Owner name → app, for collisions between static records and app hostnames.
    let app_hosts: HashMap<String, &str> = config
        .apps
        .iter()
        .flat_map(|a| {
            a.hostnames
                .iter()
                .map(|h| (normalize_host(h), a.name.as_str()))
        })
        .collect();
    // Every CNAME of every zone: owner → (its record's path, target), for loops.
    let mut cnames: HashMap<String, (String, String)> = HashMap::new();
    for (i, zone) in config.zones.iter().enumerate() {
        let path = format!("zones[{i}]");
        let apex = match normalize_name(&zone.name) {
            Some(apex) if !apex.is_empty() => apex,
            _ => {
                p.add(
                    format!("{path}.name"),
                    format!("{:?} is not a valid zone name", zone.name),
                );
                continue;
            }
        };
        if !apexes.insert(apex.clone()) {
            p.add(format!("{path}.name"), format!("duplicate zone {apex:?}"));
        }
        for (field, value) in [("mname", &zone.soa.mname), ("rname", &zone.soa.rname)] {
            if normalize_name(value).is_none_or(|n| n.is_empty()) {
                p.add(
                    format!("{path}.soa.{field}"),
                    format!("{value:?} is not a valid domain name"),
                );
            }
        }
        if zone.ns.is_empty() {
            p.add(
                format!("{path}.ns"),
                "a zone needs at least one name server",
            );
        }
        for (j, ns) in zone.ns.iter().enumerate() {
            if normalize_name(ns).is_none_or(|n| n.is_empty()) {
                p.add(
                    format!("{path}.ns[{j}]"),
                    format!("{ns:?} is not a valid domain name"),
                );
            }
        }
        if let Some(dnssec) = &zone.dnssec {
            dnssec_section(dnssec, &format!("{path}.dnssec"), p);
        }
        // Per owner name, the types present, for CNAME exclusivity.
        let mut types: HashMap<String, Vec<(usize, RecordType)>> = HashMap::new();
        let mut delegations = Vec::new();
        for (j, record) in zone.records.iter().enumerate() {
            let rpath = format!("{path}.records[{j}]");
            let owner = match zone.owner(record) {
                Ok(owner) => owner,
                Err(message) => {
                    p.add(format!("{rpath}.name"), message);
                    continue;
                }
            };
            match record.data() {
                Err(message) => p.add(format!("{rpath}.value"), message),
                Ok(crate::zone::RecordData::Cname(target)) => {
                    if let Some(target) = normalize_name(&target) {
                        cnames.insert(owner.clone(), (rpath.clone(), target));
                    }
                }
                Ok(_) => {}
            }
            if let Some(app) = app_hosts.get(&owner) {
                p.add(
                    format!("{rpath}.name"),
                    format!("{owner:?} is a hostname of app {app:?}, which answers for it"),
                );
            }
            match record.rtype {
                RecordType::Cname if owner == apex => {
                    p.add(
                        format!("{rpath}.type"),
                        "a CNAME cannot be at the zone apex",
                    );
                }
                RecordType::Ns if owner == apex => {
                    p.add(
                        format!("{rpath}.type"),
                        "apex NS records come from the zone's ns list",
                    );
                }
                RecordType::Ns => delegations.push(owner.clone()),
                _ => {}
            }
            types.entry(owner).or_default().push((j, record.rtype));
        }
        for (owner, list) in &types {
            if list.len() > 1 && list.iter().any(|(_, t)| *t == RecordType::Cname) {
                let (j, _) = list
                    .iter()
                    .find(|(_, t)| *t == RecordType::Cname)
                    .copied()
                    .unwrap_or((0, RecordType::Cname));
                p.add(
                    format!("{path}.records[{j}].name"),
                    format!("{owner:?} has a CNAME and other records"),
                );
            }
            // Below a delegation only glue (A/AAAA for the name servers) belongs in this zone.
            for delegation in &delegations {
                if owner != delegation && in_zone(owner, delegation) {
                    for (j, rtype) in list {
                        if !matches!(rtype, RecordType::A | RecordType::Aaaa) {
                            p.add(
                                format!("{path}.records[{j}].name"),
                                format!("{owner:?} is below the delegation {delegation:?}; only glue A/AAAA records belong here"),
                            );
                        }
                    }
                }
            }
        }
    }
    cname_loops(&cnames, p);
    if !apexes.is_empty() {
        for (i, app) in config.apps.iter().enumerate() {
            for (j, host) in app.hostnames.iter().enumerate() {
                let host = normalize_host(host);
                let name = host.strip_prefix("*.").unwrap_or(&host);
                if !apexes.iter().any(|apex| in_zone(name, apex)) {
                    let mut zones: Vec<_> = apexes.iter().map(String::as_str).collect();
                    zones.sort_unstable();
                    p.add(
                        format!("apps[{i}].hostnames[{j}]"),
                        format!("{host:?} is outside every zone ({})", zones.join(", ")),
                    );
                }
            }
        }
    }
}

fn geo_databases(config: &Config, file: &Path, p: &mut Problems) {
    let base = file.parent().unwrap_or(Path::new("."));
    for (i, database) in config.geo.databases.iter().enumerate() {
        let path = base.join(database);
        if !path.is_file() {
            p.add(
                format!("geo.databases[{i}]"),
                format!("{} does not exist or is not a file", path.display()),
            );
        }
    }
}

/// A CNAME chain that comes back to itself never ends in an answer: every resolver gives up
/// on it. Reported once per loop, at its record that comes first in the file.
fn cname_loops(cnames: &HashMap<String, (String, String)>, p: &mut Problems) {
    let mut reported: HashSet<&str> = HashSet::new();
    let mut owners: Vec<&String> = cnames.keys().collect();
    owners.sort();
    for start in owners {
        let mut chain: Vec<&str> = vec![start];
        let mut at = start.as_str();
        while let Some((_, target)) = cnames.get(at) {
            if let Some(pos) = chain.iter().position(|n| n == target) {
                let cycle = &chain[pos..];
                if cycle.iter().any(|n| reported.contains(n)) {
                    break;
                }
                reported.extend(cycle.iter().copied());
                // The record that comes first in the file (paths compare in file order
                // within a zone; zones in order).
                let first = cycle
                    .iter()
                    .min_by_key(|n| record_order(&cnames[**n].0))
                    .copied()
                    .unwrap_or(start);
                let at_first = cycle.iter().position(|n| *n == first).unwrap_or(0);
                let mut names: Vec<&str> = cycle[at_first..].to_vec();
                names.extend_from_slice(&cycle[..at_first]);
                names.push(first);
                p.add(
                    format!("{}.value", cnames[first].0),
                    format!("CNAME loop: {}", names.join(" → ")),
                );
                break;
            }
            chain.push(target);
            at = target;
        }
    }
}

/// (zone, record) indexes of a path `zones[i].records[j]`, for ordering.
fn record_order(path: &str) -> (usize, usize) {
    let mut numbers = path
        .split(['[', ']'])
        .filter_map(|part| part.parse::<usize>().ok());
    (
        numbers.next().unwrap_or(usize::MAX),
        numbers.next().unwrap_or(usize::MAX),
    )
}

fn listeners(config: &Config, p: &mut Problems) {
    let listeners: [(&str, SocketAddr); 3] = [
        ("controller.listen", config.controller.listen),
        ("proxy.listen", config.proxy.listen),
        ("dns.listen", config.dns.listen),
    ];
    for (i, (name, addr)) in listeners.iter().enumerate() {
        // Reported at both fields: the one written in the file gets the line number.
        if let Some((other, _)) = listeners[..i].iter().find(|(_, a)| a == addr) {
            p.add(*name, format!("{addr} is also {other}"));
            p.add(*other, format!("{addr} is also {name}"));
        }
    }
    for (i, addr) in config.dns.also_listen.iter().enumerate() {
        let taken = listeners
            .iter()
            .map(|(name, a)| (name.to_string(), a))
            .chain(
                config.dns.also_listen[..i]
                    .iter()
                    .enumerate()
                    .map(|(j, a)| (format!("dns.also_listen[{j}]"), a)),
            )
            .find(|(_, a)| *a == addr && addr.port() != 0);
        if let Some((other, _)) = taken {
            p.add(
                format!("dns.also_listen[{i}]"),
                format!("{addr} is also {other}"),
            );
        }
    }
    for (field, value) in [
        ("dns.tcp_max_connections", config.dns.tcp_max_connections),
        (
            "dns.tcp_max_connections_per_client",
            config.dns.tcp_max_connections_per_client,
        ),
    ] {
        if value == 0 {
            p.add(field, "must be at least 1");
        }
    }
    for (field, value) in [
        ("dns.tcp_idle_timeout", config.dns.tcp_idle_timeout),
        ("dns.tcp_write_timeout", config.dns.tcp_write_timeout),
    ] {
        if value.is_zero() {
            p.add(field, "must be longer than 0s");
        }
    }
    if let Some(tsig) = &config.dns.tsig {
        if !tsig.algorithm.eq_ignore_ascii_case("hmac-sha256") {
            p.add(
                "dns.tsig.algorithm",
                format!("{:?} is not supported (hmac-sha256)", tsig.algorithm),
            );
        }
        if normalize_name(&tsig.name).is_none_or(|n| n.is_empty()) {
            p.add(
                "dns.tsig.name",
                format!("{:?} is not a valid key name", tsig.name),
            );
        }
        if config.dns.axfr_allow.is_empty() {
            p.add(
                "dns.tsig",
                "a TSIG key without dns.axfr_allow allows nobody to transfer",
            );
        }
    }
    if !config.dns.notify.is_empty() && config.dns.axfr_allow.is_empty() {
        p.add(
            "dns.notify",
            "secondaries are notified but dns.axfr_allow lets none of them transfer",
        );
    }
    for (i, target) in config.dns.notify.iter().enumerate() {
        let addr = target.ip();
        if !config.dns.axfr_allow.iter().any(|net| net.contains(&addr))
            && !config.dns.axfr_allow.is_empty()
        {
            p.add(
                format!("dns.notify[{i}]"),
                format!("{addr} is notified but not in dns.axfr_allow, so it cannot transfer"),
            );
        }
    }
    if config.dns.ixfr_journal == 0 || config.dns.ixfr_journal > 1024 {
        p.add(
            "dns.ixfr_journal",
            format!("{} is out of range 1..=1024", config.dns.ixfr_journal),
        );
    }
    if config.dns.udp_workers == Some(0) {
        p.add(
            "dns.udp_workers",
            "must be at least 1 (or unset: one per CPU)",
        );
    }
    if !(1..=8).contains(&config.dns.max_answers) {
        p.add(
            "dns.max_answers",
            format!("{} is out of range 1..=8", config.dns.max_answers),
        );
    }
}

/// A number the capacity engine accepts as a rate or cost: finite and ≥ 0.
fn finite_non_negative(value: f64) -> bool {
    value.is_finite() && value >= 0.0
}

/// The capacity fields: cluster hints, node scaling, placement and scaling. Cron expressions
/// are parsed by the capacity crate's own parser, so a schedule `meridian check` accepts is
/// one the scaler can run.
fn capacity(config: &Config, p: &mut Problems) {
    use crate::capacity::PlacementStrategy;

    for (i, cluster) in config.clusters.iter().enumerate() {
        let Some(cap) = &cluster.capacity else {
            continue;
        };
        let path = format!("clusters[{i}].capacity");
        if cap.max_replicas == Some(0) {
            p.add(
                format!("{path}.max_replicas"),
                "must be at least 1 (or unset: unknown)",
            );
        }
        if let Some(cost) = cap.cost_per_replica_hour
            && !finite_non_negative(cost)
        {
            p.add(
                format!("{path}.cost_per_replica_hour"),
                format!("{cost} must be a finite number >= 0"),
            );
        }
        if let Some(nodes) = &cap.node_scaling {
            let path = format!("{path}.node_scaling");
            if nodes.min_machines > nodes.max_machines {
                p.add(
                    format!("{path}.max_machines"),
                    format!(
                        "{} is below min_machines {}",
                        nodes.max_machines, nodes.min_machines
                    ),
                );
            }
            if nodes.max_machines == 0 {
                p.add(format!("{path}.max_machines"), "must be at least 1");
            }
            if nodes.cpu_millis_per_machine == 0 {
                p.add(
                    format!("{path}.cpu_millis_per_machine"),
                    "must be above zero",
                );
            }
            if nodes.memory_bytes_per_machine == 0 {
                p.add(
                    format!("{path}.memory_bytes_per_machine"),
                    "must be above zero",
                );
            }
            let u = nodes.scale_down_utilisation;
            if !(u.is_finite() && u > 0.0 && u <= 1.0) {
                p.add(
                    format!("{path}.scale_down_utilisation"),
                    format!("{u} is out of range: above 0 and at most 1"),
                );
            }
        }
    }

    for (i, app) in config.apps.iter().enumerate() {
        let path = format!("apps[{i}]");
        let targets: Vec<&str> = app.targets.iter().map(|t| t.cluster.as_str()).collect();
        if let Some(placement) = &app.placement {
            let path = format!("{path}.placement");
            // Without total_replicas or scaling, the replicas running now are kept in total
            // and divided again when a cluster fails or drains.
            if placement.strategy == PlacementStrategy::Capacity {
                let missing: Vec<&str> = targets
                    .iter()
                    .copied()
                    .filter(|name| {
                        config
                            .clusters
                            .iter()
                            .find(|c| c.name == *name)
                            .is_some_and(|c| {
                                c.capacity.as_ref().is_none_or(|c| c.max_replicas.is_none())
                            })
                    })
                    .collect();
                if !missing.is_empty() {
                    p.add(
                        format!("{path}.strategy"),
                        format!(
                            "the capacity strategy divides by capacity.max_replicas, which these target clusters do not set: {}",
                            missing.join(", ")
                        ),
                    );
                }
            }
            if placement.spread == Some(0) {
                p.add(format!("{path}.spread"), "must be at least 1 (or unset: 2)");
            }
            if !placement.cluster_selector.is_empty() {
                let matches = config.clusters.iter().any(|c| {
                    targets.contains(&c.name.as_str())
                        && placement
                            .cluster_selector
                            .iter()
                            .all(|(k, v)| c.labels.get(k) == Some(v))
                });
                if !matches {
                    let wanted: Vec<String> = placement
                        .cluster_selector
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    p.add(
                        format!("{path}.cluster_selector"),
                        format!(
                            "no target cluster of app {:?} has the labels {}",
                            app.name,
                            wanted.join(", ")
                        ),
                    );
                }
            }
            let mut seen = HashSet::new();
            for (j, bound) in placement.bounds.iter().enumerate() {
                let path = format!("{path}.bounds[{j}]");
                if !targets.contains(&bound.cluster.as_str()) {
                    p.add(
                        format!("{path}.cluster"),
                        format!(
                            "{:?} is not a target cluster of app {:?} ({})",
                            bound.cluster,
                            app.name,
                            targets.join(", ")
                        ),
                    );
                } else if !seen.insert(bound.cluster.as_str()) {
                    p.add(
                        format!("{path}.cluster"),
                        format!("duplicate bounds for cluster {:?}", bound.cluster),
                    );
                }
                if let Some(max) = bound.max_replicas
                    && bound.min_replicas > max
                {
                    p.add(
                        format!("{path}.max_replicas"),
                        format!("{max} is below min_replicas {}", bound.min_replicas),
                    );
                }
            }
        }
        if let Some(scaling) = &app.scaling {
            let path = format!("{path}.scaling");
            let target = scaling.target_rps_per_replica;
            if !(target.is_finite() && target > 0.0) {
                p.add(
                    format!("{path}.target_rps_per_replica"),
                    format!("{target} must be a finite number above 0"),
                );
            }
            if let Some(max) = scaling.max_replicas
                && scaling.min_replicas > max
            {
                p.add(
                    format!("{path}.max_replicas"),
                    format!("{max} is below min_replicas {}", scaling.min_replicas),
                );
            }
            if let Some(limit) = &scaling.scale_up_limit {
                let lpath = format!("{path}.scale_up_limit");
                if let Some(f) = limit.factor
                    && !(f.is_finite() && f >= 1.0)
                {
                    p.add(
                        format!("{lpath}.factor"),
                        format!("{f} must be a finite number of at least 1"),
                    );
                }
                if limit.factor.is_none() && limit.step.is_none() {
                    p.add(lpath.clone(), "needs a factor, a step or both");
                }
                if limit.period.is_zero() {
                    p.add(format!("{lpath}.period"), "must be above zero");
                }
            }
            for (j, schedule) in scaling.schedules.iter().enumerate() {
                let spath = format!("{path}.schedules[{j}]");
                // The window's length is checked on its own field below.
                if let Err(err) =
                    meridian_capacity::scaler::ScheduledFloor::new(&schedule.cron, 1, 0)
                {
                    let reason = match err {
                        meridian_capacity::CapacityError::BadSchedule { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    p.add(
                        format!("{spath}.cron"),
                        format!("{:?} is not a cron expression: {reason}", schedule.cron),
                    );
                }
                if schedule.duration.is_zero() {
                    p.add(format!("{spath}.duration"), "must be above zero");
                }
                if let Some(max) = scaling.max_replicas
                    && schedule.min_replicas > max
                {
                    p.add(
                        format!("{spath}.min_replicas"),
                        format!(
                            "{} is above the app's max_replicas {max}",
                            schedule.min_replicas
                        ),
                    );
                }
            }
        }
    }
}

/// A zone's signing section: at least one key, each key's versions in order, and a
/// validity long enough for resolvers to cache what they validated.
fn dnssec_section(dnssec: &crate::dns::DnssecConfig, path: &str, p: &mut Problems) {
    if dnssec.keys.is_empty() {
        p.add(
            format!("{path}.keys"),
            "a signed zone needs at least one key",
        );
    }
    for (k, key) in dnssec.keys.iter().enumerate() {
        let steps = [
            ("publish_from_version", key.publish_from_version),
            ("active_from_version", key.active_from_version),
            ("inactive_from_version", key.inactive_from_version),
            ("remove_from_version", key.remove_from_version),
        ];
        let mut last: Option<(&str, u64)> = None;
        for (field, version) in steps {
            let Some(version) = version else { continue };
            if let Some((before, at)) = last
                && version < at
            {
                p.add(
                    format!("{path}.keys[{k}].{field}"),
                    format!("{version} comes before {before} ({at})"),
                );
            }
            last = Some((field, version));
        }
    }
    if dnssec.validity < Duration::from_secs(3_600) {
        p.add(
            format!("{path}.validity"),
            "must be at least 1h (signatures are made when a table arrives and renewed at a quarter of it)",
        );
    }
    if dnssec.jitter >= dnssec.validity {
        p.add(format!("{path}.jitter"), "must be shorter than validity");
    }
}
