//! What the policy engine reads of the cluster: pods (labels, address, node, named
//! ports), namespaces (labels) and the policies, decoded once from the API's objects.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use podnet_api::k8s::policy_api::ClusterNetworkPolicy;

use crate::selector::Labels;

/// A pod as policies see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// Its address; `None` before it has one, for host-network and finished pods (they
    /// are not selectable as peers).
    pub ip: Option<Ipv4Addr>,
    pub node: Option<String>,
    pub ports: Vec<NamedPort>,
}

/// A container port with a name: what a policy's named port resolves to on this pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    /// IANA number (6 TCP, 17 UDP, 132 SCTP).
    pub protocol: u8,
    pub port: u16,
}

/// The protocol number of a Kubernetes protocol name (absent: TCP); `None` for another.
pub fn protocol_number(name: Option<&str>) -> Option<u8> {
    match name.unwrap_or("TCP") {
        "TCP" => Some(6),
        "UDP" => Some(17),
        "SCTP" => Some(132),
        _ => None,
    }
}

/// Everything the model is computed from.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub pods: Vec<PodInfo>,
    /// Namespace labels by name, `kubernetes.io/metadata.name` included as the API
    /// server sets it.
    pub namespaces: BTreeMap<String, Labels>,
    pub policies: Vec<NetworkPolicy>,
    /// `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicies (Admin and Baseline).
    pub cluster_policies: Vec<ClusterNetworkPolicy>,
}

impl PodInfo {
    /// The pod as policies see it.
    pub fn from_pod(pod: &Pod) -> PodInfo {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let finished = status
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == "Succeeded" || p == "Failed");
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
        let ip = status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok())
            .filter(|_| !finished && !host_network);
        let ports = spec
            .into_iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some(NamedPort {
                    name: p.name.clone()?,
                    protocol: protocol_number(p.protocol.as_deref())?,
                    port: u16::try_from(p.container_port).ok()?,
                })
            })
            .collect();
        PodInfo {
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name: meta.name.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            ip,
            node: spec.and_then(|s| s.node_name.clone()),
            ports,
        }
    }

    /// The port this pod names `name` for `protocol`.
    pub fn named_port(&self, name: &str, protocol: u8) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name == name && p.protocol == protocol)
            .map(|p| p.port)
    }
}

/// A namespace's labels, with the name label the API server guarantees.
pub fn namespace_labels(ns: &Namespace) -> (String, Labels) {
    let name = ns.metadata.name.clone().unwrap_or_default();
    let mut labels = ns.metadata.labels.clone().unwrap_or_default();
    labels
        .entry("kubernetes.io/metadata.name".into())
        .or_insert_with(|| name.clone());
    (name, labels)
}
