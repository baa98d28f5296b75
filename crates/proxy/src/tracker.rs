//! From Services and EndpointSlices to per-service-port state, and the change tracker (as
//! kube-proxy's ServiceChangeTracker and EndpointsChangeTracker, folded into one): every
//! watch event marks its Service dirty; a sync takes the dirty set, recomputes only those
//! Services and reports which service ports changed (or went away).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::model::{Endpoint, Protocol, ServicePort, ServicePortName, ServiceState, is_safe_name};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// kube-proxy's default ClientIP affinity timeout (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10800;

/// `namespace/name` of a Service.
pub type ServiceKey = (String, String);

/// The ports of a Service that this proxy can serve; bad parts are logged and left out.
pub fn service_ports(svc: &Service) -> Vec<ServicePort> {
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    if !is_safe_name(&ns) || !is_safe_name(&name) {
        tracing::warn!(namespace = %ns, service = %name, "skipping a Service whose name is not a DNS label");
        return Vec::new();
    }
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
    if kind == "ExternalName" {
        return Vec::new();
    }
    // Headless or not yet allocated: nothing to proxy.
    let Some(cip) = spec
        .cluster_ip
        .as_deref()
        .filter(|c| !c.is_empty() && *c != "None")
    else {
        return Vec::new();
    };
    let Ok(cluster_ip) = cip.parse::<Ipv4Addr>() else {
        tracing::warn!(namespace = %ns, service = %name, cluster_ip = cip, "skipping a Service whose ClusterIP is not an IPv4 address");
        return Vec::new();
    };
    let external_ips = parse_ips(
        &ns,
        &name,
        "externalIPs",
        spec.external_ips.iter().flatten(),
    );
    let load_balancer_ips = if kind == "LoadBalancer" {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        parse_ips(
            &ns,
            &name,
            "status.loadBalancer.ingress",
            ingress.into_iter().flatten().filter_map(|i| i.ip.as_ref()),
        )
    } else {
        Vec::new()
    };
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
    });
    let externally_reachable =
        kind == "NodePort" || kind == "LoadBalancer" || !external_ips.is_empty();
    let external_local =
        externally_reachable && spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let health_check_node_port = if external_local && kind == "LoadBalancer" {
        spec.health_check_node_port.and_then(valid_port)
    } else {
        None
    };

    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let port_name = p.name.clone().unwrap_or_default();
        let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
            tracing::warn!(namespace = %ns, service = %name, port = %port_name, protocol = ?p.protocol, "skipping a Service port with an unknown protocol");
            continue;
        };
        let Some(port) = valid_port(p.port) else {
            tracing::warn!(namespace = %ns, service = %name, port = %port_name, value = p.port, "skipping a Service port out of range 1-65535");
            continue;
        };
        if !is_safe_name(&port_name) {
            tracing::warn!(namespace = %ns, service = %name, port = %port_name, "skipping a Service port whose name is not a DNS label");
            continue;
        }
        let node_port = match p.node_port {
            Some(np) if kind == "NodePort" || kind == "LoadBalancer" => {
                let v = valid_port(np);
                if v.is_none() {
                    tracing::warn!(namespace = %ns, service = %name, port = %port_name, node_port = np, "ignoring a nodePort out of range 1-65535");
                }
                v
            }
            _ => None,
        };
        out.push(ServicePort {
            name: ServicePortName {
                namespace: ns.clone(),
                name: name.clone(),
                port: port_name,
                protocol,
            },
            cluster_ip,
            port,
            node_port,
            external_ips: external_ips.clone(),
            load_balancer_ips: load_balancer_ips.clone(),
            affinity_timeout,
            external_local,
            internal_local,
            health_check_node_port,
        });
    }
    out
}

fn valid_port(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

fn parse_ips<'a>(
    ns: &str,
    name: &str,
    field: &str,
    ips: impl Iterator<Item = &'a String>,
) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for ip in ips {
        match ip.parse::<Ipv4Addr>() {
            Ok(a) if !out.contains(&a) => out.push(a),
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(namespace = %ns, service = %name, field, value = %ip, "ignoring an address that is not IPv4");
            }
        }
    }
    out
}

/// The endpoints of one service port over all of the Service's slices (deduplicated by
/// address and port, the first slice winning, as kube-proxy does).
pub fn endpoints_for(port: &ServicePort, slices: &[&EndpointSlice]) -> Vec<Endpoint> {
    let mut out: BTreeMap<(Ipv4Addr, u16), Endpoint> = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let matching = slice.ports.iter().flatten().find(|p| {
            p.name.clone().unwrap_or_default() == port.name.port
                && Protocol::parse(p.protocol.as_deref()) == Some(port.name.protocol)
        });
        let Some(target) = matching.and_then(|p| p.port).and_then(valid_port) else {
            continue;
        };
        for ep in &slice.endpoints {
            let cond = ep.conditions.as_ref();
            // Unset conditions mean ready, serving follows ready, not terminating.
            let ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let serving = cond.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
            // One address per endpoint in practice; the first is the one that counts.
            let Some(ip) = ep
                .addresses
                .first()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            out.entry((ip, target)).or_insert_with(|| Endpoint {
                ip,
                port: target,
                node_name: ep.node_name.clone(),
                ready,
                serving,
                terminating,
            });
        }
    }
    out.into_values().collect()
}

