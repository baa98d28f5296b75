//! The endpoints controller (kube-controller-manager's endpoints and endpointslice
//! controllers in one): for every Service with a selector, the pods of its namespace that
//! the selector matches become
//!
//! - a v1 `Endpoints` of the Service's name: ready pods in `addresses`, not-ready ones in
//!   `notReadyAddresses` (every one with `ip`, `nodeName`, `targetRef`), pods grouped into
//!   subsets by the ports they resolve to (a named `targetPort` is looked up in each pod's
//!   container ports; a pod that lacks it is left out of that port). Terminating pods (with
//!   a `deletionTimestamp`) are left out, as Kubernetes does, unless the Service has
//!   `publishNotReadyAddresses`, which also makes every address ready.
//! - `discovery.k8s.io/v1` `EndpointSlice`s, one per distinct resolved port set (and per 100
//!   endpoints), named `<service>-<5 chars>` where the suffix is a hash of the port set and
//!   chunk (deterministic, so a restart adopts them), labelled
//!   `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by:
//!   endpointslice-controller.k8s.io`, owned by the Service. Terminating pods stay in the
//!   slices with `ready: false, serving: <readiness>, terminating: true`. A Service without
//!   matching pods gets one empty slice, as Kubernetes does.
//!
//! Readiness is the pod condition `Ready` being `"True"`; pods in a terminal phase or without
//! an IP of the Service's address family are left out. The address family is the Service's
//! first `spec.ipFamilies` (else that of its ClusterIP, else IPv4).
//!
//! Objects are written only when their content differs (subsets, endpoints, ports, labels,
//! owner), so an idle cluster causes no writes. When the Service is deleted, loses its
//! selector or becomes `ExternalName`, the managed `Endpoints` (labelled
//! `endpoints.kubernetes.io/managed-by: endpoint-controller`) and managed slices are
//! deleted; `Endpoints` and slices written by others are left alone.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use podnet_api::k8s::kinds::{ENDPOINT_SLICE, ENDPOINTS, POD, ResourceKind, SERVICE};
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{
    Caches, Change, ControllerConfig, Outcome, Reconciler, Watched, condition_status,
    pod_is_terminal, spawn_controller, str_at,
};
use crate::error::ApiResult;
use crate::meta;
use crate::registry::{Registry, revision_of};
use crate::selector::LabelSelector;

/// The label naming the Service of an EndpointSlice.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// The label naming who manages an EndpointSlice.
pub const SLICE_MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`SLICE_MANAGED_BY_LABEL`].
pub const SLICE_MANAGER: &str = "endpointslice-controller.k8s.io";
/// The label naming who manages an `Endpoints` object.
pub const ENDPOINTS_MANAGED_BY_LABEL: &str = "endpoints.kubernetes.io/managed-by";
/// This controller's value of [`ENDPOINTS_MANAGED_BY_LABEL`].
pub const ENDPOINTS_MANAGER: &str = "endpoint-controller";
/// The label on the endpoints of a headless Service.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Endpoints per EndpointSlice at most (kube-controller-manager's default).
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// Spawns the endpoints controller.
pub fn spawn(
    registry: Registry,
    config: &ControllerConfig,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    spawn_controller(
        EndpointsController {
            registry: registry.clone(),
            resync: config.resync,
            pods_by_label: LabelIndex::default(),
            services_by_label: LabelIndex::default(),
            managed_slices: LabelIndex::default(),
        },
        registry,
        shutdown,
    )
}

struct EndpointsController {
    registry: Registry,
    resync: Duration,
    /// Pods by each of their labels, so that a Service finds its pods without a scan.
    pods_by_label: LabelIndex,
    /// Services with a selector, by one pair of their selector (a pod can only match a
    /// Service if it carries every pair), so that a pod finds its Services without a scan.
    services_by_label: LabelIndex,
    /// Managed EndpointSlices by (namespace, [`SERVICE_NAME_LABEL`], Service).
    managed_slices: LabelIndex,
}

/// Object names by (namespace, label key, label value).
#[derive(Debug, Default)]
struct LabelIndex {
    entries: HashMap<(String, String, String), BTreeSet<String>>,
}

impl LabelIndex {
    fn insert(&mut self, ns: &str, pairs: &[(&str, &str)], name: &str) {
        for (k, v) in pairs {
            self.entries
                .entry((ns.to_owned(), (*k).to_owned(), (*v).to_owned()))
                .or_default()
                .insert(name.to_owned());
        }
    }

    fn remove(&mut self, ns: &str, pairs: &[(&str, &str)], name: &str) {
        for (k, v) in pairs {
            let key = (ns.to_owned(), (*k).to_owned(), (*v).to_owned());
            if let Some(names) = self.entries.get_mut(&key) {
                names.remove(name);
                if names.is_empty() {
                    self.entries.remove(&key);
                }
            }
        }
    }

    fn get(&self, ns: &str, key: &str, value: &str) -> Option<&BTreeSet<String>> {
        self.entries
            .get(&(ns.to_owned(), key.to_owned(), value.to_owned()))
    }
}

/// The pairs of a Service's selector (empty when it selects no pods).
fn selector_pairs(svc: &Value) -> Vec<(&str, &str)> {
    if str_at(svc, "/spec/type") == "ExternalName" {
        return Vec::new();
    }
    svc.pointer("/spec/selector")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v)))
        .collect()
}

/// A Service, by namespace and name.
type ServiceKey = (String, String);

impl Reconciler for EndpointsController {
    type Key = ServiceKey;

