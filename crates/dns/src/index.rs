//! The cluster as DNS needs it: namespaces, services with their ports, the endpoints of
//! their EndpointSlices, and pod addresses, kept in memory and changed one object at a
//! time as the watches report them. Derived lookups (service by cluster IP, endpoints by
//! address, pods by address) are maintained on every change, so a query never scans the
//! cluster. Every change bumps a generation; answer caches compare it and drop what is
//! older.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// `(namespace, name)`.
pub type Key = (String, String);

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What a Service answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// A virtual IP per family (`spec.clusterIPs`).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the ready endpoints themselves.
    Headless,
    /// `type: ExternalName`: a CNAME to this name (without the final dot).
    ExternalName(String),
}

/// A named port, as SRV records need it (unnamed ports have none).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct NamedPort {
    /// Lower-case port name.
    pub name: String,
    /// Lower-case protocol: `tcp`, `udp`, `sctp`.
    pub protocol: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub kind: ServiceKind,
    pub ports: Vec<NamedPort>,
    /// `publishNotReadyAddresses`: every endpoint counts as ready.
    pub publish_not_ready: bool,
}

impl ServiceEntry {
    /// The entry for a Service; `None` for one DNS cannot describe (no cluster IP yet).
    pub fn from_service(svc: &Service) -> Option<ServiceEntry> {
        let spec = svc.spec.as_ref()?;
        let kind = if spec.type_.as_deref() == Some("ExternalName") {
            let target = spec.external_name.as_deref()?.trim_end_matches('.');
            if target.is_empty() {
                return None;
            }
            ServiceKind::ExternalName(target.to_ascii_lowercase())
        } else if spec.cluster_ip.as_deref() == Some("None") {
            ServiceKind::Headless
        } else {
            let mut ips: Vec<IpAddr> = spec
                .cluster_ips
                .iter()
                .flatten()
                .filter_map(|ip| ip.parse().ok())
                .collect();
            if ips.is_empty()
                && let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok())
            {
                ips.push(ip);
            }
            if ips.is_empty() {
                return None;
            }
            ServiceKind::ClusterIp(ips)
        };
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let name = p.name.as_deref().filter(|n| !n.is_empty())?;
                Some(NamedPort {
                    name: name.to_ascii_lowercase(),
                    protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                    port: u16::try_from(p.port).ok()?,
                })
            })
            .collect();
        Some(ServiceEntry {
            kind,
            ports,
            publish_not_ready: spec.publish_not_ready_addresses == Some(true),
        })
    }
}

/// One endpoint of a slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addresses: Vec<IpAddr>,
    /// `hostname`, lower-case, when set.
    pub hostname: Option<String>,
    /// `conditions.ready` (unset counts as ready, as the API defines it).
    pub ready: bool,
}

impl Endpoint {
    /// The endpoint's name within its Service: `hostname`, else the address with
    /// dashes (the spec's "unique, system-assigned identifier", as CoreDNS makes it).
    pub fn name_for(&self, ip: &IpAddr) -> String {
        self.hostname.clone().unwrap_or_else(|| dashed(ip))
    }
}

/// An address as a DNS label: `10-0-0-1`, `2001-db8--1` (a trailing `-` gets a `0`).
pub fn dashed(ip: &IpAddr) -> String {
    let text = ip.to_string();
    match ip {
        IpAddr::V4(_) => text.replace('.', "-"),
        IpAddr::V6(_) => {
            let mut d = text.replace(':', "-");
            if d.ends_with('-') {
                d.push('0');
            }
            d
        }
    }
}

/// A port of an EndpointSlice (the target port: what SRV records of a headless
/// Service carry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePort {
    pub name: String,
    pub protocol: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEntry {
    /// The Service it belongs to (same namespace).
    pub service: String,
    pub endpoints: Vec<Endpoint>,
    pub ports: Vec<SlicePort>,
}

