//! Kubernetes resources → the config the controller runs on. In Kubernetes mode the config
//! file still gives regions, geo data, zones and process settings; clusters and apps come from
//! `MeridianCluster` and `MeridianApp` resources, checked by the same rules as a file.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kube::ResourceExt;
use meridian_config::{
    AppConfig, ClusterConfig, Config, ConfigError, LoadedConfig, ProbeConfig, ProbeKind,
    TargetConfig,
};
use meridian_routing::{FailureMode, Location, Policy};

use meridian_config::capacity::{
    ClusterBounds, ClusterCapacity, NodeScalingConfig, ObjectRef, PlacementConfig,
    PlacementStrategy, ScaleUpLimitConfig, ScalingConfig, ScheduleConfig,
};

use crate::crd::{
    ClusterSpec, FailureModeSpec, MeridianApp, MeridianCluster, PlacementSpec, PolicySpec,
    ProbeSpec, ScalingSpec, WorkloadRef,
};

/// The verdict on each resource: accepted, or why not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdicts {
    /// Resource name → problems (empty: accepted).
    pub clusters: BTreeMap<String, Vec<String>>,
    /// Resource name → problems (empty: accepted).
    pub apps: BTreeMap<String, Vec<String>>,
    /// App name → targets left out because their cluster is not accepted (yet): the app
    /// is served from its other clusters meanwhile.
    pub skipped_targets: BTreeMap<String, Vec<String>>,
}

/// Builds the config from `base` and the resources. Every resource gets a verdict; the config
/// holds only the accepted ones, so one bad resource never stops the others from being served.
/// `Err` only when the accepted resources still fail together (for example two apps claiming
/// one hostname), with every problem in the verdicts too.
pub fn to_config(
    base: &Config,
    clusters: &[MeridianCluster],
    apps: &[MeridianApp],
) -> (Verdicts, Result<LoadedConfig, ConfigError>) {
    let mut verdicts = Verdicts::default();
    let mut config = base.clone();
    config.clusters.clear();
    config.apps.clear();
    for cluster in clusters {
        let name = cluster.name_any();
        match cluster_config(cluster) {
            // Discovery may not have found an address yet (a cloud load balancer takes
            // minutes): the cluster waits, its apps are served from their other clusters.
            Ok(c) if c.endpoints.is_empty() => {
                let why = if cluster.spec.ingress_discovery.is_some() {
                    "no ingress endpoint yet: none in spec.endpoints and none discovered"
                } else {
                    "no ingress endpoint: set spec.endpoints or spec.ingressDiscovery"
                };
                verdicts.clusters.insert(name, vec![why.to_string()]);
            }
            Ok(c) => {
                config.clusters.push(c);
                verdicts.clusters.insert(name, Vec::new());
            }
            Err(problem) => {
                verdicts.clusters.insert(name, vec![problem]);
            }
        }
    }
    for app in apps {
        let name = app.name_any();
        match app_config(app) {
            Ok((mut a, probe)) => {
                let (kept, skipped): (Vec<_>, Vec<_>) = a.targets.into_iter().partition(|t| {
                    verdicts
                        .clusters
                        .get(&t.cluster)
                        .is_none_or(|problems| problems.is_empty())
                });
                a.targets = kept;
                if !skipped.is_empty() {
                    if a.targets.is_empty() {
                        let names: Vec<&str> = skipped.iter().map(|t| t.cluster.as_str()).collect();
                        verdicts.apps.insert(
                            name,
                            vec![format!(
                                "no target can serve yet: cluster(s) {} not accepted",
                                names.join(", ")
                            )],
                        );
                        continue;
                    }
                    verdicts.skipped_targets.insert(
                        name.clone(),
                        skipped.into_iter().map(|t| t.cluster).collect(),
                    );
                }
                if let Some(probe) = probe {
                    config.probes.push(probe);
                }
                config.apps.push(a);
                verdicts.apps.insert(name, Vec::new());
            }
            Err(problem) => {
                verdicts.apps.insert(name, vec![problem]);
            }
        }
    }
    let origin = Path::new("<kubernetes resources>");
    let result = meridian_config::validate(config.clone(), origin);
    if let Err(ConfigError::Invalid(diagnostics)) = &result {
        // Attribute each problem to the resource whose field it names.
        for d in diagnostics {
            let owner = index_of(&d.path, "clusters[")
                .and_then(|i| config.clusters.get(i))
                .map(|c| (&mut verdicts.clusters, c.name.clone()))
                .or_else(|| {
                    index_of(&d.path, "apps[")
                        .and_then(|i| config.apps.get(i))
                        .map(|a| (&mut verdicts.apps, a.name.clone()))
                });
            if let Some((map, name)) = owner {
                let field = d.path.split_once('.').map_or("", |(_, f)| f);
                map.entry(name).or_default().push(if field.is_empty() {
                    d.message.clone()
                } else {
                    format!("{field}: {}", d.message)
                });
            }
        }
    }
    (verdicts, result)
}