    fn name(&self) -> &'static str {
        "endpoints"
    }

    fn watches(&self) -> Vec<Watched> {
        [&SERVICE, &POD, &ENDPOINTS, &ENDPOINT_SLICE]
            .into_iter()
            .map(|kind| Watched {
                kind,
                namespace: None,
            })
            .collect()
    }

    fn resync_period(&self) -> Duration {
        self.resync
    }

    fn observe(&mut self, change: &Change) {
        if *change.kind == POD {
            if let Some(old) = &change.old {
                self.pods_by_label.remove(
                    meta::namespace(old),
                    &meta::labels(old),
                    meta::name(old),
                );
            }
            if let Some(new) = &change.new {
                self.pods_by_label.insert(
                    meta::namespace(new),
                    &meta::labels(new),
                    meta::name(new),
                );
            }
        } else if *change.kind == ENDPOINT_SLICE {
            if let Some(old) = &change.old
                && let Some(svc) = managed_slice_service(old)
            {
                self.managed_slices.remove(
                    meta::namespace(old),
                    &[(SERVICE_NAME_LABEL, svc)],
                    meta::name(old),
                );
            }
            if let Some(new) = &change.new
                && let Some(svc) = managed_slice_service(new)
            {
                self.managed_slices.insert(
                    meta::namespace(new),
                    &[(SERVICE_NAME_LABEL, svc)],
                    meta::name(new),
                );
            }
        } else if *change.kind == SERVICE {
            if let Some(old) = &change.old
                && let Some(pair) = selector_pairs(old).into_iter().min()
            {
                self.services_by_label
                    .remove(meta::namespace(old), &[pair], meta::name(old));
            }
            if let Some(new) = &change.new
                && let Some(pair) = selector_pairs(new).into_iter().min()
            {
                self.services_by_label
                    .insert(meta::namespace(new), &[pair], meta::name(new));
            }
        }
    }

    fn keys_for(&self, caches: &Caches, change: &Change) -> Vec<ServiceKey> {
        let Some(obj) = change.object() else {
            return Vec::new();
        };
        let ns = meta::namespace(obj);
        let kind = change.kind;
        if *kind == SERVICE || *kind == ENDPOINTS {
            return vec![(ns.to_owned(), meta::name(obj).to_owned())];
        }
        if *kind == ENDPOINT_SLICE {
            return managed_slice_service(obj)
                .map(|svc| vec![(ns.to_owned(), svc.to_owned())])
                .unwrap_or_default();
        }
        // A pod: the Services whose selector matches it before or after the change,
        // unless nothing endpoints depend on changed.
        if let (Some(old), Some(new)) = (&change.old, &change.new)
            && pod_fingerprint(old) == pod_fingerprint(new)
        {
            return Vec::new();
        }
        let pods: Vec<&Value> = change.old.iter().chain(change.new.iter()).collect();
        let mut candidates: BTreeSet<&str> = BTreeSet::new();
        for pod in &pods {
            for (k, v) in meta::labels(pod) {
                if let Some(names) = self.services_by_label.get(ns, k, v) {
                    candidates.extend(names.iter().map(String::as_str));
                }
            }
        }
        candidates
            .into_iter()
            .filter(|name| {
                caches
                    .get(&SERVICE, ns, name)
                    .and_then(service_selector)
                    .is_some_and(|sel| pods.iter().any(|pod| sel.matches(&meta::labels(pod))))
            })
            .map(|name| (ns.to_owned(), name.to_owned()))
            .collect()
    }

    fn all_keys(&self, caches: &Caches) -> Vec<ServiceKey> {
        let mut keys: Vec<ServiceKey> = caches
            .of(&SERVICE)
            .iter()
            .map(|svc| (meta::namespace(svc).to_owned(), meta::name(svc).to_owned()))
            .collect();
        // Leftovers whose Service is gone.
        keys.extend(
            caches
                .of(&ENDPOINTS)
                .iter()
                .filter(|ep| endpoints_managed(ep))
                .map(|ep| (meta::namespace(ep).to_owned(), meta::name(ep).to_owned())),
        );
        keys.extend(caches.of(&ENDPOINT_SLICE).iter().filter_map(|slice| {
            managed_slice_service(slice)
                .map(|svc| (meta::namespace(slice).to_owned(), svc.to_owned()))
        }));
        keys
    }

    async fn reconcile(&mut self, caches: &Caches, key: &ServiceKey) -> ApiResult<Outcome> {
        let (ns, name) = key;
        let service = caches.get(&SERVICE, ns, name);
        let selector = service.and_then(service_selector);
        match (service, selector) {
            (Some(svc), Some(selector)) => {
                // The pods carrying the selector's rarest pair, then the whole selector.
                let smallest = selector_pairs(svc)
                    .into_iter()
                    .map(|(k, v)| self.pods_by_label.get(ns, k, v))
                    .min_by_key(|names| names.map_or(0, BTreeSet::len))
                    .flatten();
                let pods: Vec<&Value> = smallest
                    .into_iter()
                    .flatten()
                    .filter_map(|pod| caches.get(&POD, ns, pod))
                    .filter(|pod| selector.matches(&meta::labels(pod)))
                    .collect();
                self.sync_endpoints(caches, svc, &pods).await?;
                self.sync_slices(caches, svc, &pods).await?;
            }
            _ => self.remove_managed(caches, ns, name).await?,
        }
        Ok(Outcome::default())
    }
}

impl EndpointsController {
    /// The names of the managed EndpointSlices of a Service, as cached.
    fn managed_slices(&self, ns: &str, service: &str) -> Vec<String> {
        self.managed_slices
            .get(ns, SERVICE_NAME_LABEL, service)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default()
    }

    async fn sync_endpoints(&self, caches: &Caches, svc: &Value, pods: &[&Value]) -> ApiResult<()> {
        let desired = desired_endpoints(svc, pods);
        let (ns, name) = (meta::namespace(svc), meta::name(svc));
        let cached = caches.get(&ENDPOINTS, ns, name);
        if cached.is_some_and(|cur| endpoints_equal(cur, &desired)) {
            return Ok(());
        }
        tracing::debug!(namespace = ns, service = name, "writing endpoints");
        write(
            &self.registry,
            &ENDPOINTS,
            cached.is_none(),
            desired,
            |cur, desired| {
                if endpoints_equal(cur, desired) {
                    return None;
                }
                let mut new = cur.clone();
                meta::set(&mut new, "labels", desired["metadata"]["labels"].clone());
                match desired.get("subsets") {
                    Some(subsets) => new["subsets"] = subsets.clone(),
                    None => {
                        if let Some(o) = new.as_object_mut() {
                            o.remove("subsets");
                        }
                    }
                }
                Some(new)
            },
        )
        .await
    }