impl SliceEntry {
    /// `None` for a slice of no Service or of FQDN addresses.
    pub fn from_slice(slice: &EndpointSlice) -> Option<SliceEntry> {
        let service = slice
            .metadata
            .labels
            .as_ref()?
            .get(SERVICE_NAME_LABEL)?
            .clone();
        if slice.address_type == "FQDN" {
            return None;
        }
        let endpoints = slice
            .endpoints
            .iter()
            .map(|ep| Endpoint {
                addresses: ep.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                hostname: ep
                    .hostname
                    .as_deref()
                    .filter(|h| !h.is_empty())
                    .map(str::to_ascii_lowercase),
                ready: ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
            })
            .collect();
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(SlicePort {
                    name: p.name.clone().unwrap_or_default().to_ascii_lowercase(),
                    protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                    port: u16::try_from(p.port?).ok()?,
                })
            })
            .collect();
        Some(SliceEntry {
            service,
            endpoints,
            ports,
        })
    }
}

/// The addresses of a Pod (`status.podIPs`, else `status.podIP`); empty for host-network
/// pods, whose address is the node's.
pub fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return Vec::new();
    }
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let mut ips: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if ips.is_empty()
        && let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok())
    {
        ips.push(ip);
    }
    ips
}

fn key_of(meta: &kube::api::ObjectMeta) -> Option<Key> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

/// A ready endpoint address of a Service, with its name within the Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReadyAddress {
    pub ip: IpAddr,
    pub name: String,
}

/// The cluster's DNS-relevant state.
#[derive(Debug, Default)]
pub struct Index {
    namespaces: HashSet<String>,
    services: HashMap<Key, Arc<ServiceEntry>>,
    slices: HashMap<Key, SliceEntry>,
    /// Slice names per Service.
    slices_of: HashMap<Key, BTreeSet<String>>,
    pods: HashMap<Key, Vec<IpAddr>>,
    /// Namespaces of the pods holding an address (with a count per namespace).
    pods_by_ip: HashMap<IpAddr, BTreeMap<String, u32>>,
    /// Services per cluster IP.
    cluster_ips: HashMap<IpAddr, BTreeSet<Key>>,
    /// (Service, endpoint name) per ready endpoint address.
    endpoint_ips: HashMap<IpAddr, BTreeSet<(Key, String)>>,
    /// What each Service put into `endpoint_ips`, to take it out again.
    indexed_addresses: HashMap<Key, Vec<ReadyAddress>>,
    generation: u64,
    /// Unix time of the last change: the zone's SOA serial, as CoreDNS makes it.
    serial: u32,
}

impl Index {
    pub fn new() -> Index {
        Index::default()
    }