fn index_of(path: &str, prefix: &str) -> Option<usize> {
    let rest = path.strip_prefix(prefix)?;
    rest[..rest.find(']')?].parse().ok()
}

fn cluster_config(cluster: &MeridianCluster) -> Result<ClusterConfig, String> {
    let spec = &cluster.spec;
    let mut endpoints = Vec::new();
    let discovered = cluster
        .status
        .as_ref()
        .map(|s| s.discovered_endpoints.as_slice())
        .unwrap_or_default();
    for (i, text) in spec.endpoints.iter().chain(discovered).enumerate() {
        let addr = text
            .parse()
            .map_err(|_| format!("endpoints[{i}]: {text:?} is not an endpoint address:port"))?;
        if !endpoints.contains(&addr) {
            endpoints.push(addr);
        }
    }
    Ok(ClusterConfig {
        name: cluster.name_any(),
        region: spec.region.clone(),
        provider: spec.provider.clone(),
        location: spec.location.map(|l| Location {
            lat: l.lat,
            lon: l.lon,
        }),
        endpoints,
        labels: cluster.labels().clone(),
        capacity: cluster_capacity(spec)?,
    })
}

fn object_ref(r: &WorkloadRef) -> ObjectRef {
    ObjectRef {
        namespace: r.namespace.clone(),
        name: r.name.clone(),
    }
}

fn cluster_capacity(spec: &ClusterSpec) -> Result<Option<ClusterCapacity>, String> {
    if spec.capacity.is_none() && spec.node_scaling.is_none() {
        return Ok(None);
    }
    let hints = spec.capacity.clone().unwrap_or_default();
    let node_scaling = spec
        .node_scaling
        .as_ref()
        .map(|n| {
            Ok::<_, String>(NodeScalingConfig {
                machine_deployment: object_ref(&n.machine_deployment),
                min_machines: n.min_machines,
                max_machines: n.max_machines,
                cpu_millis_per_machine: n.cpu_millis_per_machine,
                memory_bytes_per_machine: n.memory_bytes_per_machine,
                cool_down: duration(
                    "nodeScaling.coolDown",
                    n.cool_down.as_ref(),
                    Duration::from_secs(600),
                )?,
                scale_down_utilisation: n.scale_down_utilisation.unwrap_or(0.5),
            })
        })
        .transpose()?;
    Ok(Some(ClusterCapacity {
        max_replicas: hints.max_replicas,
        cost_per_replica_hour: hints.cost_per_replica_hour,
        node_scaling,
    }))
}

fn placement_config(spec: &PlacementSpec) -> Result<PlacementConfig, String> {
    Ok(PlacementConfig {
        workload: Some(object_ref(&spec.workload)),
        total_replicas: spec.total_replicas,
        strategy: match spec.strategy.as_deref() {
            None | Some("weight") => PlacementStrategy::Weight,
            Some("capacity") => PlacementStrategy::Capacity,
            Some("cost") => PlacementStrategy::Cost,
            Some(other) => {
                return Err(format!(
                    "placement.strategy: {other:?} is not one of weight, capacity, cost"
                ));
            }
        },
        cluster_selector: spec.cluster_selector.clone(),
        bounds: spec
            .bounds
            .iter()
            .map(|b| ClusterBounds {
                cluster: b.cluster.clone(),
                min_replicas: b.min_replicas,
                max_replicas: b.max_replicas,
            })
            .collect(),
        spread: spec.spread,
        readiness_timeout: duration(
            "placement.readinessTimeout",
            spec.readiness_timeout.as_ref(),
            Duration::from_secs(300),
        )?,
    })
}