    async fn sync_slices(&self, caches: &Caches, svc: &Value, pods: &[&Value]) -> ApiResult<()> {
        let (ns, name) = (meta::namespace(svc), meta::name(svc));
        let desired = desired_slices(svc, pods);
        let desired_names: HashSet<&str> = desired.iter().map(meta::name).collect();
        for slice in &desired {
            let cached = caches.get(&ENDPOINT_SLICE, ns, meta::name(slice));
            if cached.is_some_and(|cur| slices_equal(cur, slice)) {
                continue;
            }
            tracing::debug!(
                namespace = ns,
                service = name,
                slice = meta::name(slice),
                "writing endpointslice"
            );
            write(
                &self.registry,
                &ENDPOINT_SLICE,
                cached.is_none(),
                slice.clone(),
                |cur, desired| {
                    if slices_equal(cur, desired) {
                        return None;
                    }
                    let mut new = cur.clone();
                    for field in ["labels", "ownerReferences", "generateName"] {
                        meta::set(&mut new, field, desired["metadata"][field].clone());
                    }
                    for field in ["addressType", "endpoints", "ports"] {
                        new[field] = desired[field].clone();
                    }
                    Some(new)
                },
            )
            .await?;
        }
        let stale: Vec<String> = self
            .managed_slices(ns, name)
            .into_iter()
            .filter(|n| !desired_names.contains(n.as_str()))
            .collect();
        for slice in stale {
            delete_if(&self.registry, &ENDPOINT_SLICE, ns, &slice, |s| {
                managed_slice_service(s) == Some(name)
            })
            .await?;
        }
        Ok(())
    }

    /// Deletes the managed Endpoints and EndpointSlices of a Service that is gone or has no
    /// selector.
    async fn remove_managed(&self, caches: &Caches, ns: &str, name: &str) -> ApiResult<()> {
        if caches
            .get(&ENDPOINTS, ns, name)
            .is_some_and(endpoints_managed)
        {
            tracing::debug!(namespace = ns, service = name, "deleting endpoints");
            delete_if(&self.registry, &ENDPOINTS, ns, name, endpoints_managed).await?;
        }
        let slices = self.managed_slices(ns, name);
        for slice in slices {
            tracing::debug!(
                namespace = ns,
                service = name,
                slice,
                "deleting endpointslice"
            );
            delete_if(&self.registry, &ENDPOINT_SLICE, ns, &slice, |s| {
                managed_slice_service(s) == Some(name)
            })
            .await?;
        }
        Ok(())
    }
}

/// Creates `desired` (when the cache had nothing) or updates the stored object with
/// `change(current, desired)`; falls back from one to the other when the store disagrees
/// with the cache.
async fn write<F>(
    registry: &Registry,
    kind: &ResourceKind,
    create_first: bool,
    desired: Value,
    mut change: F,
) -> ApiResult<()>
where
    F: FnMut(&Value, &Value) -> Option<Value>,
{
    let (ns, name) = (
        meta::namespace(&desired).to_owned(),
        meta::name(&desired).to_owned(),
    );
    let mut create = create_first;
    for _ in 0..4 {
        if create {
            match registry.create(kind, desired.clone()).await {
                Err(e) if e.code == 409 => create = false,
                other => return other.map(|_| ()),
            }
        } else {
            match registry
                .update_with(kind, &ns, &name, |cur| Ok(change(cur, &desired)))
                .await
            {
                Err(e) if e.code == 404 => create = true,
                other => return other.map(|_| ()),
            }
        }
    }
    Err(crate::error::ApiError::conflict(
        kind.plural,
        kind.group,
        &name,
    ))
}

/// Deletes the object if `pred` holds for it as stored now (compare-and-swap on its
/// revision); absent is fine.
async fn delete_if<F>(
    registry: &Registry,
    kind: &ResourceKind,
    ns: &str,
    name: &str,
    pred: F,
) -> ApiResult<()>
where
    F: Fn(&Value) -> bool,
{
    for _ in 0..8 {
        let Some(cur) = registry.try_get(kind, ns, name).await? else {
            return Ok(());
        };
        if !pred(&cur) {
            return Ok(());
        }
        match registry
            .delete(kind, ns, name, Some(revision_of(&cur)?))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.code == 404 => return Ok(()),
            Err(e) if e.reason == "Conflict" => continue,
            Err(e) => return Err(e),
        }
    }
    Err(crate::error::ApiError::conflict(
        kind.plural,
        kind.group,
        name,
    ))
}

/// The Service's selector, if it selects pods (non-empty, not `ExternalName`).
fn service_selector(svc: &Value) -> Option<LabelSelector> {
    let pairs = selector_pairs(svc);
    (!pairs.is_empty()).then(|| LabelSelector::from_pairs(pairs))
}

fn label<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
}

/// The Service an EndpointSlice belongs to, if this controller manages it.
fn managed_slice_service(slice: &Value) -> Option<&str> {
    if label(slice, SLICE_MANAGED_BY_LABEL) != Some(SLICE_MANAGER) {
        return None;
    }
    label(slice, SERVICE_NAME_LABEL)
}

fn endpoints_managed(ep: &Value) -> bool {
    label(ep, ENDPOINTS_MANAGED_BY_LABEL) == Some(ENDPOINTS_MANAGER)
}

/// What of a pod its endpoints depend on.
fn pod_fingerprint(pod: &Value) -> Value {
    json!([
        pod.pointer("/metadata/labels"),
        meta::get(pod, "deletionTimestamp"),
        meta::get(pod, "uid"),
        pod.pointer("/spec/nodeName"),
        pod.pointer("/spec/hostname"),
        pod.pointer("/spec/subdomain"),
        pod.pointer("/spec/containers"),
        pod.pointer("/spec/initContainers"),
        pod.pointer("/status/phase"),
        pod.pointer("/status/podIP"),
        pod.pointer("/status/podIPs"),
        condition_status(pod, "Ready"),
    ])
}

fn is_headless(svc: &Value) -> bool {
    str_at(svc, "/spec/clusterIP") == "None"
}