    /// Bumped by every change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn changed(&mut self) {
        self.generation += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or_default();
        self.serial = now.max(self.serial);
    }

    /// The zone's SOA serial: when the cluster last changed.
    pub fn serial(&self) -> u32 {
        self.serial
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.namespaces.contains(ns)
    }

    pub fn service(&self, ns: &str, name: &str) -> Option<&ServiceEntry> {
        // A tuple of Strings cannot be borrowed as (&str, &str); the allocation is on
        // the slow path only (answers are cached).
        self.services
            .get(&(ns.to_string(), name.to_string()))
            .map(|s| s.as_ref())
    }

    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let endpoints = self.slices.values().map(|s| s.endpoints.len()).sum();
        (
            self.namespaces.len(),
            self.services.len(),
            endpoints,
            self.pods.len(),
        )
    }

    /// The ready addresses of a Service's endpoints (deduplicated by address and name,
    /// sorted), each with its name within the Service.
    pub fn ready_addresses(&self, ns: &str, name: &str) -> Vec<ReadyAddress> {
        let key = (ns.to_string(), name.to_string());
        let publish_all = self.services.get(&key).is_some_and(|s| s.publish_not_ready);
        let mut out = BTreeSet::new();
        for slice in self.slices_of_service(&key) {
            for ep in &slice.endpoints {
                if !(ep.ready || publish_all) {
                    continue;
                }
                for ip in &ep.addresses {
                    out.insert(ReadyAddress {
                        ip: *ip,
                        name: ep.name_for(ip),
                    });
                }
            }
        }
        out.into_iter().collect()
    }

    /// The ports of a Service's slices (deduplicated).
    pub fn endpoint_ports(&self, ns: &str, name: &str) -> Vec<SlicePort> {
        let key = (ns.to_string(), name.to_string());
        let mut out: Vec<SlicePort> = Vec::new();
        for slice in self.slices_of_service(&key) {
            for p in &slice.ports {
                if !out.contains(p) {
                    out.push(p.clone());
                }
            }
        }
        out
    }

    fn slices_of_service<'a>(&'a self, key: &Key) -> impl Iterator<Item = &'a SliceEntry> + 'a {
        let ns = key.0.clone();
        self.slices_of
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(move |slice| self.slices.get(&(ns.clone(), slice.clone())))
    }

    /// Services whose cluster IP is `ip`.
    pub fn services_at(&self, ip: &IpAddr) -> impl Iterator<Item = &Key> {
        self.cluster_ips.get(ip).into_iter().flatten()
    }

    /// (Service, endpoint name) of the ready endpoints at `ip`.
    pub fn endpoints_at(&self, ip: &IpAddr) -> impl Iterator<Item = &(Key, String)> {
        self.endpoint_ips.get(ip).into_iter().flatten()
    }

    /// Whether a pod of namespace `ns` has address `ip`.
    pub fn pod_at(&self, ns: &str, ip: &IpAddr) -> bool {
        self.pods_by_ip.get(ip).is_some_and(|m| m.contains_key(ns))
    }

    // ---- namespaces ----

    pub fn apply_namespace(&mut self, ns: &Namespace) {
        if let Some(name) = &ns.metadata.name
            && self.namespaces.insert(name.clone())
        {
            self.changed();
        }
    }

    pub fn delete_namespace(&mut self, ns: &Namespace) {
        if let Some(name) = &ns.metadata.name
            && self.namespaces.remove(name)
        {
            self.changed();
        }
    }

    /// Replaces every namespace (a watch's relist).
    pub fn replace_namespaces(&mut self, all: &[Namespace]) {
        self.namespaces = all.iter().filter_map(|n| n.metadata.name.clone()).collect();
        self.changed();
    }

    // ---- services ----

    pub fn apply_service(&mut self, svc: &Service) {
        let Some(key) = key_of(&svc.metadata) else {
            return;
        };
        match ServiceEntry::from_service(svc) {
            Some(entry) => self.set_service(key, entry),
            None => self.remove_service(&key),
        }
    }

    pub fn delete_service(&mut self, svc: &Service) {
        if let Some(key) = key_of(&svc.metadata) {
            self.remove_service(&key);
        }
    }

    pub fn replace_services(&mut self, all: &[Service]) {
        let keys: Vec<Key> = self.services.keys().cloned().collect();
        let keep: HashSet<Key> = all.iter().filter_map(|s| key_of(&s.metadata)).collect();
        for key in keys.iter().filter(|k| !keep.contains(*k)) {
            self.remove_service(key);
        }
        for svc in all {
            self.apply_service(svc);
        }
    }

    fn set_service(&mut self, key: Key, entry: ServiceEntry) {
        if self.services.get(&key).is_some_and(|old| **old == entry) {
            return;
        }
        self.unindex_service(&key);
        let old_publish = self.services.get(&key).map(|s| s.publish_not_ready);
        if let ServiceKind::ClusterIp(ips) = &entry.kind {
            for ip in ips {
                self.cluster_ips.entry(*ip).or_default().insert(key.clone());
            }
        }
        let publish_changed = old_publish != Some(entry.publish_not_ready);
        self.services.insert(key.clone(), Arc::new(entry));
        if publish_changed {
            self.reindex_endpoints(&key);
        }
        self.changed();
    }

    fn remove_service(&mut self, key: &Key) {
        if self.services.contains_key(key) {
            self.unindex_service(key);
            self.services.remove(key);
            self.changed();
        }
    }

    fn unindex_service(&mut self, key: &Key) {
        if let Some(old) = self.services.get(key)
            && let ServiceKind::ClusterIp(ips) = &old.kind
        {
            for ip in ips.clone() {
                remove_from(&mut self.cluster_ips, &ip, key);
            }
        }
    }

    // ---- endpoint slices ----

    pub fn apply_slice(&mut self, slice: &EndpointSlice) {
        let Some(key) = key_of(&slice.metadata) else {
            return;
        };
        match SliceEntry::from_slice(slice) {
            Some(entry) => {
                if self.slices.get(&key) == Some(&entry) {
                    return;
                }
                let old_service = self.remove_slice_entry(&key);
                let svc_key = (key.0.clone(), entry.service.clone());
                self.slices_of
                    .entry(svc_key.clone())
                    .or_default()
                    .insert(key.1.clone());
                self.slices.insert(key.clone(), entry);
                if let Some(old) = old_service.filter(|o| *o != svc_key) {
                    self.reindex_endpoints(&old);
                }
                self.reindex_endpoints(&svc_key);
                self.changed();
            }
            None => self.delete_slice_key(&key),
        }
    }

    pub fn delete_slice(&mut self, slice: &EndpointSlice) {
        if let Some(key) = key_of(&slice.metadata) {
            self.delete_slice_key(&key);
        }
    }

    pub fn replace_slices(&mut self, all: &[EndpointSlice]) {
        let keep: HashSet<Key> = all.iter().filter_map(|s| key_of(&s.metadata)).collect();
        let keys: Vec<Key> = self.slices.keys().cloned().collect();
        for key in keys.iter().filter(|k| !keep.contains(*k)) {
            self.delete_slice_key(key);
        }
        for slice in all {
            self.apply_slice(slice);
        }
    }

    fn delete_slice_key(&mut self, key: &Key) {
        if let Some(svc) = self.remove_slice_entry(key) {
            self.reindex_endpoints(&svc);
            self.changed();
        }
    }

    /// Removes a slice; returns its Service's key.
    fn remove_slice_entry(&mut self, key: &Key) -> Option<Key> {
        let old = self.slices.remove(key)?;
        let svc_key = (key.0.clone(), old.service);
        if let Some(set) = self.slices_of.get_mut(&svc_key) {
            set.remove(&key.1);
            if set.is_empty() {
                self.slices_of.remove(&svc_key);
            }
        }
        Some(svc_key)
    }

    /// Recomputes the endpoint-address entries of one Service.
    fn reindex_endpoints(&mut self, svc: &Key) {
        for old in self.indexed_addresses.remove(svc).unwrap_or_default() {
            remove_from(&mut self.endpoint_ips, &old.ip, &(svc.clone(), old.name));
        }
        let now = self.ready_addresses(&svc.0, &svc.1);
        for addr in &now {
            self.endpoint_ips
                .entry(addr.ip)
                .or_default()
                .insert((svc.clone(), addr.name.clone()));
        }
        if !now.is_empty() {
            self.indexed_addresses.insert(svc.clone(), now);
        }
    }

    // ---- pods ----

    pub fn apply_pod(&mut self, pod: &Pod) {
        let Some(key) = key_of(&pod.metadata) else {
            return;
        };
        let ips = pod_ips(pod);
        if self.pods.get(&key) == Some(&ips) {
            return;
        }
        self.remove_pod_key(&key);
        if !ips.is_empty() {
            for ip in &ips {
                *self
                    .pods_by_ip
                    .entry(*ip)
                    .or_default()
                    .entry(key.0.clone())
                    .or_default() += 1;
            }
            self.pods.insert(key, ips);
        }
        self.changed();
    }

    pub fn delete_pod(&mut self, pod: &Pod) {
        if let Some(key) = key_of(&pod.metadata)
            && self.remove_pod_key(&key)
        {
            self.changed();
        }
    }

    pub fn replace_pods(&mut self, all: &[Pod]) {
        self.pods.clear();
        self.pods_by_ip.clear();
        for pod in all {
            self.apply_pod(pod);
        }
        self.changed();
    }

    fn remove_pod_key(&mut self, key: &Key) -> bool {
        let Some(ips) = self.pods.remove(key) else {
            return false;
        };
        for ip in ips {
            if let Some(m) = self.pods_by_ip.get_mut(&ip) {
                if let Some(n) = m.get_mut(&key.0) {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(&key.0);
                    }
                }
                if m.is_empty() {
                    self.pods_by_ip.remove(&ip);
                }
            }
        }
        true
    }
}

fn remove_from<T: Ord>(map: &mut HashMap<IpAddr, BTreeSet<T>>, ip: &IpAddr, item: &T) {
    if let Some(set) = map.get_mut(ip) {
        set.remove(item);
        if set.is_empty() {
            map.remove(ip);
        }
    }
}