/// The Services and EndpointSlices seen so far, and which Services changed since the last
/// sync.
#[derive(Default)]
pub struct ChangeTracker {
    services: HashMap<ServiceKey, Service>,
    /// Slices by (namespace, slice name), with the Service they belong to.
    slices: HashMap<(String, String), (ServiceKey, EndpointSlice)>,
    by_service: HashMap<ServiceKey, BTreeSet<String>>,
    dirty: BTreeSet<ServiceKey>,
    /// The dirty Services by what made them so (kube-proxy's pending service and endpoint
    /// changes): their own spec, their EndpointSlices.
    spec_dirty: BTreeSet<ServiceKey>,
    endpoints_dirty: BTreeSet<ServiceKey>,
    /// The state each Service's ports had at the last sync.
    current: HashMap<ServiceKey, BTreeMap<ServicePortName, ServiceState>>,
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ServiceKey {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn slice_service(slice: &EndpointSlice) -> Option<ServiceKey> {
    let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((
        slice.metadata.namespace.clone().unwrap_or_default(),
        svc.clone(),
    ))
}

impl ChangeTracker {
    pub fn new() -> ChangeTracker {
        ChangeTracker::default()
    }

    pub fn service_updated(&mut self, svc: Service) {
        let key = key_of(&svc.metadata);
        self.dirty.insert(key.clone());
        self.spec_dirty.insert(key.clone());
        self.services.insert(key, svc);
    }

    pub fn service_deleted(&mut self, svc: &Service) {
        let key = key_of(&svc.metadata);
        self.services.remove(&key);
        self.dirty.insert(key.clone());
        self.spec_dirty.insert(key);
    }

    pub fn slice_updated(&mut self, slice: EndpointSlice) {
        let (ns, name) = key_of(&slice.metadata);
        // A slice may be relabelled onto another Service: the old one changes too.
        self.forget_slice(&ns, &name);
        if let Some(svc) = slice_service(&slice) {
            self.by_service
                .entry(svc.clone())
                .or_default()
                .insert(name.clone());
            self.dirty.insert(svc.clone());
            self.endpoints_dirty.insert(svc.clone());
            self.slices.insert((ns, name), (svc, slice));
        }
    }

    pub fn slice_deleted(&mut self, slice: &EndpointSlice) {
        let (ns, name) = key_of(&slice.metadata);
        self.forget_slice(&ns, &name);
    }

    fn forget_slice(&mut self, ns: &str, name: &str) {
        if let Some((svc, _)) = self.slices.remove(&(ns.to_string(), name.to_string())) {
            if let Some(set) = self.by_service.get_mut(&svc) {
                set.remove(name);
                if set.is_empty() {
                    self.by_service.remove(&svc);
                }
            }
            self.dirty.insert(svc.clone());
            self.endpoints_dirty.insert(svc);
        }
    }

    /// Replaces every Service with a fresh listing (a watch (re)start): the ones gone are
    /// dropped, and every Service is dirty.
    pub fn reset_services(&mut self, services: Vec<Service>) {
        self.dirty.extend(self.services.keys().cloned());
        self.dirty.extend(self.current.keys().cloned());
        self.spec_dirty.extend(self.services.keys().cloned());
        self.spec_dirty.extend(self.current.keys().cloned());
        self.services.clear();
        for s in services {
            self.service_updated(s);
        }
    }

    /// Replaces every EndpointSlice with a fresh listing.
    pub fn reset_slices(&mut self, slices: Vec<EndpointSlice>) {
        self.dirty.extend(self.by_service.keys().cloned());
        self.endpoints_dirty.extend(self.by_service.keys().cloned());
        self.slices.clear();
        self.by_service.clear();
        for s in slices {
            self.slice_updated(s);
        }
    }

    /// How many Services and EndpointSlices are known (for logs).
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    pub fn slice_count(&self) -> usize {
        self.slices.len()
    }

    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// How many Services wait for a sync because of their own spec, and how many because
    /// of their EndpointSlices (one Service may count in both).
    pub fn pending(&self) -> (usize, usize) {
        (self.spec_dirty.len(), self.endpoints_dirty.len())
    }

    /// Every service port as it stands now.
    pub fn all_states(&self) -> BTreeMap<ServicePortName, ServiceState> {
        self.current
            .values()
            .flat_map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())))
            .collect()
    }

    fn compute(&self, key: &ServiceKey) -> BTreeMap<ServicePortName, ServiceState> {
        let Some(svc) = self.services.get(key) else {
            return BTreeMap::new();
        };
        let slices: Vec<&EndpointSlice> = self
            .by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|n| self.slices.get(&(key.0.clone(), n.clone())).map(|(_, s)| s))
            .collect();
        service_ports(svc)
            .into_iter()
            .map(|port| {
                let endpoints = endpoints_for(&port, &slices);
                (port.name.clone(), ServiceState { port, endpoints })
            })
            .collect()
    }

    /// Folds the pending changes: the service ports that differ from the last sync, with
    /// their old state and new state (`None` when absent). Services that changed back to
    /// what they were report nothing.
    pub fn take_changes(&mut self) -> Vec<PortChange> {
        let dirty = std::mem::take(&mut self.dirty);
        self.spec_dirty.clear();
        self.endpoints_dirty.clear();
        let mut changes = Vec::new();
        for key in dirty {
            let new = self.compute(&key);
            let old = self.current.remove(&key).unwrap_or_default();
            let names: BTreeSet<&ServicePortName> = old.keys().chain(new.keys()).collect();
            for name in names {
                let (o, n) = (old.get(name), new.get(name));
                if o != n {
                    changes.push(PortChange {
                        name: name.clone(),
                        old: o.cloned(),
                        new: n.cloned(),
                    });
                }
            }
            if !new.is_empty() {
                self.current.insert(key, new);
            }
        }
        changes
    }
}

