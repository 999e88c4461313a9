//! Ingress discovery: a cluster's ingress endpoints read from the status of a `Service` of type
//! LoadBalancer, an `Ingress` or a `Gateway` in its member cluster.
//!
//! The pure helpers turn one object into the addresses and port its status names; [`discover`]
//! fetches the object and resolves host names (cloud load balancers often publish names, such as
//! AWS ELBs). Every failure is a message naming the object and why, for the cluster's condition.

use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::ApiResource;

use crate::crd::{DiscoveryKind, IngressDiscovery};

/// The longest a host name lookup may take.
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What an object's status says: the addresses (IPs or host names) and the port they listen on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// IP addresses or DNS names, as the status gives them.
    pub hosts: Vec<String>,
    /// The port of the endpoints.
    pub port: u16,
}

fn object_name(kind: &str, d: &IngressDiscovery) -> String {
    format!("{kind} {}/{}", d.namespace, d.name)
}

fn not_yet(kind: &str, d: &IngressDiscovery) -> String {
    format!("{} has no load-balancer address yet", object_name(kind, d))
}

fn hosts_of<'a>(
    entries: impl Iterator<Item = (Option<&'a String>, Option<&'a String>)>,
) -> Vec<String> {
    entries
        .filter_map(|(ip, hostname)| {
            ip.or(hostname)
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .collect()
}

/// A Service of type LoadBalancer: `status.loadBalancer.ingress[].ip|hostname`; the port is the
/// discovery's port, else the Service's first port.
pub fn from_service(service: &Service, d: &IngressDiscovery) -> Result<Published, String> {
    let spec = service.spec.as_ref();
    let type_ = spec.and_then(|s| s.type_.as_deref()).unwrap_or("ClusterIP");
    if type_ != "LoadBalancer" {
        return Err(format!(
            "{} is of type {type_}, not LoadBalancer",
            object_name("Service", d)
        ));
    }
    let port = match d.port {
        Some(port) => port,
        None => {
            let first = spec
                .and_then(|s| s.ports.as_ref())
                .and_then(|p| p.first())
                .map(|p| p.port)
                .ok_or_else(|| {
                    format!(
                        "{} has no ports and the discovery sets no port",
                        object_name("Service", d)
                    )
                })?;
            u16::try_from(first).map_err(|_| {
                format!(
                    "{} has port {first}, out of range",
                    object_name("Service", d)
                )
            })?
        }
    };
    let ingress = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    let hosts = hosts_of(
        ingress
            .into_iter()
            .flatten()
            .map(|i| (i.ip.as_ref(), i.hostname.as_ref())),
    );
    if hosts.is_empty() {
        return Err(not_yet("Service", d));
    }
    Ok(Published { hosts, port })
}

/// An Ingress: `status.loadBalancer.ingress[].ip|hostname`; the port is the discovery's port,
/// else 443 when the Ingress has `tls`, else 80.
pub fn from_ingress(ingress: &Ingress, d: &IngressDiscovery) -> Result<Published, String> {
    let tls = ingress
        .spec
        .as_ref()
        .and_then(|s| s.tls.as_ref())
        .is_some_and(|t| !t.is_empty());
    let port = d.port.unwrap_or(if tls { 443 } else { 80 });
    let entries = ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    let hosts = hosts_of(
        entries
            .into_iter()
            .flatten()
            .map(|i| (i.ip.as_ref(), i.hostname.as_ref())),
    );
    if hosts.is_empty() {
        return Err(not_yet("Ingress", d));
    }
    Ok(Published { hosts, port })
}

/// A Gateway (a CRD, read untyped): `status.addresses[].value`; the port is the discovery's
/// port, else the first listener's.
pub fn from_gateway(gateway: &DynamicObject, d: &IngressDiscovery) -> Result<Published, String> {
    let port = match d.port {
        Some(port) => port,
        None => {
            let first = gateway.data["spec"]["listeners"][0]["port"]
                .as_u64()
                .ok_or_else(|| {
                    format!(
                        "{} has no listener with a port and the discovery sets no port",
                        object_name("Gateway", d)
                    )
                })?;
            u16::try_from(first).map_err(|_| {
                format!(
                    "{} has listener port {first}, out of range",
                    object_name("Gateway", d)
                )
            })?
        }
    };
    let hosts: Vec<String> = gateway.data["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["value"].as_str())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if hosts.is_empty() {
        return Err(not_yet("Gateway", d));
    }
    Ok(Published { hosts, port })
}

/// Turns published hosts into socket addresses, resolving names; sorted and deduplicated so an
/// unchanged status gives an equal list. A name that does not resolve is skipped with a warning
/// while others do; when none gives an address, the error names every failure.
pub async fn resolve(published: &Published) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for host in &published.hosts {
        if let Ok(ip) = host.parse::<IpAddr>() {
            out.push(SocketAddr::new(ip, published.port));
            continue;
        }
        // The system resolver has its own timeouts, but a hung one must not stall the poll.
        let lookup = tokio::net::lookup_host((host.as_str(), published.port));
        match tokio::time::timeout(LOOKUP_TIMEOUT, lookup)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {LOOKUP_TIMEOUT:?}"),
                ))
            }) {
            Ok(addrs) => {
                let before = out.len();
                out.extend(addrs);
                if out.len() == before {
                    failures.push(format!("{host}: no addresses"));
                }
            }
            Err(e) => failures.push(format!("{host}: {e}")),
        }
    }
    for failure in &failures {
        tracing::warn!(%failure, "discovered load-balancer name does not resolve");
    }
    if out.is_empty() {
        return Err(format!(
            "no discovered address resolves ({})",
            failures.join("; ")
        ));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn api_failure(what: &str, e: &kube::Error) -> String {
    format!("reading {what}: {}", crate::member::describe_kube_error(e))
}

/// Reads the discovery's object from a member cluster and resolves its addresses.
pub async fn discover(client: &Client, d: &IngressDiscovery) -> Result<Vec<SocketAddr>, String> {
    let published = match d.kind {
        DiscoveryKind::Service => {
            let api: Api<Service> = Api::namespaced(client.clone(), &d.namespace);
            let what = object_name("Service", d);
            let service = api
                .get_opt(&d.name)
                .await
                .map_err(|e| api_failure(&what, &e))?
                .ok_or_else(|| format!("{what} not found"))?;
            from_service(&service, d)?
        }
        DiscoveryKind::Ingress => {
            let api: Api<Ingress> = Api::namespaced(client.clone(), &d.namespace);
            let what = object_name("Ingress", d);
            let ingress = api
                .get_opt(&d.name)
                .await
                .map_err(|e| api_failure(&what, &e))?
                .ok_or_else(|| format!("{what} not found"))?;
            from_ingress(&ingress, d)?
        }
        DiscoveryKind::Gateway => {
            let what = object_name("Gateway", d);
            let mut found = None;
            // v1 is the GA version; clusters with an older Gateway API only serve v1beta1.
            for version in ["v1", "v1beta1"] {
                let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
                    "gateway.networking.k8s.io",
                    version,
                    "Gateway",
                ));
                let api: Api<DynamicObject> =
                    Api::namespaced_with(client.clone(), &d.namespace, &resource);
                match api.get_opt(&d.name).await {
                    Ok(Some(gateway)) => {
                        found = Some(gateway);
                        break;
                    }
                    Ok(None) => {}
                    Err(e) => return Err(api_failure(&what, &e)),
                }
            }
            let gateway = found.ok_or_else(|| {
                format!("{what} not found (gateway.networking.k8s.io v1 and v1beta1)")
            })?;
            from_gateway(&gateway, d)?
        }
    };
    resolve(&published).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery(kind: DiscoveryKind, port: Option<u16>) -> IngressDiscovery {
        IngressDiscovery {
            kind,
            namespace: "edge".into(),
            name: "front".into(),
            port,
        }
    }

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn service_addresses_and_first_port() {
        let s = service(serde_json::json!({
            "spec": { "type": "LoadBalancer", "ports": [{ "port": 8443 }, { "port": 80 }] },
            "status": { "loadBalancer": { "ingress": [
                { "ip": "192.0.2.7" }, { "hostname": "lb-1.elb.example" }, {}
            ] } }
        }));
        let d = discovery(DiscoveryKind::Service, None);
        assert_eq!(
            from_service(&s, &d).unwrap(),
            Published {
                hosts: vec!["192.0.2.7".into(), "lb-1.elb.example".into()],
                port: 8443
            }
        );
        let d = discovery(DiscoveryKind::Service, Some(443));
        assert_eq!(from_service(&s, &d).unwrap().port, 443);
    }

    #[test]
    fn service_without_address_or_of_wrong_type() {
        let d = discovery(DiscoveryKind::Service, None);
        let pending = service(serde_json::json!({
            "spec": { "type": "LoadBalancer", "ports": [{ "port": 443 }] },
            "status": { "loadBalancer": {} }
        }));
        assert_eq!(
            from_service(&pending, &d).unwrap_err(),
            "Service edge/front has no load-balancer address yet"
        );
        let cluster_ip = service(serde_json::json!({ "spec": { "ports": [{ "port": 443 }] } }));
        assert_eq!(
            from_service(&cluster_ip, &d).unwrap_err(),
            "Service edge/front is of type ClusterIP, not LoadBalancer"
        );
        let no_ports = service(serde_json::json!({
            "spec": { "type": "LoadBalancer" },
            "status": { "loadBalancer": { "ingress": [{ "ip": "192.0.2.7" }] } }
        }));
        assert!(
            from_service(&no_ports, &d)
                .unwrap_err()
                .contains("has no ports")
        );
    }

    #[test]
    fn ingress_port_follows_tls() {
        let d = discovery(DiscoveryKind::Ingress, None);
        let plain: Ingress = serde_json::from_value(serde_json::json!({
            "spec": {},
            "status": { "loadBalancer": { "ingress": [{ "ip": "192.0.2.9" }] } }
        }))
        .unwrap();
        assert_eq!(from_ingress(&plain, &d).unwrap().port, 80);
        let tls: Ingress = serde_json::from_value(serde_json::json!({
            "spec": { "tls": [{ "hosts": ["shop.example.com"] }] },
            "status": { "loadBalancer": { "ingress": [{ "ip": "192.0.2.9" }] } }
        }))
        .unwrap();
        assert_eq!(from_ingress(&tls, &d).unwrap().port, 443);
        let empty: Ingress = serde_json::from_value(serde_json::json!({ "spec": {} })).unwrap();
        assert_eq!(
            from_ingress(&empty, &d).unwrap_err(),
            "Ingress edge/front has no load-balancer address yet"
        );
    }

    #[test]
    fn gateway_addresses_and_listener_port() {
        let d = discovery(DiscoveryKind::Gateway, None);
        let gateway: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": { "name": "front", "namespace": "edge" },
            "spec": { "listeners": [{ "name": "https", "port": 8443, "protocol": "HTTPS" }] },
            "status": { "addresses": [{ "type": "IPAddress", "value": "192.0.2.11" }] }
        }))
        .unwrap();
        assert_eq!(
            from_gateway(&gateway, &d).unwrap(),
            Published {
                hosts: vec!["192.0.2.11".into()],
                port: 8443
            }
        );
        let mut pending = gateway.clone();
        pending.data["status"] = serde_json::json!({});
        assert_eq!(
            from_gateway(&pending, &d).unwrap_err(),
            "Gateway edge/front has no load-balancer address yet"
        );
    }

    #[tokio::test]
    async fn resolution_sorts_dedups_and_names_failures() {
        let published = Published {
            hosts: vec!["127.0.0.2".into(), "127.0.0.1".into(), "127.0.0.2".into()],
            port: 443,
        };
        assert_eq!(
            resolve(&published).await.unwrap(),
            vec![
                "127.0.0.1:443".parse().unwrap(),
                "127.0.0.2:443".parse().unwrap()
            ]
        );
        let localhost = Published {
            hosts: vec!["localhost".into()],
            port: 80,
        };
        let addrs = resolve(&localhost).await.unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
        let unknown = Published {
            hosts: vec!["no-such-name.invalid".into()],
            port: 80,
        };
        let message = resolve(&unknown).await.unwrap_err();
        assert!(message.contains("no-such-name.invalid"), "{message}");
    }
}