fn scaling_config(spec: &ScalingSpec) -> Result<ScalingConfig, String> {
    Ok(ScalingConfig {
        target_rps_per_replica: spec.target_requests_per_second_per_replica,
        min_replicas: spec.min_replicas,
        max_replicas: spec.max_replicas,
        scale_down_stabilization: duration(
            "scaling.scaleDownStabilization",
            spec.scale_down_stabilization.as_ref(),
            Duration::from_secs(300),
        )?,
        scale_up_limit: spec
            .scale_up_limit
            .as_ref()
            .map(|l| {
                Ok::<_, String>(ScaleUpLimitConfig {
                    factor: l.factor,
                    step: l.step,
                    period: duration(
                        "scaling.scaleUpLimit.period",
                        l.period.as_ref(),
                        Duration::from_secs(60),
                    )?,
                })
            })
            .transpose()?,
        schedules: spec
            .schedules
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Ok(ScheduleConfig {
                    cron: s.cron.clone(),
                    duration: duration(
                        &format!("scaling.schedules[{i}].duration"),
                        Some(&s.duration),
                        Duration::ZERO,
                    )?,
                    min_replicas: s.min_replicas,
                })
            })
            .collect::<Result<_, String>>()?,
    })
}

fn duration(field: &str, text: Option<&String>, default: Duration) -> Result<Duration, String> {
    match text {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| format!("{field}: {text:?} is not a duration: {e}")),
    }
}

fn probe_config(app: &str, spec: &ProbeSpec) -> Result<ProbeConfig, String> {
    let defaults = ProbeConfig::default_tcp();
    let kind = match spec.kind.as_str() {
        "http" => ProbeKind::Http,
        "https" => ProbeKind::Https,
        "tcp" => ProbeKind::Tcp,
        other => {
            return Err(format!(
                "probe.kind: {other:?} is not one of http, https, tcp"
            ));
        }
    };
    Ok(ProbeConfig {
        name: format!("app:{app}"),
        kind,
        path: spec.path.clone().unwrap_or(defaults.path),
        host: spec.host.clone(),
        expect_status: if spec.expect_status.is_empty() {
            defaults.expect_status
        } else {
            spec.expect_status.clone()
        },
        expect_body: None,
        interval: duration("probe.interval", spec.interval.as_ref(), defaults.interval)?,
        timeout: duration("probe.timeout", spec.timeout.as_ref(), defaults.timeout)?,
        rise: spec.rise.unwrap_or(defaults.rise),
        fall: spec.fall.unwrap_or(defaults.fall),
        sni: None,
        tls_verify: true,
    })
}

fn app_config(app: &MeridianApp) -> Result<(AppConfig, Option<ProbeConfig>), String> {
    let name = app.name_any();
    let spec = &app.spec;
    let probe = spec
        .probe
        .as_ref()
        .map(|p| probe_config(&name, p))
        .transpose()?;
    Ok((
        AppConfig {
            name: name.clone(),
            hostnames: spec.hostnames.clone(),
            policy: match spec.policy.unwrap_or_default() {
                PolicySpec::Weighted => Policy::Weighted,
                PolicySpec::Failover => Policy::Failover,
                PolicySpec::Geo => Policy::Geo,
                PolicySpec::Latency => Policy::Latency,
            },
            failure_mode: match spec.failure_mode {
                FailureModeSpec::FailOpen => FailureMode::FailOpen,
                FailureModeSpec::FailClosed => FailureMode::FailClosed,
            },
            dns_ttl: spec.dns_ttl.unwrap_or(30),
            probe: probe.as_ref().map(|p| p.name.clone()),
            drain_period: duration(
                "drainPeriod",
                spec.drain_period.as_ref(),
                Duration::from_secs(30),
            )?,
            slow_start: duration(
                "slowStart",
                spec.slow_start.as_ref(),
                Duration::from_secs(30),
            )?,
            geo_preferences: Vec::new(),
            targets: spec
                .targets
                .iter()
                .map(|t| TargetConfig {
                    cluster: t.cluster.clone(),
                    weight: t.weight.unwrap_or(100),
                    tier: t.tier.unwrap_or(0),
                })
                .collect(),
            placement: spec.placement.as_ref().map(placement_config).transpose()?,
            scaling: spec.scaling.as_ref().map(scaling_config).transpose()?,
        },
        probe,
    ))
}