/// The address family of the Service's endpoints: true for IPv6.
fn service_is_ipv6(svc: &Value) -> bool {
    match svc.pointer("/spec/ipFamilies/0").and_then(Value::as_str) {
        Some(family) => family == "IPv6",
        None => str_at(svc, "/spec/clusterIP")
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_ipv6()),
    }
}

/// The pod's IP of the given family.
fn pod_ip(pod: &Value, ipv6: bool) -> Option<String> {
    let mut candidates: Vec<&str> = Vec::new();
    candidates.push(str_at(pod, "/status/podIP"));
    if let Some(ips) = pod.pointer("/status/podIPs").and_then(Value::as_array) {
        candidates.extend(ips.iter().map(|ip| str_at(ip, "/ip")));
    }
    candidates
        .into_iter()
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .find(|ip| ip.is_ipv6() == ipv6)
        .map(|ip| ip.to_string())
}

fn pod_ready(pod: &Value) -> bool {
    condition_status(pod, "Ready") == "True"
}

fn pod_terminating(pod: &Value) -> bool {
    meta::get(pod, "deletionTimestamp").is_some_and(|v| !v.is_null())
}

/// One port of the Service resolved for one pod, as an Endpoints/EndpointSlice port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ResolvedPort {
    name: String,
    port: i64,
    protocol: String,
    app_protocol: Option<String>,
}

/// The Service's ports as `pod` serves them; a named `targetPort` the pod lacks is left out.
fn resolve_ports(svc: &Value, pod: &Value) -> Vec<ResolvedPort> {
    let Some(ports) = svc.pointer("/spec/ports").and_then(Value::as_array) else {
        return Vec::new();
    };
    ports
        .iter()
        .filter_map(|sp| {
            let protocol = match str_at(sp, "/protocol") {
                "" => "TCP",
                p => p,
            };
            let service_port = sp.get("port").and_then(Value::as_i64);
            let port = match sp.get("targetPort") {
                Some(Value::Number(n)) => n.as_i64().filter(|p| *p > 0).or(service_port),
                Some(Value::String(s)) if !s.is_empty() => match s.parse::<i64>() {
                    Ok(n) if n > 0 => Some(n),
                    Ok(_) => service_port,
                    Err(_) => find_container_port(pod, s, protocol),
                },
                _ => service_port,
            }?;
            Some(ResolvedPort {
                name: str_at(sp, "/name").to_owned(),
                port,
                protocol: protocol.to_owned(),
                app_protocol: sp
                    .get("appProtocol")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            })
        })
        .collect()
}

/// The `containerPort` named `name` with `protocol` in the pod's containers (and sidecar
/// init containers, `restartPolicy: Always`).
fn find_container_port(pod: &Value, name: &str, protocol: &str) -> Option<i64> {
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let sidecars = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| str_at(c, "/restartPolicy") == "Always");
    containers
        .chain(sidecars)
        .filter_map(|c| c.get("ports").and_then(Value::as_array))
        .flatten()
        .find(|p| {
            str_at(p, "/name") == name
                && match str_at(p, "/protocol") {
                    "" => "TCP",
                    other => other,
                } == protocol
        })
        .and_then(|p| p.get("containerPort").and_then(Value::as_i64))
}

/// A pod as an endpoint of a Service.
struct PodEndpoint<'a> {
    pod: &'a Value,
    ip: String,
    ports: Vec<ResolvedPort>,
}

/// The pods that are endpoints of the Service (not terminal, with an IP of its family),
/// with their resolved ports; a pod that resolves none of the Service's ports is left out
/// (a headless Service without ports keeps every pod, with no ports).
fn pod_endpoints<'a>(svc: &Value, pods: &[&'a Value]) -> Vec<PodEndpoint<'a>> {
    let ipv6 = service_is_ipv6(svc);
    let has_ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .is_some_and(|p| !p.is_empty());
    let mut out: Vec<PodEndpoint<'a>> = pods
        .iter()
        .filter(|pod| !pod_is_terminal(pod))
        .filter_map(|pod| {
            let ip = pod_ip(pod, ipv6)?;
            let mut ports = resolve_ports(svc, pod);
            if has_ports && ports.is_empty() {
                return None;
            }
            if !has_ports && !is_headless(svc) {
                return None;
            }
            ports.sort();
            ports.dedup();
            Some(PodEndpoint { pod, ip, ports })
        })
        .collect();
    out.sort_by(|a, b| {
        a.ip.cmp(&b.ip)
            .then_with(|| meta::name(a.pod).cmp(meta::name(b.pod)))
    });
    out
}

fn target_ref(pod: &Value) -> Value {
    json!({
        "kind": "Pod",
        "namespace": meta::namespace(pod),
        "name": meta::name(pod),
        "uid": meta::get(pod, "uid").cloned().unwrap_or(Value::Null),
    })
}

/// The pod's DNS hostname within the Service, when its `subdomain` names the Service.
fn pod_hostname<'a>(svc: &Value, pod: &'a Value) -> Option<&'a str> {
    let hostname = str_at(pod, "/spec/hostname");
    (!hostname.is_empty() && str_at(pod, "/spec/subdomain") == meta::name(svc)).then_some(hostname)
}

