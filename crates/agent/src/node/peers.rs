//! The other nodes, as the overlay backend needs them: each Node with a pod subnet becomes a
//! [`Peer`] (its subnet, its underlay address, its published backend type and data).
//!
//! The conversion is pure (Nodes in, peers out) so that the network pass can diff one set
//! against the previous one ([`PeerChanges`], flannel's lease-watcher idea: added, changed,
//! removed) and hand the backend the complete set at every pass.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use podnet_overlay::{Peer, annotations};

/// A Node's `spec.podCIDR` as an IPv4 network, host bits cleared.
pub fn pod_cidr(node: &Node) -> Option<Ipv4Net> {
    let text = node.spec.as_ref()?.pod_cidr.as_deref()?;
    text.parse::<Ipv4Net>().ok().map(|n| n.trunc())
}

/// A Node's first IPv4 `InternalIP`.
pub fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

fn annotation<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Where peers send to: the public-ip annotation the node's agent published, else its
/// InternalIP (a node whose agent has not started yet).
pub fn public_ip(node: &Node) -> Option<Ipv4Addr> {
    annotation(node, annotations::PUBLIC_IP)
        .and_then(|a| a.parse().ok())
        .or_else(|| internal_ip(node))
}

/// The peers of node `own_name`: every other Node with an IPv4 podCIDR inside the cluster
/// CIDR and an IPv4 address, sorted by name. Skipped silently: the node itself, Nodes being
/// deleted, Nodes without podCIDR or address yet. Skipped with a reason (second list):
/// subnets outside the cluster CIDR or overlapping this node's own, and a second Node
/// claiming a subnet already taken (the first by name wins).
pub fn desired_peers<'a>(
    own_name: &str,
    cluster_cidr: Ipv4Net,
    nodes: impl IntoIterator<Item = &'a Node>,
) -> (Vec<Peer>, Vec<String>) {
    let mut nodes: Vec<&Node> = nodes.into_iter().collect();
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let own_cidr = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(own_name))
        .and_then(|n| pod_cidr(n));
    let mut peers: Vec<Peer> = Vec::new();
    let mut skipped = Vec::new();
    for node in nodes {
        let Some(name) = node.metadata.name.as_deref() else {
            continue;
        };
        if name == own_name || node.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let (Some(subnet), Some(ip)) = (pod_cidr(node), public_ip(node)) else {
            continue;
        };
        if !cluster_cidr.contains(&subnet) {
            skipped.push(format!(
                "Node {name}: podCIDR {subnet} is outside the cluster CIDR {cluster_cidr}"
            ));
        } else if own_cidr.is_some_and(|own| podnet_api::net::overlaps(&own, &subnet)) {
            skipped.push(format!(
                "Node {name}: podCIDR {subnet} overlaps this node's own pod subnet"
            ));
        } else if let Some(other) = peers
            .iter()
            .find(|p| podnet_api::net::overlaps(&p.subnet, &subnet))
        {
            skipped.push(format!(
                "Node {name}: podCIDR {subnet} overlaps {} of Node {}",
                other.subnet, other.node
            ));
        } else {
            peers.push(Peer {
                node: name.to_string(),
                subnet,
                public_ip: ip,
                backend_type: annotation(node, annotations::BACKEND_TYPE).map(str::to_string),
                backend_data: annotation(node, annotations::BACKEND_DATA).map(str::to_string),
            });
        }
    }
    (peers, skipped)
}

/// How one peer set differs from the previous one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PeerChanges {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl PeerChanges {
    pub fn between(before: &[Peer], after: &[Peer]) -> PeerChanges {
        let old: BTreeMap<&str, &Peer> = before.iter().map(|p| (p.node.as_str(), p)).collect();
        let new: BTreeMap<&str, &Peer> = after.iter().map(|p| (p.node.as_str(), p)).collect();
        let mut changes = PeerChanges::default();
        for (name, peer) in &new {
            match old.get(name) {
                None => changes.added.push(describe(peer)),
                Some(prev) if prev != peer => changes.changed.push(describe(peer)),
                Some(_) => {}
            }
        }
        changes.removed = old
            .iter()
            .filter(|(name, _)| !new.contains_key(*name))
            .map(|(_, p)| describe(p))
            .collect();
        changes
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

fn describe(peer: &Peer) -> String {
    format!(
        "Node {} ({} at {}, backend {})",
        peer.node,
        peer.subnet,
        peer.public_ip,
        peer.backend_type.as_deref().unwrap_or("not published yet")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(Into::into),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                addresses: ip.map(|ip| {
                    vec![
                        NodeAddress {
                            type_: "Hostname".into(),
                            address: name.into(),
                        },
                        NodeAddress {
                            type_: "InternalIP".into(),
                            address: ip.into(),
                        },
                    ]
                }),
                ..NodeStatus::default()
            }),
        }
    }

    #[test]
    fn desired_skips_self_incomplete_and_conflicting_nodes() {
        let mut annotated = node("i", Some("10.244.4.0/24"), Some("172.30.0.9"));
        annotated.metadata.annotations = Some(
            [
                (annotations::PUBLIC_IP.to_string(), "172.30.1.9".to_string()),
                (annotations::BACKEND_TYPE.to_string(), "vxlan".to_string()),
            ]
            .into(),
        );
        let nodes = [
            node("a", Some("10.244.0.0/24"), Some("172.30.0.1")),
            node("b", Some("10.244.1.0/24"), Some("172.30.0.2")),
            node("c", Some("10.244.2.0/24"), None),
            node("d", None, Some("172.30.0.4")),
            node("e", Some("10.99.0.0/24"), Some("172.30.0.5")),
            node("f", Some("10.244.0.0/25"), Some("172.30.0.6")),
            node("g", Some("10.244.1.0/24"), Some("172.30.0.7")),
            node("h", Some("10.244.3.7/24"), Some("fd00::1")),
            annotated,
        ];
        let (peers, skipped) = desired_peers("a", "10.244.0.0/16".parse().unwrap(), &nodes);
        let got: Vec<(String, String, Option<String>)> = peers
            .iter()
            .map(|p| {
                (
                    p.subnet.to_string(),
                    p.public_ip.to_string(),
                    p.backend_type.clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("10.244.1.0/24".to_string(), "172.30.0.2".to_string(), None),
                (
                    "10.244.4.0/24".to_string(),
                    "172.30.1.9".to_string(),
                    Some("vxlan".to_string())
                ),
            ]
        );
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(skipped[0].contains("Node e"));
        assert!(skipped[1].contains("Node f"));
        assert!(skipped[2].contains("Node g") && skipped[2].contains("Node b"));

        let (fewer, _) = desired_peers("b", "10.244.0.0/16".parse().unwrap(), &nodes[..2]);
        let changes = PeerChanges::between(&peers, &fewer);
        assert_eq!(changes.added.len(), 1, "{changes:?}");
        assert!(changes.added[0].contains("Node a"));
        assert_eq!(changes.removed.len(), 2, "{changes:?}");
    }
}
