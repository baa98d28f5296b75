//! Node registration and status, as kubelet does it: create the Node (or adopt the one that
//! is there after a restart, keeping its `spec.podCIDR`), label it, and post its status
//! (addresses, system info, capacity, conditions) through the status subresource, again
//! every [`NodeTimings::status_report`] and whenever readiness or the network's health
//! ([`health`](super::health): the `NetworkUnavailable` condition) changes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::watch;

use super::backoff::Backoff;
use super::health::{self, NetworkCondition, NetworkHealth};
use super::sysinfo::SystemInfo;
use super::{NodeError, NodeTimings, stopped};

/// `status.nodeInfo.kubeletVersion` of podnet nodes.
pub const KUBELET_VERSION: &str = "v1.35.0-podnet";
/// Pods a node accepts (kubelet's default `--max-pods`).
pub const MAX_PODS: u32 = 110;
/// The field manager named on podnet's patches.
pub const FIELD_MANAGER: &str = "podnet-agent";
/// Message of the `Ready` condition when the node is ready.
pub const READY_MESSAGE: &str = "podnet agent is posting ready status";

/// `status.nodeInfo.containerRuntimeVersion`: `podnet://<crate version>`.
pub fn container_runtime_version() -> String {
    format!("podnet://{}", env!("CARGO_PKG_VERSION"))
}

/// Who this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The Node's name (also its `kubernetes.io/hostname` label and Hostname address).
    pub name: String,
    /// The node's InternalIP.
    pub internal_ip: Ipv4Addr,
    pub system: SystemInfo,
}

/// Whether the node can run pods, and why not. Posted as the `Ready` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub message: String,
}

impl Readiness {
    pub fn ready() -> Readiness {
        Readiness {
            ready: true,
            message: READY_MESSAGE.to_string(),
        }
    }

    pub fn not_ready(message: impl Into<String>) -> Readiness {
        Readiness {
            ready: false,
            message: message.into(),
        }
    }
}

/// The labels kubelet puts on its Node.
pub fn node_labels(id: &NodeIdentity) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), id.name.clone()),
        (
            "kubernetes.io/os".to_string(),
            id.system.operating_system.clone(),
        ),
        (
            "kubernetes.io/arch".to_string(),
            id.system.architecture.clone(),
        ),
    ])
}

fn condition(
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    previous: Option<&NodeStatus>,
    now: &Time,
) -> NodeCondition {
    let status = if status { "True" } else { "False" };
    let transition = previous
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == kind))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    NodeCondition {
        type_: kind.to_string(),
        status: status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(transition),
    }
}

/// The `NetworkUnavailable` condition: from `network` when it is known, else the one the
/// Node carries (or none).
fn network_condition(
    network: Option<&NetworkCondition>,
    previous: Option<&NodeStatus>,
    now: &Time,
) -> Option<NodeCondition> {
    match network {
        Some(n) => Some(condition(
            health::CONDITION,
            n.unavailable,
            &n.reason,
            &n.message,
            previous,
            now,
        )),
        None => previous
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == health::CONDITION))
            .cloned(),
    }
}

/// The status to post: addresses, system info, capacity and conditions. A condition whose
/// status is unchanged from `previous` keeps its `lastTransitionTime`. `network` is the
/// `NetworkUnavailable` condition; `None` (not known yet) keeps the Node's.
pub fn node_status(
    id: &NodeIdentity,
    readiness: &Readiness,
    network: Option<&NetworkCondition>,
    previous: Option<&NodeStatus>,
    now: Timestamp,
) -> NodeStatus {
    let now = Time(now);
    let resources = BTreeMap::from([
        ("cpu".to_string(), Quantity(id.system.cpus.to_string())),
        (
            "memory".to_string(),
            Quantity(format!("{}Ki", id.system.memory_kib)),
        ),
        ("pods".to_string(), Quantity(MAX_PODS.to_string())),
    ]);
    let (ready_reason, ready_message) = if readiness.ready {
        ("KubeletReady", readiness.message.as_str())
    } else {
        ("KubeletNotReady", readiness.message.as_str())
    };
    NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_string(),
                address: id.internal_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".to_string(),
                address: id.name.clone(),
            },
        ]),
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        conditions: Some(
            network_condition(network, previous, &now)
                .into_iter()
                .chain([
                    condition(
                        "MemoryPressure",
                        false,
                        "KubeletHasSufficientMemory",
                        "kubelet has sufficient memory available",
                        previous,
                        &now,
                    ),
                    condition(
                        "DiskPressure",
                        false,
                        "KubeletHasNoDiskPressure",
                        "kubelet has no disk pressure",
                        previous,
                        &now,
                    ),
                    condition(
                        "PIDPressure",
                        false,
                        "KubeletHasSufficientPID",
                        "kubelet has sufficient PID available",
                        previous,
                        &now,
                    ),
                    condition(
                        "Ready",
                        readiness.ready,
                        ready_reason,
                        ready_message,
                        previous,
                        &now,
                    ),
                ])
                .collect(),
        ),
        node_info: Some(NodeSystemInfo {
            architecture: id.system.architecture.clone(),
            boot_id: id.system.boot_id.clone(),
            container_runtime_version: container_runtime_version(),
            kernel_version: id.system.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.to_string(),
            machine_id: id.system.machine_id.clone(),
            operating_system: id.system.operating_system.clone(),
            os_image: id.system.os_image.clone(),
            swap: None,
            system_uuid: id.system.system_uuid.clone(),
        }),
        ..NodeStatus::default()
    }
}