/// One service port that changed.
#[derive(Debug, Clone)]
pub struct PortChange {
    pub name: ServicePortName,
    pub old: Option<ServiceState>,
    pub new: Option<ServiceState>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    fn web() -> Service {
        svc(json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10",
                     "ports": [{"name": "http", "port": 80, "nodePort": 30080, "targetPort": "web"},
                               {"name": "bad", "port": 0},
                               {"name": "dns", "port": 53, "protocol": "UDP"}],
                     "externalIPs": ["192.0.2.5", "not-an-ip"],
                     "sessionAffinity": "ClientIP"}
        }))
    }

    fn web_slice(ready2: bool) -> EndpointSlice {
        slice(json!({
            "metadata": {"namespace": "default", "name": "web-abc",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.1.2"], "nodeName": "n1", "conditions": {"ready": true}},
                {"addresses": ["10.244.1.3"], "nodeName": "n2", "conditions": {"ready": ready2, "serving": ready2, "terminating": !ready2}}
            ]
        }))
    }

    #[test]
    fn parses_ports_skipping_bad_ones() {
        let ports = service_ports(&web());
        assert_eq!(ports.len(), 2);
        let http = &ports[0];
        assert_eq!(http.port, 80);
        assert_eq!(http.node_port, Some(30080));
        assert_eq!(http.external_ips, vec![Ipv4Addr::new(192, 0, 2, 5)]);
        assert_eq!(http.affinity_timeout, Some(DEFAULT_AFFINITY_TIMEOUT));
        assert_eq!(ports[1].name.protocol, Protocol::Udp);
    }

    #[test]
    fn headless_and_external_name_are_skipped() {
        let h = svc(json!({"metadata": {"namespace": "d", "name": "h"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}));
        assert!(service_ports(&h).is_empty());
        let e = svc(json!({"metadata": {"namespace": "d", "name": "e"},
            "spec": {"type": "ExternalName", "externalName": "x.example"}}));
        assert!(service_ports(&e).is_empty());
    }

    #[test]
    fn tracker_reports_only_changed_ports() {
        let mut t = ChangeTracker::new();
        t.service_updated(web());
        t.slice_updated(web_slice(true));
        let c = t.take_changes();
        assert_eq!(c.len(), 2);
        let http = c.iter().find(|c| c.name.port == "http").unwrap();
        assert_eq!(http.new.as_ref().unwrap().endpoints.len(), 2);
        assert_eq!(http.new.as_ref().unwrap().endpoints[0].port, 8080);
        // The same slice again: no change.
        t.slice_updated(web_slice(true));
        assert!(t.take_changes().is_empty());
        // An endpoint becomes not ready: only the http port changes.
        t.slice_updated(web_slice(false));
        let c = t.take_changes();
        assert_eq!(c.len(), 1);
        assert!(c[0].new.as_ref().unwrap().endpoints[1].terminating);
        // The Service goes: both ports go.
        t.service_deleted(&web());
        let c = t.take_changes();
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|c| c.new.is_none()));
        assert!(t.all_states().is_empty());
    }

    #[test]
    fn pending_changes_count_services_by_cause_until_taken() {
        let mut t = ChangeTracker::new();
        assert_eq!(t.pending(), (0, 0));
        t.service_updated(web());
        t.slice_updated(web_slice(true));
        t.slice_updated(web_slice(false));
        // One Service, dirty by its spec and by its slices.
        assert_eq!(t.pending(), (1, 1));
        t.take_changes();
        assert_eq!(t.pending(), (0, 0));
        t.slice_deleted(&web_slice(false));
        assert_eq!(t.pending(), (0, 1));
    }
}