/// The labels of the Service's `Endpoints`: the Service's own, plus ours.
fn endpoints_labels(svc: &Value) -> Map<String, Value> {
    let mut labels = svc
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert(ENDPOINTS_MANAGED_BY_LABEL.into(), ENDPOINTS_MANAGER.into());
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), "".into());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// The desired `Endpoints` of a Service.
fn desired_endpoints(svc: &Value, pods: &[&Value]) -> Value {
    let publish_not_ready = svc
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // Subsets keyed by their port set.
    let mut subsets: BTreeMap<Vec<ResolvedPort>, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
    for ep in pod_endpoints(svc, pods) {
        if pod_terminating(ep.pod) && !publish_not_ready {
            continue;
        }
        let mut address = json!({"ip": ep.ip, "targetRef": target_ref(ep.pod)});
        let node = str_at(ep.pod, "/spec/nodeName");
        if !node.is_empty() {
            address["nodeName"] = json!(node);
        }
        if let Some(hostname) = pod_hostname(svc, ep.pod) {
            address["hostname"] = json!(hostname);
        }
        let entry = subsets.entry(ep.ports).or_default();
        if publish_not_ready || pod_ready(ep.pod) {
            entry.0.push(address);
        } else {
            entry.1.push(address);
        }
    }
    let subsets: Vec<Value> = subsets
        .into_iter()
        .map(|(ports, (ready, not_ready))| {
            let mut subset = json!({});
            if !ready.is_empty() {
                subset["addresses"] = Value::Array(ready);
            }
            if !not_ready.is_empty() {
                subset["notReadyAddresses"] = Value::Array(not_ready);
            }
            if !ports.is_empty() {
                subset["ports"] = ports
                    .iter()
                    .map(|p| {
                        let mut port = json!({"port": p.port, "protocol": p.protocol});
                        if !p.name.is_empty() {
                            port["name"] = json!(p.name);
                        }
                        if let Some(ap) = &p.app_protocol {
                            port["appProtocol"] = json!(ap);
                        }
                        port
                    })
                    .collect();
            }
            subset
        })
        .collect();
    let mut ep = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": meta::name(svc),
            "namespace": meta::namespace(svc),
            "labels": endpoints_labels(svc),
        },
    });
    if !subsets.is_empty() {
        ep["subsets"] = Value::Array(subsets);
    }
    ep
}

fn labels_of(obj: &Value) -> Value {
    obj.pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}))
}

fn endpoints_equal(current: &Value, desired: &Value) -> bool {
    let subsets = |o: &Value| match o.get("subsets") {
        None | Some(Value::Null) => json!([]),
        Some(s) => s.clone(),
    };
    subsets(current) == subsets(desired) && labels_of(current) == labels_of(desired)
}

fn slices_equal(current: &Value, desired: &Value) -> bool {
    ["addressType", "endpoints", "ports"]
        .iter()
        .all(|f| current.get(f) == desired.get(f))
        && labels_of(current) == labels_of(desired)
        && meta::get(current, "ownerReferences") == meta::get(desired, "ownerReferences")
}

/// A 5-character suffix in the alphabet of `generateName`, from a hash of `input`.
fn name_suffix(input: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    // FNV-1a, 64 bits.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in input.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let base = ALPHABET.len() as u64;
    (0..5)
        .map(|_| {
            let c = ALPHABET[(hash % base) as usize];
            hash /= base;
            char::from(c)
        })
        .collect()
}