/// Patch parameters naming podnet's field manager.
pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

fn is_status(e: &kube::Error, check: fn(&kube::core::Status) -> bool) -> bool {
    matches!(e, kube::Error::Api(status) if check(status))
}

/// Creates the Node, or adopts the existing one (an agent restart): its labels are brought
/// up to date and everything else in its spec — `podCIDR` above all — is kept. Then posts its
/// status. Returns the Node as stored after the status update.
pub async fn register(
    api: &Api<Node>,
    id: &NodeIdentity,
    readiness: &Readiness,
) -> Result<Node, NodeError> {
    let name = id.name.as_str();
    let labels = node_labels(id);
    let existing = api
        .get_opt(name)
        .await
        .map_err(|e| NodeError::api(format!("reading Node {name}"), e))?;
    match existing {
        None => {
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    labels: Some(labels),
                    ..ObjectMeta::default()
                },
                ..Node::default()
            };
            match api.create(&PostParams::default(), &node).await {
                Ok(created) => {
                    tracing::info!(
                        node = name,
                        pod_cidr = created
                            .spec
                            .as_ref()
                            .and_then(|s| s.pod_cidr.as_deref())
                            .unwrap_or("(none)"),
                        "registered the Node"
                    );
                }
                // Created meanwhile (another agent with the same name, or a retry after a
                // lost response): adopt it on the next round.
                Err(e) if is_status(&e, kube::core::Status::is_already_exists) => {
                    return Err(NodeError::Invalid(format!(
                        "Node {name} appeared while this agent was creating it: is another agent running with --node-name {name}? (retrying)"
                    )));
                }
                Err(e) => return Err(NodeError::api(format!("creating Node {name}"), e)),
            }
        }
        Some(node) => {
            let current = node.metadata.labels.clone().unwrap_or_default();
            let missing = labels
                .iter()
                .any(|(k, v)| current.get(k).is_none_or(|cv| cv != v));
            if missing {
                let patch = json!({"metadata": {"labels": labels}});
                api.patch(name, &patch_params(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| NodeError::api(format!("labelling Node {name}"), e))?;
            }
            tracing::info!(node = name, "adopted the existing Node");
        }
    }
    post_status(api, id, readiness, None).await
}

/// Reads the Node and posts its status (merge patch of `status` through the status
/// subresource), keeping transition times of unchanged conditions. `network`: the
/// `NetworkUnavailable` condition, `None` to keep the Node's.
pub async fn post_status(
    api: &Api<Node>,
    id: &NodeIdentity,
    readiness: &Readiness,
    network: Option<&NetworkCondition>,
) -> Result<Node, NodeError> {
    let name = id.name.as_str();
    let current = api
        .get_opt(name)
        .await
        .map_err(|e| NodeError::api(format!("reading Node {name}"), e))?;
    let Some(current) = current else {
        return Err(NodeError::Invalid(format!(
            "Node {name} was deleted; like kubelet, the agent does not re-create it while running: restart the agent to register the node again"
        )));
    };
    let status = node_status(
        id,
        readiness,
        network,
        current.status.as_ref(),
        Timestamp::now(),
    );
    let patch = json!({ "status": status });
    api.patch_status(name, &patch_params(), &Patch::Merge(&patch))
        .await
        .map_err(|e| NodeError::api(format!("updating the status of Node {name}"), e))
}

/// Registers the node, retrying with back-off until it succeeds. Returns `None` when shutdown
/// came first.
pub async fn register_until_done(
    api: &Api<Node>,
    id: &NodeIdentity,
    readiness: &Readiness,
    timings: &NodeTimings,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Node> {
    let mut backoff = Backoff::new(std::time::Duration::from_millis(200), timings.max_backoff);
    loop {
        if super::stopping(shutdown) {
            return None;
        }
        match register(api, id, readiness).await {
            Ok(node) => return Some(node),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(node = %id.name, error = %e, retry_in = ?delay, "registering the Node failed");
                if super::sleep_or_stop(delay, shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// What the status loop last posted: readiness and the network condition.
type Posted = (Readiness, Option<NetworkCondition>);

/// Re-posts the node status every `timings.status_report`, and at once when `readiness` or
/// the network condition derived from `network` changes; API errors are logged and retried
/// with bounded back-off. Ends on shutdown.
pub async fn run_status_loop(
    api: Api<Node>,
    id: NodeIdentity,
    mut readiness: watch::Receiver<Readiness>,
    mut network: watch::Receiver<NetworkHealth>,
    timings: NodeTimings,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new(std::time::Duration::from_millis(200), timings.max_backoff);
    let mut next = tokio::time::Instant::now() + timings.status_report;
    let (mut readiness_open, mut network_open) = (true, true);
    let mut last_posted: Option<Posted> = None;
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            changed = readiness.changed(), if readiness_open => {
                if changed.is_err() {
                    readiness_open = false;
                    continue;
                }
                if last_posted.as_ref() == Some(&posting(&readiness, &network)) {
                    continue;
                }
            }
            changed = network.changed(), if network_open => {
                if changed.is_err() {
                    network_open = false;
                    continue;
                }
                if last_posted.as_ref() == Some(&posting(&readiness, &network)) {
                    continue;
                }
            }
            _ = tokio::time::sleep_until(next) => {}
        }
        let posted: Posted = (
            readiness.borrow_and_update().clone(),
            network.borrow_and_update().condition(),
        );
        match post_status(&api, &id, &posted.0, posted.1.as_ref()).await {
            Ok(_) => {
                if last_posted.as_ref() != Some(&posted) {
                    log_posted(&id.name, &posted);
                }
                last_posted = Some(posted);
                backoff.reset();
                next = tokio::time::Instant::now() + timings.status_report;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(node = %id.name, error = %e, retry_in = ?delay, "posting the node status failed");
                next = tokio::time::Instant::now() + delay;
            }
        }
    }
}

/// What would be posted now.
fn posting(
    readiness: &watch::Receiver<Readiness>,
    network: &watch::Receiver<NetworkHealth>,
) -> Posted {
    (readiness.borrow().clone(), network.borrow().condition())
}

fn log_posted(node: &str, (readiness, network): &Posted) {
    match network {
        Some(n) if n.unavailable => tracing::warn!(
            node,
            ready = readiness.ready,
            reason = %readiness.message,
            network_reason = %n.reason,
            network_message = %n.message,
            "posted node status: NetworkUnavailable"
        ),
        Some(n) => tracing::info!(
            node,
            ready = readiness.ready,
            reason = %readiness.message,
            network_reason = %n.reason,
            "posted node status"
        ),
        None => tracing::info!(
            node,
            ready = readiness.ready,
            reason = %readiness.message,
            "posted node status"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> NodeIdentity {
        NodeIdentity {
            name: "n1".into(),
            internal_ip: Ipv4Addr::new(172, 30, 0, 1),
            system: SystemInfo {
                os_image: "Debian GNU/Linux 13 (trixie)".into(),
                kernel_version: "6.12.0".into(),
                operating_system: "linux".into(),
                architecture: "amd64".into(),
                machine_id: "m".into(),
                system_uuid: String::new(),
                boot_id: "b".into(),
                cpus: 2,
                memory_kib: 1000,
            },
        }
    }

    #[test]
    fn status_fields() {
        let id = identity();
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let s = node_status(&id, &Readiness::ready(), None, None, now);
        let addrs = s.addresses.as_ref().unwrap();
        assert_eq!(addrs[0].type_, "InternalIP");
        assert_eq!(addrs[0].address, "172.30.0.1");
        assert_eq!(addrs[1].type_, "Hostname");
        assert_eq!(addrs[1].address, "n1");
        let cap = s.capacity.as_ref().unwrap();
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "1000Ki");
        assert_eq!(s.allocatable, s.capacity);
        let info = s.node_info.as_ref().unwrap();
        assert_eq!(info.kubelet_version, "v1.35.0-podnet");
        assert_eq!(info.container_runtime_version, "podnet://0.1.0");
        let conds = s.conditions.as_ref().unwrap();
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        assert_eq!(ready.message.as_deref(), Some(READY_MESSAGE));
        for kind in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
            let c = conds.iter().find(|c| c.type_ == kind).unwrap();
            assert_eq!(c.status, "False", "{kind}");
        }
    }

    #[test]
    fn transition_time_kept_while_status_unchanged() {
        let id = identity();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let t2: Timestamp = "2026-01-01T00:02:00Z".parse().unwrap();
        let first = node_status(&id, &Readiness::not_ready("waiting"), None, None, t0);
        let second = node_status(
            &id,
            &Readiness::not_ready("waiting"),
            None,
            Some(&first),
            t1,
        );
        let ready = |s: &NodeStatus| {
            s.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == "Ready")
                .cloned()
                .unwrap()
        };
        assert_eq!(ready(&second).last_transition_time, Some(Time(t0)));
        assert_eq!(ready(&second).last_heartbeat_time, Some(Time(t1)));
        assert_eq!(ready(&second).reason.as_deref(), Some("KubeletNotReady"));
        let third = node_status(&id, &Readiness::ready(), None, Some(&second), t2);
        assert_eq!(ready(&third).last_transition_time, Some(Time(t2)));
        let pressure = third
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "DiskPressure")
            .cloned()
            .unwrap();
        assert_eq!(pressure.last_transition_time, Some(Time(t0)));
    }

    fn find<'a>(s: &'a NodeStatus, kind: &str) -> Option<&'a NodeCondition> {
        s.conditions.as_ref()?.iter().find(|c| c.type_ == kind)
    }

    #[test]
    fn network_unavailable_posted_when_known_kept_when_not() {
        let id = identity();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let t2: Timestamp = "2026-01-01T00:02:00Z".parse().unwrap();
        // Not known yet on a new Node: no condition at all.
        let first = node_status(&id, &Readiness::ready(), None, None, t0);
        assert!(find(&first, "NetworkUnavailable").is_none());
        let ok = NetworkCondition::available();
        let second = node_status(&id, &Readiness::ready(), Some(&ok), Some(&first), t0);
        let c = find(&second, "NetworkUnavailable").unwrap();
        assert_eq!(c.status, "False");
        assert_eq!(c.reason.as_deref(), Some("PodnetNetworkReady"));
        assert_eq!(
            c.message.as_deref(),
            Some("podnet's overlay, masquerade and service proxy are programmed")
        );
        assert_eq!(
            second.conditions.as_ref().unwrap()[0].type_,
            "NetworkUnavailable"
        );
        // Failing: True with the part's reason and error; Ready is left as it is.
        let failing = NetworkCondition {
            unavailable: true,
            reason: "ServiceProxyFailing".into(),
            message: "service proxy: Operation not permitted".into(),
        };
        let third = node_status(&id, &Readiness::ready(), Some(&failing), Some(&second), t1);
        let c = find(&third, "NetworkUnavailable").unwrap();
        assert_eq!(c.status, "True");
        assert_eq!(c.reason.as_deref(), Some("ServiceProxyFailing"));
        assert_eq!(c.last_transition_time, Some(Time(t1)));
        assert_eq!(find(&third, "Ready").unwrap().status, "True");
        // Unknown again (an agent restart): the Node's verdict is kept as it was.
        let fourth = node_status(&id, &Readiness::ready(), None, Some(&third), t2);
        assert_eq!(find(&fourth, "NetworkUnavailable"), Some(c));
    }

    #[test]
    fn labels() {
        let l = node_labels(&identity());
        assert_eq!(l["kubernetes.io/hostname"], "n1");
        assert_eq!(l["kubernetes.io/os"], "linux");
        assert_eq!(l["kubernetes.io/arch"], "amd64");
    }
}