/// The desired EndpointSlices of a Service: one per resolved port set and per
/// [`MAX_ENDPOINTS_PER_SLICE`] endpoints; one empty slice when there are no endpoints.
fn desired_slices(svc: &Value, pods: &[&Value]) -> Vec<Value> {
    let publish_not_ready = svc
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut groups: BTreeMap<Vec<ResolvedPort>, Vec<Value>> = BTreeMap::new();
    for ep in pod_endpoints(svc, pods) {
        let serving = pod_ready(ep.pod);
        let terminating = pod_terminating(ep.pod);
        let ready = publish_not_ready || (serving && !terminating);
        let mut endpoint = json!({
            "addresses": [ep.ip],
            "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
            "targetRef": target_ref(ep.pod),
        });
        let node = str_at(ep.pod, "/spec/nodeName");
        if !node.is_empty() {
            endpoint["nodeName"] = json!(node);
        }
        if let Some(hostname) = pod_hostname(svc, ep.pod) {
            endpoint["hostname"] = json!(hostname);
        }
        groups.entry(ep.ports).or_default().push(endpoint);
    }

    let (ns, name) = (meta::namespace(svc), meta::name(svc));
    let address_type = if service_is_ipv6(svc) { "IPv6" } else { "IPv4" };
    let mut labels = svc
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), name.into());
    labels.insert(SLICE_MANAGED_BY_LABEL.into(), SLICE_MANAGER.into());
    if is_headless(svc) {
        labels.insert(HEADLESS_LABEL.into(), "".into());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    let owner = json!([{
        "apiVersion": "v1",
        "kind": "Service",
        "name": name,
        "uid": meta::get(svc, "uid").cloned().unwrap_or(Value::Null),
        "controller": true,
        "blockOwnerDeletion": true,
    }]);

    let mut chunks: Vec<(String, Vec<ResolvedPort>, Vec<Value>)> = Vec::new();
    if groups.is_empty() {
        chunks.push(("placeholder".into(), Vec::new(), Vec::new()));
    }
    for (ports, endpoints) in groups {
        let port_key = ports
            .iter()
            .map(|p| format!("{}/{}/{}", p.name, p.port, p.protocol))
            .collect::<Vec<_>>()
            .join(",");
        for (i, chunk) in endpoints.chunks(MAX_ENDPOINTS_PER_SLICE).enumerate() {
            chunks.push((format!("{port_key}#{i}"), ports.clone(), chunk.to_vec()));
        }
    }

    let mut names: BTreeSet<String> = BTreeSet::new();
    chunks
        .into_iter()
        .map(|(key, ports, endpoints)| {
            // Distinct names even in the unlikely case of a hash collision.
            let mut salt = 0u32;
            let mut slice_name = format!("{name}-{}", name_suffix(&format!("{name}|{key}")));
            while !names.insert(slice_name.clone()) {
                salt += 1;
                slice_name = format!("{name}-{}", name_suffix(&format!("{name}|{key}|{salt}")));
            }
            let ports: Vec<Value> = ports
                .iter()
                .map(|p| {
                    let mut port = json!({"name": p.name, "port": p.port, "protocol": p.protocol});
                    if let Some(ap) = &p.app_protocol {
                        port["appProtocol"] = json!(ap);
                    }
                    port
                })
                .collect();
            json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": slice_name,
                    "generateName": format!("{name}-"),
                    "namespace": ns,
                    "labels": labels.clone(),
                    "ownerReferences": owner.clone(),
                },
                "addressType": address_type,
                "endpoints": endpoints,
                "ports": ports,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn service(name: &str, selector: Value, ports: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "labels": {"team": "a"}},
            "spec": {"selector": selector, "ports": ports, "clusterIP": "10.96.0.10"},
        })
    }

    fn pod(name: &str, ip: &str, labels: Value, ready: bool) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        })
    }

    fn start(r: &Registry) -> (watch::Sender<bool>, JoinHandle<()>) {
        let (stop, rx) = shutdown();
        let config = ControllerConfig {
            resync: Duration::from_millis(100),
            ..ControllerConfig::default()
        };
        (stop, spawn(r.clone(), &config, rx))
    }

    /// (ready IPs, not-ready IPs) of the Endpoints, over all subsets.
    fn ips(ep: &Value) -> (Vec<String>, Vec<String>) {
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        for subset in ep["subsets"].as_array().into_iter().flatten() {
            for (field, out) in [
                ("addresses", &mut ready),
                ("notReadyAddresses", &mut not_ready),
            ] {
                for a in subset[field].as_array().into_iter().flatten() {
                    out.push(a["ip"].as_str().unwrap().to_owned());
                }
            }
        }
        ready.sort();
        not_ready.sort();
        (ready, not_ready)
    }

    async fn endpoints_are(r: &Registry, name: &str, ready: &[&str], not_ready: &[&str]) -> Value {
        let want = (
            ready.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            not_ready.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        );
        wait_for(
            &format!("endpoints {name} to be {want:?}"),
            Duration::from_secs(10),
            async || {
                let ep = r.try_get(&ENDPOINTS, "default", name).await.unwrap()?;
                (ips(&ep) == want).then_some(ep)
            },
        )
        .await
    }

    async fn slices_of(r: &Registry, svc: &str) -> Vec<Value> {
        r.list(&ENDPOINT_SLICE, Some("default"), None)
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|s| label(s, SERVICE_NAME_LABEL) == Some(svc))
            .collect()
    }

    /// (ip, ready, serving, terminating) of every endpoint of the Service's slices.
    async fn slice_endpoints(r: &Registry, svc: &str) -> Vec<(String, bool, bool, bool)> {
        let mut out: Vec<_> = slices_of(r, svc)
            .await
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .map(|e| {
                (
                    e["addresses"][0].as_str().unwrap().to_owned(),
                    e["conditions"]["ready"].as_bool().unwrap(),
                    e["conditions"]["serving"].as_bool().unwrap(),
                    e["conditions"]["terminating"].as_bool().unwrap(),
                )
            })
            .collect();
        out.sort();
        out
    }

    async fn update_pod(r: &Registry, name: &str, f: impl Fn(&mut Value)) {
        r.update_with(&POD, "default", name, |cur| {
            let mut new = cur.clone();
            f(&mut new);
            Ok(Some(new))
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn endpoints_follow_readiness_labels_deletion_and_selector() {
        let r = registry();
        r.create(
            &SERVICE,
            service(
                "web",
                json!({"app": "web"}),
                json!([{"name": "http", "port": 80, "targetPort": "http"}]),
            ),
        )
        .await
        .unwrap();
        r.create(&POD, pod("a", "10.244.1.2", json!({"app": "web"}), true))
            .await
            .unwrap();
        r.create(&POD, pod("b", "10.244.1.3", json!({"app": "web"}), false))
            .await
            .unwrap();
        r.create(&POD, pod("c", "10.244.1.4", json!({"app": "db"}), true))
            .await
            .unwrap();
        let (stop, handle) = start(&r);

        let ep = endpoints_are(&r, "web", &["10.244.1.2"], &["10.244.1.3"]).await;
        let subset = &ep["subsets"][0];
        assert_eq!(
            subset["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        let a = &subset["addresses"][0];
        assert_eq!(a["nodeName"], "n1");
        assert_eq!(a["targetRef"]["kind"], "Pod");
        assert_eq!(a["targetRef"]["name"], "a");
        assert!(a["targetRef"]["uid"].is_string());
        assert_eq!(ep["metadata"]["labels"]["team"], "a");
        assert_eq!(
            ep["metadata"]["labels"][ENDPOINTS_MANAGED_BY_LABEL],
            ENDPOINTS_MANAGER
        );

        // The slice.
        let slices = wait_for("one slice", Duration::from_secs(10), async || {
            let s = slices_of(&r, "web").await;
            (s.len() == 1 && s[0]["endpoints"].as_array().is_some_and(|e| e.len() == 2))
                .then_some(s)
        })
        .await;
        let slice = &slices[0];
        assert!(meta::name(slice).starts_with("web-") && meta::name(slice).len() == 9);
        assert_eq!(slice["addressType"], "IPv4");
        assert_eq!(
            slice["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        assert_eq!(
            slice["metadata"]["labels"][SLICE_MANAGED_BY_LABEL],
            SLICE_MANAGER
        );
        let svc = r.get(&SERVICE, "default", "web").await.unwrap();
        assert_eq!(
            slice["metadata"]["ownerReferences"][0]["uid"],
            svc["metadata"]["uid"]
        );
        assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
        assert_eq!(slice["endpoints"][0]["nodeName"], "n1");
        assert_eq!(slice["endpoints"][0]["targetRef"]["name"], "a");

        // Readiness changes.
        update_pod(&r, "b", |p| {
            p["status"]["conditions"][0]["status"] = json!("True")
        })
        .await;
        endpoints_are(&r, "web", &["10.244.1.2", "10.244.1.3"], &[]).await;
        update_pod(&r, "a", |p| {
            p["status"]["conditions"][0]["status"] = json!("False")
        })
        .await;
        endpoints_are(&r, "web", &["10.244.1.3"], &["10.244.1.2"]).await;

        // Label changes: c joins, a leaves.
        update_pod(&r, "c", |p| p["metadata"]["labels"]["app"] = json!("web")).await;
        update_pod(&r, "a", |p| p["metadata"]["labels"]["app"] = json!("other")).await;
        endpoints_are(&r, "web", &["10.244.1.3", "10.244.1.4"], &[]).await;

        // Deletion: a terminating pod leaves Endpoints, stays in the slice as terminating.
        update_pod(&r, "b", |p| {
            p["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z");
        })
        .await;
        endpoints_are(&r, "web", &["10.244.1.4"], &[]).await;
        wait_for(
            "b terminating in the slice",
            Duration::from_secs(10),
            async || {
                let eps = slice_endpoints(&r, "web").await;
                (eps == vec![
                    ("10.244.1.3".into(), false, true, true),
                    ("10.244.1.4".into(), true, true, false),
                ])
                .then_some(())
            },
        )
        .await;
        r.delete(&POD, "default", "b", None).await.unwrap();
        wait_for(
            "b gone from the slice",
            Duration::from_secs(10),
            async || {
                (slice_endpoints(&r, "web").await == vec![("10.244.1.4".into(), true, true, false)])
                    .then_some(())
            },
        )
        .await;

        // A failed pod leaves.
        update_pod(&r, "c", |p| p["status"]["phase"] = json!("Failed")).await;
        endpoints_are(&r, "web", &[], &[]).await;
        update_pod(&r, "c", |p| p["status"]["phase"] = json!("Running")).await;
        endpoints_are(&r, "web", &["10.244.1.4"], &[]).await;

        // Selector change.
        r.update_with(&SERVICE, "default", "web", |cur| {
            let mut new = cur.clone();
            new["spec"]["selector"] = json!({"app": "other"});
            Ok(Some(new))
        })
        .await
        .unwrap();
        endpoints_are(&r, "web", &[], &["10.244.1.2"]).await;

        // Selector removed: the managed objects go.
        r.update_with(&SERVICE, "default", "web", |cur| {
            let mut new = cur.clone();
            new["spec"].as_object_mut().unwrap().remove("selector");
            Ok(Some(new))
        })
        .await
        .unwrap();
        wait_for(
            "endpoints and slices removed",
            Duration::from_secs(10),
            async || {
                let ep = r.try_get(&ENDPOINTS, "default", "web").await.unwrap();
                (ep.is_none() && slices_of(&r, "web").await.is_empty()).then_some(())
            },
        )
        .await;

        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn named_target_port_is_resolved_per_pod() {
        let r = registry();
        r.create(
            &SERVICE,
            service(
                "api",
                json!({"app": "api"}),
                json!([
                    {"name": "http", "port": 80, "targetPort": "http"},
                    {"name": "metrics", "port": 9090, "targetPort": 9100},
                ]),
            ),
        )
        .await
        .unwrap();
        let mut p1 = pod("p1", "10.244.1.2", json!({"app": "api"}), true);
        p1["spec"]["containers"][0]["ports"] = json!([{"name": "http", "containerPort": 8080}]);
        let mut p2 = pod("p2", "10.244.1.3", json!({"app": "api"}), true);
        p2["spec"]["containers"][0]["ports"] = json!([{"name": "http", "containerPort": 9000}]);
        let mut p3 = pod("p3", "10.244.1.4", json!({"app": "api"}), true);
        p3["spec"]["containers"][0]["ports"] = json!([]);
        let mut p4 = pod("p4", "10.244.1.5", json!({"app": "api"}), true);
        p4["spec"]["containers"][0]["ports"] = json!([{"name": "http", "containerPort": 8080}]);
        for p in [p1, p2, p3, p4] {
            r.create(&POD, p).await.unwrap();
        }
        let (stop, handle) = start(&r);
        let ep = endpoints_are(
            &r,
            "api",
            &["10.244.1.2", "10.244.1.3", "10.244.1.4", "10.244.1.5"],
            &[],
        )
        .await;
        // Grouped by resolved port set.
        let mut subsets: Vec<(Vec<String>, Vec<i64>)> = ep["subsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let ips = s["addresses"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a["ip"].as_str().unwrap().to_owned())
                    .collect();
                let mut ports: Vec<i64> = s["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["port"].as_i64().unwrap())
                    .collect();
                ports.sort();
                (ips, ports)
            })
            .collect();
        subsets.sort();
        assert_eq!(
            subsets,
            vec![
                (
                    vec!["10.244.1.2".into(), "10.244.1.5".into()],
                    vec![8080, 9100]
                ),
                (vec!["10.244.1.3".into()], vec![9000, 9100]),
                (vec!["10.244.1.4".into()], vec![9100]),
            ]
        );
        let slices = wait_for("three slices", Duration::from_secs(10), async || {
            let s = slices_of(&r, "api").await;
            (s.len() == 3).then_some(s)
        })
        .await;
        let mut per_slice: Vec<(usize, Vec<i64>)> = slices
            .iter()
            .map(|s| {
                let mut ports: Vec<i64> = s["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["port"].as_i64().unwrap())
                    .collect();
                ports.sort();
                (s["endpoints"].as_array().unwrap().len(), ports)
            })
            .collect();
        per_slice.sort();
        assert_eq!(
            per_slice,
            vec![
                (1, vec![9000, 9100]),
                (1, vec![9100]),
                (2, vec![8080, 9100])
            ]
        );

        // A pod's port renamed away: it moves subsets.
        update_pod(&r, "p2", |p| {
            p["spec"]["containers"][0]["ports"] = json!([])
        })
        .await;
        wait_for(
            "p2 down to the metrics port",
            Duration::from_secs(10),
            async || {
                let ep = r.get(&ENDPOINTS, "default", "api").await.unwrap();
                (ep["subsets"].as_array().unwrap().len() == 2).then_some(())
            },
        )
        .await;
        wait_for("two slices", Duration::from_secs(10), async || {
            (slices_of(&r, "api").await.len() == 2).then_some(())
        })
        .await;
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn idle_resync_writes_nothing_and_deletion_cleans_up() {
        let r = registry();
        r.create(
            &SERVICE,
            service("web", json!({"app": "web"}), json!([{"port": 80}])),
        )
        .await
        .unwrap();
        r.create(
            &SERVICE,
            service("empty", json!({"app": "none"}), json!([{"port": 80}])),
        )
        .await
        .unwrap();
        r.create(&POD, pod("a", "10.244.1.2", json!({"app": "web"}), true))
            .await
            .unwrap();
        // Someone else's Endpoints and slice for a selectorless Service stay untouched.
        r.create(
            &SERVICE,
            service("manual", Value::Null, json!([{"port": 80}])),
        )
        .await
        .unwrap();
        r.create(
            &ENDPOINTS,
            json!({"metadata": {"name": "manual", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "192.0.2.1"}], "ports": [{"port": 80}]}]}),
        )
        .await
        .unwrap();
        let (stop, handle) = start(&r);
        let ep = endpoints_are(&r, "web", &["10.244.1.2"], &[]).await;
        assert_eq!(
            ep["subsets"][0]["ports"],
            json!([{"port": 80, "protocol": "TCP"}])
        );
        endpoints_are(&r, "empty", &[], &[]).await;
        wait_for("slices", Duration::from_secs(10), async || {
            (slices_of(&r, "web").await.len() == 1 && slices_of(&r, "empty").await.len() == 1)
                .then_some(())
        })
        .await;
        let placeholder = &slices_of(&r, "empty").await[0];
        assert_eq!(placeholder["endpoints"], json!([]));

        // Several resync periods (100 ms) pass without a write.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = r.current_revision().await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(r.current_revision().await.unwrap(), before);

        // A managed object changed by hand is repaired.
        r.update_with(&ENDPOINTS, "default", "web", |cur| {
            let mut new = cur.clone();
            new["subsets"] = json!([]);
            Ok(Some(new))
        })
        .await
        .unwrap();
        endpoints_are(&r, "web", &["10.244.1.2"], &[]).await;

        // Service deleted: its managed objects go, the manual ones stay.
        r.delete(&SERVICE, "default", "web", None).await.unwrap();
        wait_for(
            "web's endpoints removed",
            Duration::from_secs(10),
            async || {
                let ep = r.try_get(&ENDPOINTS, "default", "web").await.unwrap();
                (ep.is_none() && slices_of(&r, "web").await.is_empty()).then_some(())
            },
        )
        .await;
        let manual = r.get(&ENDPOINTS, "default", "manual").await.unwrap();
        assert_eq!(ips(&manual).0, vec!["192.0.2.1".to_owned()]);
        assert!(slices_of(&r, "manual").await.is_empty());
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn desired_objects() {
        let mut svc = service("h", json!({"app": "h"}), json!([]));
        svc["spec"]["clusterIP"] = json!("None");
        svc["spec"]["publishNotReadyAddresses"] = json!(true);
        let mut p = pod("p", "10.244.1.2", json!({"app": "h"}), false);
        p["spec"]["hostname"] = json!("p-0");
        p["spec"]["subdomain"] = json!("h");
        let ep = desired_endpoints(&svc, &[&p]);
        // Headless, no ports: the pod is there, ready (publishNotReadyAddresses), no ports.
        assert_eq!(ep["subsets"][0]["addresses"][0]["hostname"], "p-0");
        assert!(ep["subsets"][0].get("ports").is_none());
        assert_eq!(ep["metadata"]["labels"][HEADLESS_LABEL], "");
        let slices = desired_slices(&svc, &[&p]);
        assert_eq!(slices.len(), 1);
        assert_eq!(
            slices[0]["endpoints"][0]["conditions"],
            json!({"ready": true, "serving": false, "terminating": false})
        );
        // Names are deterministic.
        assert_eq!(slices, desired_slices(&svc, &[&p]));
        // Over 100 endpoints are split.
        let svc = service("big", json!({"app": "b"}), json!([{"port": 80}]));
        let pods: Vec<Value> = (0..250)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.244.{}.{}", i / 200, i % 200 + 1),
                    json!({"app": "b"}),
                    true,
                )
            })
            .collect();
        let refs: Vec<&Value> = pods.iter().collect();
        let slices = desired_slices(&svc, &refs);
        assert_eq!(slices.len(), 3);
        let names: HashSet<&str> = slices.iter().map(meta::name).collect();
        assert_eq!(names.len(), 3);
        // IPv6 Services take the pods' IPv6 addresses.
        let mut svc6 = service("v6", json!({"app": "h"}), json!([{"port": 80}]));
        svc6["spec"]["ipFamilies"] = json!(["IPv6"]);
        let mut p6 = pod("p", "10.244.1.2", json!({"app": "h"}), true);
        p6["status"]["podIPs"] = json!([{"ip": "10.244.1.2"}, {"ip": "fd00::2"}]);
        let slices = desired_slices(&svc6, &[&p6]);
        assert_eq!(slices[0]["addressType"], "IPv6");
        assert_eq!(slices[0]["endpoints"][0]["addresses"][0], "fd00::2");
    }
}

#[cfg(test)]
mod scale_tests {
    use super::super::testing::*;
    use super::*;

    /// Many Services over many pods in one namespace: the label indexes keep it fast.
    #[tokio::test]
    async fn many_services_and_pods() {
        const SERVICES: usize = 1000;
        const PODS: usize = 3000;
        let r = registry();
        let (stop, rx) = shutdown();
        let config = ControllerConfig::default();
        let handle = spawn(r.clone(), &config, rx);
        let started = std::time::Instant::now();
        for i in 0..SERVICES {
            r.create(&SERVICE, json!({"metadata": {"name": format!("s{i}"), "namespace": "default"},
                "spec": {"selector": {"app": format!("a{i}"), "tier": "web"}, "ports": [{"port": 80}]}}))
                .await
                .unwrap();
        }
        for i in 0..PODS {
            r.create(&POD, json!({"metadata": {"name": format!("p{i}"), "namespace": "default",
                    "labels": {"app": format!("a{}", i % SERVICES), "tier": "web"}},
                "spec": {"nodeName": "n1", "containers": []},
                "status": {"phase": "Running", "podIP": format!("10.244.{}.{}", i / 250, i % 250 + 1),
                    "conditions": [{"type": "Ready", "status": "True"}]}}))
                .await
                .unwrap();
        }
        wait_for(
            "every Endpoints with 3 addresses",
            Duration::from_secs(60),
            async || {
                let eps = r
                    .list(&ENDPOINTS, Some("default"), None)
                    .await
                    .unwrap()
                    .items;
                (eps.len() == SERVICES
                    && eps.iter().all(|ep| {
                        ep["subsets"][0]["addresses"]
                            .as_array()
                            .is_some_and(|a| a.len() == PODS / SERVICES)
                    }))
                .then_some(())
            },
        )
        .await;
        eprintln!(
            "{SERVICES} services, {PODS} pods: endpoints done in {:?}",
            started.elapsed()
        );
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
    }
}
